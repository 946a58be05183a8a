"""The settings of the absorption-search commands (torch-free, checked before any heavy import).

:class:`CooccurrenceConfig` (``sae-hacking cooccurrences``) and :class:`AblateConfig`
(``sae-hacking ablate``); defaults are the seed's: Gemma-2-2B with the Gemma Scope
``layer_20/width_65k/canonical`` MLP-out SAE as ablator and the ``layer_21`` residual SAE as
reader, 100-token prompts in batches of 5.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sae_hacking.config import (
    check_choice,
    check_positive,
    resolved_path,
    set_field,
    setting,
)
from sae_hacking.data.source import TextSource
from sae_hacking.errors import FieldError
from sae_hacking.lm.source import ModelSource
from sae_hacking.runs.options import RunOptions
from sae_hacking.saes.source import SAESource

ABLATOR_RELEASE = "gemma-scope-2b-pt-mlp-canonical"
ABLATOR_ID = "layer_20/width_65k/canonical"
READER_RELEASE = "gemma-scope-2b-pt-res-canonical"
READER_ID = "layer_21/width_65k/canonical"
METHODS = ("fast", "naive")


def seed_text() -> TextSource:
    return TextSource(max_tokens_in_prompt=100, batch_size=5)


def check_latents(key: str, latents: tuple[int, ...] | None) -> None:
    if latents is not None:
        if not latents:
            raise FieldError(key, "needs at least one latent index.")
        negative = [i for i in latents if i < 0]
        if negative:
            raise FieldError(key, f"has negative latent index {negative[0]}.")


@dataclass(frozen=True)
class CooccurrenceConfig:
    """Count, over the real tokens of the first ``n_prompts`` prompts, how often each pair of
    ablator-SAE latents is active together."""

    model: ModelSource = setting(default_factory=ModelSource, help="model", prefix="")
    ablator: SAESource = setting(
        default_factory=lambda: SAESource(ABLATOR_RELEASE),
        help="ablator SAE",
        prefix="ablator_",
    )
    text: TextSource = setting(default_factory=seed_text, help="text", prefix="")
    rows: tuple[int, ...] | None = setting(
        None, help="count only the rows of these latents ([D, e] instead of the e(e+1)/2 triangle)"
    )
    run: RunOptions = setting(default_factory=RunOptions, help="run", prefix="")

    def __post_init__(self):
        set_field(self, "ablator", self.ablator.with_default_id(ABLATOR_ID))
        self.ablator.require("ablator_sae_release")
        check_latents("rows", self.rows)


@dataclass(frozen=True)
class AblateConfig:
    """For each prompt, zero each of the top K active ablator latents in turn and record how the
    reader SAE's latents change at the last real token."""

    model: ModelSource = setting(default_factory=ModelSource, help="model", prefix="")
    ablator: SAESource = setting(
        default_factory=lambda: SAESource(ABLATOR_RELEASE),
        help="ablator SAE",
        prefix="ablator_",
    )
    reader: SAESource = setting(
        default_factory=lambda: SAESource(READER_RELEASE),
        help="reader SAE",
        prefix="reader_",
    )
    text: TextSource = setting(default_factory=seed_text, help="text", prefix="")
    abridge_ablations_to: int = setting(
        100,
        help="ablate the K active ablator latents with the largest activation summed over the "
        "prompt's real tokens",
    )
    selected_features: tuple[int, ...] | None = setting(
        None,
        help="use only prompts whose top K contains one of these ablator latents (all K are "
        "then ablated); default: every prompt",
    )
    exclude_latent_threshold: float | None = setting(
        None,
        help="never ablate latents active on more than a fraction F of tokens; frequencies "
        "from `frequencies_from`, else from a first pass over the same prompts",
    )
    frequencies_from: str | None = setting(
        None,
        help="co-occurrence results (sae-hacking cooccurrences) of the ablator SAE, or a "
        "frequencies.safetensors of an earlier ablate run, for `exclude_latent_threshold`",
    )
    method: str = setting(
        "fast",
        choices=METHODS,
        help="fast: one forward to the ablator hook, then the K variants as one batch through "
        "the layers up to the reader only; naive: the seed's K + 2 full forwards per prompt "
        "(the reference)",
    )
    variants_per_batch: int = setting(
        256,
        help="ablation variants (rows) per partial forward; lower it if memory runs out",
        kind="free",
    )
    batch_prompts: bool = setting(
        False,
        help="fast: run the forwards up to the ablator hook of a batch together (faster on a "
        "GPU); effects then depend on the batch's padding at float rounding level, so shards "
        "merge to the single run only approximately",
    )
    run: RunOptions = setting(default_factory=RunOptions, help="run", prefix="")

    def __post_init__(self):
        set_field(self, "ablator", self.ablator.with_default_id(ABLATOR_ID))
        set_field(self, "reader", self.reader.with_default_id(READER_ID))
        self.ablator.require("ablator_sae_release")
        self.reader.require("reader_sae_release")
        if self.abridge_ablations_to < 1:
            raise FieldError(
                "abridge_ablations_to", f"must be at least 1, got {self.abridge_ablations_to}."
            )
        check_positive("variants_per_batch", self.variants_per_batch)
        check_choice("method", self.method, METHODS)
        check_latents("selected_features", self.selected_features)
        threshold = self.exclude_latent_threshold
        if threshold is not None and not 0 <= threshold <= 1:
            raise FieldError(
                "exclude_latent_threshold", f"must be a fraction in [0, 1], got {threshold}."
            )
        if self.frequencies_from is not None:
            if threshold is None:
                raise FieldError(
                    "frequencies_from", "is only used with `exclude_latent_threshold` F."
                )
            if not Path(self.frequencies_from).expanduser().exists():
                raise FieldError("frequencies_from", f"{self.frequencies_from}: no such file.")
            set_field(self, "frequencies_from", resolved_path(self.frequencies_from))
        elif threshold is not None and self.text.n_prompts is None:
            raise FieldError(
                "exclude_latent_threshold",
                "without `frequencies_from` counts frequencies in a first pass over the "
                "prompts, which needs `n_prompts` N (or give `frequencies_from` FILE).",
            )

    def fixed_keys(self) -> tuple[str, ...]:
        """Keys that may change on resume in general but not here: with ``batch_prompts`` the
        batch's padding changes the floats, so the batch size is part of what a run computes;
        frequencies counted in a first pass cover exactly the first ``n_prompts`` prompts."""
        first_pass = self.exclude_latent_threshold is not None and self.frequencies_from is None
        return ("batch_size",) * self.batch_prompts + ("n_prompts",) * first_pass
