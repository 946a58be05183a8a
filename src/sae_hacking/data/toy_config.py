"""The toy dataset's settings (torch-free, so commands check them before importing torch)."""

from __future__ import annotations

from dataclasses import dataclass

from sae_hacking.config import check_declared, setting
from sae_hacking.errors import FieldError


@dataclass(frozen=True)
class ToyDatasetConfig:
    """The toy dataset's parameters, checked by :meth:`validate` (the dataset does so before it
    is generated; :class:`~sae_hacking.toy.config.ToyConfig` holds them as settings of its own)."""

    num_features: int = setting(help="A: number of parent features", gt=0)
    model_dim: int = setting(help="M: dimension of the samples", gt=0)
    perturbation_size: float = setting(help="rho: norm of each child's perturbation", ge=0)
    k: int = setting(help="distinct parents active per sample", gt=0)
    parent_alone_prob: float = setting(
        0.0, help="probability an active parent appears without a child", ge=0, le=1
    )
    magnitude_range: tuple[float, float] = setting(
        (1.0, 1.0), help="active features scaled by U(LO, HI)"
    )

    def validate(self) -> None:
        """Raise :class:`FieldError` (naming this config's fields) on impossible settings."""
        check_declared(self)
        if self.k > self.num_features:
            raise FieldError(
                "k",
                f"({self.k}) must be at most `num_features` ({self.num_features}): a sample "
                "activates k distinct parents.",
            )
        lo, hi = self.magnitude_range
        if not 0.0 < lo <= hi:
            raise FieldError("magnitude_range", f"must be two numbers 0 < LO <= HI, got {lo} {hi}.")
