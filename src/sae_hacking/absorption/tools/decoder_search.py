"""The most similar decoder directions of one SAE: :func:`top_decoder_pairs`.

It works in ``block × block`` products of the unit decoder rows, upper triangle only, like
:func:`sae_hacking.absorption.pairs.search.find_pairs` (whose running top-k merge and histogram
bins it reuses), but keeps no more than ``top_k`` candidates of each block (chosen on the
device, exactly) before the merge: without a co-occurrence filter nearly every pair of an SAE
passes (2·10⁹ at 65k latents), and sorting them all would cost far more than the products.
It never holds an ``e × e`` matrix. Order: cosine descending, then ``i``, then ``j``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int

from sae_hacking.absorption.pairs.search import (
    HISTOGRAM_BINS,
    CountLookup,
    best_pairs,
    histogram_bins,
)


@dataclass
class DecoderPairs:
    """The kept pairs (best first) and the histogram of every passing pair's cosine."""

    first_K: Int[torch.Tensor, " K"]  # latent ids, first < second
    second_K: Int[torch.Tensor, " K"]
    cosine_K: Float[torch.Tensor, " K"]
    counts_K: Int[torch.Tensor, " K"] | None  # co-occurrence counts (None without a lookup)
    histogram_counts: list[int]
    n_passing: int


def histogram_edges() -> list[float]:
    return torch.linspace(-1.0, 1.0, HISTOGRAM_BINS + 1, dtype=torch.float64).tolist()


def block_best(cosine_N: Float[torch.Tensor, " N"], k: int) -> Int[torch.Tensor, " k"]:
    """Positions of the ``k`` best of ``cosine_N``: cosine descending, ties by position (the
    candidates come in (i, j) order, so ties go by (i, j) as in the merge)."""
    k = min(k, cosine_N.numel())
    kth = torch.topk(cosine_N, k).values[-1]
    above = (cosine_N > kth).nonzero().flatten()
    ties = (cosine_N == kth).nonzero().flatten()[: k - above.numel()]
    return torch.cat([above, ties])


def top_decoder_pairs(
    unit_eM: Float[torch.Tensor, "e M"],
    top_k: int,
    block_size: int,
    count_pairs: CountLookup | None = None,
    max_cooccurrence: int = 0,
    min_cosine: float | None = None,
    focus_e: Bool[torch.Tensor, " e"] | None = None,
) -> DecoderPairs:
    """The ``top_k`` pairs ``i < j`` of the unit rows ``unit_eM`` by cosine among those with
    cosine at least ``min_cosine``, containing a ``focus_e`` latent (when given) and, with
    ``count_pairs(ids_a, ids_b)`` (co-occurrence counts on the CPU), active together on at most
    ``max_cooccurrence`` tokens; also the histogram and number of every such pair."""
    e, device = unit_eM.shape[0], unit_eM.device
    if focus_e is not None:
        focus_e = focus_e.to(device)
    kept = None  # [first, second, cosine, count or None] of the best so far, on the CPU
    hist = torch.zeros(HISTOGRAM_BINS, dtype=torch.long)
    n_passing = 0
    for a in range(0, e, block_size):
        a_end = min(a + block_size, e)
        for b in range(a, e, block_size):
            b_end = min(b + block_size, e)
            if focus_e is not None and not (focus_e[a:a_end].any() or focus_e[b:b_end].any()):
                continue
            # Rounding may put the cosine of duplicate unit rows a hair past 1.
            cosine_AB = (unit_eM[a:a_end] @ unit_eM[b:b_end].T).clamp_(-1.0, 1.0)
            ia = torch.arange(a, a_end, device=device)[:, None]
            ib = torch.arange(b, b_end, device=device)[None, :]
            mask_AB = ia < ib
            if min_cosine is not None:
                mask_AB &= cosine_AB >= min_cosine
            if focus_e is not None:
                mask_AB &= focus_e[a:a_end, None] | focus_e[None, b:b_end]
            pa, pb = mask_AB.nonzero(as_tuple=True)  # row-major, so in (i, j) order
            first_N, second_N, cosine_N = pa + a, pb + b, cosine_AB[pa, pb]
            counts_N = None
            if count_pairs is not None:
                counts_N = count_pairs(first_N, second_N)
                ok_N = counts_N <= max_cooccurrence
                counts_N = counts_N[ok_N]
                ok_N = ok_N.to(device)
                first_N, second_N, cosine_N = first_N[ok_N], second_N[ok_N], cosine_N[ok_N]
            if first_N.numel() == 0:
                continue
            n_passing += int(first_N.numel())
            binned = cosine_N if device.type != "mps" else cosine_N.cpu()  # float64 there
            hist += torch.bincount(histogram_bins(binned), minlength=HISTOGRAM_BINS).cpu()
            chosen = block_best(cosine_N, top_k)
            parts = [first_N[chosen].cpu(), second_N[chosen].cpu(), cosine_N[chosen].cpu()]
            parts.append(counts_N[chosen.cpu()] if counts_N is not None else None)
            if kept is not None:
                parts = [
                    None if p is None else torch.cat([k, p])
                    for k, p in zip(kept, parts, strict=True)
                ]
            top = best_pairs(parts[0], parts[1], parts[2], top_k)
            kept = [None if p is None else p[top] for p in parts]
    if kept is None:
        empty = torch.zeros(0, dtype=torch.long)
        kept = [empty, empty, torch.zeros(0), empty if count_pairs is not None else None]
    first, second, cosine, counts = kept
    return DecoderPairs(
        first.long(),
        second.long(),
        cosine.float(),
        counts.long() if counts is not None else None,
        hist.tolist(),
        n_passing,
    )
