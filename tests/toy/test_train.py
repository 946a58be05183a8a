import json
from dataclasses import replace

import pytest
import torch

from sae_hacking.runs.options import RunDirOptions
from sae_hacking.saes.io import load_sae_checkpoint
from sae_hacking.toy.config import ARCHITECTURES as TRAINABLE
from sae_hacking.toy.config import ToyConfig
from sae_hacking.toy.experiment import run
from sae_hacking.toy.train import ToyTrainer

SMALL = dict(
    dataset_num_features=8,
    model_dim=16,
    sae_hidden_dim=8,
    dataset_k=2,
    sae_k=2,
    batch_size=64,
    eval_every=100,
    checkpoint_every=100,
    val_size=2000,
    device="cpu",
)


@pytest.mark.slow
@pytest.mark.parametrize("architecture", TRAINABLE)
def test_training_improves_recovery_then_saves_and_reloads(tmp_path, architecture):
    # Flat SAEs get 3E latents and k matched to the hierarchical SAE's L0 (k parents + k children).
    extra = {"sae_hidden_dim": 24, "sae_k": 4} if architecture != "hierarchical" else {}
    config = ToyConfig(
        architecture=architecture, max_step=600, lr=3e-3, plots=False, **{**SMALL, **extra}
    )
    trainer = ToyTrainer(config, tmp_path, quiet=True)
    before = trainer.evaluate()
    final = trainer.train()
    assert final["child_recovery_mean"] > before["child_recovery_mean"]
    assert final["fvu"] < 0.5 * before["fvu"]
    if architecture == "hierarchical":
        assert final["pair_detection_rate"] >= 0.75
    loaded = load_sae_checkpoint(tmp_path / "sae.safetensors")
    reloaded = ToyTrainer(config, tmp_path / "again", quiet=True)
    reloaded.sae.load_state_dict(loaded.state_dict())
    again = reloaded.evaluate()
    assert again["fvu"] == pytest.approx(final["fvu"], rel=1e-5)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    evals = [r["step"] for r in records if r["split"] == "eval"]
    assert evals == list(range(100, 601, 100))
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == list(range(50, 601, 50))  # every log_every steps
    assert all(r["tokens"] == r["step"] * config.batch_size for r in records)


@pytest.mark.slow
def test_resume_continues_exactly_where_it_stopped(tmp_path):
    settings = dict(
        architecture="hierarchical", lr=3e-3, plots=False, resample_every=50, dead_steps=20, **SMALL
    )
    straight = ToyTrainer(ToyConfig(max_step=400, **settings), tmp_path / "a", quiet=True)
    straight.train()
    # The same run stopped at step 200 (a checkpoint step), then resumed to 400.
    first = ToyConfig(max_step=200, **settings, run=RunDirOptions(str(tmp_path / "b"), quiet=True))
    run(first)
    run(replace(first, max_step=400, run=RunDirOptions(resume=str(tmp_path / "b"), quiet=True)))
    resumed = load_sae_checkpoint(tmp_path / "b" / "sae.safetensors")
    for name, tensor in straight.sae.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name


@pytest.mark.slow
def test_run_directory_has_the_promised_files(tmp_path):
    options = RunDirOptions(str(tmp_path / "run"), quiet=True)
    run_dir, metrics = run(
        ToyConfig(architecture="hierarchical", max_step=200, **SMALL, run=options)
    )
    names = {p.name for p in run_dir.iterdir()}
    for expected in (
        "args.yaml",
        "metrics.jsonl",
        "metrics.json",
        "sae.safetensors",
        "checkpoint.safetensors",
        "dataset.safetensors",
        "tensorboard",
        "feature_vs_feature_similarity.png",
        "decoder_vs_feature.png",
        "decoder_vs_feature_sorted.png",
        "latent_vs_latent_similarity.png",
        "decoder_norms.png",
        "training_curves.png",
    ):
        assert expected in names, expected
    assert not any(name.endswith(".tmp") for name in names)
    assert any((run_dir / "tensorboard").iterdir())
    assert (
        json.loads((run_dir / "metrics.json").read_text())["pair_detection_rate"]
        == (metrics["pair_detection_rate"])
    )
