"""``sae-hacking train`` in-process on a tiny model: learning, metrics, exact resume, cache,
exports (ours and SAELens's), and the trained SAE in the absorption commands."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from sae_hacking.config import replace_flat
from sae_hacking.errors import FieldError
from sae_hacking.saes.releases import load_sae
from sae_hacking.train.config import TrainConfig
from sae_hacking.train.run import run
from sae_hacking.training import engine as engine_module
from tests.train.train_testkit import HOOK, records


def raw_acts(lm, config: TrainConfig, n: int = 8) -> torch.Tensor:
    texts = open(config.text.dataset_id).read().splitlines()[:n]
    batch = lm.tokenize(texts, config.text.max_tokens_in_prompt)
    return lm.read(batch.input_ids_BS, batch.attention_mask_BS, [HOOK])[HOOK][
        batch.real_token_mask_BS
    ].clone()


@pytest.mark.slow
def test_topk_learns_and_exports(make_config, tiny_lm):
    config = make_config()
    run_dir, metrics = run(config)
    train = records(run_dir, "train")
    assert train[-1]["loss"] < 0.5 * train[0]["loss"]
    assert metrics["fvu"] < 0.3
    assert metrics["l0"] == pytest.approx(16)
    assert metrics["step"] == 200 and metrics["tokens"] == 200 * 128
    for key in ("ce_clean", "ce_spliced", "ce_zero_ablated", "ce_loss_recovered", "dead_frac"):
        assert key in metrics
    assert len(records(run_dir, "eval")) == 4  # steps 50, 100, 150, 200
    assert (run_dir / "tensorboard").is_dir() and (run_dir / "args.yaml").is_file()
    # Our export and SAELens's folder take raw activations and agree with each other.
    ours = load_sae(str(run_dir / "sae.safetensors"))
    assert ours.hook_name == HOOK
    x_TM = raw_acts(tiny_lm("gemma2"), config)
    recon = ours(x_TM)
    fvu = ((recon - x_TM) ** 2).sum() / ((x_TM - x_TM.mean(0)) ** 2).sum()
    assert fvu < 0.4
    from sae_lens import SAE as SAELensSAE

    theirs = SAELensSAE.load_from_disk(str(run_dir / "saelens"), device="cpu")
    torch.testing.assert_close(theirs.encode(x_TM), ours.encode(x_TM), atol=1e-4, rtol=1e-4)
    cfg = json.loads((run_dir / "saelens" / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == HOOK
    assert cfg["metadata"]["model_name"] == config.model.name
    assert cfg["metadata"]["neuronpedia_id"] is None


def test_relu_l1_reaches_an_l0_target(make_config):
    _, weak = run(make_config("weak", architecture="relu", l1_coefficient=0.5, max_step=120))
    _, strong = run(make_config("strong", architecture="relu", l1_coefficient=8.0, max_step=120))
    assert strong["l0"] < weak["l0"]
    assert strong["l0"] < 128 / 4  # sparse: under a quarter of the latents per token
    assert weak["fvu"] < 0.5


@pytest.mark.parametrize("remedy", ["aux-k", "resampling"])
def test_exact_resume_after_a_crash(make_config, monkeypatch, remedy):
    # Several blocks per epoch and more than one epoch, with a decaying learning rate; dead
    # latents revived by the auxiliary-k loss, or resampled from the block being read.
    base = {"max_step": 24, "checkpoint_every": 8, "lr_decay": "linear", "eval_every": 12}
    if remedy == "resampling":
        base.update(k=2, aux_k_coefficient=0.0, resample_every=5, dead_tokens=128)
    whole_dir, whole = run(make_config("whole", **base))
    real_step = engine_module.train_step
    calls = {"n": 0}

    def crash_at_step_11(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 11:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(engine_module, "train_step", crash_at_step_11)
    crashed = make_config("crashed", **base)
    with pytest.raises(KeyboardInterrupt):
        run(crashed)
    monkeypatch.setattr(engine_module, "train_step", real_step)
    assert not (whole_dir.parent / "crashed" / "sae.safetensors").exists()
    resumed = replace_flat(crashed, {"resume": crashed.run.output_dir})
    resumed_dir, again = run(resumed)
    for name in ("sae.safetensors", "checkpoint.safetensors"):
        a, b = load_file(whole_dir / name), load_file(resumed_dir / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    assert again["fvu"] == whole["fvu"]
    # A finished run resumed as it is does nothing; given more tokens it trains on.
    assert run(resumed)[1]["step"] == 24
    _, longer = run(replace_flat(resumed, {"max_step": 30}))
    assert longer["step"] == 30


def test_activation_cache_replays_the_model(make_config, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first_dir, _ = run(make_config("first", activation_cache=str(cache), max_step=20))
    assert sorted(p.name for p in cache.iterdir())[0] == "block-000000000000.safetensors"
    from sae_hacking.train import activations

    def no_model(self, start_row):
        raise AssertionError("the model ran although the cache holds this block")

    monkeypatch.setattr(activations.ActivationSource, "_compute", no_model)
    second_dir, _ = run(make_config("second", activation_cache=str(cache), max_step=20))
    a, b = load_file(first_dir / "sae.safetensors"), load_file(second_dir / "sae.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(FieldError, match="caches other activations.*hook"):
        run(make_config("other", activation_cache=str(cache), hook="blocks.0.hook_resid_post"))


@pytest.mark.parametrize(
    "architecture", ["batchtopk", "jumprelu", "matryoshka", "hierarchical", "tiered"]
)
def test_every_architecture_trains(make_config, architecture):
    changes = {"architecture": architecture, "max_step": 60, "eval_every": 60}
    if architecture in ("hierarchical", "tiered"):
        changes.update(sae_hidden_dim=32, k=4)
    if architecture == "jumprelu":
        changes.update(l0_coefficient=0.01, lr=1e-3)
    run_dir, metrics = run(make_config(architecture, **changes))
    train = records(run_dir, "train")
    assert train[-1]["mse"] < train[0]["mse"]
    assert metrics["fvu"] < 1.0
    assert (run_dir / "saelens").is_dir() == (architecture not in ("hierarchical", "tiered"))
    loaded = load_sae(str(run_dir / "sae.safetensors"))
    assert loaded.architecture == architecture


def test_per_batch_normalisation_exports_raw_space(make_config, tiny_lm):
    config = make_config("perbatch", normalize="per_batch", max_step=100)
    run_dir, metrics = run(config)
    assert metrics["fvu"] < 0.4
    sae = load_sae(str(run_dir / "sae.safetensors"))
    x_TM = raw_acts(tiny_lm("gemma2"), config)
    fvu = ((sae(x_TM) - x_TM) ** 2).sum() / ((x_TM - x_TM.mean(0)) ** 2).sum()
    assert fvu < 0.5


def test_bad_inputs_name_the_setting(make_config, tmp_path):
    with pytest.raises(FieldError, match="k"):
        make_config(k=500)
    with pytest.raises(FieldError, match="buffer_tokens"):
        make_config(buffer_tokens=64)
    from sae_hacking.errors import UsageError

    config = make_config("nohook", hook="blocks.7.hook_resid_post")
    with pytest.raises(UsageError, match="layer 7"):
        run(config)
    assert not (tmp_path / "nohook").exists()
    empty = tmp_path / "empty.txt"
    empty.write_text("just one line\n")
    with pytest.raises(FieldError, match="training tokens"):
        run(make_config("empty", dataset_id=str(empty), eval_prompts=0))


def test_only_count_tokens(make_config, tiny_lm, capsys):
    config = make_config(only_count_tokens=True, n_prompts=40)
    _, counts = run(config)
    lm = tiny_lm("gemma2")
    texts = open(config.text.dataset_id).read().splitlines()[8:48]
    batch = lm.tokenize(texts, 32)
    assert counts == {"prompts": 40, "tokens": int(batch.real_token_mask_BS.sum())}
    assert "40 prompts" in capsys.readouterr().out


def test_cli_errors_are_one_line(make_config, capsys, tmp_path):
    from sae_hacking.cli import main

    config = make_config()
    base = ["train", "--model", config.model.name, "--dataset-id", config.text.dataset_id]
    base += ["--device", "cpu", "--quiet"]
    assert main([*base, "--k", "500", "--sae-hidden-dim", "64"]) == 2
    assert "--k (500) must be at most --sae-hidden-dim (64)" in capsys.readouterr().err
    out = tmp_path / "x"
    assert main([*base, "--hook", "blocks.5.hook_mlp_out", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "layer 5" in err and not out.exists()
    with pytest.raises(SystemExit) as exit_info:
        main([*base, "--architecture", "gated"])
    assert exit_info.value.code == 2
    assert main([*base, "--train-tokens", "0"]) == 2
    assert "--train-tokens must be positive" in capsys.readouterr().err


@pytest.mark.slow
def test_trained_saes_work_in_the_absorption_commands(make_config, random_sae_path, tmp_path):
    from sae_hacking.cli import main

    config = make_config("trained", max_step=20, eval_every=20)
    run_dir, _ = run(config)
    common = ["--model", config.model.name, "--dataset-id", config.text.dataset_id]
    common += ["--n-prompts", "10", "--max-tokens", "16", "--device", "cpu", "--quiet"]
    for name, sae in (("ours", run_dir / "sae.safetensors"), ("saelens", run_dir / "saelens")):
        out = tmp_path / f"co-{name}"
        argv = ["cooccurrences", *common, "--ablator-sae-release", str(sae)]
        assert main([*argv, "--output-dir", str(out)]) == 0
        assert (out / "cooccurrences.safetensors.zst").is_file()
    ablator = random_sae_path("blocks.0.hook_mlp_out", 32)
    out = tmp_path / "ablate"
    argv = ["ablate", *common, "--ablator-sae-release", str(ablator)]
    argv += ["--reader-sae-release", str(run_dir / "saelens"), "--abridge-ablations-to", "3"]
    assert main([*argv, "--output-dir", str(out)]) == 0
    assert (out / "ablations.safetensors.zst").is_file()


def test_resampling_revives_the_dead_latents_of_lm_training(make_config, monkeypatch):
    from sae_hacking.training.engine import Engine

    moved = []
    real = Engine.resample_dead

    def counting(self, inputs):
        moved.append(real(self, inputs))
        return moved[-1]

    monkeypatch.setattr(Engine, "resample_dead", counting)
    # k = 2 of 128 latents and a one-step dead window: most latents count as dead at once.
    config = make_config(k=2, aux_k_coefficient=0.0, max_step=20, resample_every=5, dead_tokens=128)
    run(config)
    assert len(moved) == 4 and sum(moved) > 0
