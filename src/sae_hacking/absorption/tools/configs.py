"""The settings of the analysis tools (torch-free) and what each run is called and writes.

The tools read an ``ablate`` run (``effect-network``, ``four-tuples``, ``effect-l0``,
``cluster``) or one SAE's decoder (``decoder-pairs``, ``cluster --by decoder``); each writes a
new run directory whose last file is its JSON (a run killed while writing has none).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sae_hacking.absorption.tools.options import EffectsToolConfig, LabelOptions
from sae_hacking.config import Config, resolved_path, set_field, setting
from sae_hacking.device import check_device_name
from sae_hacking.errors import FieldError
from sae_hacking.runs.options import RunDirOptions
from sae_hacking.saes.source import SAESource

# kind -> every file the run writes, the JSON last.
OUTPUTS = {
    "effect-network": ("edges.csv", "network.graphml", "network.html", "network.json"),
    "four-tuples": ("tuples.csv", "tuples.html", "tuples.json"),
    "effect-l0": ("effect_l0.csv", "effect_l0.png", "effect_l0.json"),
    "cluster": ("clusters.csv", "cluster.html", "cluster.json"),
    "decoder-pairs": ("pairs.csv", "report.html", "pairs.json"),
}
DEVICE_HELP = "auto, cpu, cuda, cuda:N, mps"
CLUSTER_RELEASE = "gemma-scope-2b-pt-res-canonical"  # gemma_cluster.py's SAE
CLUSTER_ID = "layer_20/width_16k/canonical"
COSINE_RELEASE = "gemma-scope-2b-pt-res-canonical"  # look_for_cosine_sim_pairs.py's SAE
COSINE_ID = "layer_20/width_65k/canonical"


def _latents_setting():
    return setting(
        None,
        help="only these ablated latents (default: every latent ablated at least "
        "`min_ablations` times)",
    )


def _check_latents(latents: tuple[int, ...] | None) -> None:
    if latents is not None:
        if not latents:
            raise FieldError("latents", "needs at least one latent index.")
        if min(latents) < 0:
            raise FieldError("latents", f"has negative latent index {min(latents)}.")


@dataclass(frozen=True)
class NetworkConfig(EffectsToolConfig):
    """The bipartite graph of ablator -> reader latents: the strongest mean effects."""

    n_edges: int = setting(
        1000,
        help="edges kept: the n_edges // 2 largest positive mean effects and the rest most "
        "negative ones (fewer when there are not that many)",
        gt=0,
    )
    min_ablations: int = setting(1, help="only latents ablated in at least this many prompts", gt=0)
    latents: tuple[int, ...] | None = _latents_setting()

    def __post_init__(self):
        super().__post_init__()
        _check_latents(self.latents)


@dataclass(frozen=True)
class TuplesConfig(EffectsToolConfig):
    """4-tuples (A, B, C, D): ablators A, C and readers B, D with mean effects AB, AD, CB above
    `treat_as_zero` and CD below -`treat_as_zero`."""

    treat_as_zero: float = setting(
        0.0, help="mean effects within +-this count as zero (no edge)", ge=0
    )
    max_results: int = setting(
        1000,
        help="keep the N strongest tuples (strength: the smallest of |AB|, |AD|, |CB|, |CD|); "
        "the total is counted exactly",
        gt=0,
    )
    min_ablations: int = setting(1, help="only latents ablated in at least this many prompts", gt=0)
    latents: tuple[int, ...] | None = _latents_setting()
    max_elements: int = setting(
        2**31,
        help="refuse more mean effects than this (ablated latents x reader latents) in memory",
        kind="free",
        gt=0,
    )
    device: str = setting("auto", help=DEVICE_HELP, kind="free", recorded=False)

    def __post_init__(self):
        super().__post_init__()
        _check_latents(self.latents)
        check_device_name("device", self.device)


@dataclass(frozen=True)
class EffectL0Config(EffectsToolConfig):
    """How many reader latents each ablation moves: its effect L0."""

    treat_as_zero: float = setting(
        0.0, help="a reader latent counts as moved when |mean effect| is above this", ge=0
    )
    exclude_over: float = setting(
        5000.0, help="leave out of the histogram ablated latents that move more readers than this"
    )
    bins: int = setting(50, help="histogram bins", gt=0, kind="free")
    output_path: str | None = setting(
        None,
        help="also write the histogram PNG to this path (the legacy script's only output)",
        kind="free",
    )
    min_ablations: int = setting(1, help="only latents ablated in at least this many prompts", gt=0)
    latents: tuple[int, ...] | None = _latents_setting()

    def __post_init__(self):
        super().__post_init__()
        _check_latents(self.latents)
        if self.output_path is not None:
            set_field(self, "output_path", str(Path(self.output_path).expanduser().absolute()))

    def check_inputs(self) -> None:
        super().check_inputs()
        if self.output_path is not None and not Path(self.output_path).parent.is_dir():
            raise FieldError("output_path", f"{self.output_path}: its folder does not exist.")


@dataclass(frozen=True)
class ClusterConfig(Config):
    """Hierarchical clustering of latents: ablated latents by their mean effects (given an
    ablate run), or one SAE's latents by their decoder directions."""

    input_path: str = setting(
        "",
        help="ablate results (run directory, results file or sidecar): cluster the ablated "
        "latents by their mean effects; without it, the SAE's latents by decoder direction",
    )
    by: Literal["effect", "decoder"] | None = setting(
        None,
        help="what to compare: effect (needs input_path) or decoder (the SAE's W_dec rows); "
        "default: effect with input_path, else decoder",
    )
    sae: SAESource = setting(
        default_factory=lambda: SAESource(CLUSTER_RELEASE),
        help="SAE (with --by decoder)",
        key="",
    )
    model: str | None = setting(
        None,
        help="model whose tokenizer and unembedding label the latents (--by decoder; default: "
        "the SAELens registry's model of the release)",
        kind="free",
    )
    linkage: Literal["average", "complete", "single", "weighted"] = setting(
        "average", help="scipy linkage method on cosine distances"
    )
    abridge: int | None = setting(
        None, help="only the first N latents (by index) of those clustered", gt=1
    )
    latents: tuple[int, ...] | None = setting(None, help="only these latents")
    min_ablations: int = setting(
        1, help="only latents ablated in at least this many prompts (--by effect)", gt=0
    )
    n_clusters: int = setting(
        20, help="also cut the tree into this many flat clusters (clusters.csv)", gt=0
    )
    max_latents: int = setting(
        20_000,
        help="refuse more latents than this: the condensed distance matrix holds n(n-1)/2 "
        "doubles (20,000 latents: 1.6 GB)",
        kind="free",
        gt=1,
    )
    allow_partial: bool = setting(
        False, help="read the results of only some shards of an ablate run (default: refused)"
    )
    labels: LabelOptions = setting(default_factory=LabelOptions, help="labels")
    run: RunDirOptions = setting(default_factory=RunDirOptions, help="run")

    def __post_init__(self):
        super().__post_init__()
        set_field(self, "sae", self.sae.with_default_id(CLUSTER_ID))
        if self.input_path:
            set_field(self, "input_path", resolved_path(self.input_path))
        if self.by == "effect" and not self.input_path:
            raise FieldError("by", "effect needs `input_path` (an ablate run).")
        if self.model is not None and self.mode == "effect":
            raise FieldError(
                "model",
                "applies only with `by` decoder: clustering an ablate run labels its latents "
                "with the model the run recorded.",
            )
        _check_latents(self.latents)
        if self.run.resume is not None:
            raise FieldError("resume", "does not apply: clustering does not resume.")

    @property
    def mode(self) -> str:
        return self.by or ("effect" if self.input_path else "decoder")

    def check_inputs(self) -> None:
        super().check_inputs()
        value = self.input_path
        if value and not Path(value).exists() and not Path(value + ".zst").exists():
            raise FieldError("input_path", f"{value}: no such file or folder.")


@dataclass(frozen=True)
class DecoderPairsConfig(Config):
    """Latent pairs of one SAE with the most similar decoder directions (cosine of W_dec
    rows), optionally only pairs that (almost) never fire together."""

    sae: SAESource = setting(default_factory=lambda: SAESource(COSINE_RELEASE), help="SAE", key="")
    model: str | None = setting(
        None,
        help="model whose tokenizer and unembedding label the latents (default: the "
        "co-occurrence run's, else the SAELens registry's model of the release)",
        kind="free",
    )
    cooccurrence_path: str | None = setting(
        None,
        help="cooccurrences results of this SAE (run directory, results file or sidecar): keep "
        "only pairs active together on at most `cooccurrence_threshold` tokens",
    )
    cooccurrence_threshold: int = setting(
        0, help="with cooccurrence_path: the most tokens a kept pair is active together on", ge=0
    )
    top_k: int = setting(1000, help="keep the N most similar pairs", gt=0)
    min_decoder_cosine: float | None = setting(
        None, help="keep only pairs whose decoder cosine is at least this, in [-1, 1]", ge=-1, le=1
    )
    latents: tuple[int, ...] | None = setting(
        None, help="only pairs that contain one of these latents"
    )
    allow_partial: bool = setting(
        False, help="read co-occurrences of only some shards of a run (default: refused)"
    )
    block_size: int = setting(
        4096, help="latents per block of the all-pairs products (memory ~ block^2)", kind="free",
        gt=0,
    )  # fmt: skip
    device: str = setting("auto", help=DEVICE_HELP, kind="free", recorded=False)
    labels: LabelOptions = setting(default_factory=LabelOptions, help="labels")
    run: RunDirOptions = setting(default_factory=RunDirOptions, help="run")

    def __post_init__(self):
        super().__post_init__()
        set_field(self, "sae", self.sae.with_default_id(COSINE_ID))
        self.sae.require("sae_release")
        check_device_name("device", self.device)
        if self.cooccurrence_path:
            set_field(self, "cooccurrence_path", resolved_path(self.cooccurrence_path))
        _check_latents(self.latents)
        if self.run.resume is not None:
            raise FieldError("resume", "does not apply: decoder-pairs does not resume.")

    def check_inputs(self) -> None:
        super().check_inputs()
        value = self.cooccurrence_path
        if value and not Path(value).exists() and not Path(value + ".zst").exists():
            raise FieldError("cooccurrence_path", f"{value}: no such file or folder.")
