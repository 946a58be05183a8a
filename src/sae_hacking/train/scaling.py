"""How activations are scaled before the SAE sees them, and how that is folded away at export.

- ``expected_norm`` (SAELens's ``expected_average_only_in``): ``x' = s x`` with
  ``s = sqrt(M) / mean ||x||`` estimated once, on the run's first block, so one learning rate
  and one sparsity coefficient suit every model and layer.
- ``per_batch`` (the legacy scripts'): ``x' = (x - mean) / std * sqrt(M)`` with the mean and std of all
  elements of each batch. The exported SAE uses the running averages of both, the one affine
  map that stands for them.
- ``none``: ``x' = x``.

Either way ``x' = (x - shift) * scale``, which :func:`exported` folds into a copy of the SAE, so
the SAE a user loads takes the model's raw activations.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from jaxtyping import Float

from sae_hacking.saes.base import SAE


@dataclass
class Scaling:
    mode: str
    d_model: int
    scale: float = 1.0  # expected_norm: fixed once estimated
    estimated: bool = False
    mean_sum: float = 0.0  # per_batch: sums of the batches' means and stds (float64 on host)
    std_sum: float = 0.0
    batches: int = 0

    def estimate(self, acts_TM: Float[torch.Tensor, "T M"]) -> bool:
        """Fix ``expected_norm``'s scale from these activations (the first block); whether it
        was fixed now."""
        if self.mode != "expected_norm" or self.estimated:
            return False
        mean_norm = float(acts_TM.double().norm(dim=-1).mean())
        self.scale = math.sqrt(self.d_model) / mean_norm if mean_norm > 0 else 1.0
        self.estimated = True
        return True

    def apply(self, x_BM: Float[torch.Tensor, "B M"]) -> Float[torch.Tensor, "B M"]:
        if self.mode == "expected_norm":
            return x_BM * self.scale
        if self.mode == "per_batch":
            mean, std = x_BM.mean(), x_BM.std()
            # Host floats keep the running sums in float64 and in the checkpoint's JSON; the
            # sync is the price of the legacy mode (a few microseconds a step).
            self.mean_sum += float(mean)
            self.std_sum += float(std)
            self.batches += 1
            return (x_BM - mean) / std * math.sqrt(self.d_model)
        return x_BM

    def affine(self) -> tuple[float, float]:
        """``(shift, scale)`` with ``x' = (x - shift) * scale`` for the export."""
        if self.mode == "per_batch" and self.batches:
            mean, std = self.mean_sum / self.batches, self.std_sum / self.batches
            return mean, math.sqrt(self.d_model) / std
        if self.mode == "expected_norm":
            return 0.0, self.scale
        return 0.0, 1.0

    def state(self) -> dict:
        return {
            "scale": self.scale,
            "estimated": self.estimated,
            "mean_sum": self.mean_sum,
            "std_sum": self.std_sum,
            "batches": self.batches,
        }

    def load(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def exported(sae: SAE, scaling: Scaling) -> SAE:
    """A copy of ``sae`` that takes raw activations: the scaling folded into its weights."""
    from sae_hacking.saes.fold import fold_input_affine

    copied = copy.deepcopy(sae)
    shift, scale = scaling.affine()
    if (shift, scale) != (0.0, 1.0):
        fold_input_affine(copied, shift, scale)
    copied.requires_grad_(False)
    return copied.eval()
