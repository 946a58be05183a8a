"""The merge of each kind of results, keyed by kind: what ``sae-hacking merge`` and rank 0 of a
``torchrun`` run call. Imports the merge only when asked (``merge`` of counts never loads the
ablation code), so this registry stays torch-free until used."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sae_hacking.absorption.ablation.identity import KIND as ABLATIONS
from sae_hacking.absorption.cooccurrence.identity import KIND as COOCCURRENCES
from sae_hacking.absorption.evidence.identity import KIND as LATENTS

Merge = Callable[[Path, list[Path]], Any]


def _merge_ablations() -> Merge:
    from sae_hacking.absorption.ablation.stream import merge_ablations

    return merge_ablations


def _merge_evidence() -> Merge:
    from sae_hacking.absorption.evidence.merge import merge_with_evidence

    return merge_with_evidence


def _merge_sums() -> Merge:
    from sae_hacking.runs.merge import merge_results

    return merge_results


# Kinds whose rows are keyed by latent merge with their own function; kinds that may hold latent
# evidence merge its example tables by their rule; every other kind sums its tensors.
MERGERS: dict[str, Callable[[], Merge]] = {
    ABLATIONS: _merge_ablations,
    COOCCURRENCES: _merge_evidence,
    LATENTS: _merge_evidence,
}


def merger_of(kind: str | None) -> Merge:
    """The function that merges results of ``kind``: ``merge(out, files) -> (data, sidecar)``."""
    return MERGERS.get(kind, _merge_sums)()
