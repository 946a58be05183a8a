"""Settings of ``sae-hacking train`` (torch-free, checked before any heavy import).

Defaults are the seed's training scripts': TinyStories-33M read at ``blocks.1.hook_resid_post``
(the seed's ``hidden_states[2]``) over the TinyStories dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

from sae_hacking.config import (
    check_choice,
    check_non_negative,
    check_positive,
    resolved_path,
    set_field,
    setting,
)
from sae_hacking.data.source import TextSource
from sae_hacking.errors import FieldError, UsageError
from sae_hacking.lm.hook_names import parse_hook, supported_templates
from sae_hacking.lm.source import ModelSource
from sae_hacking.runs.options import RunDirOptions

# An LM training run's kind (run.json), here (torch-free) so the CLI needs not import the run.
KIND = "train"
SEED_MODEL = "roneneldan/TinyStories-33M"
SEED_DATASET = "roneneldan/TinyStories"
SEED_HOOK = "blocks.1.hook_resid_post"
ARCHITECTURES = ("relu", "topk", "batchtopk", "jumprelu", "hierarchical", "matryoshka")
TOPK_FAMILY = ("topk", "batchtopk", "hierarchical", "matryoshka")
NORMALIZATIONS = ("expected_norm", "per_batch", "none")
LR_DECAYS = ("constant", "linear", "cosine")


def seed_model() -> ModelSource:
    return ModelSource(SEED_MODEL)


def seed_text() -> TextSource:
    return TextSource(SEED_DATASET, max_tokens_in_prompt=256, batch_size=32)


@dataclass(frozen=True)
class TrainConfig:
    """Train one SAE on a language model's activations at one hook point."""

    model: ModelSource = setting(default_factory=seed_model, help="model", prefix="")
    text: TextSource = setting(default_factory=seed_text, help="text", prefix="")
    hook: str = setting(SEED_HOOK, help="hook point whose activations the SAE learns")
    include_bos: bool = setting(
        False, help="train on BOS positions too (their activations are outliers in most models)"
    )
    # SAE
    architecture: str = setting("topk", help="SAE to train", choices=ARCHITECTURES)
    sae_hidden_dim: int = setting(4096, help="E: latents (parent latents of the hierarchical SAE)")
    k: int = setting(
        32,
        help="active latents per token (topk, hierarchical parents; the "
        "batch average for batchtopk and matryoshka)",
    )
    l1_coefficient: float = setting(
        5.0, help="relu: weight of the L1 penalty on activations times decoder norms (SAELens's)"
    )
    l0_coefficient: float = setting(1.0, help="jumprelu: weight of the L0 penalty")
    jumprelu_bandwidth: float = setting(
        0.001, help="jumprelu: width of the straight-through estimator's kernel"
    )
    jumprelu_init_threshold: float = setting(0.001, help="jumprelu: initial threshold")
    matryoshka_groups: tuple[int, ...] | None = setting(
        None,
        help="matryoshka: nested group sizes summing to `sae_hidden_dim` (default E/16, E/8, "
        "E/4, rest)",
    )
    aux_k_coefficient: float = setting(
        1 / 32, help="weight of the auxiliary-k loss that revives dead latents (topk family)"
    )
    k_aux: int | None = setting(None, help="dead latents in the auxiliary-k loss (default M/2)")
    dead_tokens: int = setting(
        1_000_000, help="a latent that has not fired for this many tokens is dead"
    )
    # optimisation
    train_tokens: int = setting(
        2_000_000, help="tokens to train on (a resumed run may be given more)", kind="extent"
    )
    max_step: int | None = setting(
        None,
        help="optimiser steps to take instead of `train_tokens` (steps x `batch_tokens` tokens)",
        kind="extent",
    )
    batch_tokens: int = setting(4096, help="tokens per optimiser step")
    lr: float = setting(3e-4, help="Adam learning rate")
    lr_warmup_steps: int = setting(0, help="steps of linear warm-up from 0")
    lr_decay: str = setting(
        "linear",
        help="constant; linear: to 0 over the last `lr_decay_fraction` of the steps; cosine: "
        "to 0 from the end of the warm-up",
        choices=LR_DECAYS,
    )
    lr_decay_fraction: float = setting(0.2, help="share of the steps the linear decay spans")
    normalize: str = setting(
        "expected_norm",
        help="expected_norm: scale activations to mean norm sqrt(M) (estimated on the first "
        "buffer; folded into the weights at export, as SAELens does); per_batch: the seed's "
        "standardisation of each batch (exported with the running mean and std); none",
        choices=NORMALIZATIONS,
    )
    buffer_tokens: int = setting(
        65536,
        help="activations gathered from many prompts and shuffled before they form batches",
    )
    activation_cache: str | None = setting(
        None,
        help="folder of cached activations: filled by the first run, read by later runs with "
        "the same model, hook, text and buffer (other SAEs, seeds, or more epochs)",
        kind="free",
    )
    seed: int = setting(0, help="SAE initialisation and shuffling")
    # evaluation and run
    eval_prompts: int = setting(
        16, help="held-out prompts (the stream's first rows) for FVU, L0 and CE loss recovered"
    )
    eval_every: int = setting(500, help="evaluate every N steps (and at the end)", kind="free")
    log_every: int = setting(20, help="log training loss every N steps", kind="free")
    checkpoint_every: int = setting(1000, help="write a checkpoint every N steps", kind="free")
    only_count_tokens: bool = setting(
        False,
        help="count the prompts and tokens the run would train on per epoch and exit (no model)",
        kind="free",
    )
    run: RunDirOptions = setting(default_factory=RunDirOptions, help="run", prefix="")

    def __post_init__(self):
        check_choice("architecture", self.architecture, ARCHITECTURES)
        check_choice("normalize", self.normalize, NORMALIZATIONS)
        check_choice("lr_decay", self.lr_decay, LR_DECAYS)
        for key in (
            "sae_hidden_dim",
            "k",
            "train_tokens",
            "batch_tokens",
            "buffer_tokens",
            "dead_tokens",
            "eval_every",
            "log_every",
            "checkpoint_every",
            "lr",
            "jumprelu_bandwidth",
        ):
            check_positive(key, getattr(self, key))
        check_positive("max_step", self.max_step, allow_none=True)
        check_positive("k_aux", self.k_aux, allow_none=True)
        for key in (
            "l1_coefficient",
            "l0_coefficient",
            "aux_k_coefficient",
            "lr_warmup_steps",
            "eval_prompts",
            "seed",
            "jumprelu_init_threshold",
        ):
            check_non_negative(key, getattr(self, key))
        if not 0 <= self.lr_decay_fraction <= 1:
            raise FieldError(
                "lr_decay_fraction", f"must lie in [0, 1], got {self.lr_decay_fraction}."
            )
        if self.text.max_tokens_in_prompt < 2:
            # Every prompt starts with BOS, which trains nothing (unless `include_bos`) and has
            # no next token to predict for the evaluation.
            raise FieldError(
                "max_tokens_in_prompt",
                f"must be at least 2 (BOS + a token), got {self.text.max_tokens_in_prompt}.",
            )
        if self.architecture in TOPK_FAMILY and self.k > self.sae_hidden_dim:
            raise FieldError(
                "k", f"({self.k}) must be at most `sae_hidden_dim` ({self.sae_hidden_dim})."
            )
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
