"""Settings of one toy training run (torch-free at import; checked on construction)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from sae_hacking.config import Config, check_declared, from_flat, setting, to_flat
from sae_hacking.data.synthetic_config import SyntheticDataConfig
from sae_hacking.data.toy_config import ToyDatasetConfig
from sae_hacking.device import check_device_name
from sae_hacking.errors import FieldError
from sae_hacking.runs.options import RunDirOptions
from sae_hacking.saes.tiered_settings import HELP as TIERED_HELP
from sae_hacking.saes.tiered_settings import TIERED_DEFAULTS, check_tiered_settings

# A toy run's kind (run.json), here (torch-free) so the CLI needs not import the experiment.
KIND = "toy"
# The trainable architectures the toy experiment compares (the LM trainer has more).
Architecture = Literal["topk", "hierarchical", "matryoshka", "tiered"]
ARCHITECTURES = get_args(Architecture)
MODEL_DIM_DEFAULT = 50
# The legacy README's example run of train_topk_sae_toy.py, as ToyConfig fields (benchmarks).
LEGACY_EXAMPLE = {
    "architecture": "hierarchical",
    "lr": 1e-4,
    "sae_hidden_dim": 30,
    "dataset_num_features": 30,
    "batch_size": 100,
    "perturbation_size": 0.4,
    "model_dim": 50,
}


@dataclass(frozen=True)
class ToyConfig(Config):
    architecture: Architecture = setting("topk", help="SAE to train")
    device: str = setting("auto", help="auto, cpu, cuda, cuda:N, mps", kind="free", recorded=False)
    # dataset
    data: Literal["toy", "saelens"] = setting(
        "toy",
        help="toy: the legacy parents with two perturbed children each (`dataset_*` settings); "
        "saelens: SAELens's synthetic feature hierarchies (`synthetic_*` settings), scored by "
        "SAELens's own evaluation too",
    )
    dataset_num_features: int = setting(30, help="A: number of parent features", gt=0)
    model_dim: int = setting(MODEL_DIM_DEFAULT, help="M: dimension of the samples", gt=0)
    perturbation_size: float = setting(
        0.4, help="rho: norm of each child's perturbation of its parent", ge=0
    )
    dataset_k: int = setting(3, help="distinct parents active per sample", gt=0)
    parent_alone_prob: float = setting(
        0.0, help="probability an active parent appears without a child", ge=0, le=1
    )
    magnitude_range: tuple[float, float] = setting(
        (1.0, 1.0), help="active features scaled by U(LO, HI) (1 1: unit magnitudes)"
    )
    # SAE
    sae_hidden_dim: int = setting(
        30, help="E: latents (parent latents of the hierarchical and tiered SAEs)", gt=0
    )
    sae_k: int = setting(
        3,
        help="k of the TopK (parents, for the hierarchical SAE; parents per sample on average, "
        "for the tiered SAE)",
        gt=0,
    )
    children_per_parent: int = setting(
        TIERED_DEFAULTS["children_per_parent"], help=TIERED_HELP["children_per_parent"], gt=0
    )
    child_k: int | None = setting(TIERED_DEFAULTS["child_k"], help=TIERED_HELP["child_k"], gt=0)
    nested_weight: float = setting(
        TIERED_DEFAULTS["nested_weight"], help=TIERED_HELP["nested_weight"], ge=0
    )
    matryoshka_groups: tuple[int, ...] | None = setting(
        None, help="Matryoshka nested group sizes, summing to `sae_hidden_dim` (default E/3, rest)"
    )
    handcode_sae: bool = setting(
        False, help="set the hierarchical SAE to the ground truth before training"
    )
    init: Literal["tied", "linear"] = setting(
        "tied",
        help="tied: unit decoder rows and encoder = decoder transpose; linear: torch.nn.Linear's "
        "uniform init, as the legacy script had",
    )
    # optimisation
    max_step: int = setting(
        10_000, help="training steps (a resumed run may be given more)", kind="extent", ge=0
    )
    batch_size: int = setting(100, help="samples per step", gt=0)
    lr: float = setting(3e-4, help="Adam learning rate", gt=0)
    min_lr: float = setting(1e-5, help="floor of the plateau LR schedule")
    lr_patience: int = setting(3, help="evaluations without improvement before the LR halves", gt=0)
    aux_loss_coeff: float = setting(
        0.0, help="weight of the hierarchical parent/child cosine loss", ge=0
    )
    auxk_coeff: float = setting(
        0.0, help="weight of the auxiliary-k dead-latent loss, e.g. 1/32 (0: off)", ge=0
    )
    k_aux: int | None = setting(None, help="k of the auxiliary-k loss (default 2 * `sae_k`)", gt=0)
    dead_steps: int = setting(200, help="steps without firing before a latent counts as dead", gt=0)
    resample_every: int = setting(
        1000, help="resample dead latents every N steps, 0 disables", ge=0
    )
    seed: int = setting(1, help="seed of the dataset, the SAE and the batches")
    # cadence
    eval_every: int = setting(
        500, help="steps between evaluations (they drive the LR schedule)", gt=0
    )
    log_every: int = setting(50, help="TensorBoard loss cadence in steps", kind="free", gt=0)
    checkpoint_every: int = setting(5000, help="steps between checkpoints", kind="free", gt=0)
    val_size: int = setting(10_000, help="validation samples", gt=0)
    plots: bool = setting(True, help="write the final plots", kind="free")
    synthetic: SyntheticDataConfig = setting(
        default_factory=SyntheticDataConfig,
        help="SAELens synthetic data (with --data saelens)",
        key="synthetic_",
    )
    run: RunDirOptions = setting(default_factory=RunDirOptions, help="run")

    def __post_init__(self):
        self.validate()  # the declared rules (Config.__post_init__'s) and the ones below

    @property
    def hierarchical(self) -> bool:
        return self.architecture == "hierarchical"

    def dataset_config(self) -> ToyDatasetConfig:
        return ToyDatasetConfig(
            num_features=self.dataset_num_features,
            model_dim=self.model_dim,
            perturbation_size=self.perturbation_size,
            k=self.dataset_k,
            parent_alone_prob=self.parent_alone_prob,
            magnitude_range=tuple(self.magnitude_range),
        )

    @property
    def input_dim(self) -> int:
        """M of the data the SAE is trained on."""
        return self.synthetic.model_dim if self.data == "saelens" else self.model_dim

    def resolved_k_aux(self) -> int:
        return self.k_aux if self.k_aux is not None else 2 * self.sae_k

    def resolved_groups(self) -> tuple[int, ...]:
        if self.matryoshka_groups:
            return tuple(self.matryoshka_groups)
        first = max(1, self.sae_hidden_dim // 3)
        return (first, self.sae_hidden_dim - first) if self.sae_hidden_dim > first else (first,)

    def validate(self) -> None:
        """Raise :class:`FieldError` on impossible settings (run on construction)."""
        check_declared(self)
        check_device_name("device", self.device)
        if self.dataset_k > self.dataset_num_features:
            raise FieldError(
                "dataset_k",
                f"({self.dataset_k}) must be at most `dataset_num_features` "
                f"({self.dataset_num_features}): a sample activates k distinct parents.",
            )
        # The dataset's own rules: those on fields named differently here are checked above, so
        # an error names a field this config has too (`magnitude_range`).
        self.dataset_config().validate()
        if not 0 <= self.min_lr <= self.lr:
            raise FieldError("min_lr", f"must be in [0, `lr`={self.lr}], got {self.min_lr}.")
        if self.sae_k > self.sae_hidden_dim:
            raise FieldError(
                "sae_k",
                f"({self.sae_k}) must be at most `sae_hidden_dim` ({self.sae_hidden_dim}).",
            )
        check_tiered_settings(self, self.sae_k, self.sae_hidden_dim)
        if self.aux_loss_coeff and not self.hierarchical:
            raise FieldError("aux_loss_coeff", "only applies to the hierarchical SAE.")
        if self.handcode_sae:
            if not self.hierarchical:
                raise FieldError(
                    "handcode_sae", "needs the hierarchical SAE (`architecture` hierarchical)."
                )
            if self.sae_hidden_dim != self.dataset_num_features:
                raise FieldError(
                    "handcode_sae",
                    f"needs `sae_hidden_dim` ({self.sae_hidden_dim}) equal to "
                    f"`dataset_num_features` ({self.dataset_num_features}).",
                )
        if self.data == "saelens":
            if self.model_dim != MODEL_DIM_DEFAULT:
                raise FieldError(
                    "model_dim",
                    "is the toy data's; with `data` saelens the samples have "
                    f"`synthetic_model_dim` ({self.synthetic.model_dim}) dimensions.",
                )
            if self.handcode_sae:
                raise FieldError("handcode_sae", "needs the toy data (`data` toy).")
        if self.architecture == "matryoshka":
            groups = self.resolved_groups()
            if min(groups) <= 0 or sum(groups) != self.sae_hidden_dim:
                raise FieldError(
                    "matryoshka_groups",
                    f"{list(groups)} must be positive and sum to `sae_hidden_dim` "
                    f"({self.sae_hidden_dim}).",
                )

    def to_dict(self) -> dict[str, Any]:
        return to_flat(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToyConfig:
        return from_flat(cls, data)


@dataclass(frozen=True)
class ToyCompareConfig(Config):
    """``toy-compare``: the four architectures on the data of ``base``, over ``seeds``."""

    base: ToyConfig = setting(default_factory=ToyConfig, help="toy dataset, SAE, training")
    seeds: tuple[int, ...] = setting((1, 2, 3), help="seeds to train each architecture with")
    flat_k: int | None = setting(
        None,
        help="k of the flat and Matryoshka SAEs (default: `sae_k`, the hierarchical SAE's "
        "parent choices per input; 2 * `sae_k` matches L0)",
        gt=0,
    )
    jobs: int = setting(1, help="runs trained in parallel processes", kind="free", gt=0)

    def __post_init__(self):
        super().__post_init__()
        if not self.seeds:
            raise FieldError("seeds", "needs at least one seed.")
        budget = 3 * self.base.sae_hidden_dim
        if self.flat_k is not None and self.flat_k > budget:
            raise FieldError(
                "flat_k",
                f"({self.flat_k}) must be at most the flat SAEs' latents, 3 * "
                f"`sae_hidden_dim` = {budget}.",
            )
