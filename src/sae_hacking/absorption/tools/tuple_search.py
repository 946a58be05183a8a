"""4-tuples counted and ranked exactly with sign matrices (the ``four-tuples`` tool's work).

A 4-tuple at threshold ``s`` is (A, B, C, D), ablators ``A != C`` and readers B, D, with mean
effects ``AB > s``, ``AD > s``, ``CB > s`` and ``CD < -s``. With ``P_DE = mean > s`` and
``N_DE = mean < -s``, the B of a pair (A, C) range over ``P_A & P_C`` and the D over
``P_A & N_C`` (so ``B != D`` by itself), and the pair has ``(P P^T)[A, C] * (P N^T)[A, C]``
tuples: two 0/1 matrix products, exact in float32 while the dot products (at most E) stay under
2^24, summed in int64 per ablator and in Python ints overall.

A tuple's strength is ``min(AB, AD, CB, -CD)``; it is above ``s`` exactly when the tuple exists
at threshold ``s``. So the ``max_results`` strongest are found without listing the rest: bisect
``s`` over the bit patterns of non-negative float32s (their integer order is the float order;
at most 32 counts) for the largest ``s`` that leaves at least ``max_results`` tuples, list only
those (the ``max_results`` plus the ties at the cut), sort by strength descending, then
(A, B, C, D) ascending, and keep ``max_results``.

Letters: D ablated latents (rows of ``mean_DE``, in latent order), E reader latents, R rows of
one block, Q (A, C) pairs of one chunk, T tuples of one chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float

from sae_hacking.absorption.tools.threshold import float32_bits, float32_floor, float32_of_bits

BLOCK_ELEMENTS = 2**24  # elements of one block of the D x D pair counts
TUPLE_BUDGET = 2**22  # tuples listed at a time
EXACT_READERS = 2**24  # float32 sums of 0/1 are exact below this
SPARSE_BELOW = 0.05  # CPU: sparse counts when at most this share of the effects is non-zero


@dataclass
class Found:
    """The result of :func:`strongest_tuples`. Kept tuples are rows of ``abcd_K4`` (A and C as
    rows of ``mean_DE``, B and D reader latents) with their effects ``AB, AD, CB, CD``."""

    total: int  # tuples at treat_as_zero
    threshold: float  # every kept tuple has strength above this (a float32)
    listed: int  # tuples listed to choose the kept ones from
    counts: int  # sign-matrix counts computed (the total's included)
    abcd_K4: np.ndarray
    effects_K4: np.ndarray
    strength_K: np.ndarray


class _Signs:
    """The sign matrices at one threshold ``s``: ``pos_DE``, ``neg_DE`` (bool) and, for the
    rows that can be C (a positive and a negative effect), 0/1 floats for the right side of the
    products; A's rows (a positive effect) are made per block. Memory: ``mean_DE`` and at most
    2.5 times its size again."""

    def __init__(self, mean_DE: Float[torch.Tensor, "D E"], s: float):
        self.dtype = torch.float32 if mean_DE.shape[1] < EXACT_READERS else torch.float64
        self.pos_DE = mean_DE > s
        self.neg_DE = mean_DE < -s
        has_pos_D = self.pos_DE.any(1)
        self.a_rows = has_pos_D.nonzero().squeeze(1)
        self.c_rows = (has_pos_D & self.neg_DE.any(1)).nonzero().squeeze(1)
        self.P_CE = self.pos_DE[self.c_rows].to(self.dtype)
        self.N_CE = self.neg_DE[self.c_rows].to(self.dtype)

    def pair_blocks(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(a_R, counts_RC)``: tuples per (A, C) pair, A over a block of ``a_rows``, C over
        ``c_rows``; ``A == C`` counts 0."""
        c_rows = self.c_rows
        if c_rows.numel() == 0:
            return
        per_block = max(1, BLOCK_ELEMENTS // c_rows.numel())
        for start in range(0, self.a_rows.numel(), per_block):
            a_R = self.a_rows[start : start + per_block]
            P_RE = self.pos_DE[a_R].to(self.dtype)
            counts_RC = (P_RE @ self.P_CE.T).long() * (P_RE @ self.N_CE.T).long()
            counts_RC[a_R[:, None] == c_rows[None, :]] = 0
            yield a_R, counts_RC


class _SparseCounts:
    """The count at any threshold from the non-zero effects alone (read once), with scipy's
    sparse products: on the CPU, for effects that are mostly exact zeros (a reader inactive
    with and without the ablation), a count then costs what the non-zero entries cost instead
    of the dense products' ``D x D x E``. Equal integers to :class:`_Signs`' (tested)."""

    def __init__(self, mean_DE: Float[torch.Tensor, "D E"]):
        self.shape = tuple(mean_DE.shape)
        rows, cols = mean_DE.nonzero(as_tuple=True)
        self.values = mean_DE[rows, cols].cpu().numpy()
        self.rows, self.cols = rows.cpu().numpy(), cols.cpu().numpy()

    def _matrix(self, keep: np.ndarray):
        import scipy.sparse

        ones = np.ones(int(keep.sum()), dtype=np.int64)
        return scipy.sparse.csr_matrix((ones, (self.rows[keep], self.cols[keep])), shape=self.shape)

    def count(self, s: float) -> int:
        threshold = np.float32(s)  # compared as float32, as torch compares mean_DE > s
        P_DE = self._matrix(self.values > threshold)
        N_DE = self._matrix(self.values < -threshold)
        D = self.shape[0]
        total = 0
        per_block = max(1, BLOCK_ELEMENTS // max(D, 1))
        for start in range(0, D, per_block):
            P_RE = P_DE[start : start + per_block]
            both = (P_RE @ P_DE.T).multiply(P_RE @ N_DE.T).tocoo()
            # A block's sum stays under 2^63: at most BLOCK_ELEMENTS counts of at most E^2.
            total += int(both.data[both.row + start != both.col].sum())
        return total


def _counter(mean_DE: Float[torch.Tensor, "D E"], sparse: bool | None = None):
    """``count(s)``: sparse on the CPU when at most :data:`SPARSE_BELOW` of the effects are
    non-zero (or as ``sparse`` says), else the dense sign-matrix products."""
    if sparse is None:
        filled = int(torch.count_nonzero(mean_DE))
        sparse = mean_DE.device.type == "cpu" and filled <= SPARSE_BELOW * mean_DE.numel()
    if sparse:
        return _SparseCounts(mean_DE).count
    return lambda s: _dense_count(mean_DE, s)


def _dense_count(mean_DE: Float[torch.Tensor, "D E"], s: float) -> int:
    total = 0
    for _, counts_RC in _Signs(mean_DE, s).pair_blocks():
        total += sum(counts_RC.sum(1).tolist())  # Python ints: no int64 overflow
    return total


@torch.no_grad()
def count_tuples(mean_DE: Float[torch.Tensor, "D E"], s: float, sparse: bool | None = None) -> int:
    """The number of 4-tuples at threshold ``s`` (a float32, compared as such); ``sparse``
    forces one way (default: :func:`_counter` chooses)."""
    return _counter(mean_DE, sparse)(s)


@torch.no_grad()
def list_tuples(mean_DE: Float[torch.Tensor, "D E"], s: float) -> Iterator[torch.Tensor]:
    """Every 4-tuple at threshold ``s`` as chunks ``abcd_T4`` of at most about
    :data:`TUPLE_BUDGET` rows (A, C: rows of ``mean_DE``)."""
    signs = _Signs(mean_DE, s)
    E = mean_DE.shape[1]
    for a_R, counts_RC in signs.pair_blocks():
        i_Q, j_Q = (counts_RC > 0).nonzero(as_tuple=True)
        a_Q, c_Q = a_R[i_Q], signs.c_rows[j_Q]
        per_chunk = max(1, BLOCK_ELEMENTS // E)
        for start in range(0, a_Q.numel(), per_chunk):
            stop = start + per_chunk
            yield from _expand(signs, a_Q[start:stop], c_Q[start:stop])


def _expand(signs: _Signs, a_Q: torch.Tensor, c_Q: torch.Tensor) -> Iterator[torch.Tensor]:
    """The tuples of the pairs ``(a_Q, c_Q)``: for each pair, every B of ``P_A & P_C`` with
    every D of ``P_A & N_C``, by (pair, B) rows of ``|P_A & N_C|`` tuples each."""
    pos_QE = signs.pos_DE[a_Q]
    b_mask_QE = pos_QE & signs.pos_DE[c_Q]
    d_mask_QE = pos_QE & signs.neg_DE[c_Q]
    q_rows, b_rows = b_mask_QE.nonzero(as_tuple=True)  # the (pair, B) rows, pair-major
    _, d_all = d_mask_QE.nonzero(as_tuple=True)  # every pair's D, pair-major
    n_d_Q = d_mask_QE.sum(1)
    d_start_Q = torch.cumsum(n_d_Q, 0) - n_d_Q
    weight = n_d_Q[q_rows]
    ends = torch.cumsum(weight, 0)
    first, n_rows = 0, int(q_rows.numel())
    while first < n_rows:
        done = int(ends[first - 1]) if first else 0
        last = int(torch.searchsorted(ends, done + TUPLE_BUDGET, right=True))
        last = max(last, first + 1)  # one row (at most E tuples) may exceed the budget
        w = weight[first:last]
        row_T = torch.repeat_interleave(torch.arange(first, last, device=w.device), w)
        offset_T = torch.arange(int(w.sum()), device=w.device) - torch.repeat_interleave(
            torch.cumsum(w, 0) - w, w
        )
        q_T = q_rows[row_T]
        yield torch.stack(
            (a_Q[q_T], b_rows[row_T], c_Q[q_T], d_all[d_start_Q[q_T] + offset_T]), dim=1
        )
        first = last


def strongest_tuples(
    mean_DE: Float[torch.Tensor, "D E"], treat_as_zero: float, max_results: int
) -> Found:
    """The exact total at ``treat_as_zero`` and the ``max_results`` strongest tuples (strength
    descending, then (A, B, C, D) ascending)."""
    t = float32_floor(treat_as_zero)  # `mean > t` then means the numbers' `>`
    count = _counter(mean_DE)
    total = count(t)
    counts, threshold = 1, t
    if total > max_results:
        # count(s) >= max_results at lo, < max_results at hi (nothing is above the largest).
        lo = float32_bits(t)
        hi = max(lo + 1, float32_bits(float(mean_DE.abs().max())))
        while hi - lo > 1:
            mid = (lo + hi) // 2
            counts += 1
            if count(float32_of_bits(mid)) >= max_results:
                lo = mid
            else:
                hi = mid
        threshold = float32_of_bits(lo)
    abcd, strength, listed = _top(mean_DE, threshold, max_results)
    rows = torch.as_tensor(abcd, device=mean_DE.device)
    a, b, c, d = rows.unbind(1)
    effects = torch.stack((mean_DE[a, b], mean_DE[a, d], mean_DE[c, b], mean_DE[c, d]), dim=1)
    return Found(total, threshold, listed, counts, abcd, effects.cpu().numpy(), strength)


def _top(mean_DE, s: float, k: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The ``k`` strongest tuples at threshold ``s`` in order, their strengths, and how many
    were listed."""
    best = np.zeros((0, 4), np.int64)
    best_strength = np.zeros(0, np.float32)
    listed = 0
    for abcd_T4 in list_tuples(mean_DE, s):
        listed += abcd_T4.shape[0]
        a, b, c, d = abcd_T4.unbind(1)
        strength_T = tuple_strength(mean_DE[a, b], mean_DE[a, d], mean_DE[c, b], mean_DE[c, d])
        abcd = np.concatenate([best, abcd_T4.cpu().numpy()])
        strength = np.concatenate([best_strength, strength_T.cpu().numpy()])
        order = np.lexsort((abcd[:, 3], abcd[:, 2], abcd[:, 1], abcd[:, 0], -strength))[:k]
        best, best_strength = abcd[order], strength[order]
    return best, best_strength, listed


def tuple_strength(
    ab: Float[torch.Tensor, " T"],
    ad: Float[torch.Tensor, " T"],
    cb: Float[torch.Tensor, " T"],
    cd: Float[torch.Tensor, " T"],
) -> Float[torch.Tensor, " T"]:
    """``min(AB, AD, CB, -CD)``: how far the weakest of the four effects is from zero."""
    return torch.minimum(torch.minimum(ab, ad), torch.minimum(cb, -cd))
