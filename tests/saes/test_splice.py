"""Splicing SAEs into a tiny model: error term kept, latent edits, width checks."""

import pytest
import torch

from sae_hacking.errors import UsageError
from sae_hacking.lm.hooked import LOGITS
from sae_hacking.lm.tiny import generate_texts
from sae_hacking.saes.splice import ZeroLatents, check_sae_fits, splice, splice_patch
from tests.oracles import ZeroLatentPerRow
from tests.random_saes import random_sae

HOOK = "blocks.0.hook_mlp_out"
D_SAE = 96


@pytest.fixture(scope="module")
def lm(tiny_lm):
    return tiny_lm("gemma2")


@pytest.fixture(scope="module")
def batch(lm):
    return lm.tokenize(generate_texts(3, seed=2, min_words=4, max_words=12), 16)


def make_sae(kind, d_in=64, hook=HOOK):
    return random_sae(hook, D_SAE, seed=0, d_in=d_in, kind=kind)


def active_latents(lm, batch, sae, n=3):
    acts = sae.encode(lm.read(batch.input_ids_BS, batch.attention_mask_BS, [HOOK])[HOOK])
    return acts.abs().sum((0, 1)).topk(n).indices.tolist()


@pytest.mark.parametrize("kind", ["jumprelu", "relu", "topk"])
def test_splice_without_edit_leaves_the_model_unchanged(lm, batch, kind):
    clean = lm.logits(batch.input_ids_BS, batch.attention_mask_BS)
    spliced = lm.logits(
        batch.input_ids_BS, batch.attention_mask_BS, patches=splice(lm, make_sae(kind))
    )
    assert torch.equal(clean, spliced)


@pytest.mark.parametrize("kind", ["jumprelu", "relu", "topk"])
def test_zeroing_latents_equals_decode_plus_error(lm, batch, kind):
    sae = make_sae(kind)
    latents = active_latents(lm, batch, sae)
    edit = ZeroLatents(latents)

    def reference(x):  # the definition: decode(edited latents) + (x - decode(latents))
        acts = sae.encode(x)
        edited = acts.clone()
        edited[..., latents] = 0
        return sae.decode(edited) + (x - sae.decode(acts))

    ids, mask = batch.input_ids_BS, batch.attention_mask_BS
    got = lm.logits(ids, mask, patches=splice(lm, sae, edit))
    want = lm.logits(ids, mask, patches={HOOK: reference})
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert (got - lm.logits(ids, mask)).abs().max() > 1e-3


def test_edit_deltas_equal_full_decodes():
    sae = make_sae("jumprelu")
    acts = torch.relu(torch.randn(4, 5, D_SAE))
    per_row = ZeroLatentPerRow([3, -1, 50, 3])
    for edit in (ZeroLatents([1, 7, 7, 90]), per_row):
        want = sae.decode(edit.apply(acts)) - sae.decode(acts)
        torch.testing.assert_close(edit.delta(acts, sae.W_dec), want, atol=1e-5, rtol=0)
    edited = per_row.apply(acts)
    assert (edited[0, :, 3] == 0).all() and torch.equal(edited[1], acts[1])
    assert (edited[2, :, 50] == 0).all() and torch.equal(edited[2, :, 3], acts[2, :, 3])


def test_variants_in_one_batch_equal_separate_ablations(lm, batch):
    """Issue 5's pattern: K variants of one prompt, each zeroing one latent, run as one batch
    through only the layers between the SAE and a later reader."""
    sae = make_sae("jumprelu")
    latents = active_latents(lm, batch, sae, n=4)
    ids, mask = batch.input_ids_BS[:1], batch.attention_mask_BS[:1]
    reader = "blocks.1.hook_resid_post"
    cache = lm.read(ids, mask, [HOOK], context_for=HOOK)
    variants = cache[HOOK].expand(len(latents) + 1, -1, -1)
    patch = splice_patch(sae, ZeroLatentPerRow([*latents, -1]))
    got = lm.run_between(HOOK, patch(variants), reader, cache.context)
    for k, latent in enumerate(latents):
        want = lm.read(ids, mask, [reader], patches=splice(lm, sae, ZeroLatents([latent])))[reader]
        torch.testing.assert_close(got[k : k + 1], want, atol=1e-5, rtol=0)
    clean = lm.read(ids, mask, [reader])[reader]
    torch.testing.assert_close(got[-1:], clean, atol=1e-5, rtol=0)
    assert (got[:-1] - clean).abs().amax((1, 2)).min() > 1e-4, "every ablation must change it"
    logits = lm.run_between(HOOK, patch(variants), LOGITS, cache.context)
    assert logits.shape[:2] == (len(latents) + 1, ids.shape[1])


def test_splice_without_error_term_is_the_reconstruction(lm, batch):
    sae = make_sae("relu")
    ids, mask = batch.input_ids_BS, batch.attention_mask_BS
    got = lm.logits(ids, mask, patches=splice(lm, sae, keep_error=False))
    want = lm.logits(ids, mask, patches={HOOK: lambda x: sae.decode(sae.encode(x))})
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_width_and_hook_checks(lm):
    with pytest.raises(UsageError, match="reads 32-dimensional.*is 64-dimensional"):
        check_sae_fits(lm, make_sae("relu", d_in=32))
    with pytest.raises(UsageError, match="does not say which hook"):
        check_sae_fits(lm, make_sae("relu", hook=None))
    with pytest.raises(UsageError, match="unknown hook point"):
        check_sae_fits(lm, make_sae("relu", hook="blocks.0.hook_q"))
    assert check_sae_fits(lm, make_sae("relu", hook=None), "blocks.1.hook_resid_pre") == (
        "blocks.1.hook_resid_pre"
    )
    with pytest.raises(UsageError, match=f"0..{D_SAE - 1}"):
        ZeroLatents([D_SAE]).apply(torch.zeros(1, 2, D_SAE))


@pytest.mark.parametrize("kind", ["jumprelu", "topk"])
def test_float32_sae_on_a_bfloat16_model(tiny_lm, batch, kind):
    lm16 = tiny_lm("gemma2", dtype="bfloat16")
    sae = make_sae(kind)
    ids, mask = batch.input_ids_BS, batch.attention_mask_BS
    edited = lm16.logits(ids, mask, patches=splice(lm16, sae, ZeroLatents(range(D_SAE))))
    assert edited.dtype == torch.bfloat16 and torch.isfinite(edited).all()
    assert not torch.equal(edited, lm16.logits(ids, mask))
