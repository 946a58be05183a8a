"""``hook_embed`` and ``attn.hook_z``: reads, patches and SAE splices against plain Hugging Face
module hooks, ``run_between`` from and to them, and the refusal without separate heads."""

import dataclasses

import pytest
import torch

from sae_hacking.errors import UsageError
from sae_hacking.lm.hooked import LOGITS, HookedLM
from sae_hacking.lm.tiny import generate_texts
from sae_hacking.saes.splice import check_sae_fits, splice
from tests.random_saes import random_sae

ATOL = 1e-5
# Ragged, and longer than the tiny Gemma-2's sliding window (6 tokens) and GPT-Neo's (4).
PROMPTS = generate_texts(4, seed=12, min_words=2, max_words=14)
MAX_TOKENS = 24


def hf_logits(lm, batch, module, pre_hook=None, hook=None):
    """Plain HF logits with one forward (pre-)hook on ``module``."""
    handle = (
        module.register_forward_pre_hook(pre_hook)
        if pre_hook is not None
        else module.register_forward_hook(hook)
    )
    try:
        with torch.no_grad():
            return lm.model(
                input_ids=batch.input_ids_BS, attention_mask=batch.attention_mask_BS
            ).logits
    finally:
        handle.remove()


def test_hook_names_include_embed_and_z(lm):
    names = lm.hook_names
    assert names[0] == "hook_embed"
    for layer in range(lm.n_layers):
        pre, z = f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.attn.hook_z"
        assert names.index(z) == names.index(pre) + 1
        assert lm.hook_width(z) == lm.n_heads * lm.d_head
    assert lm.hook_width("hook_embed") == lm.d_model


def test_wide_heads_z_is_not_d_model_wide(wide_lm):
    batch = wide_lm.tokenize(PROMPTS, MAX_TOKENS)
    z = wide_lm.read(batch.input_ids_BS, batch.attention_mask_BS, ["blocks.1.attn.hook_z"])
    assert wide_lm.hook_width("blocks.1.attn.hook_z") == 96 != wide_lm.d_model
    assert z["blocks.1.attn.hook_z"].shape == (*batch.input_ids_BS.shape, 96)


def test_wide_heads_run_between_every_pair_equals_full_forward(wide_lm):
    lm = wide_lm
    batch = lm.tokenize(PROMPTS, MAX_TOKENS)
    ids, mask = batch.input_ids_BS, batch.attention_mask_BS
    full = lm.read(ids, mask, lm.hook_names)
    logits = lm.logits(ids, mask)
    for i, start in enumerate(lm.hook_names):
        cache = lm.read(ids, mask, [start], context_for=start)
        for end in [*lm.hook_names[i:], LOGITS]:
            got = lm.run_between(start, cache[start], end, cache.context)
            want = logits if end == LOGITS else full[end]
            torch.testing.assert_close(got, want, atol=ATOL, rtol=0, msg=f"{start} -> {end}")


@pytest.mark.parametrize("wide", [False, True])
def test_z_sae_splices_at_the_output_projection_input(lm, wide_lm, wide):
    """A hook_z SAE's reconstruction spliced in equals replacing the output projection's input
    with it in a plain HF forward, and run_between from hook_z agrees."""
    if wide:
        lm = wide_lm
    batch = lm.tokenize(PROMPTS, MAX_TOKENS)
    hook = f"blocks.{lm.n_layers - 1}.attn.hook_z"
    sae = random_sae(hook, 48, seed=3, d_in=lm.hook_width(hook))
    assert check_sae_fits(lm, sae) == hook
    patches = splice(lm, sae, keep_error=False)
    spliced = lm.logits(batch.input_ids_BS, batch.attention_mask_BS, patches=patches)
    projection = lm.layers[lm.n_layers - 1].get_submodule(lm.spec.attn_o)

    def reconstruct(module, args):
        return (sae.decode(sae.encode(args[0])), *args[1:])

    reference = hf_logits(lm, batch, projection, pre_hook=reconstruct)
    torch.testing.assert_close(spliced, reference, atol=ATOL, rtol=0)
    assert (spliced - lm.logits(batch.input_ids_BS, batch.attention_mask_BS)).abs().max() > 1e-3
    cache = lm.read(batch.input_ids_BS, batch.attention_mask_BS, [hook], context_for=hook)
    resumed = lm.run_between(hook, patches[hook](cache[hook]), LOGITS, cache.context)
    torch.testing.assert_close(resumed, spliced, atol=ATOL, rtol=0)


def test_embed_sae_splices_at_the_embedding_output(lm):
    batch = lm.tokenize(PROMPTS, MAX_TOKENS)
    sae = random_sae("hook_embed", 48, seed=4, d_in=lm.d_model)
    spliced = lm.logits(
        batch.input_ids_BS, batch.attention_mask_BS, patches=splice(lm, sae, keep_error=False)
    )
    embedding = lm.base.get_submodule(lm.spec.embed)
    reference = hf_logits(lm, batch, embedding, hook=lambda m, a, out: sae.decode(sae.encode(out)))
    torch.testing.assert_close(spliced, reference, atol=ATOL, rtol=0)


def test_z_without_separate_heads_is_one_clear_error(tiny_model_path, monkeypatch):
    """A family without separate attention heads has no hook_z: naming it, or splicing a
    hook_z SAE, is a UsageError of one sentence that lists the supported hooks."""
    from transformers import AutoModelForCausalLM

    from sae_hacking.lm import arch

    monkeypatch.setitem(
        arch.ARCH_SPECS, "llama", dataclasses.replace(arch.ARCH_SPECS["llama"], attn_o=None)
    )
    lm = HookedLM(AutoModelForCausalLM.from_pretrained(tiny_model_path("llama")))
    assert not any("hook_z" in name for name in lm.hook_names)
    sae = random_sae("blocks.0.attn.hook_z", 16, d_in=lm.d_model)
    with pytest.raises(UsageError) as err:
        check_sae_fits(lm, sae)
    message = str(err.value)
    assert "no separate heads" in message and "supported: hook_embed" in message
    assert "attn.hook_z" not in message.split("supported:")[1]
    assert message.count(". ") == 0 and message.endswith(".")
