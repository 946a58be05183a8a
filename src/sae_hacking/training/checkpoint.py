"""Checkpoints of the training engine and the checks that keep them sound: finite weights and
metrics, and checkpoint files that are whole and belong together (read before a model loads, so
that a resume that cannot go on says so at once and writes nothing).

A checkpoint is two files in the run directory: ``checkpoint.safetensors`` (the SAE, this
package's format, its step in the header) and ``checkpoint.trainer.pt`` (``step``, the firing
counters ``since_fired``, Adam's ``optimizer`` state, the learning-rate ``schedule``'s state and
``ranks``: the JSON list of every process's data-source state, one entry per torchrun rank).
Every trainer writes and reads exactly this.

Torch-free at import: a run reads a checkpoint's step before torch loads.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from sae_hacking.errors import FieldError

SAE_CHECKPOINT = "checkpoint.safetensors"
TRAINER_CHECKPOINT = "checkpoint.trainer.pt"


def json_safe(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` with NaN and infinities as ``None`` (JSON has no NaN: ``null`` instead)."""
    return {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()
    }


def all_finite(tensors) -> bool:
    """Whether every element of ``tensors`` is finite (one device sync for all of them)."""
    import torch

    checks = [torch.isfinite(t).all() for t in tensors if t.is_floating_point()]
    if not checks:
        return True
    # Adam's step counts may live on the host while the weights are on a GPU.
    return bool(torch.stack([c.to(checks[0].device) for c in checks]).all())


def checkpoint_step(run_dir: Path) -> int:
    """The step of ``run_dir``'s ``checkpoint.safetensors``, from its header alone (no torch);
    a truncated or foreign file is a :class:`FieldError` on ``resume``."""
    from safetensors import safe_open

    path = Path(run_dir) / SAE_CHECKPOINT
    try:
        with safe_open(str(path), framework="numpy") as handle:
            meta = json.loads((handle.metadata() or {})["sae_hacking"])
        return int(meta["extra"]["step"])
    except Exception as err:  # SafetensorError, OSError, missing keys, bad JSON
        raise FieldError(
            "resume",
            f"{path} is truncated or not a checkpoint of this trainer ({reason(err)}); the "
            "run cannot continue from it, start a new one.",
        ) from None


def read_trainer_state(run_dir: Path, world: int) -> dict[str, Any]:
    """``run_dir``'s ``checkpoint.trainer.pt`` on the CPU (its ``ranks`` parsed), checked: whole,
    of ``world`` processes, and of the step of ``checkpoint.safetensors``."""
    import torch

    path = Path(run_dir) / TRAINER_CHECKPOINT
    try:
        trainer = torch.load(path, map_location="cpu", weights_only=True)
        # Toy checkpoints written before the engine had no data-source states (one process).
        step, states = int(trainer["step"]), json.loads(trainer.get("ranks", "[{}]"))
        if not {"optimizer", "since_fired"} <= trainer.keys():
            raise KeyError("optimizer, since_fired")
    except Exception as err:  # torch.load raises many types on a truncated or foreign file
        raise FieldError(
            "resume",
            f"{path} is truncated or not a checkpoint of this trainer ({reason(err)}); the "
            "run cannot continue from it, start a new one.",
        ) from None
    if len(states) != world:
        raise FieldError(
            "resume",
            f"{run_dir} was trained by {len(states)} processes, not {world}; resume it with the "
            "same number of torchrun processes.",
        )
    sae_step = checkpoint_step(run_dir)
    if sae_step != step:
        # The two files are written one after the other; a crash between leaves them apart.
        raise FieldError(
            "resume",
            f"{run_dir}'s checkpoint files are of different steps ({SAE_CHECKPOINT}: {sae_step}, "
            f"{TRAINER_CHECKPOINT}: {step}; the run stopped while writing them); the run cannot "
            "continue exactly, start a new one.",
        )
    return {**trainer, "step": step, "ranks": states}


def reason(err: Exception) -> str:
    """The first sentence of an error from a library, for a one-line message."""
    text = str(err).strip().strip("'\"")
    text = text.splitlines()[0].split(". ")[0].rstrip(".") if text else ""
    return text or type(err).__name__
