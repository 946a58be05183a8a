"""Stage 3 of the absorption search: pairs of ablator latents that (almost) never fire together
yet change the reader SAE alike — absorption candidates.

Inputs are the compared latents' mean ablation effects (one row per latent over the reader's
``E`` latents) and a co-occurrence lookup. A pair ``(i, j)``, ``i < j`` in latent order, passes
when its **effect cosine** is at least ``threshold`` (above it when ``strict``), its co-occurrence
count ``c_ij`` is at most ``max_cooccurrence`` **or** at most ``max_share × min(a_i, a_j)`` (the two
fire together on at most that share of the rarer one's firings; ``a`` the activation counts over
``N`` tokens), and its expected co-occurrence under independence (``a_i a_j / N``) is at least
``min_expected``. Why a share: in the absorption testbed (``absorption-bench``) most absorbing
latents of a trained SAE fire together with their parent on some tokens (partial absorption), so
a count rule near zero drops them, while a share rule keeps them and still drops latents that
fire together as a rule. Effects are compared as signs
(the legacy ``sign(mean effect)``; the dot products of sign vectors are exact integers in float32
up to 2²⁴ readers, so every method gives the same cosines bit for bit) or raw.

:func:`find_pairs` works in blocks: ``block × block`` products of the normalised rows, filters
applied per block, the histogram of every passing pair's cosine accumulated per block, and the
``max_pairs`` best pairs kept in a bounded buffer (order: cosine descending, then ``i``, then
``j``, so ties are deterministic). It never holds a ``D × D`` matrix. The legacy per-row loop
(one matrix-vector product per latent) is :func:`tests.oracles.find_pairs_reference`; the
tests compare the two.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int

HISTOGRAM_BINS = 100
# Lookup of co-occurrence counts for pairs given as two index vectors (latent ids).
CountLookup = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class PairFilter:
    threshold: float = 0.0  # minimum effect cosine
    max_cooccurrence: int = 0  # maximum tokens both fired on
    min_expected: float = 0.0  # minimum expected co-occurrence if independent
    max_pairs: int = 100_000
    block_size: int = 4096
    strict: bool = False  # effect cosine > threshold instead of ≥ (pairs' default rule: > 0)
    max_share: float = 0.0  # or co-occurrence ≤ this share of the rarer latent's firings

    def passes(self, cosine: torch.Tensor) -> torch.Tensor:
        return cosine > self.threshold if self.strict else cosine >= self.threshold

    def cooccurrence_passes(
        self, counts: torch.Tensor, activations_a: torch.Tensor, activations_b: torch.Tensor
    ) -> torch.Tensor:
        """Count ≤ ``max_cooccurrence``, or ≤ ``max_share`` × the rarer latent's firings."""
        rarer = torch.minimum(activations_a, activations_b).double()
        return (counts <= self.max_cooccurrence) | (counts.double() <= self.max_share * rarer)


@dataclass
class FoundPairs:
    """The kept pairs (best first) and the histogram of every passing pair's cosine."""

    first_K: Int[torch.Tensor, " K"]  # latent ids, first < second
    second_K: Int[torch.Tensor, " K"]
    cosine_K: Float[torch.Tensor, " K"]
    cooccurrence_K: Int[torch.Tensor, " K"]
    expected_K: Float[torch.Tensor, " K"]
    histogram_counts: list[int]
    n_passing: int

    @property
    def histogram_edges(self) -> list[float]:
        return torch.linspace(-1.0, 1.0, HISTOGRAM_BINS + 1, dtype=torch.float64).tolist()


def comparable_rows(
    effects_DE: Float[torch.Tensor, "D E"], sign: bool
) -> tuple[Float[torch.Tensor, "D E"], Float[torch.Tensor, " D"]]:
    """``(rows, norms)`` whose products give the effect cosines: ``rows_i · rows_j / (norm_i
    norm_j)``. Sign mode: rows are ``sign(effect)`` (entries -1, 0, 1) and norms the square roots
    of their non-zero counts. A zero row has norm 1, so its cosine with anything is 0."""
    rows_DE = torch.sign(effects_DE) if sign else effects_DE.float()
    norms_D = (rows_DE * rows_DE).sum(-1).sqrt()
    return rows_DE, torch.where(norms_D > 0, norms_D, torch.ones_like(norms_D))


def histogram_bins(cosine_N: Float[torch.Tensor, " N"]) -> torch.Tensor:
    """Bin index in ``[0, HISTOGRAM_BINS)`` of each cosine over [-1, 1] (1 in the last bin)."""
    scaled = ((cosine_N.double().clamp(-1.0, 1.0) + 1.0) * (HISTOGRAM_BINS / 2)).floor().long()
    return scaled.clamp(0, HISTOGRAM_BINS - 1)


def best_pairs(first, second, cosine, limit):
    """The ``limit`` best of the candidates: cosine descending, then first, then second."""
    order = torch.argsort(second, stable=True)
    order = order[torch.argsort(first[order], stable=True)]
    order = order[torch.argsort(-cosine[order], stable=True)]
    return order[:limit]


def find_pairs(
    latents_D: Int[torch.Tensor, " D"],
    rows_DE: Float[torch.Tensor, "D E"],
    norms_D: Float[torch.Tensor, " D"],
    activations_D: Int[torch.Tensor, " D"],
    tokens: int,
    count_pairs: CountLookup,
    rules: PairFilter,
    firsts_D: torch.Tensor | None = None,
    focus_D: torch.Tensor | None = None,
) -> FoundPairs:
    """All passing pairs of the compared latents ``latents_D`` (ascending ids; their rows and
    norms from :func:`comparable_rows`, their activation counts over ``tokens`` tokens).

    ``firsts_D`` (bool): only pairs whose first latent is marked (the legacy ``--max-steps``);
    ``focus_D`` (bool): only pairs containing a marked latent (``--just-these``).
    ``count_pairs(ids_a, ids_b)`` gives the co-occurrence counts of the pairs (on the CPU).
    """
    D = latents_D.shape[0]
    device = rows_DE.device
    kept = None  # (first, second, cosine, count, expected) of the best so far
    hist = torch.zeros(HISTOGRAM_BINS, dtype=torch.long)
    n_passing = 0
    step = rules.block_size
    for block in range(0, D, step):
        a, a_end = block, min(block + step, D)
        if firsts_D is not None:  # only the rows that may come first: no product is wasted
            marked = firsts_D[a:a_end].nonzero().flatten()
            if marked.numel() == 0:
                continue
            a, a_end = a + int(marked[0]), a + int(marked[-1]) + 1
        for b in range(block, D, step):
            b_end = min(b + step, D)
            dots_AB = rows_DE[a:a_end] @ rows_DE[b:b_end].T
            cosine_AB = dots_AB / (norms_D[a:a_end, None] * norms_D[None, b:b_end])
            ia = torch.arange(a, a_end, device=device)[:, None]
            ib = torch.arange(b, b_end, device=device)[None, :]
            mask_AB = (ia < ib) & rules.passes(cosine_AB)
            if firsts_D is not None:
                mask_AB &= firsts_D[a:a_end].to(device)[:, None]
            if focus_D is not None:
                focus = focus_D.to(device)
                mask_AB &= focus[a:a_end, None] | focus[None, b:b_end]
            pa, pb = mask_AB.nonzero(as_tuple=True)
            if pa.numel() == 0:
                continue
            first = (pa + a).cpu()
            second = (pb + b).cpu()
            cosine = cosine_AB[pa, pb].cpu()
            expected = activations_D[first].double() * activations_D[second].double() / tokens
            counts = count_pairs(latents_D[first], latents_D[second])
            ok = rules.cooccurrence_passes(counts, activations_D[first], activations_D[second]) & (
                expected >= rules.min_expected
            )
            first, second, cosine = first[ok], second[ok], cosine[ok]
            counts, expected = counts[ok], expected[ok]
            n_passing += int(first.numel())
            hist += torch.bincount(histogram_bins(cosine), minlength=HISTOGRAM_BINS)
            parts = (first, second, cosine, counts, expected)
            if kept is not None:
                parts = tuple(torch.cat([k, p]) for k, p in zip(kept, parts, strict=True))
            top = best_pairs(parts[0], parts[1], parts[2], rules.max_pairs)
            kept = tuple(p[top] for p in parts)
    if kept is None:
        empty = torch.zeros(0, dtype=torch.long)
        kept = (empty, empty, torch.zeros(0), empty, torch.zeros(0, dtype=torch.float64))
    first, second, cosine, counts, expected = kept
    return FoundPairs(
        latents_D[first],
        latents_D[second],
        cosine.float(),
        counts.long(),
        expected.double(),
        hist.tolist(),
        n_passing,
    )
