"""An SAE declaring ``center_writing_weights`` spliced into our (unprocessed) tiny GPT-2 or
GPT-Neo gives the logits of TransformerLens's processed model with the same SAE spliced.

TransformerLens's processed model is its ``TransformerBridge`` booted from the tiny model's
folder (offline) with only ``center_writing_weights`` on (``enable_compatibility_mode``): the
processing ``HookedTransformer.from_pretrained_no_processing(..., center_writing_weights=True)``
applies, on which SAELens trains those SAEs.
"""

import dataclasses

import pytest
import torch

from sae_hacking.saes.formats import load_saelens_folder, save_saelens_folder
from sae_hacking.saes.processing import InputTransform
from sae_hacking.saes.splice import ZeroLatents, splice
from tests.random_saes import random_sae

D_SAE = 96


def processed_model(folder):
    import warnings

    from transformer_lens.model_bridge import TransformerBridge

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its notes on processing a small model
        bridge = TransformerBridge.boot_transformers(str(folder), device="cpu")
        bridge.enable_compatibility_mode(
            fold_ln=False,
            center_writing_weights=True,
            center_unembed=False,
            fold_value_biases=False,
        )
    return bridge.eval()


@pytest.fixture(scope="module", params=["gpt2", "gpt_neo"])
def models(request, tiny_model_path, tiny_lm):
    pytest.importorskip("transformer_lens")
    folder = tiny_model_path(request.param)
    return tiny_lm(request.param), processed_model(folder)


@pytest.fixture(scope="module")
def ids(models):
    lm, _ = models
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, lm.tokenizer.vocab_size, (3, 9), generator=gen)


def centring_sae(tmp_path, hook, seed, kind="relu"):
    """A random SAE whose SAELens cfg.json declares center_writing_weights, loaded as such."""
    sae = random_sae(hook, D_SAE, seed=seed, kind=kind)
    sae.info = dataclasses.replace(sae.info, input_transform=InputTransform(center=True))
    loaded = load_saelens_folder(save_saelens_folder(sae, tmp_path / f"{seed}"))
    assert loaded.input_transform == InputTransform(center=True)
    return loaded


def tl_splice(sae, edit, keep_error):
    """The splice by its definition, in TransformerLens's processed model (whose activation is
    already centred): ``decode(edit(acts)) + (x - decode(acts))``, or the reconstruction."""

    def hook(x, hook):
        acts = sae.encode(x)
        edited = edit.apply(acts)
        return sae.decode(edited) + (x - sae.decode(acts)) if keep_error else sae.decode(edited)

    return hook


@pytest.mark.parametrize(
    ("hook", "kind"),
    [
        ("blocks.0.hook_resid_post", "relu"),
        ("blocks.1.hook_attn_out", "jumprelu"),
        ("blocks.1.hook_mlp_out", "topk"),
        ("blocks.0.hook_resid_pre", "relu"),
    ],
)
@pytest.mark.parametrize("keep_error", [True, False])
def test_centring_sae_spliced_equals_transformer_lens_processed(
    models, ids, tmp_path, hook, kind, keep_error
):
    lm, tl = models
    sae = centring_sae(tmp_path, hook, seed=7, kind=kind)
    x = lm.read(ids, torch.ones_like(ids), [hook])[hook]
    edit = ZeroLatents(sae.encode(x).abs().sum((0, 1)).topk(3).indices.tolist())
    ours = lm.logits(
        ids, torch.ones_like(ids), patches=splice(lm, sae, edit, keep_error=keep_error)
    )
    with torch.no_grad():
        theirs = tl.run_with_hooks(ids, fwd_hooks=[(hook, tl_splice(sae, edit, keep_error))])
        clean = tl(ids)
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=0)
    assert (theirs - clean).abs().max() > 1e-3  # the edit matters
    # Without the declared centring the SAE sees other inputs and the logits differ.
    plain = dataclasses.replace(sae.info, input_transform=InputTransform())
    sae.info = plain
    uncentred = lm.logits(
        ids, torch.ones_like(ids), patches=splice(lm, sae, edit, keep_error=keep_error)
    )
    assert (uncentred - theirs).abs().max() > 1e-4


def test_two_conventions_in_one_model_each_see_their_own(models, ids, tmp_path):
    """A centring SAE upstream and a constant_norm_rescale one downstream, both edited."""
    lm, _ = models
    up_hook, down_hook = "blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"
    up = centring_sae(tmp_path, up_hook, seed=8)
    down = random_sae(down_hook, D_SAE, seed=9, kind="jumprelu")
    down.info = dataclasses.replace(
        down.info, input_transform=InputTransform(normalize="constant_norm_rescale")
    )
    mask = torch.ones_like(ids)
    up_edit, down_edit = ZeroLatents([0, 1, 2, 3]), ZeroLatents([4, 5, 6, 7])
    seen = {}

    def recording(sae, name):
        encode = sae.encode

        def wrapped(x):
            seen[name] = x
            return encode(x)

        sae.encode = wrapped

    recording(up, "up")
    recording(down, "down")
    both = {**splice(lm, up, up_edit), **splice(lm, down, down_edit)}
    got = lm.logits(ids, mask, patches=both)

    # The definitions, each SAE in its own space: the upstream one encodes the centred
    # activation; the downstream one the activation rescaled to norm sqrt(d), its edit scaled
    # back by that position's factor.
    def up_ref(x):
        acts = torch.relu((x - x.mean(-1, keepdim=True) - up.b_dec_M) @ up.W_enc_ME + up.b_enc_E)
        return x + (up_edit.apply(acts) - acts) @ up.W_dec_EM

    def down_ref(x):
        coeff = x.shape[-1] ** 0.5 / x.norm(dim=-1, keepdim=True)
        pre = (x * coeff) @ down.W_enc_ME + down.b_enc_E
        acts = pre * (pre > down.threshold_E)
        return x + ((down_edit.apply(acts) - acts) @ down.W_dec_EM) / coeff

    want = lm.logits(ids, mask, patches={up_hook: up_ref, down_hook: down_ref})
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert (got - lm.logits(ids, mask)).abs().max() > 1e-3
    # Each encoder got its own hook's raw activation (the transforms happen inside).
    torch.testing.assert_close(seen["up"], lm.read(ids, mask, [up_hook])[up_hook])
    only_up = lm.read(ids, mask, [down_hook], patches=splice(lm, up, up_edit))[down_hook]
    torch.testing.assert_close(seen["down"], only_up)
