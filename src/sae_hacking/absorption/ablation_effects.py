"""Summing ablation effects over prompts, exactly: fixed-point int64 rows keyed by latent.

Each prompt's effect vector (float32) is rounded once to a multiple of ``2**-FRACTION_BITS``
(about 6e-8) and added as an int64. Integer sums do not depend on the order of the additions,
so a run resumed after a crash, or split into shards and merged, gives bit for bit the sums of
one uninterrupted run. The range: with ``|effect| < MAX_ABS_EFFECT`` (2**19) per prompt, at least
2**20 (about a million) prompts fit in an int64 before overflow is possible; larger effects are
refused with an error instead of wrapping around.

Rows exist only for ablator latents that were ablated at least once (a dense ``e x E`` matrix
would be 17 GB at 65,536 x 65,536 float32); they live in blocks of ``BLOCK_ROWS`` rows so that
growing never copies what is already there. :meth:`EffectSums.tensors` returns them sorted by
latent id, so equal sums give equal files.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int

from sae_hacking.absorption.ablation import PromptEffects

FRACTION_BITS = 24
SCALE = float(2**FRACTION_BITS)
MAX_ABS_EFFECT = float(2**19)
BLOCK_ROWS = 256


def to_fixed(effects_DE: Float[torch.Tensor, "D E"]) -> Int[torch.Tensor, "D E"]:
    """``round(effects * 2**FRACTION_BITS)`` as int64 (exact: float32 -> float64 is exact and
    the scale is a power of two)."""
    effects_DE = effects_DE.double()
    if effects_DE.numel() and not bool(effects_DE.abs().max() < MAX_ABS_EFFECT):
        raise OverflowError(
            f"an ablation effect of {float(effects_DE.abs().max())} (or a NaN) exceeds the "
            f"fixed-point range ±{MAX_ABS_EFFECT:g}; the model or the SAEs produce non-finite or "
            "huge activations"
        )
    return torch.round(effects_DE * SCALE).long()


class EffectSums:
    """Per ablated latent: summed effects (int64 fixed point) and how many prompts ablated it;
    plus the prompts used and seen."""

    def __init__(self, d_reader: int):
        self.d_reader = d_reader
        self.row_of: dict[int, int] = {}
        self._blocks: list[torch.Tensor] = []  # [BLOCK_ROWS, E] int64 each
        self._counts: list[int] = []
        self.n_prompts = 0  # prompts whose effects were added (passed the selection)
        self.n_prompts_seen = 0

    def _row(self, latent: int) -> int:
        row = self.row_of.get(latent)
        if row is None:
            row = self.row_of[latent] = len(self._counts)
            self._counts.append(0)
            if row // BLOCK_ROWS == len(self._blocks):
                self._blocks.append(torch.zeros(BLOCK_ROWS, self.d_reader, dtype=torch.long))
        return row

    def _add_fixed(self, latents: list[int], fixed_DE: Int[torch.Tensor, "D E"], counts) -> None:
        if fixed_DE.shape[1:] != (self.d_reader,):
            raise ValueError(f"effects of width {fixed_DE.shape[1:]} for {self.d_reader} latents")
        rows = [self._row(latent) for latent in latents]
        for index, (row, count) in enumerate(zip(rows, counts, strict=True)):
            self._blocks[row // BLOCK_ROWS][row % BLOCK_ROWS] += fixed_DE[index]
            self._counts[row] += count

    def add(self, prompt: PromptEffects) -> None:
        """One prompt's outcome (used or not)."""
        self.n_prompts_seen += 1
        if not prompt.used:
            return
        self.n_prompts += 1
        latents = prompt.latents_D.tolist()
        if len(set(latents)) != len(latents):
            raise ValueError(f"a prompt ablated a latent twice: {latents}")
        self._add_fixed(latents, to_fixed(prompt.effects_DE.cpu()), [1] * len(latents))

    def merge(self, other: EffectSums) -> None:
        """Add another run's (or shard's) sums to these."""
        tensors = other.tensors()
        self._add_fixed(
            tensors["latents_D"].tolist(),
            tensors["effects_fixed_DE"],
            tensors["ablation_counts_D"].tolist(),
        )
        self.n_prompts += other.n_prompts
        self.n_prompts_seen += other.n_prompts_seen

    def tensors(self) -> dict[str, torch.Tensor]:
        """The state as tensors, rows sorted by latent id (see :data:`RESULT_KEYS`)."""
        latents = sorted(self.row_of)
        rows = torch.tensor([self.row_of[latent] for latent in latents], dtype=torch.long)
        fixed_DE = torch.empty(len(latents), self.d_reader, dtype=torch.long)
        for block, block_rows_DE in enumerate(self._blocks):  # no concatenated copy
            in_block = torch.nonzero(rows // BLOCK_ROWS == block).flatten()
            fixed_DE[in_block] = block_rows_DE[rows[in_block] % BLOCK_ROWS]
        counts = torch.tensor(self._counts, dtype=torch.long)
        return {
            "latents_D": torch.tensor(latents, dtype=torch.long),
            "effects_DE": (fixed_DE.double() / SCALE).float(),
            "effects_fixed_DE": fixed_DE,
            "ablation_counts_D": counts[rows] if len(latents) else counts,
            "n_prompts": torch.tensor(self.n_prompts, dtype=torch.long),
            "n_prompts_seen": torch.tensor(self.n_prompts_seen, dtype=torch.long),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> EffectSums:
        """Rebuild from :meth:`tensors` (a checkpoint or a shard's results)."""
        sums = cls(int(tensors["effects_fixed_DE"].shape[1]))
        sums._add_fixed(
            tensors["latents_D"].tolist(),
            tensors["effects_fixed_DE"],
            tensors["ablation_counts_D"].tolist(),
        )
        sums.n_prompts = int(tensors["n_prompts"])
        sums.n_prompts_seen = int(tensors["n_prompts_seen"])
        return sums


RESULT_KEYS = {
    "latents_D": "int64 [D]: the ablator latents that were ablated at least once, ascending",
    "effects_DE": "float32 [D, E]: summed over used prompts, reader acts at the last real token "
    "without the ablation minus with it (row d is latent latents_D[d]); divide by "
    "ablation_counts_D for the mean effect",
    "effects_fixed_DE": f"int64 [D, E]: the exact sums behind effects_DE, in units of "
    f"2**-{FRACTION_BITS}",
    "ablation_counts_D": "int64 [D]: prompts in which each latent was ablated (the seed's "
    "how_often_activated)",
    "n_prompts": "int64 []: prompts used (all prompts, or those whose top K held a selected "
    "feature)",
    "n_prompts_seen": "int64 []: prompts read",
}
