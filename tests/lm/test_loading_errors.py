"""A broken model folder is one FieldError naming it, from the torch-free pre-check or the load;
loading prints nothing on stderr."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from sae_hacking.errors import FieldError, UsageError
from sae_hacking.lm.loading import (
    SUPPORTED_MODEL_TYPES,
    check_model_folder,
    check_model_source,
    load_model_and_tokenizer,
    transformers_output,
)
from sae_hacking.lm.tiny import tiny_model_once


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return tiny_model_once(tmp_path_factory.mktemp("tiny-good"), "gpt2", n_layers=1, d_model=32)


def _edit_config(**changes):
    def edit(folder):
        config = json.loads((folder / "config.json").read_text())
        for key, value in changes.items():
            if value is None:
                config.pop(key, None)
            else:
                config[key] = value
        (folder / "config.json").write_text(json.dumps(config))

    return edit


def _write(name, data):
    return lambda folder: (folder / name).write_bytes(data)


def _truncate(folder):
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])


def _corrupt_header(folder):
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:24] = b"\xff" * 16  # the JSON header no longer parses
    weights.write_bytes(bytes(data))


def _shard_index_without_shard(folder):
    (folder / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


# Each is found by the torch-free pre-check (check_model_folder), before transformers loads.
PRE_CHECKED = {
    "invalid JSON": (_write("config.json", b'{"model_type": "gpt2",'), "not valid JSON"),
    "empty config": (_write("config.json", b""), "not valid JSON"),
    "config not an object": (_write("config.json", b"[1, 2]"), "does not hold a JSON object"),
    "config not UTF-8": (_write("config.json", b'{"model_type": "\xff"}'), "not UTF-8"),
    "no model_type": (_edit_config(model_type=None, architectures=None), "has no model_type"),
    "unknown architecture": (
        _edit_config(model_type="frobnicator"),
        "'frobnicator' model, which is not supported.*supported: gemma2",
    ),
    "no weights": (lambda f: (f / "model.safetensors").unlink(), "has no weights file"),
    "truncated weights": (_truncate, r"model.safetensors is truncated \(\d+ bytes"),
    "corrupt header": (_corrupt_header, "not a valid safetensors file"),
    "tiny weights file": (_write("model.safetensors", b"abc"), "not a valid safetensors file"),
    "missing shard": (_shard_index_without_shard, "lacks 1 weight shard"),
}


def _remove_tensor(folder):
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    del tensors[next(k for k in tensors if k.endswith("mlp.c_fc.weight"))]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


# Only loading can tell these.
LOAD_TIME = {
    "missing tensor": (_remove_tensor, r"the weights lack 1 tensor\(s\).*mlp.c_fc.weight"),
    "shapes disagree": (_edit_config(n_inner=96), "have other shapes than config.json gives"),
    "no tokenizer": (lambda f: (f / "tokenizer.json").unlink(), "its tokenizer could not be"),
}


def _broken(good, tmp_path, mutate):
    folder = tmp_path / "broken-model"
    shutil.copytree(good, folder)
    mutate(folder)
    return folder


def _load(folder):
    import torch

    return load_model_and_tokenizer(str(folder), torch.device("cpu"), torch.float32)


def _assert_one_line_naming(err: FieldError, folder):
    assert err.field == "model" and str(folder) in str(err) and "\n" not in str(err)


@pytest.mark.parametrize("case", sorted(PRE_CHECKED))
def test_broken_folder_is_refused_before_loading(good, tmp_path, case):
    mutate, expected = PRE_CHECKED[case]
    folder = _broken(good, tmp_path, mutate)
    with pytest.raises(FieldError, match=expected) as info:
        check_model_source(str(folder))
    _assert_one_line_naming(info.value, folder)
    with pytest.raises(FieldError, match=expected) as info:
        _load(folder)  # the loader runs the same check first
    _assert_one_line_naming(info.value, folder)


@pytest.mark.parametrize("case", sorted(LOAD_TIME))
def test_broken_folder_is_one_error_when_it_loads(good, tmp_path, case):
    mutate, expected = LOAD_TIME[case]
    folder = _broken(good, tmp_path, mutate)
    check_model_folder(folder)  # passes: the config and the files' framing are fine
    with pytest.raises(FieldError, match=expected) as info:
        _load(folder)
    _assert_one_line_naming(info.value, folder)
    assert "`" not in info.value.message  # backticks would read as names of settings


def test_good_folder_passes_and_loads(good):
    assert check_model_folder(good) == good
    check_model_source(str(good))
    model, tokenizer = _load(good)
    assert model.config.model_type == "gpt2" and len(tokenizer) == model.config.vocab_size


def test_missing_folder_and_bad_hub_ids():
    with pytest.raises(FieldError, match="no such folder"):
        check_model_source("./no/such/model")
    with pytest.raises(FieldError, match="not a Hugging Face hub id") as info:
        check_model_source("not a hub id!")
    assert info.value.field == "model"
    with pytest.raises(FieldError, match="not a Hugging Face hub id"):
        _load("org/too/deep")


def test_uncached_hub_model_offline_is_refused_by_the_pre_check():
    with pytest.raises(UsageError, match="nonexistent-org/no-model.*HF_HUB_OFFLINE") as info:
        check_model_source("nonexistent-org/no-model")
    assert "\n" not in str(info.value)


def test_supported_model_types_are_the_hook_tables():
    from sae_hacking.lm.arch import ARCH_SPECS

    assert sorted(SUPPORTED_MODEL_TYPES) == sorted(ARCH_SPECS)


def test_output_settings_are_restored():
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    with transformers_output(progress=False):
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.get_verbosity() == verbosity
    assert hf_logging.is_progress_bar_enabled() == bars


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )


def test_pre_check_imports_neither_torch_nor_transformers(good, tmp_path):
    truncated = _broken(good, tmp_path, _truncate)
    done = _python(
        "import sys\n"
        "from sae_hacking.errors import FieldError\n"
        "from sae_hacking.lm.loading import check_model_source\n"
        f"check_model_source({str(good)!r})\n"
        "try:\n"
        f"    check_model_source({str(truncated)!r})\n"
        "except FieldError as err:\n"
        "    print(err)\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    assert done.returncode == 0, done.stderr
    assert "truncated" in done.stdout and done.stdout.strip().endswith("[]")


@pytest.mark.slow
def test_loading_prints_nothing_on_stderr(good):
    done = _python(
        "from sae_hacking.lm.hooked import HookedLM\n"
        f"HookedLM.from_pretrained({str(good)!r}, device='cpu')\n"
        "print('loaded')\n"
    )
    assert done.returncode == 0 and done.stdout == "loaded\n", done.stderr
    assert done.stderr == ""
