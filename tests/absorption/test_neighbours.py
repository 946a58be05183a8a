"""Top co-occurring latents: the streamed one-pass table equals the dense definition on random
counts full of ties, whatever the chunking; rows mode and a real results file agree with
``Cooccurrences.row``."""

from __future__ import annotations

import random

import pytest
import torch

from sae_hacking.absorption.cooccurrence.kernels import packed_size, pair_index
from sae_hacking.absorption.evidence.neighbours import (
    reference_neighbours,
    row_neighbours,
    stream_neighbours,
    top_neighbours,
)
from sae_hacking.runs.results import ResultsFile, write_results


def random_triangle(e: int, seed: int, high: int = 4, zeros: float = 0.5) -> torch.Tensor:
    """Counts from a small range (many exact ties), about ``zeros`` of them 0."""
    gen = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, high, (packed_size(e),), generator=gen, dtype=torch.int32)
    counts[torch.rand(packed_size(e), generator=gen) < zeros] = 0
    return counts


def chunks(packed: torch.Tensor, size: int, shuffle: int | None = None):
    pieces = [(s, packed[s : s + size]) for s in range(0, packed.numel(), size)]
    if shuffle is not None:
        random.Random(shuffle).shuffle(pieces)
    return pieces


@pytest.mark.parametrize(
    ("e", "k", "seed", "size", "zeros"),
    [
        (1, 3, 0, 5, 0.0),
        (2, 3, 1, 1, 0.0),
        (9, 3, 2, 7, 0.3),
        (23, 10, 3, 13, 0.5),
        (40, 10, 4, 97, 0.2),
        (40, 5, 5, 1000, 0.9),
        (17, 20, 6, 4, 0.1),  # k above e - 1: every partner listed
    ],
)
def test_the_stream_equals_the_dense_reference(e, k, seed, size, zeros):
    packed = random_triangle(e, seed, zeros=zeros)
    want = reference_neighbours(packed, e, k)
    for order in (None, seed):  # in order, and chunks shuffled
        ids, counts = stream_neighbours(chunks(packed, size, order), e, k)
        assert torch.equal(ids, want[0]) and torch.equal(counts, want[1])


def test_ties_go_to_the_smaller_index_and_zeros_and_self_are_left_out():
    e = 6
    packed = torch.zeros(packed_size(e), dtype=torch.int32)
    for (i, j), c in {(0, 0): 9, (0, 5): 2, (0, 3): 2, (0, 1): 1, (2, 4): 7}.items():
        packed[pair_index(i, j, e)] = c
    ids, counts = stream_neighbours(chunks(packed, 4), e, k=2)
    assert ids[0].tolist() == [3, 5] and counts[0].tolist() == [2, 2]
    assert ids[3].tolist() == [0, -1] and counts[3].tolist() == [2, 0]
    assert ids[2].tolist() == [4, -1] and ids[4].tolist() == [2, -1]
    assert ids[1].tolist() == [0, -1]


def test_row_neighbours_equal_the_reference_row():
    e = 30
    packed = random_triangle(e, 7, high=3, zeros=0.3)
    want = reference_neighbours(packed, e, 10)
    dense = torch.zeros((e, e), dtype=torch.int64)
    i, j = torch.triu_indices(e, e)
    dense[i, j] = dense[j, i] = packed.long()
    for latent in range(e):
        got = row_neighbours(dense[latent], latent, 10)
        assert [p for p, _ in got] == [p for p in want[0][latent].tolist() if p >= 0]
        assert [c for _, c in got] == want[1][latent].tolist()[: len(got)]


def test_top_neighbours_reads_a_results_file_in_one_pass(tmp_path, monkeypatch):
    e = 50
    packed = random_triangle(e, 8, zeros=0.6)
    rows = torch.tensor([3, 17, 0])
    dense = torch.zeros((e, e), dtype=torch.int32)
    i, j = torch.triu_indices(e, e)
    dense[i, j] = dense[j, i] = packed
    common = {"activations_e": torch.diagonal(dense).long(), "tokens_1": torch.tensor([99])}
    write_results(tmp_path / "full", {"cooccurrences_P": packed, **common}, {"kind": "x"})
    write_results(
        tmp_path / "rows",
        {"cooccurrences_De": dense[rows], "rows_D": rows, **common},
        {"kind": "x"},
    )
    write_results(tmp_path / "none", common, {"kind": "x"})
    want = reference_neighbours(packed, e, 10)

    reads = []
    real = ResultsFile.iter_ranges

    def counted(self, key, chunk):
        reads.append(key)
        yield from real(self, key, chunk)

    monkeypatch.setattr(ResultsFile, "iter_ranges", counted)
    with ResultsFile(tmp_path / "full.safetensors.zst") as f:
        full = top_neighbours(f, chunk=64)
    assert reads == ["cooccurrences_P"]
    assert torch.equal(full.ids_eK, want[0]) and torch.equal(full.counts_eK, want[1])
    assert full.of(4) == [
        (p, c) for p, c in zip(*(t[4].tolist() for t in want), strict=True) if p >= 0
    ]
    with ResultsFile(tmp_path / "rows.safetensors.zst") as f:
        by_rows = top_neighbours(f)
    for latent in range(e):
        if latent in rows.tolist():
            assert by_rows.of(latent) == full.of(latent)
        else:
            assert by_rows.of(latent) is None
    with ResultsFile(tmp_path / "none.safetensors.zst") as f:
        assert top_neighbours(f) is None
