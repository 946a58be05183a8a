"""SAE loaders: Gemma Scope npz, SAELens folders, own checkpoints, release names."""

import json
import time

import numpy as np
import pytest
import torch

from sae_hacking.errors import UsageError
from sae_hacking.saes.base import SAEInfo
from sae_hacking.saes.formats import (
    gemma_scope_hook_name,
    load_gemma_scope_npz,
    load_saelens_folder,
    save_saelens_folder,
)
from sae_hacking.saes.jumprelu import JumpReLUSAE
from sae_hacking.saes.releases import load_sae, resolve_release
from sae_hacking.saes.relu import ReLUSAE
from sae_hacking.saes.tiny import randomise_
from sae_hacking.saes.topk import TopKSAE

D_IN, D_SAE = 16, 40


def gemma_scope_arrays(seed=0, d_in=D_IN, d_sae=D_SAE):
    rng = np.random.default_rng(seed)
    return {
        "W_enc": rng.normal(size=(d_in, d_sae)).astype(np.float32),
        "W_dec": rng.normal(size=(d_sae, d_in)).astype(np.float32),
        "b_enc": rng.normal(size=d_sae).astype(np.float32),
        "b_dec": rng.normal(size=d_in).astype(np.float32),
        "threshold": rng.uniform(0.2, 2.0, size=d_sae).astype(np.float32),
    }


def randomised(sae, seed=0):
    return randomise_(sae, seed, scale=1.0)


def saes_of_each_kind():
    return [
        randomised(JumpReLUSAE(D_IN, D_SAE, info=SAEInfo("blocks.1.hook_mlp_out", "m/1-x"))),
        randomised(JumpReLUSAE(D_IN, D_SAE, apply_b_dec_to_input=True)),
        randomised(ReLUSAE(D_IN, D_SAE, info=SAEInfo("blocks.0.hook_resid_pre"))),
        randomised(TopKSAE(D_IN, D_SAE, k=5, info=SAEInfo("blocks.1.hook_resid_post"))),
    ]


def test_gemma_scope_npz_encodes_like_the_formula(tmp_path):
    arrays = gemma_scope_arrays()
    path = tmp_path / "gemma-scope-2b-pt-mlp" / "layer_3" / "width_16k" / "params.npz"
    path.parent.mkdir(parents=True)
    np.savez(path, **arrays)
    sae = load_gemma_scope_npz(path, dtype=torch.float64)
    x = np.random.default_rng(1).normal(size=(7, D_IN)) * 2
    pre = x @ arrays["W_enc"].astype(np.float64) + arrays["b_enc"]
    want = pre * (pre > arrays["threshold"])  # b_dec is not subtracted from the input
    got = sae.encode(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert 0 < (want != 0).mean() < 1
    recon = want @ arrays["W_dec"].astype(np.float64) + arrays["b_dec"]
    np.testing.assert_allclose(sae.decode(torch.from_numpy(want)).numpy(), recon, rtol=1e-12)
    assert (sae.d_in, sae.d_sae, sae.hook_name) == (D_IN, D_SAE, "blocks.3.hook_mlp_out")
    assert sae.W_dec.shape == (D_SAE, D_IN) and not sae.W_dec.requires_grad


def test_gemma_scope_npz_errors(tmp_path):
    arrays = gemma_scope_arrays()
    del arrays["threshold"]
    np.savez(tmp_path / "a.npz", **arrays)
    with pytest.raises(UsageError, match="lacks threshold"):
        load_gemma_scope_npz(tmp_path / "a.npz")
    arrays = gemma_scope_arrays()
    arrays["b_dec"] = arrays["b_dec"][:-1]
    np.savez(tmp_path / "b.npz", **arrays)
    with pytest.raises(UsageError, match=r"b_dec has shape \(15,\)"):
        load_gemma_scope_npz(tmp_path / "b.npz")
    (tmp_path / "c.npz").write_bytes(b"junk")
    with pytest.raises(UsageError, match="cannot be read"):
        load_gemma_scope_npz(tmp_path / "c.npz")


@pytest.mark.parametrize(
    "location, hook",
    [
        (
            "google/gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82",
            "blocks.12.hook_resid_post",
        ),
        ("google/gemma-scope-9b-it-mlp/layer_0/width_131k/canonical", "blocks.0.hook_mlp_out"),
        (
            "models--google--gemma-scope-2b-pt-att/snapshots/ab/layer_7/width_16k",
            "blocks.7.attn.hook_z",
        ),
        ("google/gemma-scope-2b-pt-res/embedding/width_4k/average_l0_6", "hook_embed"),
        ("some/folder/params.npz", None),
    ],
)
def test_gemma_scope_hook_names(location, hook):
    assert gemma_scope_hook_name(location) == hook


@pytest.mark.parametrize("index", range(4))
def test_saelens_folder_round_trip(tmp_path, index):
    sae = saes_of_each_kind()[index]
    save_saelens_folder(sae, tmp_path / "sae", model_name="tiny")
    loaded = load_saelens_folder(tmp_path / "sae")
    assert type(loaded) is type(sae) and loaded.config() == sae.config()
    assert (loaded.hook_name, loaded.neuronpedia_id) == (sae.hook_name, sae.neuronpedia_id)
    for name, tensor in sae.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    x = torch.randn(6, D_IN) * 3
    torch.testing.assert_close(loaded.encode(x), sae.encode(x), atol=1e-5, rtol=1e-6)


def test_saelens_old_flat_config_and_refusals(tmp_path):
    sae = saes_of_each_kind()[2]
    folder = save_saelens_folder(sae, tmp_path / "old")
    flat = {
        "d_in": D_IN,
        "d_sae": D_SAE,
        "hook_point": "blocks.4.hook_resid_pre",
        "activation_fn_str": "relu",
        "apply_b_dec_to_input": True,
        "normalize_activations": False,
    }
    (folder / "cfg.json").write_text(json.dumps(flat))
    loaded = load_saelens_folder(folder)
    assert isinstance(loaded, ReLUSAE) and loaded.hook_name == "blocks.4.hook_resid_pre"
    flat["normalize_activations"] = "expected_average_only_in"
    (folder / "cfg.json").write_text(json.dumps(flat))
    with pytest.raises(UsageError, match="normalize_activations='expected_average_only_in'"):
        load_saelens_folder(folder)
    flat.update(normalize_activations="none", architecture="gated")
    (folder / "cfg.json").write_text(json.dumps(flat))
    with pytest.raises(UsageError, match="'gated' is not supported"):
        load_saelens_folder(folder)


def test_topk_without_b_dec_on_input_is_folded(tmp_path):
    sae = saes_of_each_kind()[3]
    folder = save_saelens_folder(sae, tmp_path / "t")
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["apply_b_dec_to_input"] = False
    (folder / "cfg.json").write_text(json.dumps(cfg))
    loaded = load_saelens_folder(folder)
    x = torch.randn(5, D_IN)
    pre = x @ sae.W_enc_ME + sae.b_enc_E  # what SAELens computes without subtracting b_dec
    top = pre.topk(5, dim=-1)
    want = torch.zeros_like(pre).scatter_(-1, top.indices, top.values.relu())
    torch.testing.assert_close(loaded.encode(x), want, atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # imports sae-lens (seconds)
def test_saelens_itself_reads_our_folders_and_we_read_its(tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    for i, sae in enumerate(saes_of_each_kind()):
        folder = save_saelens_folder(sae, tmp_path / f"ours{i}")
        theirs = sae_lens.SAE.load_from_disk(str(folder))
        assert theirs.cfg.metadata.hook_name == sae.hook_name
        x = torch.randn(6, D_IN) * 3
        with torch.no_grad():
            torch.testing.assert_close(theirs.encode(x), sae.encode(x), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(theirs.decode(sae.encode(x)), sae.decode(sae.encode(x)))
        theirs.save_model(str(tmp_path / f"theirs{i}"))
        back = load_saelens_folder(tmp_path / f"theirs{i}")
        with torch.no_grad():
            torch.testing.assert_close(back.encode(x), theirs.encode(x), atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # imports sae-lens (seconds)
def test_registry_resolution_matches_saelens():
    sae_lens_dir = pytest.importorskip("sae_lens.loading.pretrained_saes_directory")
    from sae_lens.loading.pretrained_sae_loaders import get_gemma_2_config_from_hf

    directory = sae_lens_dir.get_pretrained_saes_directory()
    for release in (
        "gemma-scope-2b-pt-mlp-canonical",
        "gemma-scope-2b-pt-res",
        "gpt2-small-res-jb",
    ):
        lookup = directory[release]
        for sae_id in list(lookup.saes_map)[::7]:
            entry = resolve_release(release, sae_id)
            assert (entry.repo_id, entry.path) == (lookup.repo_id, lookup.saes_map[sae_id])
            assert entry.neuronpedia_id == lookup.neuronpedia_id[sae_id]
            if lookup.conversion_func == "gemma_2":
                cfg = get_gemma_2_config_from_hf(lookup.repo_id, entry.path, "cpu")
                assert entry.hook_name == cfg["hook_name"]


def test_the_legacy_default_release_resolves():
    entry = resolve_release("gemma-scope-2b-pt-mlp-canonical", "layer_20/width_65k/canonical")
    assert entry.repo_id == "google/gemma-scope-2b-pt-mlp"
    assert entry.path == "layer_20/width_65k/average_l0_88"
    assert entry.hook_name == "blocks.20.hook_mlp_out"
    assert entry.neuronpedia_id == "gemma-2-2b/20-gemmascope-mlp-65k"


def test_unknown_release_and_id_suggest_close_names(network_attempts):
    with pytest.raises(UsageError, match="did you mean gemma-scope-2b-pt-mlp-canonical"):
        load_sae("gemma-scope-2b-pt-mlp-canonicl", "layer_20/width_65k/canonical")
    assert network_attempts == []  # the registry is read from the installed sae-lens
    with pytest.raises(UsageError, match="did you mean layer_20/width_65k/canonical"):
        load_sae("gemma-scope-2b-pt-mlp-canonical", "layer_20/width_65k/canonicl")
    with pytest.raises(UsageError, match="needs an SAE id"):
        load_sae("gemma-scope-2b-pt-mlp-canonical")


def test_release_download_offline_fails_fast_and_clearly(tmp_path, monkeypatch, network_attempts):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    start = time.monotonic()
    with pytest.raises(UsageError) as info:
        load_sae("gemma-scope-2b-pt-mlp-canonical", "layer_20/width_65k/canonical")
    # Offline: no connection at all (huggingface_hub's retries would show up as attempts); the
    # generous time bound only catches a hang.
    assert network_attempts == [] and time.monotonic() - start < 60
    message = str(info.value)
    assert "google/gemma-scope-2b-pt-mlp/layer_20/width_65k/average_l0_88/params.npz" in message
    assert "HF_HUB_OFFLINE" in message and "HF_HOME" in message


def test_release_download_with_an_unreachable_hub_probes_once(
    tmp_path, monkeypatch, unreachable_hub, network_attempts
):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(UsageError, match="127.0.0.1:9 cannot be reached"):
        load_sae("gemma-scope-2b-pt-mlp-canonical", "layer_20/width_65k/canonical")
    assert network_attempts == [unreachable_hub]  # the probe; huggingface_hub never tried


def fake_hub_cache(cache, repo_id, files):
    """Lay files out as huggingface_hub's cache holds a downloaded snapshot."""
    commit = "0" * 40
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    for name, write in files.items():
        target = repo / "snapshots" / commit / name
        target.parent.mkdir(parents=True, exist_ok=True)
        write(target)


def test_releases_load_from_the_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    arrays = gemma_scope_arrays()
    fake_hub_cache(
        tmp_path,
        "google/gemma-scope-2b-pt-mlp",
        {"layer_20/width_65k/average_l0_88/params.npz": lambda p: np.savez(p, **arrays)},
    )
    sae = load_sae("gemma-scope-2b-pt-mlp-canonical", "layer_20/width_65k/canonical")
    assert isinstance(sae, JumpReLUSAE) and torch.equal(
        sae.threshold_E, torch.from_numpy(arrays["threshold"])
    )
    assert sae.info == SAEInfo(
        "blocks.20.hook_mlp_out",
        "gemma-2-2b/20-gemmascope-mlp-65k",
        "gemma-scope-2b-pt-mlp-canonical",
        "layer_20/width_65k/canonical",
    )
    relu = saes_of_each_kind()[2]
    staged = save_saelens_folder(relu, tmp_path / "staged")
    fake_hub_cache(
        tmp_path,
        "jbloom/GPT2-Small-SAEs-Reformatted",
        {
            f"blocks.0.hook_resid_pre/{name}": lambda p, n=name: p.write_bytes(
                (staged / n).read_bytes()
            )
            for name in ("cfg.json", "sae_weights.safetensors")
        },
    )
    sae = load_sae("gpt2-small-res-jb", "blocks.0.hook_resid_pre")
    assert isinstance(sae, ReLUSAE) and torch.equal(sae.W_dec, relu.W_dec)
    assert (sae.hook_name, sae.neuronpedia_id) == ("blocks.0.hook_resid_pre", "gpt2-small/0-res-jb")


def test_local_paths_load_by_layout(tmp_path):
    from sae_hacking.saes.io import save_sae_checkpoint

    arrays = gemma_scope_arrays()
    (tmp_path / "gs" / "layer_1").mkdir(parents=True)
    np.savez(tmp_path / "gs" / "layer_1" / "params.npz", **arrays)
    relu = saes_of_each_kind()[2]
    save_saelens_folder(relu, tmp_path / "lens")
    save_sae_checkpoint(saes_of_each_kind()[0], tmp_path / "own.safetensors")
    assert isinstance(load_sae(str(tmp_path / "gs" / "layer_1")), JumpReLUSAE)
    assert isinstance(load_sae(str(tmp_path / "gs" / "layer_1" / "params.npz")), JumpReLUSAE)
    assert isinstance(load_sae(str(tmp_path / "gs"), "layer_1"), JumpReLUSAE)  # id = sub-path
    assert isinstance(load_sae(str(tmp_path / "lens")), ReLUSAE)
    own = load_sae(str(tmp_path / "own.safetensors"), dtype=torch.float64)
    assert isinstance(own, JumpReLUSAE) and own.W_dec.dtype == torch.float64
    assert own.hook_name == "blocks.1.hook_mlp_out"
    assert load_sae(str(tmp_path / "lens"), hook_name="blocks.9.hook_mlp_out").hook_name == (
        "blocks.9.hook_mlp_out"
    )
    with pytest.raises(UsageError, match="no such file"):
        load_sae(str(tmp_path / "gs"), "layer_2")
    (tmp_path / "other").mkdir()
    with pytest.raises(UsageError, match="not an SAE this loader reads"):
        load_sae(str(tmp_path / "other"))


def _own_checkpoint(tmp_path, tensors=None, metadata=None):
    """A safetensors file in our checkpoint layout with its tensors or metadata replaced."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from sae_hacking.saes.io import METADATA_KEY, save_sae_checkpoint

    good = save_sae_checkpoint(saes_of_each_kind()[0], tmp_path / "good.safetensors")

    with safe_open(str(good), framework="pt") as handle:
        state = {name: handle.get_tensor(name) for name in handle.keys()}
        meta = handle.metadata()[METADATA_KEY]
    path = tmp_path / "bad.safetensors"
    save_file(
        tensors(state) if tensors else state,
        str(path),
        metadata={METADATA_KEY: metadata(meta) if metadata else meta},
    )
    return str(path)


@pytest.mark.parametrize(
    ("tensors", "metadata", "message"),
    [
        (lambda s: {k: v for k, v in s.items() if k != "W_dec_EM"}, None, "it lacks W_dec_EM"),
        (lambda s: {**s, "W_x": s["b_dec_M"].clone()}, None, "it has unknown W_x"),
        (lambda s: {**s, "b_dec_M": s["b_dec_M"][:3]}, None, r"b_dec_M has shape \(3,\)"),
        (None, lambda m: "{not json", "metadata is not JSON"),
        (None, lambda m: "[]", "has no config object"),
        (None, lambda m: json.dumps({"config": {"d_in": 16}}), "d_sae must be a positive .* None"),
        (None, lambda m: m.replace('"jumprelu"', '"wavelet"'), "unknown SAE architecture"),
        (None, lambda m: m.replace('"d_sae": 40', '"d_sae": "x"'), "d_sae must be a positive"),
        (None, lambda m: m.replace('"d_in": 16', '"d_in": 16, "color": 1'), "does not describe"),
    ],
)
def test_a_malformed_own_checkpoint_is_one_sentence(tmp_path, tensors, metadata, message):
    path = _own_checkpoint(tmp_path, tensors, metadata)
    with pytest.raises(UsageError, match=message) as refused:
        load_sae(path)
    assert str(refused.value).startswith(path) and "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ("{}", "gives no SAE size: d_in must be a positive integer, got None"),
        ("[1, 2]", "holds a JSON list, not a SAELens config object"),
        ('{"d_in": 16, "d_sae": 0}', "d_sae must be a positive integer, got 0"),
        ('{"d_in": 16, "d_sae": 40, "metadata": 5}', "not a SAELens config this loader reads"),
        ('{"d_in": 16, "d_sae": 40, "architecture": []}', "not a SAELens config this loader"),
    ],
)
def test_a_malformed_saelens_config_is_one_sentence(tmp_path, cfg, message):
    save_saelens_folder(saes_of_each_kind()[2], tmp_path / "lens")
    (tmp_path / "lens" / "cfg.json").write_text(cfg)
    with pytest.raises(UsageError, match=message) as refused:
        load_sae(str(tmp_path / "lens"))
    assert str(refused.value).startswith(str(tmp_path / "lens" / "cfg.json"))
