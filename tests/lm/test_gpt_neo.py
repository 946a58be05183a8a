"""GPT-Neo (TinyStories-33M's family): the activation the legacy scripts trained on, local attention
layers whose window is shorter than the prompts, and run_between bit for bit."""

import pytest
import torch

from sae_hacking.cli import main
from sae_hacking.lm.hooked import LOGITS, HookedLM
from sae_hacking.lm.tiny import GPT_NEO_WINDOW, generate_texts

# Ragged, and several local windows long.
PROMPTS = generate_texts(4, seed=13, min_words=4, max_words=14)
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def neo(tiny_lm):
    """Four layers (global, local, global, local), as TinyStories-33M."""
    return tiny_lm("gpt_neo", 4)


@pytest.fixture(scope="module")
def batch(neo):
    b = neo.tokenize(PROMPTS, MAX_TOKENS)
    lengths = b.attention_mask_BS.sum(dim=1)
    assert lengths.min() < lengths.max(), "the test batch must be ragged"
    assert lengths.max() > 3 * GPT_NEO_WINDOW, "prompts must be longer than the local window"
    return b


def test_tiny_gpt_neo_alternates_global_and_local_layers(neo):
    config = neo.model.config
    assert config.model_type == "gpt_neo" and config.window_size == GPT_NEO_WINDOW
    assert [layer.attn.attention_type for layer in neo.layers] == ["global", "local"] * 2


def test_resid_post_1_is_hf_hidden_states_2(neo, batch):
    """``blocks.1.hook_resid_post`` is the legacy scripts' ``hidden_states[2]``, bit for bit."""
    ids, mask = batch.input_ids_BS, batch.attention_mask_BS
    with torch.no_grad():
        out = neo.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    hook = "blocks.1.hook_resid_post"
    assert torch.equal(neo.read(ids, mask, [hook])[hook], out.hidden_states[2])


def test_run_between_through_local_layers_is_bit_exact(neo, batch):
    """From the embedding and from every point of local layer 1 to every later point (and the
    logits), on prompts longer than the window: exactly the full forward's values. (The
    every-pair test of test_hooks does the same on the two-layer model.)"""
    ids, mask = batch.input_ids_BS, batch.attention_mask_BS
    full = neo.read(ids, mask, neo.hook_names)
    logits = neo.logits(ids, mask)
    starts = ["hook_embed", *(name for name in neo.hook_names if name.startswith("blocks.1."))]
    for start in starts:
        i = neo.hook_names.index(start)
        cache = neo.read(ids, mask, [start], context_for=start)
        for end in [*neo.hook_names[i:], LOGITS]:
            got = neo.run_between(start, cache[start], end, cache.context)
            want = logits if end == LOGITS else full[end]
            assert torch.equal(got, want), f"{start} -> {end}"


@pytest.mark.parametrize(("layer", "local"), [(0, False), (1, True)])
def test_local_layers_see_only_their_window(neo, batch, layer, local):
    """Noise in the first token's residual reaches a local layer's heads at the first
    ``window`` positions only (a global layer's at every position), in a patched forward and
    in run_between alike."""
    ids, mask = batch.input_ids_BS, batch.attention_mask_BS
    pre, z = f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.attn.hook_z"

    def noisy(x):
        x = x.clone()
        x[:, 0] += torch.randn(x.shape[-1], generator=torch.Generator().manual_seed(0))
        return x

    clean = neo.read(ids, mask, [z], context_for=pre)
    patched = neo.read(ids, mask, [z], patches={pre: noisy})[z]
    resid = neo.read(ids, mask, [pre])[pre]
    assert torch.equal(neo.run_between(pre, noisy(resid), z, clean.context), patched)
    changed_BS = (patched != clean[z]).any(dim=-1)
    if local:
        assert changed_BS[:, :GPT_NEO_WINDOW].all()
        assert not changed_BS[:, GPT_NEO_WINDOW:].any()
    else:
        assert changed_BS.all()


def test_make_tiny_model_cli_writes_a_gpt_neo(tmp_path):
    """An odd layer count ends on a global layer."""
    args = ["make-tiny-model", str(tmp_path / "m"), "--arch", "gpt_neo", "--layers", "3"]
    assert main([*args, "--d-model", "32", "--vocab", "400"]) == 0
    lm = HookedLM.from_pretrained(str(tmp_path / "m"), device="cpu")
    assert (lm.n_layers, lm.d_model, lm.model.config.model_type) == (3, 32, "gpt_neo")
    assert lm.model.config.attention_layers == ["global", "local", "global"]
    assert lm.tokenizer.bos_token == lm.tokenizer.eos_token == "<|endoftext|>"
    assert lm.tokenizer("ne ru")["input_ids"][0] != lm.tokenizer.bos_token_id
