"""The evidence settings of ``cooccurrences`` and ``latents`` (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass

from sae_hacking.config import Config, set_field, setting
from sae_hacking.data.source import TextSource
from sae_hacking.errors import FieldError
from sae_hacking.lm.source import ModelSource
from sae_hacking.runs.options import RunOptions
from sae_hacking.saes.source import SAESource

# The co-occurrence pass's defaults (absorption.configs takes them from here).
ABLATOR_RELEASE = "gemma-scope-2b-pt-mlp-canonical"
ABLATOR_ID = "layer_20/width_65k/canonical"


def legacy_text() -> TextSource:
    return TextSource(max_tokens_in_prompt=100, batch_size=5)


@dataclass(frozen=True)
class EvidenceOptions(Config):
    """What is kept of each latent's activations besides the counts (0 top examples: none)."""

    top_examples: int = setting(
        20,
        help="keep each latent's N largest activations with their contexts (0: collect no "
        "evidence)",
        ge=0,
    )
    quantile_bands: int = setting(
        10, help="a seeded sample of each latent's activations, shown in this many bands", ge=1
    )
    examples_per_band: int = setting(5, help="sampled examples per band", ge=0)
    context_tokens: int = setting(
        16, help="tokens kept either side of each example (as ids; decoded when shown)", ge=0
    )
    evidence_seed: int = setting(0, help="seed of the sample's order-independent hash", ge=0)

    @property
    def enabled(self) -> bool:
        return self.top_examples > 0

    @property
    def samples(self) -> int:
        return self.quantile_bands * self.examples_per_band


@dataclass(frozen=True)
class LatentsConfig(Config):
    """Collect, over the real tokens of the first ``n_prompts`` prompts, what each latent of
    one SAE fires on (no pair counts)."""

    model: ModelSource = setting(default_factory=ModelSource, help="model")
    sae: SAESource = setting(default_factory=lambda: SAESource(ABLATOR_RELEASE), help="SAE", key="")
    text: TextSource = setting(default_factory=legacy_text, help="text")
    evidence: EvidenceOptions = setting(
        default_factory=EvidenceOptions, help="latent evidence (what each latent fires on)"
    )
    run: RunOptions = setting(default_factory=RunOptions, help="run")

    def __post_init__(self):
        super().__post_init__()
        set_field(self, "sae", self.sae.with_default_id(ABLATOR_ID))
        self.sae.require("sae_release")
        if not self.evidence.enabled:
            raise FieldError("top_examples", "must be at least 1: it is all that `latents` keeps.")
