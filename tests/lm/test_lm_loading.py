"""Tiny model folders, loading by folder or hub id, and the offline errors."""

import hashlib
import time

import pytest
import torch

from sae_hacking.cli import main
from sae_hacking.errors import UsageError
from sae_hacking.lm.hooked import HookedLM
from sae_hacking.lm.loading import resolve_dtype
from sae_hacking.lm.tiny import TINY_ARCHS, make_tiny_model


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_tiny_model_is_a_pure_function_of_its_arguments(tmp_path):
    a = make_tiny_model(tmp_path / "a", "gpt2", seed=3)
    b = make_tiny_model(tmp_path / "b", "gpt2", seed=3)
    c = make_tiny_model(tmp_path / "c", "gpt2", seed=4)
    assert digest(a) == digest(b)
    assert digest(a)["model.safetensors"] != digest(c)["model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging left behind"


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_tiny_model_loads_as_a_plain_hf_folder(tiny_model_path, arch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model_path(arch)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    specials = [tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token]
    assert (
        all(specials) and len({tokenizer.pad_token, tokenizer.unk_token, tokenizer.bos_token}) == 3
    )
    assert model.config.vocab_size == len(tokenizer) <= 512
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    text = "Kalo mine ruta vo."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text and len(ids) < len(text)  # BPE merges were learnt


def test_tokenizers_follow_their_family_bos_convention(tiny_model_path):
    from transformers import AutoTokenizer

    gemma = AutoTokenizer.from_pretrained(tiny_model_path("gemma2"))
    gpt2 = AutoTokenizer.from_pretrained(tiny_model_path("gpt2"))
    assert gemma("ne ru")["input_ids"][0] == gemma.bos_token_id  # Gemma adds BOS itself
    assert gpt2("ne ru")["input_ids"][0] != gpt2.bos_token_id  # GPT-2 does not
    assert gpt2.bos_token == gpt2.eos_token == "<|endoftext|>"


def test_make_tiny_model_cli(tmp_path, capsys):
    assert (
        main(
            [
                "make-tiny-model",
                str(tmp_path / "m"),
                "--arch",
                "neox",
                "--layers",
                "3",
                "--d-model",
                "32",
                "--vocab",
                "400",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    lm = HookedLM.from_pretrained(str(tmp_path / "m"), device="cpu")
    assert (lm.n_layers, lm.d_model, lm.model.config.model_type) == (3, 32, "gpt_neox")
    assert main(["make-tiny-model", str(tmp_path / "m")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["make-tiny-model", str(tmp_path / "n"), "--d-model", "40"]) == 2


def test_local_folder_errors(tmp_path):
    with pytest.raises(UsageError, match="no such folder"):
        HookedLM.from_pretrained(str(tmp_path / "missing"), device="cpu")
    with pytest.raises(UsageError, match="no config.json"):
        HookedLM.from_pretrained(str(tmp_path), device="cpu")


def test_dtype_and_device(tiny_model_path):
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    with pytest.raises(UsageError, match="`dtype`"):
        resolve_dtype("float8", torch.device("cpu"))
    lm = HookedLM.from_pretrained(str(tiny_model_path("gpt2")), device="cpu", dtype="bfloat16")
    assert lm.dtype == torch.bfloat16 and lm.device.type == "cpu"
    assert not lm.model.training and not any(p.requires_grad for p in lm.model.parameters())


# Generous: a failure that takes longer than this is hanging on the network (huggingface_hub's
# retries take about 20 s); the network_attempts counts are the precise check.
FAST_S = 10


def _timed_usage_error(fn):
    start = time.monotonic()
    with pytest.raises(UsageError) as info:
        fn()
    return str(info.value), time.monotonic() - start


def test_unknown_hub_model_offline_fails_fast_and_clearly(network_attempts):
    message, seconds = _timed_usage_error(
        lambda: HookedLM.from_pretrained("nonexistent-org/no-such-model", device="cpu")
    )
    assert network_attempts == [] and seconds < FAST_S
    assert "nonexistent-org/no-such-model" in message and "HF_HUB_OFFLINE" in message
    assert "`model` ./path/to/model" in message and "\n" not in message


def test_unreachable_hub_without_offline_mode_fails_fast(unreachable_hub, network_attempts):
    """No HF_HUB_OFFLINE, but the endpoint refuses connections: one probe answers instead of
    huggingface_hub's ~20 s of retries."""
    message, seconds = _timed_usage_error(
        lambda: HookedLM.from_pretrained("nonexistent-org/no-such-model", device="cpu")
    )
    assert network_attempts == [unreachable_hub] and seconds < FAST_S
    assert "127.0.0.1:9 cannot be reached" in message
