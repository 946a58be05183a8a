"""Each latent's top co-occurring latents ("neighbours") from a ``cooccurrences`` results file:
the ``k`` latents it is most often active with, by observed count (ties: the smaller index),
never itself, never a latent it was never active with.

Full triangle (``cooccurrences_P``, the packed upper triangle of
:mod:`sae_hacking.absorption.cooccurrence.kernels`): ONE streamed pass over the file
(:meth:`~sae_hacking.runs.results.ResultsFile.iter_ranges`), each entry ``(i, j)``, ``i < j``,
offered to both latent ``i`` (partner ``j``) and latent ``j`` (partner ``i``) of a running
top-``k`` table ``[e, k]``. No ``e x e`` matrix: the state is the table and one chunk.
Rows mode (``cooccurrences_De`` + ``rows_D``): only the latents with a row get neighbours, read
row by row.

Cost at e = 65,536 (the triangle: 2,147,516,416 int32 entries, 8.6 GB uncompressed): the pass
decompresses every zstd frame once (512 chunks of 2^22 entries, one 16 MiB frame each) and walks
each chunk as the row segments it holds: a segment's entries are compared, as one slice, with
the k-th kept count of their column latents (the column side) and of their row latent (the row
side, cut to the segment's best k), so only candidates that would enter the table reach the
sort-based merge. No gathers over a chunk, no e x e matrix; memory is the ``[e, k]`` table
(2 x 5 MiB at k = 10) plus one chunk (16 MiB) and its candidates. Measured on this project's
2-core CPU box (one thread), a synthetic full pass at e = 65,536: 56 s of neighbour work with 95%
of the entries zero, 108 s with none zero (the worst case), plus reading the file (zstd at
~0.37 GB/s here: ~23 s for the 8.6 GB); about 1.5 to 2.5 minutes in all.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from jaxtyping import Int

from sae_hacking.absorption.cooccurrence.kernels import row_starts

K = 10
CHUNK = 2**22  # int32 entries a chunk: 16 MiB, one zstd frame of a results file


@dataclass
class Neighbours:
    """``ids_eK[i]``: latent ``i``'s top partners, most frequent first (``-1``: no more),
    ``counts_eK[i]`` the tokens where both are active; ``rows``: the latents that have
    neighbours (``None``: every latent, from the full triangle)."""

    ids_eK: Int[torch.Tensor, "e K"]
    counts_eK: Int[torch.Tensor, "e K"]
    rows: list[int] | None = None

    def __post_init__(self):
        self._rows = None if self.rows is None else set(self.rows)

    def has(self, i: int) -> bool:
        return self._rows is None or i in self._rows

    def of(self, i: int) -> list[tuple[int, int]] | None:
        """``[(partner, count), ...]`` of latent ``i``; ``None`` where the file has no counts."""
        if not self.has(i):
            return None
        ids, counts = self.ids_eK[i].tolist(), self.counts_eK[i].tolist()
        return [(j, c) for j, c in zip(ids, counts, strict=True) if j >= 0]


class RunningTop:
    """The ``k`` largest ``(count, -partner)`` offered so far for each of ``e`` latents."""

    def __init__(self, e: int, k: int):
        self.e, self.k = e, k
        self.ids_eK = torch.full((e, k), -1, dtype=torch.int64)
        self.counts_eK = torch.zeros((e, k), dtype=torch.int64)

    def bar(self) -> tuple[Int[torch.Tensor, " e"], Int[torch.Tensor, " e"]]:
        """``(count, partner)`` a candidate must beat to enter (a higher count, or the same
        count and a smaller partner): the k-th kept, or ``(1, e)`` while there is room (any
        count of 1 or more enters)."""
        full = self.ids_eK[:, -1] >= 0
        count = torch.where(full, self.counts_eK[:, -1], 1)
        return count, torch.where(full, self.ids_eK[:, -1], self.e)

    def offer(
        self,
        latent_N: Int[torch.Tensor, " N"],
        partner_N: Int[torch.Tensor, " N"],
        count_N: Int[torch.Tensor, " N"],
    ) -> None:
        """Offer candidate partners (distinct ``(latent, partner)`` pairs, never offered
        before, counts > 0)."""
        bar_count_e, bar_id_e = self.bar()
        bar_count, bar_id = bar_count_e[latent_N], bar_id_e[latent_N]
        passing = (count_N > bar_count) | ((count_N == bar_count) & (partner_N < bar_id))
        if not bool(passing.any()):
            return
        latent_N, partner_N, count_N = latent_N[passing], partner_N[passing], count_N[passing]
        touched_Y = torch.unique(latent_N)
        old_ids, old_counts = self.ids_eK[touched_Y], self.counts_eK[touched_Y]
        filled = old_ids >= 0
        old_latent = touched_Y[:, None].expand_as(old_ids)[filled]
        latent_all = torch.cat([old_latent, latent_N])
        partner_all = torch.cat([old_ids[filled], partner_N])
        count_all = torch.cat([old_counts[filled], count_N])
        # Sorted by (latent, count descending, partner): three stable sorts, last key first.
        order = torch.argsort(partner_all, stable=True)
        order = order[torch.argsort(-count_all[order], stable=True)]
        order = order[torch.argsort(latent_all[order], stable=True)]
        _, per_latent = torch.unique_consecutive(latent_all[order], return_counts=True)
        firsts = torch.repeat_interleave(torch.cumsum(per_latent, 0) - per_latent, per_latent)
        rank = torch.arange(order.numel()) - firsts
        kept, rank = order[rank < self.k], rank[rank < self.k]
        self.ids_eK[touched_Y] = -1
        self.counts_eK[touched_Y] = 0
        self.ids_eK[latent_all[kept], rank] = partner_all[kept]
        self.counts_eK[latent_all[kept], rank] = count_all[kept]


def stream_neighbours(
    chunks: Iterable[tuple[int, torch.Tensor]], e: int, k: int = K
) -> tuple[Int[torch.Tensor, "e K"], Int[torch.Tensor, "e K"]]:
    """``(ids_eK, counts_eK)`` of the packed triangle given as ``(start, entries)`` chunks of
    its flattened elements, in any chunk size, in order or not."""
    top = RunningTop(e, k)
    # Packed index of (i, i): row i holds entries [first[i], first[i] + e - i), columns i..e-1.
    first = (row_starts(e) + torch.arange(e)).tolist()
    for start, entries in chunks:
        stop = start + entries.numel()
        bar_count_e, bar_id_e = top.bar()
        pieces = []
        i = bisect.bisect_right(first, start) - 1
        # A chunk is a run of row segments: both sides of a segment are slices, no gathers.
        while i < e and first[i] < stop:
            lo, hi = max(first[i], start), min(first[i] + e - i, stop)
            seg = entries[lo - start : hi - start]
            j0 = i + lo - first[i]  # the column of seg[0]
            if j0 == i:  # the diagonal: a latent's own count
                seg, j0 = seg[1:], j0 + 1
            if seg.numel():
                # Column side: latent j (j0 + hit) gains partner i.
                columns = slice(j0, j0 + seg.numel())
                bar = bar_count_e[columns]
                hit = ((seg > bar) | ((seg == bar) & (i < bar_id_e[columns]))).nonzero()
                hit = hit.squeeze(1)
                pieces.append((hit + j0, torch.full_like(hit, i), seg[hit]))
                # Row side: latent i gains partners j; only the segment's best k can stay.
                tie = seg == bar_count_e[i]
                tie[max(0, int(bar_id_e[i]) - j0) :] = False  # partners j >= the bar's
                hit = ((seg > bar_count_e[i]) | tie).nonzero().squeeze(1)
                if hit.numel() > k:  # stable: equal counts keep the smaller column first
                    hit = hit[torch.sort(-seg[hit].long(), stable=True).indices[:k]]
                pieces.append((torch.full_like(hit, i), hit + j0, seg[hit]))
            i += 1
        if pieces:
            latent, partner, count = (torch.cat(p) for p in zip(*pieces, strict=True))
            top.offer(latent, partner, count.long())
    return top.ids_eK, top.counts_eK


def row_neighbours(
    row_e: Int[torch.Tensor, " e"], latent: int, k: int = K
) -> list[tuple[int, int]]:
    """The top ``k`` partners of ``latent`` from its full row (rows mode)."""
    row = row_e.long().clone()
    row[latent] = 0
    order = torch.sort(-row, stable=True).indices[:k]  # stable: ties keep the smaller index
    return [(j, int(row[j])) for j in order.tolist() if row[j] > 0]


def top_neighbours(results, k: int = K, chunk: int = CHUNK) -> Neighbours | None:
    """The neighbours of a ``cooccurrences`` :class:`~sae_hacking.runs.results.ResultsFile`;
    ``None`` when it holds no pair counts (a ``latents`` run)."""
    keys = results.keys()
    e = results.shape("activations_e")[0]
    if "cooccurrences_P" in keys:
        ids, counts = stream_neighbours(results.iter_ranges("cooccurrences_P", chunk), e, k)
        return Neighbours(ids, counts)
    if "cooccurrences_De" in keys:
        rows = results.read("rows_D").tolist()
        ids = torch.full((e, k), -1, dtype=torch.int64)
        counts = torch.zeros((e, k), dtype=torch.int64)
        for d, latent in enumerate(rows):
            found = row_neighbours(
                results.read_range("cooccurrences_De", d * e, (d + 1) * e), latent, k
            )
            for slot, (j, c) in enumerate(found):
                ids[latent, slot], counts[latent, slot] = j, c
        return Neighbours(ids, counts, rows)
    return None


def reference_neighbours(
    packed_P: Int[torch.Tensor, " P"], e: int, k: int = K
) -> tuple[Int[torch.Tensor, "e K"], Int[torch.Tensor, "e K"]]:
    """The definition, densely (small ``e`` only): the symmetric ``e x e`` counts, each row
    sorted by count descending then index, the diagonal and zeros left out."""
    dense = torch.zeros((e, e), dtype=torch.int64)
    i, j = torch.triu_indices(e, e)  # row-major: the packed order
    dense[i, j] = packed_P.long()
    dense[j, i] = packed_P.long()
    ids = torch.full((e, k), -1, dtype=torch.int64)
    counts = torch.zeros((e, k), dtype=torch.int64)
    for a in range(e):
        partners = sorted(
            (b for b in range(e) if b != a and dense[a, b] > 0), key=lambda b: (-dense[a, b], b)
        )[:k]
        for slot, b in enumerate(partners):
            ids[a, slot], counts[a, slot] = b, dense[a, b]
    return ids, counts
