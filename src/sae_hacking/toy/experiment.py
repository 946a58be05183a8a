"""One toy run end to end: run directory, training, final metrics and plots; and resuming it.

A toy run directory has the ``run.json`` of every run (:mod:`sae_hacking.runs.record`), so it is
resumed by the same rule as the streamed runs: the saved settings, with only ``max_step``
(more steps, also for a finished run), the device, plots and cadence of logs and checkpoints
allowed to change.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sae_hacking.config import to_flat
from sae_hacking.errors import FieldError
from sae_hacking.runs.rundir import RunDir
from sae_hacking.toy.config import KIND, ToyConfig

OUTPUTS = ("metrics.json", "sae.safetensors")
CHECKPOINT = "checkpoint.safetensors"
SUMMARY_KEYS = (
    "saelens_mcc",
    "saelens_uniqueness",
    "saelens_f1_score",
    "feature_recovery_mean",
    "pair_detection_rate",
    "single_feature_detection_rate",
    "child_recovery_mean",
    "child_recovery_min",
    "parent_recovery_mean",
    "absorption_rate",
    "dead_parent_frac",
    "dead_child_frac",
    "l0",
    "fvu",
    "explained_variance",
    "steps_per_s",
)


def slug(config: ToyConfig) -> str:
    return (
        f"{config.architecture}-E{config.sae_hidden_dim}-A{config.dataset_num_features}"
        f"-M{config.model_dim}-seed{config.seed}"
    )


def use_few_threads(config: ToyConfig) -> None:
    """One intra-op thread for small toy SAEs on the CPU: their matrices are so small that
    spreading each op over cores costs more than it gains (measured: ~15 % more steps/s)."""
    import torch

    if config.model_dim * config.sae_hidden_dim * 3 < 2**20:
        torch.set_num_threads(1)


def finish(trainer, report: bool = True) -> dict[str, float | int]:
    metrics = trainer.train()
    if trainer.config.plots:
        from sae_hacking.toy.plots import save_all_plots, save_synthetic_plots

        save = save_synthetic_plots if trainer.synthetic else save_all_plots
        save(trainer.sae, trainer.dataset, trainer.run_dir, trainer.run_dir / "metrics.jsonl")
    if report:
        # The summary is the result, so --quiet (no progress bar) still prints it.
        print(f"run directory: {trainer.run_dir}", file=sys.stderr)
        from sae_hacking.training.metrics import summary_lines

        for line in summary_lines(metrics, SUMMARY_KEYS, width=32):
            print(line)
    return metrics


def run(config: ToyConfig) -> tuple[Path, dict[str, float | int]]:
    """Train (or, with ``config.run.resume``, continue training) and evaluate one toy SAE."""
    rundir = RunDir.plan(config, KIND, slug(config), OUTPUTS)  # before torch: fails fast
    from sae_hacking.device import resolve_device
    from sae_hacking.toy.train import ToyTrainer

    resolve_device(config.device)  # a missing GPU is reported before anything is written
    if rundir.resumed:
        return _resume(config, rundir)
    # Before its first checkpoint a run has nothing to resume from: if it fails, it goes.
    with rundir.started(keep=lambda path: (path / CHECKPOINT).is_file()):
        use_few_threads(config)
        trainer = ToyTrainer(config, rundir.path, quiet=config.run.quiet)
        trainer.save_dataset()
        return rundir.path, finish(trainer)


def _resume(config: ToyConfig, rundir: RunDir) -> tuple[Path, dict[str, float | int]]:
    from sae_hacking.toy.train import ToyTrainer

    run_dir = rundir.path
    if rundir.complete and to_flat(config)["max_step"] == rundir.record.config["max_step"]:
        print(f"{run_dir} is complete (resume it with more steps to train on).", file=sys.stderr)
        return run_dir, json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    if not (run_dir / CHECKPOINT).is_file():
        raise FieldError("resume", f"{run_dir} has no checkpoint yet; start the run again instead.")
    use_few_threads(config)
    trainer = ToyTrainer(config, run_dir, quiet=config.run.quiet)
    trainer.load_checkpoint()  # a checkpoint that cannot be read is one line, nothing written
    # Only a resume that can go on records its settings: a refused or failed one writes nothing.
    rundir.update(config)
    return run_dir, finish(trainer)
