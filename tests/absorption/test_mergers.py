"""The merge registry: ablation results (rows keyed by latent) have their own merge, results that
may hold latent evidence theirs, every other kind sums; `sae-hacking merge` and rank 0 of a
torchrun run both look the merge up here."""

from sae_hacking.absorption.ablation.stream import merge_ablations
from sae_hacking.absorption.evidence.merge import merge_with_evidence
from sae_hacking.absorption.mergers import merger_of
from sae_hacking.runs.merge import merge_results


def test_each_kind_gets_its_merge():
    assert merger_of("ablations") is merge_ablations
    assert merger_of("cooccurrences") is merge_with_evidence
    assert merger_of("latents") is merge_with_evidence
    assert merger_of(None) is merge_results  # a file without a kind: the checks refuse it later
