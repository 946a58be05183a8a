"""SAELens's activation normalisations and declared model processing, against SAELens itself.

The oracle is SAELens's own ``SAE`` loaded from the same folder (``SAE.load_from_disk``): its
``encode`` and ``decode(encode(x))`` must equal ours for every normalisation mode a pretrained
release uses. Centring is model processing, which SAELens leaves to the model: there the oracle
is SAELens encoding the centred activation.
"""

import dataclasses
import json

import pytest
import torch

from sae_hacking.errors import UsageError
from sae_hacking.saes.formats import load_saelens_folder, save_saelens_folder
from sae_hacking.saes.io import load_sae_checkpoint, read_checkpoint_metadata, save_sae_checkpoint
from sae_hacking.saes.processing import InputTransform, input_transform
from tests.random_saes import random_sae

HOOK = "blocks.1.hook_resid_post"
D_IN, D_SAE = 64, 96
MODES = ("none", "constant_norm_rescale", "layer_norm")


@pytest.fixture(scope="module")
def saelens_sae():
    sae_lens = pytest.importorskip("sae_lens")
    return sae_lens.SAE


def with_transform(sae, **fields):
    sae.info = dataclasses.replace(sae.info, input_transform=InputTransform(**fields))
    return sae


def activations(seed=0):
    gen = torch.Generator().manual_seed(seed)
    # An offset and a spread of norms, so centring and normalising both matter.
    return torch.randn(3, 5, D_IN, generator=gen) * torch.linspace(0.5, 4, 5)[:, None] + 0.7


@pytest.mark.slow  # imports sae-lens (seconds)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["relu", "jumprelu", "topk"])
def test_normalisation_equals_saelens(tmp_path, saelens_sae, kind, mode):
    ours = with_transform(random_sae(HOOK, D_SAE, seed=3, kind=kind), normalize=mode)
    folder = save_saelens_folder(ours, tmp_path / "sae")
    assert json.loads((folder / "cfg.json").read_text())["normalize_activations"] == mode
    loaded = load_saelens_folder(folder)
    assert loaded.input_transform == InputTransform(normalize=mode)
    theirs = saelens_sae.load_from_disk(str(folder), device="cpu")
    x = activations()
    with torch.no_grad():
        want_acts = theirs.encode(x)
        want_recon = theirs.decode(want_acts)
    got_acts = loaded.encode(x)
    assert (got_acts > 0).any()
    torch.testing.assert_close(got_acts, want_acts, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loaded(x), want_recon, atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # imports sae-lens (seconds)
@pytest.mark.parametrize("kind", ["relu", "jumprelu", "topk"])
def test_expected_average_only_in_is_folded_as_saelens_does(tmp_path, saelens_sae, kind):
    factor = 0.37
    folder = save_saelens_folder(random_sae(HOOK, D_SAE, seed=4, kind=kind), tmp_path / "sae")
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["normalize_activations"] = "expected_average_only_in"
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(UsageError, match="expected_average_only_in"):
        load_saelens_folder(folder)  # the factor lives in the registry, not the folder
    ours = load_saelens_folder(folder, norm_scaling_factor=factor)
    assert ours.input_transform.is_identity
    theirs = saelens_sae.load_from_disk(str(folder), device="cpu")
    theirs.fold_activation_norm_scaling_factor(factor)
    x = activations(1)
    with torch.no_grad():
        want_acts = theirs.encode(x)
        want_recon = theirs.decode(want_acts)
    torch.testing.assert_close(ours.encode(x), want_acts, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours(x), want_recon, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.W_dec, theirs.W_dec.detach())


@pytest.mark.parametrize("mode", MODES)
def test_declared_centring_encodes_the_centred_activation(tmp_path, saelens_sae, mode):
    ours = with_transform(random_sae(HOOK, D_SAE, seed=5, kind="relu"), center=True, normalize=mode)
    folder = save_saelens_folder(ours, tmp_path / "sae")
    meta = json.loads((folder / "cfg.json").read_text())["metadata"]
    assert meta["model_from_pretrained_kwargs"] == {"center_writing_weights": True}
    loaded = load_saelens_folder(folder)
    assert loaded.input_transform == InputTransform(center=True, normalize=mode)
    with pytest.warns(UserWarning, match="model_from_pretrained_kwargs"):
        theirs = saelens_sae.load_from_disk(str(folder), device="cpu")
    x = activations(2)
    centred = x - x.mean(-1, keepdim=True)
    with torch.no_grad():
        want_acts = theirs.encode(centred)
        want_recon = theirs.decode(want_acts)
    torch.testing.assert_close(loaded.encode(x), want_acts, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loaded(x), want_recon, atol=1e-5, rtol=1e-5)


def test_registry_overrides_replace_the_folder_config(tmp_path):
    folder = save_saelens_folder(random_sae(HOOK, D_SAE, kind="relu"), tmp_path / "sae")
    overrides = {
        "model_from_pretrained_kwargs": {"center_writing_weights": True},
        "normalize_activations": "constant_norm_rescale",
        "dataset_path": "Skylion007/openwebtext",
    }
    sae = load_saelens_folder(folder, overrides=overrides)
    assert sae.input_transform == InputTransform(center=True, normalize="constant_norm_rescale")
    assert sae.hook_name == HOOK


def test_checkpoints_round_trip_the_transform(tmp_path):
    plain = random_sae(HOOK, D_SAE, seed=6, kind="topk")
    save_sae_checkpoint(plain, tmp_path / "plain.safetensors")
    assert "input_transform" not in read_checkpoint_metadata(tmp_path / "plain.safetensors")["info"]
    assert load_sae_checkpoint(tmp_path / "plain.safetensors").input_transform.is_identity
    sae = random_sae(HOOK, D_SAE, seed=6, kind="jumprelu")
    sae = with_transform(sae, center=True, normalize="layer_norm")
    save_sae_checkpoint(sae, tmp_path / "t.safetensors")
    loaded = load_sae_checkpoint(tmp_path / "t.safetensors")
    assert loaded.input_transform == InputTransform(center=True, normalize="layer_norm")
    x = activations(3)
    torch.testing.assert_close(loaded.encode(x), sae.encode(x), atol=0, rtol=0)


def test_identity_transform_leaves_inputs_untouched():
    x = activations(4)
    identity = InputTransform()
    assert identity.apply(x) is x and identity.restore(x, x) is x
    assert identity.restore_delta(x, x) is x


def test_restore_delta_is_the_difference_of_restores():
    x, a, b = activations(5), activations(6), activations(7)
    for mode in MODES:
        t = InputTransform(center=True, normalize=mode)
        torch.testing.assert_close(t.restore_delta(a - b, x), t.restore(a, x) - t.restore(b, x))


@pytest.mark.parametrize(
    ("flags", "hook", "center"),
    [
        ({"center_writing_weights": True}, "blocks.0.hook_resid_pre", True),
        ({"center_writing_weights": True}, "blocks.3.hook_mlp_out", True),
        ({"center_writing_weights": True}, "blocks.3.hook_attn_out", True),
        ({"center_writing_weights": True}, "hook_embed", True),
        ({"center_writing_weights": True}, "blocks.2.attn.hook_z", False),  # before W_O
        ({"center_writing_weights": False, "fold_ln": True}, "blocks.0.hook_resid_post", False),
        ({"fold_value_biases": True, "center_unembed": True}, "blocks.0.hook_resid_mid", False),
        ({}, None, False),
    ],
)
def test_model_processing_that_we_reproduce_or_that_changes_nothing(flags, hook, center):
    assert input_transform(flags, "none", hook, "sae") == InputTransform(center=center)


@pytest.mark.parametrize(
    ("flags", "normalize", "hook", "message"),
    [
        ({"fold_value_biases": True}, "none", "blocks.2.attn.hook_z", "per-head attention"),
        ({"refactor_factored_attn_matrices": True}, None, "blocks.2.attn.hook_z", "per-head"),
        ({"center_writing_weights": True}, "none", "blocks.0.mlp.hook_post", "residual-stream"),
        ({"center_writing_weights": True}, "none", None, "an unnamed hook"),
        ({"use_attn_result": True}, "none", HOOK, "use_attn_result=True"),
        ({}, "covariance_whitening", HOOK, "covariance_whitening"),
        ({}, "expected_average_only_in", HOOK, "scaling factor"),
    ],
)
def test_processing_we_cannot_reproduce_is_refused(flags, normalize, hook, message):
    with pytest.raises(UsageError, match=message) as caught:
        input_transform(flags, normalize, hook, "sae")
    assert str(caught.value).count(". ") == 0  # one sentence


def test_refusal_from_a_folder_names_the_folder(tmp_path):
    folder = save_saelens_folder(random_sae(HOOK, D_SAE, kind="relu"), tmp_path / "sae")
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["metadata"]["model_from_pretrained_kwargs"] = {"fold_value_biases": True}
    cfg["metadata"]["hook_name"] = "blocks.0.attn.hook_z"
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(UsageError, match=f"{folder} reads blocks.0.attn.hook_z"):
        load_saelens_folder(folder)


def test_a_hook_given_at_load_time_decides_where_centring_applies(tmp_path):
    from sae_hacking.saes.releases import load_sae

    sae = with_transform(random_sae(HOOK, D_SAE, kind="relu"), center=True)
    folder = save_saelens_folder(sae, tmp_path / "sae")
    assert load_sae(str(folder)).input_transform.center
    moved = load_sae(str(folder), hook_name="blocks.0.attn.hook_z")
    assert moved.input_transform == InputTransform()
    with pytest.raises(UsageError, match="not blocks.0.mlp.hook_post"):
        load_sae(str(folder), hook_name="blocks.0.mlp.hook_post")
