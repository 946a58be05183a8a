"""The merge of results that hold latent evidence (``cooccurrences``, ``latents``): counts and
histograms are summed, the example tables merged by their own exact rule, the logit lens (a
function of the weights, which every shard shares) copied from the first file."""

from __future__ import annotations

from pathlib import Path

import torch

from sae_hacking.runs.merge import merge_results
from sae_hacking.runs.results import ResultsFile


def combine_evidence(files: list[ResultsFile]) -> dict[str, torch.Tensor]:
    """The merged example tables and the first file's logit lens (empty without evidence)."""
    from sae_hacking.absorption.evidence.collect import EvidenceCollector

    first = files[0]
    if "top_values_eX" not in first.keys():
        return {}
    e, top = first.shape("top_values_eX")
    samples = first.shape("sample_values_eQ")[1] if "sample_values_eQ" in first.keys() else 0
    width = first.shape("top_context_ids_eXW")[2]
    collector = EvidenceCollector(e, top, samples, (width - 1) // 2, 0)
    tables = ("top_", "sample_")
    for f in files:
        collector.merge({k: f.read(k) for k in f.keys() if k.startswith((*tables, "histogram_e"))})
    merged = {k: v for k, v in collector.state().items() if k.startswith(tables)}
    merged.update({k: first.read(k) for k in first.keys() if k.startswith("logit_lens_")})
    return merged


def merge_with_evidence(out: str | Path, paths: list[str | Path]):
    """:func:`~sae_hacking.runs.merge.merge_results` with :func:`combine_evidence`."""
    return merge_results(out, paths, combine_evidence)
