"""The conventions SAELens's registry declares: every release with config overrides is listed
here, so a new SAELens release with an override we do not know fails this test (and fails
loudly when loaded) instead of loading silently with the wrong inputs."""

import re

import pytest

from sae_hacking.errors import UsageError
from sae_hacking.saes import releases
from sae_hacking.saes.processing import InputTransform, input_transform

# SAELens takes seconds to import: not at collection, and not in the quick loop.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _saelens():
    pytest.importorskip("sae_lens")


CENTRE = {"model_from_pretrained_kwargs": {"center_writing_weights": True}}
# Every release whose overrides change what its SAEs see, with those overrides.
PROCESSING_RELEASES = {
    "gpt2-small-res-jb": CENTRE,
    "gpt2-small-res-jb-feature-splitting": CENTRE,
    "gpt2-small-mlp-tm": CENTRE,
    "mistral-7b-res-wg": {"normalize_activations": "constant_norm_rescale"},
}
# Every override key the installed registry uses.
OVERRIDE_KEYS = {
    "dataset_path",
    "hook_name",
    "model_from_pretrained_kwargs",
    "model_name",
    "normalize_activations",
}


def overridden():
    return {
        name: entry["config_overrides"]
        for name, entry in releases.read_registry().items()
        if entry.get("config_overrides")
    }


@pytest.mark.slow
def test_every_override_key_is_known():
    keys = {key for overrides in overridden().values() for key in overrides}
    assert keys == OVERRIDE_KEYS
    assert keys <= releases.KNOWN_OVERRIDES


def test_every_release_with_processing_overrides_is_listed():
    processing = {
        name: {k: v for k, v in overrides.items() if k in releases.PROCESSING_OVERRIDES}
        for name, overrides in overridden().items()
    }
    assert {name: o for name, o in processing.items() if o} == PROCESSING_RELEASES


@pytest.mark.parametrize("release", sorted(PROCESSING_RELEASES))
def test_processing_releases_resolve_to_a_transform_we_reproduce(release):
    entry = releases.read_registry()[release]
    for item in entry["saes"]:
        resolved = releases.resolve_release(release, str(item["id"]))
        assert resolved.overrides == entry["config_overrides"]
        # These releases' ids start with the hook their SAEs read.
        hook = re.match(r"blocks\.\d+\.hook_[a-z]+_(pre|mid|post|out)", resolved.sae_id)
        transform = input_transform(
            resolved.overrides.get("model_from_pretrained_kwargs"),
            resolved.overrides.get("normalize_activations"),
            hook.group(0),
            release,
        )
        assert not transform.is_identity


def test_registry_scaling_factors_reach_the_loader():
    entry = releases.resolve_release("gpt2-small-mlp-tm", "blocks.0.hook_mlp_out")
    assert entry.norm_scaling_factor == pytest.approx(1.049317316132615)
    plain = releases.resolve_release("gpt2-small-res-jb", "blocks.0.hook_resid_pre")
    assert plain.norm_scaling_factor is None


def test_an_unknown_override_fails_at_load_time(monkeypatch):
    fake = {
        "new-release": {
            "repo_id": "someone/saes",
            "model": "gpt2-small",
            "conversion_func": None,
            "config_overrides": {"hook_name": "blocks.0.hook_resid_pre", "whiten_inputs": True},
            "saes": [{"id": "a", "path": "a"}],
        }
    }
    monkeypatch.setattr(releases, "read_registry", lambda: fake)
    with pytest.raises(UsageError, match="new-release sets config override whiten_inputs=True"):
        releases.resolve_release("new-release", "a")
    fake["new-release"]["config_overrides"] = {"model_from_pretrained_kwargs": {"x": True}}
    entry = releases.resolve_release("new-release", "a")
    with pytest.raises(UsageError, match="x=True"):
        input_transform(entry.overrides["model_from_pretrained_kwargs"], None, "hook_embed", "a")
    assert InputTransform().is_identity


def test_gemma_scope_embedding_saes_absorb_the_embedding_scale(tmp_path):
    """Gemma Scope's embedding SAEs were trained on unscaled embeddings; hook_embed is scaled by
    sqrt(d_model), so the loader rescales as SAELens does (W_enc / sqrt(d), W_dec * sqrt(d))."""
    import numpy as np

    from sae_hacking.saes.formats import load_gemma_scope_npz

    rng = np.random.default_rng(0)
    d_in, d_sae = 16, 8
    arrays = {
        "W_enc": rng.normal(size=(d_in, d_sae)).astype(np.float32),
        "W_dec": rng.normal(size=(d_sae, d_in)).astype(np.float32),
        "b_enc": rng.normal(size=d_sae).astype(np.float32),
        "b_dec": rng.normal(size=d_in).astype(np.float32),
        "threshold": np.abs(rng.normal(size=d_sae)).astype(np.float32),
    }
    for folder, scaled in (
        ("embedding/width_4k/average_l0_6", True),
        ("layer_3/width_4k/x", False),
    ):
        path = tmp_path / "gemma-scope-2b-pt-res" / folder / "params.npz"
        path.parent.mkdir(parents=True)
        np.savez(path, **arrays)
        sae = load_gemma_scope_npz(path)
        factor = d_in**0.5 if scaled else 1.0
        assert sae.hook_name == ("hook_embed" if scaled else "blocks.3.hook_resid_post")
        np.testing.assert_allclose(sae.W_enc_ME.numpy(), arrays["W_enc"] / factor, rtol=1e-6)
        np.testing.assert_allclose(sae.W_dec_EM.numpy(), arrays["W_dec"] * factor, rtol=1e-6)
