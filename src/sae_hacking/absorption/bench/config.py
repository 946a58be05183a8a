"""Settings of ``sae-hacking absorption-bench`` (torch-free, so a bad flag is one line at once)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from sae_hacking.config import Config, set_field, setting
from sae_hacking.errors import FieldError

KIND = "absorption-bench"
OUTPUTS = ("bench.json", "bench.md")
BenchArchitecture = Literal["topk", "hierarchical", "matryoshka", "batchtopk", "relu", "tiered"]
ARCHITECTURES = get_args(BenchArchitecture)
# (prompts, training steps, widths, architectures) of a full run and of a quick one.
FULL = (500, 600, (60, 120), ARCHITECTURES)
QUICK = (300, 300, (60,), ("topk", "hierarchical"))


@dataclass(frozen=True)
class BenchConfig(Config):
    """Train SAEs on a tiny LM whose features are known, run the absorption search on them and
    score it against the truth (module :mod:`sae_hacking.absorption.bench.run`)."""

    seeds: tuple[int, ...] = setting(
        (0, 1, 2, 3, 4), help="seeds of the world (model, geometry, prompts) and of the SAEs"
    )
    groups: int = setting(16, help="G: groups (first letters) of the vocabulary", ge=2, le=20)
    architectures: tuple[BenchArchitecture, ...] | None = setting(
        None, help="ablator SAEs to train (quick: topk hierarchical)"
    )
    widths: tuple[int, ...] | None = setting(
        None,
        help="latent budgets of the ablator SAEs (the hierarchical and tiered SAEs: a third as "
        "parents, each "
        "with two children) (quick: 60)",
    )
    k: int = setting(
        2,
        help="active latents per token of the TopK family (hierarchical: k/2 "
        "parents, each with its child; tiered: k/2 parents and k/2 children on average)",
        gt=0,
    )
    prompts: int | None = setting(None, help="prompts of each world (quick: 300)", gt=0)
    steps: int | None = setting(None, help="training steps of each SAE (quick: 300)", gt=0)
    quick: bool = setting(
        False, help="a small run (one width, two architectures, fewer prompts and steps), for tests"
    )
    output_dir: str | None = setting(
        None,
        help="run directory, a new or empty folder (default results/<timestamp>-absorption-bench)",
        kind="free",
    )
    quiet: bool = setting(False, help="no progress bars", kind="free")

    def __post_init__(self):
        super().__post_init__()
        preset = QUICK if self.quick else FULL
        for key, value in zip(("prompts", "steps", "widths", "architectures"), preset, strict=True):
            if getattr(self, key) is None:
                set_field(self, key, tuple(value) if isinstance(value, tuple) else value)
        if not self.seeds:
            raise FieldError("seeds", "needs at least one seed.")
        for width in self.widths:
            if width < 6 or width % 3:
                raise FieldError(
                    "widths",
                    f"has {width}; each must be a multiple of 3 and at least 6 (the hierarchical "
                    "SAE spends a third on parents, two thirds on their children).",
                )
        paired = [a for a in ("hierarchical", "tiered") if a in self.architectures]
        if paired and self.k % 2:
            raise FieldError("k", f"is {self.k}; the {paired[0]} SAE needs an even k.")
