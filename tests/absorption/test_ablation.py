"""Selective ablation: the fast batched partial forward against the naive full-forward oracle."""

import pytest
import torch

from sae_hacking.absorption.ablation.core import (
    ablation_variants,
    choose_ablations,
    fast_effects,
    last_real_index,
    make_setup,
    naive_effects,
)
from sae_hacking.absorption.ablation.cost import block_passes
from sae_hacking.absorption.ablation.effects import EffectSums, to_fixed
from sae_hacking.errors import FieldError, UsageError
from sae_hacking.saes.splice import ZeroLatents, splice_patch
from tests.absorption.ablation_testkit import (
    ABLATOR_HOOK,
    D_ABLATOR,
    D_READER,
    MAX_TOKENS,
    N_LAYERS,
    PROMPTS,
    READER_HOOK,
)
from tests.random_saes import random_sae


# GPT-2's layout (plain sequential blocks) is Gemma-2's without the extra norms; NeoX is the
# parallel one. The quick loop runs those two.
@pytest.fixture(
    scope="module", params=["gemma2", pytest.param("gpt2", marks=pytest.mark.slow), "neox"]
)
def lm(request, tiny_lm):
    return tiny_lm(request.param, N_LAYERS)


@pytest.fixture(scope="module")
def gemma_lm(tiny_lm):
    return tiny_lm("gemma2", N_LAYERS)


@pytest.fixture(scope="module")
def batch(lm):
    batch = lm.tokenize(PROMPTS, MAX_TOKENS)
    assert (batch.attention_mask_BS == 0).any(), "the test batch must be ragged"
    return batch


def assert_same_effects(fast, naive, rtol=1e-4):
    assert len(fast) == len(naive) > 0
    assert any(n.used and len(n.latents_D) for n in naive), "no ablation was compared"
    for f, n in zip(fast, naive, strict=True):
        assert f.used == n.used
        assert f.latents_D.tolist() == n.latents_D.tolist()
        scale = n.effects_DE.abs().max().clamp(min=1e-6) if n.effects_DE.numel() else 1.0
        assert torch.allclose(f.effects_DE, n.effects_DE, rtol=0, atol=rtol * float(scale))


@pytest.mark.parametrize("batch_prompts", [False, True])
@pytest.mark.parametrize("k", [1, 4, pytest.param(500, marks=pytest.mark.slow)])
def test_fast_equals_naive(lm, batch, k, batch_prompts):
    setup = make_setup(
        lm,
        random_sae(ABLATOR_HOOK, D_ABLATOR, 0),
        random_sae(READER_HOOK, D_READER, 1),
        k,
        rows_per_chunk=7,  # variants of one prompt land in several chunks
        batch_prompts=batch_prompts,  # one padded batch, or each prompt alone
    )
    fast, naive = fast_effects(setup, batch), naive_effects(setup, batch)
    assert all(p.used for p in fast)
    if k == 500:  # more than there are active latents: only active ones are ablated
        assert all(0 < len(p.latents_D) < D_ABLATOR for p in fast)
    assert_same_effects(fast, naive)
    assert any(float(p.effects_DE.abs().max()) > 1e-3 for p in naive), "effects must be nonzero"


@pytest.mark.parametrize(
    "ablator_hook, reader_hook",
    [
        ("blocks.0.hook_resid_post", "blocks.2.hook_mlp_out"),  # several layers, MLP on last
        ("blocks.2.hook_attn_out", "blocks.2.hook_resid_post"),  # no attention in between
        ("blocks.0.hook_mlp_out", "blocks.2.hook_attn_out"),  # the reader reads an attention
        ("blocks.1.hook_resid_pre", "blocks.1.hook_resid_pre"),  # the same point
        ("blocks.2.attn.hook_z", "blocks.2.hook_resid_post"),  # per-head outputs, same layer
        ("hook_embed", "blocks.1.hook_mlp_out"),  # token embeddings
    ],
)
def test_fast_equals_naive_across_hook_pairs(gemma_lm, ablator_hook, reader_hook):
    batch = gemma_lm.tokenize(PROMPTS, MAX_TOKENS)
    setup = make_setup(
        gemma_lm, random_sae(ablator_hook, D_ABLATOR, 2), random_sae(reader_hook, D_READER, 3), 3
    )
    fast, naive = fast_effects(setup, batch), naive_effects(setup, batch)
    assert_same_effects(fast, naive)
    # Not vacuous: every prompt ablated 3 latents, and some ablation changed the reader.
    assert all(p.used and p.effects_DE.shape == (3, D_READER) for p in naive)
    assert any(float(p.effects_DE.abs().max()) > 1e-3 for p in naive), "effects must be nonzero"


def test_ablating_a_latent_changes_the_hook_output_by_minus_act_times_decoder_row(lm, batch):
    sae = random_sae(ABLATOR_HOOK, D_ABLATOR, 0)
    x_BSM = lm.read(batch.input_ids_BS, batch.attention_mask_BS, [ABLATOR_HOOK])[ABLATOR_HOOK]
    acts_BSe = sae.encode(x_BSM)
    rows_N = torch.tensor([0, 0, 3, 5])
    latents_N = choose_ablations(acts_BSe, batch.real_token_mask_BS, 2)[[0, 0, 3, 5], [0, 1, 0, 1]]
    variants_NSM = ablation_variants(x_BSM, acts_BSe, sae.W_dec, rows_N, latents_N)
    for n, (row, latent) in enumerate(zip(rows_N.tolist(), latents_N.tolist(), strict=True)):
        expected = x_BSM[row] - acts_BSe[row, :, latent, None] * sae.W_dec[latent]
        assert torch.equal(variants_NSM[n], expected)
        spliced = splice_patch(sae, ZeroLatents([latent]))(x_BSM[row : row + 1])[0]
        assert torch.equal(variants_NSM[n], spliced)
    unedited = ablation_variants(x_BSM, acts_BSe, sae.W_dec, rows_N, torch.full_like(rows_N, -1))
    assert torch.equal(unedited, x_BSM[rows_N])


def test_choice_ranks_active_latents_on_real_tokens_only():
    acts_BSe = torch.zeros(2, 4, 6)
    acts_BSe[0, 0, 5] = 100.0  # BOS position: not a real token
    acts_BSe[0, 1, [1, 2, 3]] = torch.tensor([1.0, 3.0, 1.0])
    acts_BSe[0, 3, 4] = 50.0  # padding
    acts_BSe[1, 1:3, 0] = 2.0
    real_BS = torch.tensor([[False, True, True, False], [False, True, True, True]])
    assert choose_ablations(acts_BSe, real_BS, 3).tolist() == [[2, 1, 3], [0, -1, -1]]
    excluded_e = torch.zeros(6, dtype=torch.bool)
    excluded_e[2] = True
    assert choose_ablations(acts_BSe, real_BS, 2, excluded_e).tolist() == [[1, 3], [0, -1]]
    assert last_real_index(real_BS).tolist() == [2, 3]
    assert last_real_index(torch.zeros(1, 3, dtype=torch.bool)).tolist() == [-1]


def test_selected_features_skip_prompts_without_them(gemma_lm):
    lm = gemma_lm
    batch = lm.tokenize(PROMPTS, MAX_TOKENS)
    ablator, reader = random_sae(ABLATOR_HOOK, D_ABLATOR, 0), random_sae(READER_HOOK, D_READER, 1)
    everything = fast_effects(make_setup(lm, ablator, reader, 3), batch)
    chosen = [set(p.latents_D.tolist()) for p in everything]
    # A latent in some prompts' top 3 but not all of them.
    counts = {latent: sum(latent in c for c in chosen) for latent in set().union(*chosen)}
    target = next(latent for latent, n in counts.items() if 0 < n < len(chosen))
    setup = make_setup(lm, ablator, reader, 3, selected=[target])
    fast, naive = fast_effects(setup, batch), naive_effects(setup, batch)
    assert [p.used for p in fast] == [target in c for c in chosen]
    assert_same_effects(fast, naive)
    for used, full in zip(fast, everything, strict=True):
        if used.used:  # a used prompt still ablates its whole top K, not only the selection
            assert torch.equal(used.latents_D, full.latents_D)


def test_excluded_latents_are_never_ablated(lm, batch):
    ablator, reader = random_sae(ABLATOR_HOOK, D_ABLATOR, 0), random_sae(READER_HOOK, D_READER, 1)
    top = fast_effects(make_setup(lm, ablator, reader, 2), batch)
    # Prompt 0's top 2 are what gets excluded: were it unused, nothing would be excluded.
    assert top[0].used and len(top[0].latents_D) == 2, "prompt 0 must ablate 2 latents"
    excluded_e = torch.zeros(D_ABLATOR, dtype=torch.bool)
    excluded_e[top[0].latents_D] = True
    setup = make_setup(lm, ablator, reader, 2, excluded_e=excluded_e)
    fast, naive = fast_effects(setup, batch), naive_effects(setup, batch)
    assert_same_effects(fast, naive)
    assert not any(excluded_e[p.latents_D].any() for p in fast)


def count_block_tokens(lm):
    """Forward hooks on every attention and MLP module, counting the token positions each
    processes; returns (counts, remove)."""
    counts = {"attention": 0, "mlp": 0}
    handles = []
    for layer in lm.layers:
        for kind, name in (("attention", lm.spec.attn), ("mlp", lm.spec.mlp)):

            def hook(module, args, kwargs, output, kind=kind):
                x = args[0] if args else kwargs["hidden_states"]
                counts[kind] += x.shape[0] * x.shape[1]

            handles.append(layer.get_submodule(name).register_forward_hook(hook, with_kwargs=True))
    return counts, lambda: [h.remove() for h in handles]


@pytest.mark.parametrize("batch_prompts", [False, True])
@pytest.mark.parametrize("k", [1, 5])
def test_block_pass_counts_match_the_modules_that_run(lm, batch, k, batch_prompts):
    setup = make_setup(
        lm,
        random_sae(ABLATOR_HOOK, D_ABLATOR, 0),
        random_sae(READER_HOOK, D_READER, 1),
        k,
        batch_prompts=batch_prompts,
    )
    point = lm.hook_point
    lengths = batch.attention_mask_BS.sum(1)
    seq_len = batch.input_ids_BS.shape[1]
    for method, run in (("fast", fast_effects), ("naive", naive_effects)):
        counts, remove = count_block_tokens(lm)
        try:
            results = run(setup, batch)
        finally:
            remove()
        expected = {"attention": 0, "mlp": 0}
        for prompt, length in zip(results, lengths.tolist(), strict=True):
            assert len(prompt.latents_D) == k
            passes = block_passes(method, N_LAYERS, point(ABLATOR_HOOK), point(READER_HOOK), k)
            alone = method == "naive" or not batch_prompts  # the prompt alone, no padding
            tokens = length if alone else seq_len
            expected["attention"] += passes.attention * tokens
            expected["mlp"] += passes.mlp * tokens + passes.mlp_last_token
        assert counts == expected, method


def test_bad_inputs_are_usage_errors(gemma_lm):
    lm = gemma_lm
    ablator, reader = random_sae(ABLATOR_HOOK, D_ABLATOR, 0), random_sae(READER_HOOK, D_READER, 1)
    early_reader = random_sae("blocks.0.hook_resid_post", D_READER, 1)
    with pytest.raises(UsageError, match="comes before"):
        make_setup(lm, ablator, early_reader, 3)
    with pytest.raises(FieldError, match=f"`selected_features` {D_ABLATOR} .* {D_ABLATOR} latents"):
        make_setup(lm, ablator, reader, 3, selected=[1, D_ABLATOR])
    with pytest.raises(UsageError, match="32-dimensional"):
        make_setup(lm, ablator, random_sae(READER_HOOK, D_READER, 1, d_in=32), 3)
    with pytest.raises(UsageError, match="at least 1"):
        make_setup(lm, ablator, reader, 0)
    with pytest.raises(UsageError, match="another SAE"):
        make_setup(lm, ablator, reader, 3, excluded_e=torch.zeros(5, dtype=torch.bool))


def test_effect_sums_are_exact_in_any_order(gemma_lm):
    lm = gemma_lm
    batch = lm.tokenize(PROMPTS, MAX_TOKENS)
    setup = make_setup(
        lm, random_sae(ABLATOR_HOOK, D_ABLATOR, 0), random_sae(READER_HOOK, D_READER, 1), 4
    )
    prompts = fast_effects(setup, batch)
    whole = EffectSums(D_READER)
    for prompt in prompts:
        whole.add(prompt)
    first, second = EffectSums(D_READER), EffectSums(D_READER)
    for prompt in prompts[3:]:
        first.add(prompt)
    for prompt in reversed(prompts[:3]):
        second.add(prompt)
    merged = EffectSums.from_tensors(second.tensors())
    merged.merge(first)
    a, b = whole.tensors(), merged.tensors()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert int(a["n_prompts"]) == len(prompts) == int(a["ablation_counts_D"].sum()) // 4
    assert a["latents_D"].tolist() == sorted({i for p in prompts for i in p.latents_D.tolist()})
    row = a["latents_D"].tolist().index(int(prompts[0].latents_D[0]))
    direct = sum(
        p.effects_DE[p.latents_D.tolist().index(a["latents_D"][row])].double()
        for p in prompts
        if a["latents_D"][row] in p.latents_D
    )
    assert torch.allclose(a["effects_DE"][row].double(), direct, atol=1e-6)
    with pytest.raises(OverflowError):
        to_fixed(torch.tensor([[float("nan")]]))


@pytest.mark.parametrize("normalize", ["constant_norm_rescale", "layer_norm"])
def test_fast_equals_naive_for_a_normalising_ablator(gemma_lm, normalize):
    """A normalising SAE reconstructs in its own scale: the fast path maps the ablation back."""
    from sae_hacking.saes.processing import InputTransform

    ablator = random_sae(ABLATOR_HOOK, D_ABLATOR, 2)
    ablator.info.input_transform = InputTransform(normalize=normalize)
    setup = make_setup(gemma_lm, ablator, random_sae(READER_HOOK, D_READER, 3), 3)
    batch = gemma_lm.tokenize(PROMPTS, MAX_TOKENS)
    fast, naive = fast_effects(setup, batch), naive_effects(setup, batch)
    assert_same_effects(fast, naive)
    assert any(float(p.effects_DE.abs().max()) > 1e-3 for p in naive), "effects must be nonzero"
