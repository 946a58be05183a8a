"""Oracles for the tests: definitions written as plain loops, and a test-only latent edit.

Fast paths live in the package; the definitions they are checked against live here (nothing in
the package imports this module).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Float, Int

from sae_hacking.absorption.cooccurrence.kernels import row_starts
from sae_hacking.saes.splice import LatentEdit, check_latent_ids

# -- co-occurrence counts ---------------------------------------------------------------------


def count_pairs_reference(active_sets: list[list[int]], e: int) -> np.ndarray:
    """The definition, by Python loops: ``C[i, j]`` = tokens where ``i`` and ``j`` are both
    active (the diagonal: tokens where ``i`` is). Dense ``[e, e]`` int64."""
    counts = np.zeros((e, e), dtype=np.int64)
    for active in active_sets:
        for i in set(active):
            for j in set(active):
                counts[i, j] += 1
    return counts


def unpack_triangle(packed_P: Int[torch.Tensor, " P"], e: int) -> Int[torch.Tensor, "e e"]:
    """The dense symmetric ``[e, e]`` matrix of a packed triangle (small ``e`` only)."""
    i, j = torch.triu_indices(e, e)
    dense = torch.zeros((e, e), dtype=packed_P.dtype)
    values = packed_P[row_starts(e)[i] + j]
    dense[i, j] = values
    dense[j, i] = values
    return dense


# -- latent edits -----------------------------------------------------------------------------


class ZeroLatentPerRow(LatentEdit):
    """Row ``b`` zeros latent ``latents_B[b]`` (-1 leaves that row unedited): K ablation
    variants of one prompt as one batch, spliced as an edit (the ablation code builds the
    same variants directly; the tests check the two agree)."""

    def __init__(self, latents_B: Sequence[int] | Int[torch.Tensor, " B"]):
        self.latents_B = torch.as_tensor(latents_B, dtype=torch.long).flatten()

    def _rows(self, acts_BSE: Float[torch.Tensor, "B S E"]):
        latents_B = self.latents_B.to(acts_BSE.device)
        if latents_B.shape[0] != acts_BSE.shape[0]:
            raise ValueError(
                f"{latents_B.shape[0]} latents for a batch of {acts_BSE.shape[0]} rows"
            )
        check_latent_ids(latents_B, acts_BSE.shape[-1], allow_negative=True)
        return latents_B.clamp(min=0), latents_B >= 0

    def apply(self, acts_BSE: Float[torch.Tensor, "B S E"]) -> Float[torch.Tensor, "B S E"]:
        idx_B, on_B = self._rows(acts_BSE)
        edited = acts_BSE.clone()
        rows = torch.nonzero(on_B).flatten()
        edited[rows, :, idx_B[rows]] = 0
        return edited

    def delta(
        self, acts_BSE: Float[torch.Tensor, "B S E"], W_dec_EM: Float[torch.Tensor, "E M"]
    ) -> Float[torch.Tensor, "B S M"]:
        idx_B, on_B = self._rows(acts_BSE)
        vals_BS1 = acts_BSE.gather(-1, idx_B[:, None, None].expand(-1, acts_BSE.shape[1], 1))
        vals_BS = vals_BS1.squeeze(-1) * on_B[:, None]
        return -(vals_BS[..., None] * W_dec_EM[idx_B][:, None, :])


# -- pairs ----------------------------------------------------------------------------------


def find_pairs_reference(
    latents_D,
    rows_DE,
    norms_D,
    activations_D,
    tokens,
    count_pairs,
    rules,
    firsts_D=None,
    focus_D=None,
):
    """The legacy per-row loop, as the oracle of
    :func:`sae_hacking.absorption.pairs.search.find_pairs`: one matrix-vector product per latent,
    then every later latent checked one by one."""
    from sae_hacking.absorption.pairs.search import HISTOGRAM_BINS, FoundPairs, histogram_bins

    found = []
    hist = [0] * HISTOGRAM_BINS
    D = latents_D.shape[0]
    for i in range(D):
        if firsts_D is not None and not bool(firsts_D[i]):
            continue
        cosine_D = (rows_DE @ rows_DE[i]) / (norms_D[i] * norms_D)
        for j in range(i + 1, D):
            if focus_D is not None and not (bool(focus_D[i]) or bool(focus_D[j])):
                continue
            cosine = float(cosine_D[j])
            if not cosine >= rules.threshold:
                continue
            count = int(count_pairs(latents_D[i : i + 1], latents_D[j : j + 1])[0])
            expected = float(activations_D[i]) * float(activations_D[j]) / tokens
            rarer = min(int(activations_D[i]), int(activations_D[j]))
            rare_enough = count <= rules.max_cooccurrence or count <= rules.max_share * rarer
            if not rare_enough or expected < rules.min_expected:
                continue
            found.append((-cosine, i, j, count, expected))
            hist[int(histogram_bins(torch.tensor([cosine]))[0])] += 1
    found.sort()
    kept = found[: rules.max_pairs]
    return FoundPairs(
        latents_D[torch.tensor([k[1] for k in kept], dtype=torch.long)],
        latents_D[torch.tensor([k[2] for k in kept], dtype=torch.long)],
        torch.tensor([-k[0] for k in kept], dtype=torch.float32),
        torch.tensor([k[3] for k in kept], dtype=torch.long),
        torch.tensor([k[4] for k in kept], dtype=torch.float64),
        hist,
        len(found),
    )
