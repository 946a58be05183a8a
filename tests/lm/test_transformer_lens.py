"""Every hook point we name reads what TransformerLens's bridge reads (weight processing off),
on a tiny model of every supported architecture (GPT-Neo's with a local layer whose window is
shorter than the prompts), offline.

The bridge (``TransformerBridge.boot_transformers`` on the tiny model's folder) wraps the same
Hugging Face modules with TransformerLens's hook names; ``attn.hook_z`` is [B, S, n_heads,
d_head] there and heads-concatenated [B, S, n_heads * d_head] here, as SAELens flattens it.

Both run in float64: in float32 the bridge's own attention code (e.g. GPT-2's fused QKV split
into three projections) rounds differently by a few ulps, ~1e-6 after two layers, which would
hide nothing but make a 1e-6 bound flaky; in float64 any difference beyond 1e-6 is a convention.
"""

import pytest
import torch

from sae_hacking.lm.tiny import TINY_ARCHS, generate_texts

pytestmark = pytest.mark.slow

ATOL = 1e-6
PROMPTS = generate_texts(4, seed=5, min_words=6, max_words=12)


WIDE = "gemma2-wide-heads"  # hook_z wider than d_model, as Gemma-2-2B's


@pytest.fixture(scope="session")
def folder(tiny_model_path, wide_heads_path):
    return lambda arch: str(wide_heads_path if arch == WIDE else tiny_model_path(arch, 2))


@pytest.fixture(scope="session")
def bridge(folder):
    """The bridge of each tiny architecture, booted once per session."""
    transformer_lens = pytest.importorskip("transformer_lens.model_bridge")
    booted = {}

    def boot(arch: str):
        if arch not in booted:
            booted[arch] = transformer_lens.TransformerBridge.boot_transformers(
                folder(arch), device="cpu", dtype=torch.float64
            )
        return booted[arch]

    return boot


@pytest.fixture(scope="session")
def lm64(folder):
    """Our :class:`HookedLM` of each tiny architecture, in float64."""
    from sae_hacking.lm.hooked import HookedLM

    loaded = {}

    def load(arch: str):
        if arch not in loaded:
            lm = HookedLM.from_pretrained(folder(arch), device="cpu")
            lm.model.to(torch.float64)
            loaded[arch] = lm
        return loaded[arch]

    return load


def unpadded(lm):
    """The test prompts cut to their common length: no padding, so no mask conventions differ."""
    batch = lm.tokenize(PROMPTS, 16)
    length = int(batch.attention_mask_BS.sum(dim=1).min())
    return batch.input_ids_BS[:, :length]


@pytest.mark.parametrize("arch", [*TINY_ARCHS, WIDE])
def test_every_hook_equals_the_bridge(arch, lm64, bridge):
    lm = lm64(arch)
    assert lm.dtype == torch.float64
    ids = unpadded(lm)
    if arch == "gpt_neo":  # its local layer must see less than the whole prompt
        assert lm.model.config.window_size < ids.shape[1]
    ours = lm.read(ids, hooks=lm.hook_names)
    with torch.no_grad():
        logits, theirs = bridge(arch).run_with_cache(ids)
    assert lm.hook_names[0] == "hook_embed"
    assert sum(".attn.hook_z" in name for name in lm.hook_names) == lm.n_layers
    for name in lm.hook_names:
        want = theirs[name]
        if name.endswith("attn.hook_z"):
            assert want.shape[-2:] == (lm.n_heads, lm.d_head), name
            want = want.flatten(-2)
        assert ours[name].shape == want.shape, name
        torch.testing.assert_close(ours[name], want, atol=ATOL, rtol=0, msg=name)
    torch.testing.assert_close(lm.logits(ids), logits, atol=ATOL, rtol=0)


def test_gemma_embedding_is_scaled_by_sqrt_d_model(tiny_lm):
    """Gemma multiplies its token embeddings by sqrt(d_model); hook_embed includes that, as
    TransformerLens's does (and SAELens rescales Gemma Scope's embedding SAEs to match)."""
    lm = tiny_lm("gemma2")
    ids = unpadded(lm)
    embed = lm.read(ids, hooks=["hook_embed"])["hook_embed"]
    table = lm.base.get_submodule(lm.spec.embed).weight
    expected = table[ids] * torch.tensor(lm.d_model**0.5, dtype=table.dtype)
    torch.testing.assert_close(embed, expected, atol=ATOL, rtol=0)
