"""The settings of the absorption-search commands (torch-free, checked before any heavy import).

:class:`CooccurrenceConfig` (``sae-hacking cooccurrences``) and :class:`AblateConfig`
(``sae-hacking ablate``); defaults are the legacy scripts': Gemma-2-2B with the Gemma Scope
``layer_20/width_65k/canonical`` MLP-out SAE as ablator and the ``layer_21`` residual SAE as
reader, 100-token prompts in batches of 5.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sae_hacking.absorption.ablation.identity import Method, SumsPlace
from sae_hacking.absorption.evidence.options import (
    ABLATOR_ID,
    ABLATOR_RELEASE,
    EvidenceOptions,
    legacy_text,
)
from sae_hacking.config import Config, resolved_path, set_field, setting
from sae_hacking.data.source import TextSource
from sae_hacking.device import check_device_name
from sae_hacking.errors import FieldError, UsageError
from sae_hacking.lm.source import ModelSource
from sae_hacking.runs.locate import sidecar_of
from sae_hacking.runs.options import RunDirOptions, RunOptions
from sae_hacking.runs.shards import check_all_shards
from sae_hacking.saes.source import SAESource

READER_RELEASE = "gemma-scope-2b-pt-res-canonical"
READER_ID = "layer_21/width_65k/canonical"


def check_latents(key: str, latents: tuple[int, ...] | None) -> None:
    if latents is not None:
        if not latents:
            raise FieldError(key, "needs at least one latent index.")
        negative = [i for i in latents if i < 0]
        if negative:
            raise FieldError(key, f"has negative latent index {negative[0]}.")


def check_all_shards_early(key: str, path: str, allow_partial: bool, kind: str) -> None:
    """Refuse, torch-free, the ``kind`` results of only some shards of a run named by setting
    ``key`` (read from the sidecar; the reader checks the results file itself again)."""
    sidecar = sidecar_of(path)
    if sidecar is None:
        return
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # the reader says what is wrong with it
    if not isinstance(meta, dict) or meta.get("kind") != kind:
        return  # e.g. an ablate run directory: its frequencies.safetensors is read instead
    try:
        check_all_shards(meta, path, allow_partial)
    except UsageError as err:
        raise FieldError(key, str(err)) from None


ALLOW_PARTIAL_HELP = (
    "use results of only some shards of a run (a lone --shard i/n run or a merge of some "
    "shards); default: refused"
)


@dataclass(frozen=True)
class CooccurrenceConfig(Config):
    """Count, over the real tokens of the first ``n_prompts`` prompts, how often each pair of
    ablator-SAE latents is active together."""

    model: ModelSource = setting(default_factory=ModelSource, help="model")
    ablator: SAESource = setting(
        default_factory=lambda: SAESource(ABLATOR_RELEASE),
        help="ablator SAE",
        key="ablator_",
    )
    text: TextSource = setting(default_factory=legacy_text, help="text")
    rows: tuple[int, ...] | None = setting(
        None, help="count only the rows of these latents ([D, e] instead of the e(e+1)/2 triangle)"
    )
    evidence: EvidenceOptions = setting(
        default_factory=EvidenceOptions, help="latent evidence (what each latent fires on)"
    )
    run: RunOptions = setting(default_factory=RunOptions, help="run")

    def __post_init__(self):
        super().__post_init__()
        set_field(self, "ablator", self.ablator.with_default_id(ABLATOR_ID))
        self.ablator.require("ablator_sae_release")
        check_latents("rows", self.rows)


@dataclass(frozen=True)
class AblateConfig(Config):
    """For each prompt, zero each of the top K active ablator latents in turn and record how the
    reader SAE's latents change at the last real token."""

    model: ModelSource = setting(default_factory=ModelSource, help="model")
    ablator: SAESource = setting(
        default_factory=lambda: SAESource(ABLATOR_RELEASE),
        help="ablator SAE",
        key="ablator_",
    )
    reader: SAESource = setting(
        default_factory=lambda: SAESource(READER_RELEASE),
        help="reader SAE",
        key="reader_",
    )
    text: TextSource = setting(default_factory=legacy_text, help="text")
    abridge_ablations_to: int = setting(
        100,
        help="ablate the K active ablator latents with the largest activation summed over the "
        "prompt's real tokens",
        ge=1,
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
    method: Method = setting(
        "fast",
        help="fast: one forward to the ablator hook, then the K variants as one batch through "
        "the layers up to the reader only; naive: the legacy K + 2 full forwards per prompt "
        "(the reference)",
    )
    variants_per_batch: int = setting(
        256,
        help="ablation variants (rows) per partial forward; lower it if memory runs out",
        kind="free",
        gt=0,
    )
    batch_prompts: bool = setting(
        False,
        help="fast: run the forwards up to the ablator hook of a batch together (faster on a "
        "GPU); effects then depend on the batch's padding at float rounding level, so shards "
        "merge to the single run only approximately",
    )
    allow_partial: bool = setting(
        False, help="`frequencies_from`: " + ALLOW_PARTIAL_HELP, kind="free", recorded=False
    )
    sums_on: SumsPlace = setting(
        "auto",
        kind="free",
        recorded=False,
        help="where the exact effect sums live: device (the model's GPU; 8 x e x E bytes once "
        "every ablator latent is ablated, 34 GB at 65k x 65k), host (RAM), or auto: the GPU if "
        "that fits in its free memory with a quarter to spare, else the host",
    )
    run: RunOptions = setting(default_factory=RunOptions, help="run")

    def __post_init__(self):
        super().__post_init__()
        set_field(self, "ablator", self.ablator.with_default_id(ABLATOR_ID))
        set_field(self, "reader", self.reader.with_default_id(READER_ID))
        self.ablator.require("ablator_sae_release")
        self.reader.require("reader_sae_release")
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
            set_field(self, "frequencies_from", resolved_path(self.frequencies_from))
        elif threshold is not None and self.text.n_prompts is None:
            raise FieldError(
                "exclude_latent_threshold",
                "without `frequencies_from` counts frequencies in a first pass over the "
                "prompts, which needs `n_prompts` N (or give `frequencies_from` FILE).",
            )

    def check_inputs(self) -> None:
        """The model, the SAEs, the text and `frequencies_from` (which must exist and, if
        co-occurrence results, be of every shard unless `allow_partial`)."""
        super().check_inputs()
        if self.frequencies_from is not None:
            if not Path(self.frequencies_from).expanduser().exists():
                raise FieldError("frequencies_from", f"{self.frequencies_from}: no such file.")
            check_all_shards_early(
                "frequencies_from", self.frequencies_from, self.allow_partial, "cooccurrences"
            )

    def fixed_keys(self) -> tuple[str, ...]:
        """Keys that may change on resume in general but not here: with ``batch_prompts`` the
        batch's padding changes the floats, so the batch size is part of what a run computes;
        frequencies counted in a first pass cover exactly the first ``n_prompts`` prompts."""
        first_pass = self.exclude_latent_threshold is not None and self.frequencies_from is None
        return ("batch_size",) * self.batch_prompts + ("n_prompts",) * first_pass


@dataclass(frozen=True)
class PairsConfig(Config):
    """Stage 3: pairs of ablated ablator latents that (almost) never fire together yet have
    similar downstream effects (absorption candidates), from an ``ablate`` results file and a
    ``cooccurrences`` results file of the same model, ablator SAE and hook."""

    input_path: str = setting(
        "",
        help="ablate results: the run directory, ablations.safetensors.zst (with or without "
        ".zst) or its .json sidecar",
    )
    cooccurrence_path: str = setting(
        "",
        help="cooccurrences results of the same ablator SAE: run directory, "
        "cooccurrences.safetensors.zst (with or without .zst) or its .json sidecar",
    )
    cooccurrence_threshold: int = setting(
        0, help="keep pairs active together on at most this many tokens", ge=0
    )
    max_cooccurrence_share: float = setting(
        0.5,
        help="also keep pairs active together on at most this share of the rarer latent's "
        "active tokens, in [0, 1]; 0: only `cooccurrence_threshold` counts (the legacy rule). "
        "Why: in absorption-bench most absorbing latents of trained SAEs fire with their parent "
        "on some tokens, which this rule keeps (README, 'Absorption that training produces')",
        ge=0,
        le=1,
    )
    cosine_sim_threshold: float | None = setting(
        None,
        help="keep pairs whose effect cosine is at least this, in [-1, 1]; default: above 0 "
        "(a cosine of exactly 0, e.g. of a latent without any effect, says nothing; give 0 to "
        "keep those pairs too)",
        ge=-1,
        le=1,
    )
    compare: Literal["raw", "sign"] = setting(
        "raw",
        help="compare the mean effects raw, or their signs (sign(mean effect)) as the legacy "
        "script did; raw ranks absorption pairs far better in absorption-bench",
    )
    min_ablations: int = setting(
        1,
        help="compare only latents ablated in at least this many prompts (never-ablated latents "
        "have no effect to compare)",
        gt=0,
    )
    min_expected_cooccurrence: float = setting(
        0.0,
        help="keep pairs expected to fire together on at least this many tokens if they were "
        "independent (N f_i f_j): a zero count is evidence only when this is large",
        ge=0,
    )
    just_these: tuple[int, ...] | None = setting(
        None, help="only pairs that contain one of these ablator latents"
    )
    max_steps: int | None = setting(
        None,
        help="only pairs whose first latent is among the first N compared latents (in latent "
        "order; the legacy loop limit)",
        gt=0,
    )
    max_pairs: int = setting(
        100_000,
        help="keep the N best pairs (highest effect cosine); the histogram counts all pairs "
        "that pass the filters",
        gt=0,
    )
    ablator: SAESource = setting(
        # Its settings default to the SAE the ablate results name.
        default_factory=SAESource,
        help="ablator SAE (decoder cosines)",
        key="ablator_",
    )
    ablator_sae_neuronpedia_id: str | None = setting(
        None,
        help="Neuronpedia id of the ablator SAE, e.g. gemma-2-2b/20-gemmascope-mlp-65k "
        "(default: from the SAELens registry entry of the ablator's release)",
    )
    explanations_file: str | None = setting(
        None,
        help="a local Neuronpedia explanation export (JSON list of {index, description}) "
        "instead of fetching it",
    )
    allow_partial: bool = setting(False, help=ALLOW_PARTIAL_HELP)
    allow_other_dataset: bool = setting(
        False,
        help="compare effects and co-occurrences counted on different datasets (dataset id or "
        "text column); default: refused",
    )
    no_log_scale: bool = setting(False, help="linear y axis for the histogram", kind="free")
    evidence_pairs: int = setting(
        100,
        help="give the report's first N pairs a side-by-side view of both latents (what each "
        "fires on, the tokens where each fires, their reader effects); 0: no view",
        kind="free",
        ge=0,
    )
    evidence_from: str | None = setting(
        None,
        help="latent evidence for that view from this latents (or cooccurrences) run of the "
        "ablated SAE (default: the cooccurrence results, when they hold evidence)",
        kind="free",
    )
    device: str = setting("auto", help="auto, cpu, cuda, cuda:N, mps", kind="free", recorded=False)
    block_size: int = setting(
        4096,
        help="latents per block of the all-pairs products (memory ~ block^2)",
        kind="free",
        gt=0,
    )
    run: RunDirOptions = setting(default_factory=RunDirOptions, help="run")

    def __post_init__(self):
        super().__post_init__()
        check_device_name("device", self.device)
        for key in ("input_path", "cooccurrence_path", "explanations_file", "evidence_from"):
            if getattr(self, key):
                set_field(self, key, resolved_path(getattr(self, key)))
        check_latents("just_these", self.just_these)

    def cosine_rule(self) -> tuple[float, bool]:
        """``(threshold, strict)``: a pair passes with effect cosine ≥ the given threshold, or
        > 0 by default (a zero cosine, e.g. of a latent that changed nothing, is no evidence)."""
        if self.cosine_sim_threshold is None:
            return 0.0, True
        return self.cosine_sim_threshold, False

    def check_inputs(self) -> None:
        """A run needs both results files (the defaults are empty so ``--help`` can show), and
        the files its settings name must exist."""
        for key in ("input_path", "cooccurrence_path"):
            if not getattr(self, key):
                raise FieldError(key, "is required.")
        super().check_inputs()
        for key in ("input_path", "cooccurrence_path"):
            value = getattr(self, key)
            if (
                not Path(value).expanduser().exists()
                and not Path(value + ".zst").expanduser().exists()
            ):
                raise FieldError(key, f"{value}: no such file or folder.")
        if self.explanations_file is not None:
            if not Path(self.explanations_file).expanduser().is_file():
                raise FieldError("explanations_file", f"{self.explanations_file}: no such file.")
        if self.evidence_from is not None and not Path(self.evidence_from).expanduser().exists():
            raise FieldError("evidence_from", f"{self.evidence_from}: no such file or folder.")

    require_inputs = check_inputs  # the name absorption/pairs/run.py calls
