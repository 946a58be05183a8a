"""Settings of ``sae-hacking train`` (torch-free, checked before any heavy import).

Defaults are the legacy training scripts': TinyStories-33M read at ``blocks.1.hook_resid_post``
(their ``hidden_states[2]``) over the TinyStories dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from sae_hacking.config import Config, resolved_path, set_field, setting
from sae_hacking.data.source import TextSource
from sae_hacking.errors import FieldError, UsageError
from sae_hacking.lm.hook_names import parse_hook, supported_templates
from sae_hacking.lm.source import ModelSource
from sae_hacking.runs.options import RunDirOptions
from sae_hacking.saes.tiered_settings import HELP as TIERED_HELP
from sae_hacking.saes.tiered_settings import TIERED_DEFAULTS, check_tiered_settings

# An LM training run's kind (run.json), here (torch-free) so the CLI needs not import the run.
KIND = "train"
LEGACY_MODEL = "roneneldan/TinyStories-33M"
LEGACY_DATASET = "roneneldan/TinyStories"
LEGACY_HOOK = "blocks.1.hook_resid_post"
Architecture = Literal[
    "relu", "topk", "batchtopk", "jumprelu", "hierarchical", "matryoshka", "tiered"
]
ARCHITECTURES = get_args(Architecture)
TOPK_FAMILY = ("topk", "batchtopk", "hierarchical", "matryoshka", "tiered")


def legacy_model() -> ModelSource:
    return ModelSource(LEGACY_MODEL)


def legacy_text() -> TextSource:
    return TextSource(LEGACY_DATASET, max_tokens_in_prompt=256, batch_size=32)


@dataclass(frozen=True)
class TrainConfig(Config):
    """Train one SAE on a language model's activations at one hook point."""

    model: ModelSource = setting(default_factory=legacy_model, help="model")
    text: TextSource = setting(default_factory=legacy_text, help="text")
    hook: str = setting(LEGACY_HOOK, help="hook point whose activations the SAE learns")
    include_bos: bool = setting(
        False, help="train on BOS positions too (their activations are outliers in most models)"
    )
    # SAE
    architecture: Architecture = setting("topk", help="SAE to train")
    sae_hidden_dim: int = setting(
        4096, help="E: latents (parent latents of the hierarchical SAE)", gt=0
    )
    k: int = setting(
        32,
        help="active latents per token (topk, hierarchical parents; the "
        "batch average for batchtopk and matryoshka)",
        gt=0,
    )
    l1_coefficient: float = setting(
        5.0,
        help="relu: weight of the L1 penalty on activations times decoder norms (SAELens's)",
        ge=0,
    )
    l0_coefficient: float = setting(1.0, help="jumprelu: weight of the L0 penalty", ge=0)
    jumprelu_bandwidth: float = setting(
        0.001, help="jumprelu: width of the straight-through estimator's kernel", gt=0
    )
    jumprelu_init_threshold: float = setting(0.001, help="jumprelu: initial threshold", ge=0)
    matryoshka_groups: tuple[int, ...] | None = setting(
        None,
        help="matryoshka: nested group sizes summing to `sae_hidden_dim` (default E/16, E/8, "
        "E/4, rest)",
    )
    children_per_parent: int = setting(
        TIERED_DEFAULTS["children_per_parent"], help=TIERED_HELP["children_per_parent"], gt=0
    )
    child_k: int | None = setting(TIERED_DEFAULTS["child_k"], help=TIERED_HELP["child_k"], gt=0)
    nested_weight: float = setting(
        TIERED_DEFAULTS["nested_weight"], help=TIERED_HELP["nested_weight"], ge=0
    )
    aux_k_coefficient: float = setting(
        1 / 32,
        help="weight of the auxiliary-k loss that revives dead latents (topk family)",
        ge=0,
    )
    k_aux: int | None = setting(
        None, help="dead latents in the auxiliary-k loss (default M/2)", gt=0
    )
    dead_tokens: int = setting(
        1_000_000, help="a latent that has not fired for this many tokens is dead", gt=0
    )
    resample_every: int = setting(
        0,
        help="every N steps, move the dead latents onto directions of poorly reconstructed "
        "activations of the block being read (every architecture; 0: off)",
        ge=0,
    )
    # optimisation
    train_tokens: int = setting(
        2_000_000,
        help="tokens to train on (a resumed run may be given more)",
        kind="extent",
        gt=0,
    )
    max_step: int | None = setting(
        None,
        help="optimiser steps to take instead of `train_tokens` (steps x `batch_tokens` tokens)",
        kind="extent",
        gt=0,
    )
    batch_tokens: int = setting(4096, help="tokens per optimiser step", gt=0)
    lr: float = setting(3e-4, help="Adam learning rate", gt=0)
    lr_warmup_steps: int = setting(0, help="steps of linear warm-up from 0", ge=0)
    lr_decay: Literal["constant", "linear", "cosine"] = setting(
        "linear",
        help="constant; linear: to 0 over the last `lr_decay_fraction` of the steps; cosine: "
        "to 0 from the end of the warm-up",
    )
    lr_decay_fraction: float = setting(
        0.2, help="share of the steps the linear decay spans", ge=0, le=1
    )
    normalize: Literal["expected_norm", "per_batch", "none"] = setting(
        "expected_norm",
        help="expected_norm: scale activations to mean norm sqrt(M) (estimated on the first "
        "buffer; folded into the weights at export, as SAELens does); per_batch: the legacy scripts' "
        "standardisation of each batch (exported with the running mean and std); none",
    )
    buffer_tokens: int = setting(
        65536,
        help="activations gathered from many prompts and shuffled before they form batches",
        gt=0,
    )
    activation_cache: str | None = setting(
        None,
        help="folder of cached activations: filled by the first run, read by later runs with "
        "the same model, hook, text and buffer (other SAEs, seeds, or more epochs)",
        kind="free",
    )
    seed: int = setting(0, help="SAE initialisation and shuffling", ge=0)
    # evaluation and run
    eval_prompts: int = setting(
        16,
        help="held-out prompts (the stream's first rows) for FVU, L0 and CE loss recovered",
        ge=0,
    )
    eval_every: int = setting(
        500, help="evaluate every N steps (and at the end)", kind="free", gt=0
    )
    log_every: int = setting(20, help="log training loss every N steps", kind="free", gt=0)
    checkpoint_every: int = setting(
        1000, help="write a checkpoint every N steps", kind="free", gt=0
    )
    only_count_tokens: bool = setting(
        False,
        help="count the prompts and tokens the run would train on per epoch and exit (no model)",
        kind="free",
    )
    run: RunDirOptions = setting(default_factory=RunDirOptions, help="run")

    def __post_init__(self):
        super().__post_init__()
        if self.architecture in TOPK_FAMILY and self.k > self.sae_hidden_dim:
            raise FieldError(
                "k", f"({self.k}) must be at most `sae_hidden_dim` ({self.sae_hidden_dim})."
            )
        check_tiered_settings(self, self.k, self.sae_hidden_dim)
        if self.buffer_tokens < self.batch_tokens:
            raise FieldError(
                "buffer_tokens",
                f"({self.buffer_tokens}) must be at least `batch_tokens` ({self.batch_tokens}).",
            )
        if self.matryoshka_groups is not None:
            groups = self.matryoshka_groups
            if self.architecture != "matryoshka":
                raise FieldError(
                    "matryoshka_groups", "applies to the matryoshka architecture only."
                )
            if min(groups, default=0) <= 0 or sum(groups) != self.sae_hidden_dim:
                raise FieldError(
                    "matryoshka_groups",
                    f"must be positive sizes summing to `sae_hidden_dim` ({self.sae_hidden_dim}), "
                    f"got {list(groups)}.",
                )
        try:  # the spelling; whether the model has the layer is checked once it is loaded
            parse_hook(self.hook, n_layers=1 << 30)
        except UsageError:
            raise FieldError(
                "hook",
                f"{self.hook!r} is not a hook point; expected one of "
                f"{', '.join(supported_templates())} (L a layer index).",
            ) from None
        set_field(self, "activation_cache", resolved_path(self.activation_cache))

    def check_inputs(self) -> None:
        """The model, the text, and `activation_cache` a cache folder (or a new one)."""
        super().check_inputs()
        from sae_hacking.train.checks import check_cache_folder

        check_cache_folder(self.activation_cache)

    def fixed_keys(self) -> tuple[str, ...]:
        # A block ends after the forward batch that fills the buffer, so the prompts per
        # forward decide which tokens are shuffled together: part of the results here.
        return ("batch_size",)

    def resolved_groups(self) -> tuple[int, ...]:
        """Matryoshka's nested group sizes (given, or E/16, E/8, E/4 and the rest)."""
        if self.matryoshka_groups is not None:
            return self.matryoshka_groups
        E = self.sae_hidden_dim
        firsts = [max(1, E // 16), max(1, E // 8), max(1, E // 4)]
        groups, left = [], E
        for size in firsts:
            if left - size < 1:
                break
            groups.append(size)
            left -= size
        return (*groups, left)

    def total_steps(self, world: int = 1) -> int:
        """Optimiser steps of the run; ``world`` processes each take `batch_tokens` a step."""
        if self.max_step is not None:
            return self.max_step
        return -(-self.train_tokens // (self.batch_tokens * world))
