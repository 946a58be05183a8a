"""The toy dataset's settings (torch-free, so commands check them before importing torch)."""

from __future__ import annotations

from dataclasses import dataclass

from sae_hacking.config import check_non_negative, check_positive
from sae_hacking.errors import FieldError


@dataclass(frozen=True)
class ToyDatasetConfig:
    num_features: int  # A
    model_dim: int  # M
    perturbation_size: float  # rho
    k: int  # active parents per sample
    parent_alone_prob: float = 0.0
    magnitude_range: tuple[float, float] = (1.0, 1.0)

    def validate(self) -> None:
        """Raise :class:`FieldError` (naming this config's fields) on impossible settings."""
        check_positive("num_features", self.num_features)
        check_positive("model_dim", self.model_dim)
        check_positive("k", self.k)
        if self.k > self.num_features:
            raise FieldError(
                "k",
                f"({self.k}) must be at most `num_features` ({self.num_features}): a sample "
                "activates k distinct parents.",
            )
        check_non_negative("perturbation_size", self.perturbation_size)
        if not 0.0 <= self.parent_alone_prob <= 1.0:
            raise FieldError(
                "parent_alone_prob", f"must be in [0, 1], got {self.parent_alone_prob}."
            )
        lo, hi = self.magnitude_range
        if not 0.0 < lo <= hi:
            raise FieldError("magnitude_range", f"must be two numbers 0 < LO <= HI, got {lo} {hi}.")
