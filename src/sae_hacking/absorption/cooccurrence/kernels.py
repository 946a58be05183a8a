"""Exact latent co-occurrence counting: the counting kernels and their reference.

Input per batch: the active latents of each real token as a ragged list, ``latents_N`` (latent
ids, ascending within a token) with ``offsets_T1`` (token ``t`` owns ``latents_N[offsets[t]:
offsets[t+1]]``), as :func:`active_lists` builds from activations.

Output, full mode: the upper triangle ``i ≤ j`` of ``C = AᵀA`` (``A`` the binary token × latent
matrix) packed row-major into a 1-D tensor of length ``e(e+1)/2`` (Shazeer letter ``P``):
entry ``(i, j)`` lies at ``row_start[i] + j`` with ``row_start[i] = i·e − i(i−1)/2 − i``
(:func:`row_starts`). Rows mode: the full rows ``C[r, :]`` of selected latents, ``[D, e]``.

Kernels (all give identical integers; the tests compare them with the loop definition,
:func:`tests.oracles.count_pairs_reference`):

- :func:`add_pairs_numba`: a compiled loop over each token's pairs, rows split across threads
  (CPU; 11× the legacy sparse-matmul method, see ``benchmarks/cooccurrence_speed.py``).
- :func:`add_pairs_torch`: the same pairs as index tensors and one ``index_add_`` (any device;
  the path on CUDA, where the scatter-add is atomic and fast).
"""

from __future__ import annotations

import typing

import torch
from jaxtyping import Bool, Int

PAIRS_PER_CHUNK = 2**24  # bound on the index tensors of add_pairs_torch


def packed_size(e: int) -> int:
    return e * (e + 1) // 2


def row_starts(e: int, device: torch.device | str = "cpu") -> Int[torch.Tensor, " e"]:
    """``row_start[i]`` such that pair ``(i, j)``, ``i ≤ j``, is at ``row_start[i] + j``."""
    i = torch.arange(e, dtype=torch.int64, device=device)
    return i * e - i * (i - 1) // 2 - i


def pair_index(i: int, j: int, e: int) -> int:
    """Position of the unordered pair ``{i, j}`` in the packed triangle."""
    i, j = min(i, j), max(i, j)
    return i * e - i * (i - 1) // 2 - i + j


def active_lists(
    active_Te: Bool[torch.Tensor, "T e"],
) -> tuple[Int[torch.Tensor, " N"], Int[torch.Tensor, " T+1"]]:
    """``(latents_N, offsets_T1)``: the active latents of each token, ascending, concatenated."""
    tokens_N, latents_N = active_Te.nonzero(as_tuple=True)  # row-major: ascending within a row
    counts_T = torch.bincount(tokens_N, minlength=active_Te.shape[0])
    offsets_T1 = torch.zeros(active_Te.shape[0] + 1, dtype=torch.int64, device=active_Te.device)
    torch.cumsum(counts_T, 0, out=offsets_T1[1:])
    return latents_N.to(torch.int64), offsets_T1


# -- numba kernels (compiled on first use, cached next to this file) ------------------------------


def _numba_kernels():
    import numba

    # Thread k adds the pairs whose row latent i has i % n_parts == k: rows are disjoint, so
    # the threads never write the same entry and the sums stay exact and deterministic.
    # no_type_check: numba compiles these itself; a test run's shape-checking wrapper would not
    # compile (jaxtyping's import hook skips functions marked so).
    @numba.njit(cache=True, nogil=True, parallel=True)
    @typing.no_type_check
    def add_pairs(acc, row_start, latents, offsets, n_parts):
        for part in numba.prange(n_parts):
            for t in range(offsets.shape[0] - 1):
                lo, hi = offsets[t], offsets[t + 1]
                for a in range(lo, hi):
                    i = latents[a]
                    if i % n_parts == part:
                        base = row_start[i]
                        for b in range(a, hi):
                            acc[base + latents[b]] += 1

    @numba.njit(cache=True, nogil=True)
    @typing.no_type_check
    def add_rows(acc, row_pos, latents, offsets):
        for t in range(offsets.shape[0] - 1):
            lo, hi = offsets[t], offsets[t + 1]
            for a in range(lo, hi):
                r = row_pos[latents[a]]
                if r >= 0:
                    for b in range(lo, hi):
                        acc[r, latents[b]] += 1

    return add_pairs, add_rows


_KERNELS = None


def _kernels():
    global _KERNELS
    if _KERNELS is None:
        _KERNELS = _numba_kernels()
    return _KERNELS


def add_pairs_numba(
    acc_P: torch.Tensor,
    row_start_e: torch.Tensor,
    latents_N: torch.Tensor,
    offsets_T1: torch.Tensor,
) -> None:
    """Add every token's pairs ``(i ≤ j)`` into the packed CPU triangle ``acc_P`` in place."""
    import numba

    n_parts = numba.get_num_threads()
    _kernels()[0](
        acc_P.numpy(), row_start_e.numpy(), latents_N.numpy(), offsets_T1.numpy(), n_parts
    )


def add_rows_numba(
    acc_De: torch.Tensor, row_pos_e: torch.Tensor, latents_N: torch.Tensor, offsets_T1: torch.Tensor
) -> None:
    """Rows mode: ``acc_De[row_pos[i], j] += 1`` for every token with ``i`` and ``j`` active
    and ``row_pos[i] ≥ 0`` (``-1`` marks latents without a row)."""
    _kernels()[1](acc_De.numpy(), row_pos_e.numpy(), latents_N.numpy(), offsets_T1.numpy())


# -- torch kernels (any device) ------------------------------------------------------------------


def _token_chunks(offsets_T1: torch.Tensor, upper: bool):
    """Split the tokens into chunks of at most ``PAIRS_PER_CHUNK`` pairs (one token may exceed)."""
    n_T = offsets_T1.diff()
    pairs_T = n_T * (n_T + 1) // 2 if upper else n_T * n_T
    ends = torch.cumsum(pairs_T, 0).cpu()
    t, n = 0, n_T.shape[0]
    while t < n:
        base = int(ends[t - 1]) if t else 0
        stop = max(int(torch.searchsorted(ends, base + PAIRS_PER_CHUNK, right=True)), t + 1)
        yield t, min(stop, n)
        t = stop


def _pairs(latents_N, offsets_T1, t0, t1, upper):
    """Entry indices ``(a, b)`` of every pair within tokens ``t0..t1`` (``a ≤ b`` if upper)."""
    lo, hi = offsets_T1[t0], offsets_T1[t1]
    device = latents_N.device
    entries = torch.arange(int(lo), int(hi), device=device)
    token_of = torch.repeat_interleave(
        torch.arange(t1 - t0, device=device), offsets_T1[t0 + 1 : t1 + 1] - offsets_T1[t0:t1]
    )
    first = offsets_T1[t0:t1][token_of]
    end = offsets_T1[t0 + 1 : t1 + 1][token_of]
    start = entries if upper else first
    counts = end - start
    a = torch.repeat_interleave(entries, counts)
    begin = torch.cumsum(counts, 0) - counts
    b = torch.repeat_interleave(start, counts) + (
        torch.arange(a.shape[0], device=device) - torch.repeat_interleave(begin, counts)
    )
    return a, b


def add_pairs_torch(acc_P, row_start_e, latents_N, offsets_T1) -> None:
    """:func:`add_pairs_numba` with index tensors and ``index_add_`` (on ``acc_P``'s device)."""
    for t0, t1 in _token_chunks(offsets_T1, upper=True):
        a, b = _pairs(latents_N, offsets_T1, t0, t1, upper=True)
        keys = row_start_e[latents_N[a]] + latents_N[b]
        acc_P.index_add_(0, keys, torch.ones_like(keys, dtype=acc_P.dtype))


def add_rows_torch(acc_De, row_pos_e, latents_N, offsets_T1) -> None:
    """:func:`add_rows_numba` with index tensors and ``index_add_``."""
    e = acc_De.shape[1]
    for t0, t1 in _token_chunks(offsets_T1, upper=False):
        a, b = _pairs(latents_N, offsets_T1, t0, t1, upper=False)
        r = row_pos_e[latents_N[a]]
        keep = r >= 0
        keys = r[keep] * e + latents_N[b][keep]
        acc_De.view(-1).index_add_(0, keys, torch.ones_like(keys, dtype=acc_De.dtype))
