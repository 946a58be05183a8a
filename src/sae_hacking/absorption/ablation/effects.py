"""Summing ablation effects over prompts, exactly: fixed-point int64 rows keyed by latent.

Each prompt's effect vector (float32) is rounded once to a multiple of ``2**-FRACTION_BITS``
(about 6e-8) and added as an int64. Integer sums do not depend on the order of the additions,
so a run resumed after a crash, or split into shards and merged, gives bit for bit the sums of
one uninterrupted run (and a GPU gives the CPU's sums: the rounding is exact IEEE arithmetic).
The range: with ``|effect| < MAX_ABS_EFFECT`` (2**19) per prompt, at least 2**20 (about a
million) prompts fit in an int64 before overflow is possible; larger effects are refused with
an error instead of wrapping around.

Where the sums live. Rows exist only for ablator latents that were ablated at least once, in
blocks of ``BLOCK_ROWS`` rows (growing never copies what is there), **on the device the effects
are computed on** (CUDA; elsewhere the CPU): a prompt's effects are rounded and added there,
and never copied to the host. Results and checkpoints are written as a
:class:`~sae_hacking.runs.results.TensorStream` of row chunks of about ``WRITE_CHUNK_BYTES``,
sorted by latent id (equal sums give equal files), and loaded back chunk by chunk, so the host
holds one chunk, never the ``D x E`` matrix. All device-to-host copies of sums go through
:func:`to_host` (the tests watch it).

Dense, not sparse (measured by ``benchmarks/ablation_memory.py``). With JumpReLU/TopK readers
an effect vector is non-zero only where the baseline or the ablated run has an active reader
latent: on the tiny models 0.82 to 0.84 x L0 of the E entries (0.4 % to 1.6 % of 2,048).
Sparse per-prompt effects would have cut the old 26 MB-per-prompt device-to-host copy, but the
effects no longer leave the device. What costs memory is the sums, and a row's support is the
union of its prompts' supports: measured, it grows as ``1 - (1 - d)**n`` for a row ablated in
``n`` prompts (per-prompt density ``d``; measured rows reach 0.89 to 0.97 of it). At Gemma-2-2B
scale (E = 65,536, L0 ~ 70, K = 100, 10**6 prompts, ~1,500 ablations per latent) that bound is
73 % of E, where a sparse entry (int64 value and indices: 16 to 24 B per non-zero) costs more
than the dense 8 B, and its size would depend on the data. Dense int64 on the device is
8 x e x E bytes, known at the start (34 GB at 65,536 x 65,536: it fits on one 80 GB GPU with the
model), and the host keeps only the latent-to-row map and the counts (121 B per ablated latent,
8 MB at e = 65,536) plus one chunk while writing or loading.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from jaxtyping import Float, Int

from sae_hacking.absorption.ablation.core import PromptEffects
from sae_hacking.errors import UsageError
from sae_hacking.runs.results import StoredTensors, TensorStream

FRACTION_BITS = 24
SCALE = float(2**FRACTION_BITS)
MAX_ABS_EFFECT = float(2**19)
BLOCK_ROWS = 256
WRITE_CHUNK_BYTES = 64 * 2**20  # int64 sums per chunk written or loaded (rows of 8 x E bytes)


def to_fixed(effects_DE: Float[torch.Tensor, "D E"]) -> Int[torch.Tensor, "D E"]:
    """``round(effects * 2**FRACTION_BITS)`` as int64, on the effects' device (exact: float32 ->
    float64 is exact and the scale is a power of two)."""
    if effects_DE.device.type == "mps":  # no float64 there
        effects_DE = effects_DE.cpu()
    effects_DE = effects_DE.double()
    if effects_DE.numel() and not bool(effects_DE.abs().max() < MAX_ABS_EFFECT):
        raise OverflowError(
            f"an ablation effect of {float(effects_DE.abs().max())} (or a NaN) exceeds the "
            f"fixed-point range ±{MAX_ABS_EFFECT:g}; the model or the SAEs produce non-finite or "
            "huge activations"
        )
    return torch.round(effects_DE * SCALE).long()


def from_fixed(fixed_DE: Int[torch.Tensor, "D E"]) -> Float[torch.Tensor, "D E"]:
    """The float32 sums written beside the exact ones."""
    return (fixed_DE.double() / SCALE).float()


def to_host(tensor: torch.Tensor) -> torch.Tensor:
    """Copy one chunk of sums to the host (the only place sums leave the device)."""
    return tensor.cpu()


def sums_device(
    device: torch.device | str, where: str = "device", worst_bytes: int = 0
) -> torch.device:
    """Where the sums of effects computed on ``device`` live: that GPU (``device``), the host
    (``host``), or (``auto``) the GPU when ``worst_bytes`` (every ablator latent ablated) fits
    in its free memory with a quarter of the GPU to spare for the model's work, else the host
    (a 24 GB GPU cannot hold 65k x 65k sums, 34 GB, next to the model)."""
    device = torch.device(device)
    if device.type != "cuda" or where == "host":
        return torch.device("cpu")
    if where == "device":
        return device
    free, total = torch.cuda.mem_get_info(device)
    return device if worst_bytes <= free - total // 4 else torch.device("cpu")


def chunk_rows(d_reader: int) -> int:
    """Rows per written or loaded chunk."""
    return max(1, WRITE_CHUNK_BYTES // (8 * max(d_reader, 1)))


class EffectSums:
    """Per ablated latent: summed effects (int64 fixed point, on ``device``) and how many prompts
    ablated it; plus the prompts used and seen."""

    def __init__(self, d_reader: int, device: torch.device | str = "cpu"):
        self.d_reader = d_reader
        self.device = torch.device(device)
        self.row_of: dict[int, int] = {}
        self._blocks: list[torch.Tensor] = []  # [BLOCK_ROWS, E] int64 each, on self.device
        self._counts: list[int] = []
        self.n_prompts = 0  # prompts whose effects were added (passed the selection)
        self.n_prompts_seen = 0

    def _row(self, latent: int) -> int:
        row = self.row_of.get(latent)
        if row is None:
            row = self.row_of[latent] = len(self._counts)
            self._counts.append(0)
            if row // BLOCK_ROWS == len(self._blocks):
                self._blocks.append(
                    torch.zeros(BLOCK_ROWS, self.d_reader, dtype=torch.long, device=self.device)
                )
        return row

    def _add_fixed(self, latents: list[int], fixed_DE: Int[torch.Tensor, "D E"], counts) -> None:
        """Add rows of sums (any device; repeated latents allowed) and ablation counts."""
        if fixed_DE.shape[1:] != (self.d_reader,):
            raise ValueError(f"effects of width {fixed_DE.shape[1:]} for {self.d_reader} latents")
        if not latents:
            return
        rows_D = torch.tensor([self._row(latent) for latent in latents], dtype=torch.long)
        for row, count in zip(rows_D.tolist(), counts, strict=True):
            self._counts[row] += count
        fixed_DE = fixed_DE.to(self.device)
        block_D = rows_D // BLOCK_ROWS
        for block in torch.unique(block_D).tolist():
            mine_N = torch.nonzero(block_D == block).flatten()
            # Integer adds: exact and order-free, also as CUDA atomics with repeated rows.
            self._blocks[block].index_add_(
                0,
                (rows_D[mine_N] % BLOCK_ROWS).to(self.device),
                fixed_DE.index_select(0, mine_N.to(self.device)),
            )

    def add(self, prompt: PromptEffects) -> None:
        """One prompt's outcome (used or not)."""
        self.add_prompts([prompt])

    def add_prompts(self, prompts: Sequence[PromptEffects]) -> None:
        """Several prompts' outcomes, rounded and added on the device in one go."""
        used = [prompt for prompt in prompts if prompt.used]
        latents: list[int] = []
        for prompt in used:
            mine = prompt.latents_D.tolist()
            if len(set(mine)) != len(mine):
                raise ValueError(f"a prompt ablated a latent twice: {mine}")
            latents += mine
        if latents:
            effects_DE = torch.cat([prompt.effects_DE.to(self.device) for prompt in used])
            self._add_fixed(latents, to_fixed(effects_DE), [1] * len(latents))
        self.n_prompts_seen += len(prompts)
        self.n_prompts += len(used)

    def merge(self, other: EffectSums) -> None:
        """Add another run's (or shard's) sums to these."""
        for latents, fixed_DE in other.row_chunks():
            self._add_fixed(latents, fixed_DE, [other._counts[other.row_of[i]] for i in latents])
        self.n_prompts += other.n_prompts
        self.n_prompts_seen += other.n_prompts_seen

    # -- reading out --

    def latents(self) -> list[int]:
        return sorted(self.row_of)

    def row_chunks(self, rows: int | None = None) -> Iterator[tuple[list[int], torch.Tensor]]:
        """``(latents, sums [len(latents), E] on the device)`` in ascending latent order,
        ``rows`` (default :func:`chunk_rows`) at a time."""
        rows = rows or chunk_rows(self.d_reader)
        latents = self.latents()
        for start in range(0, len(latents), rows):
            chunk = latents[start : start + rows]
            out_DE = torch.empty(len(chunk), self.d_reader, dtype=torch.long, device=self.device)
            for d, latent in enumerate(chunk):  # row by row: no temporary as large as a chunk
                row = self.row_of[latent]
                out_DE[d].copy_(self._blocks[row // BLOCK_ROWS][row % BLOCK_ROWS])
            yield chunk, out_DE
            del out_DE  # before the next chunk is allocated

    def streams(self, with_floats: bool = True) -> dict[str, torch.Tensor | TensorStream]:
        """The state as :data:`RESULT_KEYS` tensors for writing: the small ones on the host, the
        ``[D, E]`` ones as row-chunk streams (one chunk on the host at a time)."""
        latents = self.latents()
        shape = (len(latents), self.d_reader)

        def fixed():
            for _, chunk_DE in self.row_chunks():
                yield to_host(chunk_DE)
                del chunk_DE

        def floats():  # smaller chunks: the conversion needs a float64 copy
            for _, chunk_DE in self.row_chunks(max(1, chunk_rows(self.d_reader) // 4)):
                yield to_host(from_fixed(chunk_DE))
                del chunk_DE

        out: dict[str, torch.Tensor | TensorStream] = {
            "latents_D": torch.tensor(latents, dtype=torch.long),
            "effects_fixed_DE": TensorStream(torch.long, shape, fixed),
            "ablation_counts_D": torch.tensor(
                [self._counts[self.row_of[latent]] for latent in latents], dtype=torch.long
            ),
            "n_prompts": torch.tensor(self.n_prompts, dtype=torch.long),
            "n_prompts_seen": torch.tensor(self.n_prompts_seen, dtype=torch.long),
        }
        if with_floats:
            out["effects_DE"] = TensorStream(torch.float32, shape, floats)
        return {key: out[key] for key in RESULT_KEYS if key in out}

    def tensors(self) -> dict[str, torch.Tensor]:
        """The state as whole host tensors, rows sorted by latent id (see :data:`RESULT_KEYS`).
        For tests and small runs: this is the ``D x E`` matrix on the host, which writing
        (:meth:`streams`) avoids."""
        out = {}
        for key, value in self.streams().items():
            if isinstance(value, TensorStream):
                pieces = list(value.pieces())
                whole = torch.cat(pieces) if pieces else torch.empty(0, dtype=value.dtype)
                value = whole.reshape(value.shape)
            out[key] = value
        return out

    # -- reading in --

    @classmethod
    def from_tensors(
        cls, tensors: Mapping[str, torch.Tensor], device: torch.device | str = "cpu"
    ) -> EffectSums:
        """Rebuild from :meth:`tensors` (a checkpoint or a shard's results): whole tensors, or a
        :class:`~sae_hacking.runs.results.StoredTensors`, read one chunk of rows at a time."""
        latents = tensors["latents_D"].tolist()
        counts = tensors["ablation_counts_D"].tolist()
        if isinstance(tensors, StoredTensors):
            with tensors.open() as results:
                sums = cls(results.shape("effects_fixed_DE")[1], device)
                for start, chunk_DE in stored_row_chunks(results, len(latents), sums.d_reader):
                    stop = start + len(chunk_DE)
                    sums._add_fixed(latents[start:stop], chunk_DE, counts[start:stop])
        else:
            fixed_DE = tensors["effects_fixed_DE"]
            sums = cls(int(fixed_DE.shape[1]), device)
            step = chunk_rows(sums.d_reader)
            for start in range(0, len(latents), step):
                stop = start + step
                sums._add_fixed(latents[start:stop], fixed_DE[start:stop], counts[start:stop])
        sums.n_prompts = int(tensors["n_prompts"])
        sums.n_prompts_seen = int(tensors["n_prompts_seen"])
        return sums


def stored_row_chunks(
    results, n_rows: int, d_reader: int, key: str = "effects_fixed_DE"
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(first row, rows [n, E])`` of a stored ``[D, E]`` tensor, :func:`chunk_rows` at a time
    (``results``: an open :class:`~sae_hacking.runs.results.ResultsFile`)."""
    if results.shape(key) != (n_rows, d_reader):
        raise UsageError(
            f"{results.path} holds {key} of shape {results.shape(key)}, not "
            f"({n_rows}, {d_reader}); the file is inconsistent."
        )
    step = chunk_rows(d_reader)
    for start in range(0, n_rows, step):
        stop = min(start + step, n_rows)
        yield start, results.read_range(key, start * d_reader, stop * d_reader).view(-1, d_reader)


RESULT_KEYS = {
    "latents_D": "int64 [D]: the ablator latents that were ablated at least once, ascending",
    "effects_DE": "float32 [D, E]: summed over used prompts, reader acts at the last real token "
    "without the ablation minus with it (row d is latent latents_D[d]); divide by "
    "ablation_counts_D for the mean effect",
    "effects_fixed_DE": f"int64 [D, E]: the exact sums behind effects_DE, in units of "
    f"2**-{FRACTION_BITS}",
    "ablation_counts_D": "int64 [D]: prompts in which each latent was ablated (the legacy "
    "how_often_activated)",
    "n_prompts": "int64 []: prompts used (all prompts, or those whose top K held a selected "
    "feature)",
    "n_prompts_seen": "int64 []: prompts read",
}
