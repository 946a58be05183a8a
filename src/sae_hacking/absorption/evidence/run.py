"""``sae-hacking latents``: the co-occurrence pass without the pair counts, for what each latent
fires on (:mod:`sae_hacking.absorption.evidence.collect`), the activation counts and the logit
lens. Resumable, shardable and torchrun-able like ``cooccurrences``, with the same code."""

from __future__ import annotations

from pathlib import Path

from sae_hacking.absorption.evidence.identity import KIND, OUTPUTS, RESULTS_NAME, SLUG
from sae_hacking.absorption.evidence.options import LatentsConfig


def run(config: LatentsConfig) -> Path:
    from sae_hacking.absorption.mergers import merger_of
    from sae_hacking.runs.distributed import run_streamed

    return run_streamed(config, KIND, SLUG, RESULTS_NAME, run_one, lambda: merger_of(KIND))


def run_one(config: LatentsConfig) -> Path:
    from sae_hacking.absorption.cooccurrence.run import run_pass

    return run_pass(config, config.sae, "", (KIND, SLUG, RESULTS_NAME, OUTPUTS))
