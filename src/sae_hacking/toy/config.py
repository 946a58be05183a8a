"""Settings of one toy training run, with validation of user input (torch-free at import)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from sae_hacking.errors import UsageError

if TYPE_CHECKING:
    from sae_hacking.data.toy import ToyDatasetConfig

ARCHITECTURES = ("topk", "hierarchical", "matryoshka")
# The seed README's example run of train_topk_sae_toy.py, as ToyConfig fields (benchmarks).
SEED_EXAMPLE = {
    "architecture": "hierarchical",
    "lr": 1e-4,
    "sae_hidden_dim": 30,
    "dataset_num_features": 30,
    "batch_size": 100,
    "perturbation_size": 0.4,
    "model_dim": 50,
}
INITS = ("tied", "linear")


@dataclass
class ToyConfig:
    architecture: str = "hierarchical"
    device: str = "auto"
    # dataset
    dataset_num_features: int = 30  # A
    model_dim: int = 50  # M
    perturbation_size: float = 0.4
    dataset_k: int = 3
    parent_alone_prob: float = 0.0
    magnitude_range: tuple[float, float] = (1.0, 1.0)
    # SAE
    sae_hidden_dim: int = 30  # E: latents (parent latents for the hierarchical SAE)
    sae_k: int = 3
    matryoshka_groups: tuple[int, ...] | None = None  # default: (E // 3, rest)
    handcode_sae: bool = False
    init: str = "tied"  # "tied": unit decoder rows, encoder = decoder^T; "linear": nn.Linear's
    # optimisation
    max_step: int = 10_000
    batch_size: int = 100
    lr: float = 3e-4
    min_lr: float = 1e-5
    lr_patience: int = 3  # evaluations without improvement before the LR halves
    aux_loss_coeff: float = 0.0
    auxk_coeff: float = 0.0  # 1/32 is the usual weight; off for toy runs (see README)
    k_aux: int | None = None  # default: 2 * sae_k
    dead_steps: int = 200  # steps without firing after which a latent counts as dead
    resample_every: int = 1000  # 0 disables resampling of dead latents
    seed: int = 1
    # cadence
    eval_every: int = 500
    log_every: int = 50
    checkpoint_every: int = 5000
    val_size: int = 10_000
    plots: bool = True

    @property
    def hierarchical(self) -> bool:
        return self.architecture == "hierarchical"

    def dataset_config(self) -> ToyDatasetConfig:
        # Imported here: the CLI builds configs before it needs torch (which data.toy imports).
        from sae_hacking.data.toy import ToyDatasetConfig

        return ToyDatasetConfig(
            num_features=self.dataset_num_features,
            model_dim=self.model_dim,
            perturbation_size=self.perturbation_size,
            k=self.dataset_k,
            parent_alone_prob=self.parent_alone_prob,
            magnitude_range=tuple(self.magnitude_range),
        )

    def resolved_k_aux(self) -> int:
        return self.k_aux if self.k_aux is not None else 2 * self.sae_k

    def resolved_groups(self) -> tuple[int, ...]:
        if self.matryoshka_groups:
            return tuple(self.matryoshka_groups)
        first = max(1, self.sae_hidden_dim // 3)
        return (first, self.sae_hidden_dim - first) if self.sae_hidden_dim > first else (first,)

    def validate(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise UsageError(
                f"--architecture {self.architecture!r} is unknown; expected one of "
                f"{', '.join(ARCHITECTURES)}."
            )
        self.dataset_config().validate()
        positive = {
            "--sae-hidden-dim": self.sae_hidden_dim,
            "--sae-k": self.sae_k,
            "--batch-size": self.batch_size,
            "--eval-every": self.eval_every,
            "--log-every": self.log_every,
            "--checkpoint-every": self.checkpoint_every,
            "--val-size": self.val_size,
            "--dead-steps": self.dead_steps,
        }
        for flag, value in positive.items():
            if value <= 0:
                raise UsageError(f"{flag} must be positive, got {value}.")
        if self.max_step < 0:
            raise UsageError(f"--max-step must be non-negative, got {self.max_step}.")
        if not self.lr > 0:
            raise UsageError(f"--lr must be positive, got {self.lr}.")
        if not 0 <= self.min_lr <= self.lr:
            raise UsageError(f"--min-lr must be in [0, --lr={self.lr}], got {self.min_lr}.")
        if self.sae_k > self.sae_hidden_dim:
            raise UsageError(
                f"--sae-k ({self.sae_k}) must be at most --sae-hidden-dim ({self.sae_hidden_dim})."
            )
        if self.init not in INITS:
            raise UsageError(
                f"--init {self.init!r} is unknown; expected one of {', '.join(INITS)}."
            )
        if self.resample_every < 0:
            raise UsageError(f"--resample-every must be >= 0, got {self.resample_every}.")
        if self.aux_loss_coeff and not self.hierarchical:
            raise UsageError("--aux-loss-coeff only applies to the hierarchical SAE.")
        if self.handcode_sae:
            if not self.hierarchical:
                raise UsageError("--handcode-sae needs the hierarchical SAE (--hierarchical).")
            if self.sae_hidden_dim != self.dataset_num_features:
                raise UsageError(
                    f"--handcode-sae needs --sae-hidden-dim ({self.sae_hidden_dim}) equal to "
                    f"--dataset-num-features ({self.dataset_num_features})."
                )
        if self.architecture == "matryoshka":
            groups = self.resolved_groups()
            if min(groups) <= 0 or sum(groups) != self.sae_hidden_dim:
                raise UsageError(
                    f"--matryoshka-groups {list(groups)} must be positive and sum to "
                    f"--sae-hidden-dim ({self.sae_hidden_dim})."
                )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["magnitude_range"] = list(self.magnitude_range)
        if self.matryoshka_groups is not None:
            out["matryoshka_groups"] = list(self.matryoshka_groups)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToyConfig:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if "magnitude_range" in kwargs:
            kwargs["magnitude_range"] = tuple(kwargs["magnitude_range"])
        if kwargs.get("matryoshka_groups") is not None:
            kwargs["matryoshka_groups"] = tuple(kwargs["matryoshka_groups"])
        return cls(**kwargs)
