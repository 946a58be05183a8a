"""One toy run end to end: run directory, training, final metrics and plots; and resuming it.

A toy run directory has the ``run.json`` of every run (:mod:`sae_hacking.runs.record`), so it is
resumed by the same rule as the streamed runs: the saved settings, with only ``max_step``
(more steps, also for a finished run), the device, plots and cadence of logs and checkpoints
allowed to change.
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

from sae_hacking.config import to_flat
from sae_hacking.errors import FieldError, UsageError
from sae_hacking.folders import check_new_folder, create_new_folder, removed_on_failure
from sae_hacking.runs.files import default_run_dir, write_args_yaml
from sae_hacking.runs.record import (
    RunRecord,
    read_record,
)
from sae_hacking.toy.config import KIND, ToyConfig

OUTPUTS = ("metrics.json", "sae.safetensors")
CHECKPOINT = "checkpoint.safetensors"
SUMMARY_KEYS = (
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


def record_of(run_dir: Path, config: ToyConfig) -> RunRecord:
    return RunRecord.for_config(run_dir, KIND, config, OUTPUTS)


def finish(trainer, report: bool = True) -> dict[str, float | int]:
    metrics = trainer.train()
    if trainer.config.plots:
        from sae_hacking.toy.plots import save_all_plots

        save_all_plots(
            trainer.sae, trainer.dataset, trainer.run_dir, trainer.run_dir / "metrics.jsonl"
        )
    if report:
        # The summary is the result, so --quiet (no progress bar) still prints it.
        print(f"run directory: {trainer.run_dir}", file=sys.stderr)
        for key in SUMMARY_KEYS:
            if key in metrics:
                print(f"  {key:32s} {metrics[key]:.4f}")
    return metrics


def run(config: ToyConfig) -> tuple[Path, dict[str, float | int]]:
    """Train (or, with ``config.run.resume``, continue training) and evaluate one toy SAE."""
    if config.run.resume is not None:
        return _resume(config)
    path = Path(config.run.output_dir or default_run_dir(slug(config)))
    check_new_folder(path, "output_dir")
    from sae_hacking.device import resolve_device
    from sae_hacking.toy.train import ToyTrainer

    resolve_device(config.device)  # a missing GPU is reported before anything is written
    run_dir, top = create_new_folder(path, "output_dir")
    # Before its first checkpoint a run has nothing to resume from: if it fails, it goes.
    with removed_on_failure(run_dir, top, keep=(run_dir / CHECKPOINT).is_file):
        record_of(run_dir, config).write()
        write_args_yaml(run_dir, to_flat(config))
        use_few_threads(config)
        trainer = ToyTrainer(config, run_dir, quiet=config.run.quiet)
        trainer.save_dataset()
        return run_dir, finish(trainer)


def _resume(config: ToyConfig) -> tuple[Path, dict[str, float | int]]:
    run_dir = Path(config.run.resume)
    record = read_record(run_dir, KIND)  # before torch: a wrong folder fails fast
    from sae_hacking.device import resolve_device
    from sae_hacking.toy.train import ToyTrainer

    resolve_device(config.device)
    if record.is_complete() and to_flat(config)["max_step"] == record.config["max_step"]:
        print(f"{run_dir} is complete (resume it with more steps to train on).", file=sys.stderr)
        return run_dir, json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    if not (run_dir / CHECKPOINT).is_file():
        raise FieldError("resume", f"{run_dir} has no checkpoint yet; start the run again instead.")
    use_few_threads(config)
    trainer = ToyTrainer(config, run_dir, quiet=config.run.quiet)
    try:
        trainer.load_checkpoint()
    except UsageError:
        raise
    except (OSError, RuntimeError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as err:
        raise FieldError(
            "resume",
            f"{run_dir}: its checkpoint cannot be read ({type(err).__name__}: {err}); the run "
            "cannot continue from it.",
        ) from None
    # Only a resume that can go on records its settings: a refused or failed one writes nothing.
    if record_of(run_dir, config).config != record.config:
        record_of(run_dir, config).write()
    return run_dir, finish(trainer)
