"""Hook reads, patches and runs between hook points, against the plain Hugging Face forward."""

import pytest
import torch

from sae_hacking.errors import UsageError
from sae_hacking.lm.hooked import LOGITS, HookedLM

ATOL = 1e-5

# Where the issue says each hook point lives, written out independently of the package's table.
MODULE_OF = {
    "gemma2": {"attn_out": "post_attention_layernorm", "mlp_out": "post_feedforward_layernorm"},
    "llama": {"attn_out": "self_attn", "mlp_out": "mlp"},
    "qwen2": {"attn_out": "self_attn", "mlp_out": "mlp"},
    "gpt2": {"attn_out": "attn", "mlp_out": "mlp"},
    "gpt_neo": {"attn_out": "attn", "mlp_out": "mlp"},
    "gpt_neox": {"attn_out": "attention", "mlp_out": "mlp"},
}


def hf_forward(lm, batch, hooks=None):
    """Plain HF forward; ``hooks`` = {(layer, module name): fn(output) -> output or None}."""
    handles = []
    for (layer, name), fn in (hooks or {}).items():
        module = lm.layers[layer].get_submodule(name) if name else lm.layers[layer]
        handles.append(module.register_forward_hook(lambda m, a, out, fn=fn: fn(out)))
    try:
        with torch.no_grad():
            return lm.model(
                input_ids=batch.input_ids_BS,
                attention_mask=batch.attention_mask_BS,
                output_hidden_states=True,
            )
    finally:
        for handle in handles:
            handle.remove()


def first(out):
    return out[0] if isinstance(out, tuple) else out


def test_resid_reads_equal_hf_hidden_states(lm, batch):
    out = hf_forward(lm, batch)
    hooks = [f"blocks.{L}.hook_resid_pre" for L in range(lm.n_layers)]
    last = f"blocks.{lm.n_layers - 1}.hook_resid_post"
    cache = lm.read(batch.input_ids_BS, batch.attention_mask_BS, [*hooks, last])
    assert set(cache.acts) == {*hooks, last}
    for L, hook in enumerate(hooks):
        torch.testing.assert_close(cache[hook], out.hidden_states[L], atol=ATOL, rtol=0)
    final_norm = lm.base.get_submodule(lm.spec.final_norm)
    torch.testing.assert_close(final_norm(cache[last]), out.hidden_states[-1], atol=ATOL, rtol=0)


def test_module_reads_equal_hf_module_outputs(lm, batch):
    names = MODULE_OF[lm.model.config.model_type]
    seen = {}
    hooks = {}
    for L in range(lm.n_layers):
        for kind, module in names.items():
            hooks[(L, module)] = lambda out, key=(L, kind): seen.__setitem__(key, first(out))
        hooks[(L, None)] = lambda out, key=(L, "resid_post"): seen.__setitem__(key, first(out))
    hf_forward(lm, batch, hooks)
    cache = lm.read(batch.input_ids_BS, batch.attention_mask_BS, lm.hook_names)
    for L in range(lm.n_layers):
        acts = {
            kind: cache[f"blocks.{L}.hook_{kind}"]
            for kind in ("resid_pre", "attn_out", "mlp_out", "resid_post")
        }
        for kind in ("attn_out", "mlp_out", "resid_post"):
            torch.testing.assert_close(acts[kind], seen[(L, kind)], atol=ATOL, rtol=0)
        if lm.parallel:
            total = acts["resid_pre"] + acts["attn_out"] + acts["mlp_out"]
        else:
            mid = cache[f"blocks.{L}.hook_resid_mid"]
            torch.testing.assert_close(mid, acts["resid_pre"] + acts["attn_out"], atol=ATOL, rtol=0)
            total = mid + acts["mlp_out"]
        torch.testing.assert_close(acts["resid_post"], total, atol=ATOL, rtol=0)


def module_hooks(lm):
    """Every forward (pre-)hook on the model's modules, by module name (transformers keeps
    hooks of its own once ``output_hidden_states`` was used)."""
    return {
        name: (list(m._forward_hooks), list(m._forward_pre_hooks))
        for name, m in lm.model.named_modules()
    }


def test_read_stops_after_the_last_hook_needed(gemma_lm):
    batch = gemma_lm.tokenize(["Kalo mine ruta."], 16)
    hooks_before = module_hooks(gemma_lm)
    calls = []
    handles = [
        gemma_lm.layers[1].register_forward_hook(lambda *a: calls.append("layer1")),
        gemma_lm.model.lm_head.register_forward_hook(lambda *a: calls.append("lm_head")),
    ]
    try:
        cache = gemma_lm.read(
            batch.input_ids_BS, batch.attention_mask_BS, ["blocks.0.hook_mlp_out"]
        )
        assert calls == []
        assert list(cache.acts) == ["blocks.0.hook_mlp_out"]
        gemma_lm.logits(batch.input_ids_BS, batch.attention_mask_BS)
        assert calls == ["layer1", "lm_head"]
    finally:
        for handle in handles:
            handle.remove()
    # the stop left no hook behind: a plain forward afterwards is unaffected
    assert module_hooks(gemma_lm) == hooks_before


def test_logits_equal_hf_logits(lm, batch):
    out = hf_forward(lm, batch)
    torch.testing.assert_close(
        lm.logits(batch.input_ids_BS, batch.attention_mask_BS), out.logits, atol=ATOL, rtol=0
    )


def _perturb(seed):
    gen = torch.Generator().manual_seed(seed)
    return lambda x: x + 0.5 * torch.randn(x.shape, generator=gen)


def test_identity_patches_change_nothing(lm, batch):
    clean = lm.logits(batch.input_ids_BS, batch.attention_mask_BS)
    patches = {hook: (lambda x: x.clone()) for hook in lm.hook_names}
    patched = lm.logits(batch.input_ids_BS, batch.attention_mask_BS, patches=patches)
    assert torch.equal(clean, patched)


def test_patch_equals_hf_module_hook_and_run_between(lm, batch):
    """A patched forward equals (a) the same replacement made by a plain HF module hook and
    (b) reading up to the hook and running the rest with run_between."""
    names = MODULE_OF[lm.model.config.model_type]
    clean = lm.logits(batch.input_ids_BS, batch.attention_mask_BS)
    for i, hook in enumerate(lm.hook_names):
        point = lm.hook_point(hook)
        patched = lm.logits(
            batch.input_ids_BS, batch.attention_mask_BS, patches={hook: _perturb(i)}
        )
        assert (patched - clean).abs().max() > 1e-2, hook
        cache = lm.read(batch.input_ids_BS, batch.attention_mask_BS, [hook], context_for=hook)
        resumed = lm.run_between(hook, _perturb(i)(cache[hook]), LOGITS, cache.context)
        torch.testing.assert_close(patched, resumed, atol=ATOL, rtol=0)
        module = {"resid_post": None, **names}.get(point.kind, "missing")
        if module != "missing":
            fn = _perturb(i)

            def replace(out, fn=fn):
                return (fn(out[0]), *out[1:]) if isinstance(out, tuple) else fn(out)

            reference = hf_forward(lm, batch, {(point.layer, module): replace}).logits
            torch.testing.assert_close(patched, reference, atol=ATOL, rtol=0)


def test_resid_mid_patch_reaches_both_uses(lm, batch):
    """resid_mid feeds the MLP *and* the residual sum; patching must change both. Reference:
    make the same change through attn_out (resid_mid = resid_pre + attn_out)."""
    if lm.parallel:
        pytest.skip("no resid_mid when attention and MLP are parallel")
    names = MODULE_OF[lm.model.config.model_type]
    L = lm.n_layers - 1
    hook = f"blocks.{L}.hook_resid_mid"
    cache = lm.read(
        batch.input_ids_BS, batch.attention_mask_BS, [f"blocks.{L}.hook_resid_pre", hook]
    )
    target = cache[hook] * -2.0
    patched = lm.logits(
        batch.input_ids_BS, batch.attention_mask_BS, patches={hook: lambda x: target}
    )
    shift = target - cache[hook]

    def via_attn_out(out):
        return (out[0] + shift, *out[1:]) if isinstance(out, tuple) else out + shift

    reference = hf_forward(lm, batch, {(L, names["attn_out"]): via_attn_out}).logits
    torch.testing.assert_close(patched, reference, atol=1e-4, rtol=1e-5)


def test_run_between_every_pair_equals_full_forward(lm, batch):
    ids, mask = batch.input_ids_BS, batch.attention_mask_BS
    full = lm.read(ids, mask, lm.hook_names)
    logits = lm.logits(ids, mask)
    hooks = lm.hook_names
    for i, start in enumerate(hooks):
        cache = lm.read(ids, mask, [start], context_for=start)
        for end in [*hooks[i:], LOGITS]:
            got = lm.run_between(start, cache[start], end, cache.context)
            want = logits if end == LOGITS else full[end]
            assert torch.equal(got, want), f"{start} -> {end}"


def test_run_between_batches_variants_of_one_prompt(lm, batch):
    """K variants of one prompt along B with a one-prompt context equal K separate patched
    forwards; repeat_interleave gives the same for several prompts at once."""
    start = "blocks.0.hook_attn_out"
    end = f"blocks.{lm.n_layers - 1}.hook_resid_post"
    ids, mask = batch.input_ids_BS[:2], batch.attention_mask_BS[:2]
    cache = lm.read(ids, mask, [start], context_for=start)
    scales = torch.tensor([0.0, 1.0, 3.0])
    one = lm.read(ids[:1], mask[:1], [start], context_for=start)
    variants_KSM = one[start] * scales[:, None, None]
    got = lm.run_between(start, variants_KSM, end, one.context)
    for k, scale in enumerate(scales):
        ref = lm.read(ids[:1], mask[:1], [end], patches={start: lambda x, s=scale: x * s})[end]
        torch.testing.assert_close(got[k : k + 1], ref, atol=ATOL, rtol=0)
    both = cache[start].repeat_interleave(3, dim=0) * scales.repeat(2)[:, None, None]
    got_both = lm.run_between(start, both, end, cache.context.repeat_interleave(3))
    torch.testing.assert_close(got_both[:3], got, atol=ATOL, rtol=0)


def test_hook_name_errors_list_what_is_supported(lm):
    with pytest.raises(UsageError, match=r"supported: hook_embed, blocks\.\{L\}\.hook_resid_pre"):
        lm.hook_point("blocks.0.hook_q")
    with pytest.raises(UsageError, match=f"has {lm.n_layers} layers"):
        lm.hook_point(f"blocks.{lm.n_layers}.hook_resid_pre")
    if lm.parallel:
        with pytest.raises(UsageError, match="parallel"):
            lm.hook_point("blocks.0.hook_resid_mid")
        assert not any("resid_mid" in h for h in lm.hook_names)


def test_run_between_refuses_backwards_and_missing_context(gemma_lm):
    batch = gemma_lm.tokenize(["Kalo mine ruta."], 16)
    ids, mask = batch.input_ids_BS, batch.attention_mask_BS
    cache = gemma_lm.read(
        ids, mask, ["blocks.1.hook_resid_pre"], context_for="blocks.1.hook_resid_pre"
    )
    acts = cache["blocks.1.hook_resid_pre"]
    with pytest.raises(UsageError, match="forward only"):
        gemma_lm.run_between(
            "blocks.1.hook_resid_pre", acts, "blocks.0.hook_mlp_out", cache.context
        )
    with pytest.raises(ValueError, match="context_for"):
        gemma_lm.run_between("blocks.1.hook_mlp_out", acts, LOGITS, cache.context)
    # resid_post of layer 0 is the same point as resid_pre of layer 1
    same = gemma_lm.run_between(
        "blocks.0.hook_resid_post", acts, "blocks.1.hook_resid_pre", cache.context
    )
    assert torch.equal(same, acts)


def test_unsupported_architecture_is_a_clear_error():
    from transformers import OPTConfig, OPTForCausalLM

    model = OPTForCausalLM(
        OPTConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=1,
            ffn_dim=32,
            num_attention_heads=2,
            word_embed_proj_dim=16,
        )
    )
    with pytest.raises(UsageError, match="'opt' is not supported.*gemma2.*gpt2.*gpt_neox"):
        HookedLM(model)
