"""Latent co-occurrence counts of an ablator SAE over a text stream (first stage of the search).

For every real token (no padding, no BOS), the *active* latents are those with activation > 0
from the SAE encoding the model's activation at the SAE's hook. Counted exactly, as integers:

- ``cooccurrences_P`` (full mode): for every pair ``i ≤ j``, the tokens where both are active,
  the packed upper triangle of :mod:`sae_hacking.absorption.cooccurrence.kernels` (length
  ``e(e+1)/2``); the diagonal is each latent's activation count.
- ``cooccurrences_De`` + ``rows_D`` (rows mode, ``--rows``): the full rows of the selected
  latents, ``[D, e]`` (``cooccurrences_De[d, j]``: tokens where ``rows_D[d]`` and ``j`` are active).
- ``activations_e`` (int64): tokens where each latent is active; ``tokens_1``: tokens counted.

Memory (e = 65,536): the packed triangle in int32 is e(e+1)/2 · 4 B = 8,590,065,664 B, half the
legacy dense float32 e × e (17,179,869,184 B) plus the diagonal's 256 KiB. Every count is at most
the number of tokens counted, so int32 is exact up to 2,147,483,647 tokens (2M prompts × 100
tokens = 2·10^8); past that the accumulator is promoted to int64 before it can overflow.
It lives on the model's device when that is CUDA, else on the CPU. On CUDA the host never
holds it whole: a checkpoint is written from it one 16 MiB frame at a time
(:mod:`sae_hacking.runs.results`) and read back into it ``LOAD_CHUNK`` elements at a time.

Results: ``cooccurrences.safetensors.zst`` + ``cooccurrences.json`` in the run directory
(:mod:`sae_hacking.runs.results`); :class:`Cooccurrences` reads counts, rows and frequencies
without loading the triangle.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch
from jaxtyping import Bool

from sae_hacking.absorption.cooccurrence.identity import KIND, RESULTS_NAME
from sae_hacking.absorption.cooccurrence.kernels import (
    active_lists,
    add_pairs_numba,
    add_pairs_torch,
    add_rows_numba,
    add_rows_torch,
    packed_size,
    pair_index,
    row_starts,
)
from sae_hacking.errors import FieldError, UsageError
from sae_hacking.runs.results import ResultsFile, StoredTensors, results_paths
from sae_hacking.runs.shards import check_all_shards
from sae_hacking.runs.stream import Accumulator

INT32_MAX = 2**31 - 1
LOAD_CHUNK = 2**24  # counts read from a checkpoint at a time: 64 MiB in int32, 128 in int64

DOCS = {
    "cooccurrences_P": "pairs i<=j of ablator latents, packed upper triangle row-major: (i, j) "
    "at i*e - i*(i-1)/2 - i + j; tokens where both are active (diagonal: where i is)",
    "cooccurrences_De": "row d: tokens where latent rows_D[d] and latent j are both active",
    "rows_D": "the latents whose rows are counted",
    "activations_e": "tokens where each ablator latent is active (act > 0)",
    "tokens_1": "real tokens counted (padding and BOS excluded)",
}


class PairCounter:
    """The counting state: add the active latents of a batch of tokens; exact integers."""

    def __init__(
        self,
        e: int,
        rows: Sequence[int] | None = None,
        device: torch.device | str = "cpu",
        kernel: str = "auto",
        pairs: bool = True,
    ):
        self.e = e
        self.pairs = pairs
        self.device = torch.device(device)
        self.kernel = (
            ("torch" if self.device.type != "cpu" else "numba") if kernel == "auto" else kernel
        )
        self.tokens = 0
        self.activations_e = torch.zeros(e, dtype=torch.int64, device=self.device)
        self.rows_D = None
        if not pairs:
            self.counts = None
        elif rows is None:
            self.rows_D = None
            self.counts = torch.zeros(packed_size(e), dtype=torch.int32, device=self.device)
            self.row_start_e = row_starts(e, self.device)
        else:
            self.rows_D = torch.as_tensor(list(rows), dtype=torch.int64)
            if self.rows_D.numel() == 0 or len(set(self.rows_D.tolist())) != len(self.rows_D):
                raise FieldError("rows", "needs one or more distinct latent ids.")
            if int(self.rows_D.min()) < 0 or int(self.rows_D.max()) >= e:
                raise FieldError("rows", f"latent ids must lie in 0..{e - 1} for this SAE.")
            self.counts = torch.zeros((len(self.rows_D), e), dtype=torch.int32, device=self.device)
            self.row_pos_e = torch.full((e,), -1, dtype=torch.int64, device=self.device)
            self.row_pos_e[self.rows_D.to(self.device)] = torch.arange(
                len(self.rows_D), device=self.device
            )

    @property
    def key(self) -> str | None:
        if not self.pairs:
            return None
        return "cooccurrences_P" if self.rows_D is None else "cooccurrences_De"

    def add(self, latents_N: torch.Tensor, offsets_T1: torch.Tensor) -> None:
        """Count tokens given as ragged active lists (see :func:`active_lists`)."""
        n_tokens = offsets_T1.shape[0] - 1
        if (
            self.counts is not None
            and self.counts.dtype == torch.int32
            and self.tokens + n_tokens > INT32_MAX
        ):
            warnings.warn(
                "more than 2^31-1 tokens counted: promoting the co-occurrence counts to int64 "
                "(twice the memory) so they cannot overflow",
                stacklevel=2,
            )
            self.counts = self.counts.long()
        latents_N = latents_N.to(self.device)
        offsets_T1 = offsets_T1.to(self.device)
        if self.counts is None:
            pass
        elif self.rows_D is None:
            add = add_pairs_numba if self.kernel == "numba" else add_pairs_torch
            add(self.counts, self.row_start_e, latents_N, offsets_T1)
        else:
            add = add_rows_numba if self.kernel == "numba" else add_rows_torch
            add(self.counts, self.row_pos_e, latents_N, offsets_T1)
        self.activations_e += torch.bincount(latents_N, minlength=self.e)
        self.tokens += n_tokens

    def add_active(self, active_Te: Bool[torch.Tensor, "T e"]) -> None:
        """Count the tokens of a boolean ``[T, e]`` activity matrix."""
        self.add(*active_lists(active_Te))

    def state(self) -> dict[str, torch.Tensor]:
        state = {
            "activations_e": self.activations_e,
            "tokens_1": torch.tensor([self.tokens], dtype=torch.int64),
        }
        if self.counts is not None:
            state[self.key] = self.counts
        if self.rows_D is not None:
            state["rows_D"] = self.rows_D
        return state

    def load_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Continue from :meth:`state`'s tensors: whole tensors, or a
        :class:`~sae_hacking.runs.results.StoredTensors` whose counts are copied into the
        device tensor :data:`LOAD_CHUNK` elements at a time (the host never holds them whole)."""
        if self.counts is None:
            self.activations_e = tensors["activations_e"].to(self.device)
            self.tokens = int(tensors["tokens_1"][0])
            return
        shape, dtype = _stored_layout(tensors, self.key)
        if shape != tuple(self.counts.shape) or dtype not in (torch.int32, torch.int64):
            raise UsageError(
                f"the checkpoint holds no {self.key} of shape {tuple(self.counts.shape)}; "
                "it was written by a run with other settings."
            )
        if dtype != self.counts.dtype:  # promoted to int64 before the checkpoint
            del self.counts  # the zeros go before the int64 counts exist
            self.counts = torch.empty(shape, dtype=dtype, device=self.device)
        flat = self.counts.view(-1)
        for start, chunk in _stored_chunks(tensors, self.key):
            flat[start : start + chunk.numel()].copy_(chunk)
        self.activations_e = tensors["activations_e"].to(self.device)
        self.tokens = int(tensors["tokens_1"][0])


def _stored_layout(
    tensors: Mapping[str, torch.Tensor], key: str
) -> tuple[tuple[int, ...], torch.dtype | None]:
    """Shape and dtype of ``tensors[key]`` without reading it (``((), None)`` when absent)."""
    if key not in tensors:
        return (), None
    if isinstance(tensors, StoredTensors):
        with tensors.open() as results:
            return results.shape(key), results.dtype(key)
    return tuple(tensors[key].shape), tensors[key].dtype


def _stored_chunks(
    tensors: Mapping[str, torch.Tensor], key: str
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, flattened elements [start, start + LOAD_CHUNK))`` of ``tensors[key]``."""
    if isinstance(tensors, StoredTensors):
        with tensors.open() as results:
            yield from results.iter_ranges(key, LOAD_CHUNK)
        return
    flat = tensors[key].reshape(-1)
    for start in range(0, flat.numel(), LOAD_CHUNK):
        yield start, flat[start : start + LOAD_CHUNK]


class CooccurrenceAccumulator(Accumulator):
    """Runs the model to the SAE's hook, encodes, and counts active latents of real tokens
    (pairs unless ``pairs=False``: then only each latent's activations, as ``latents`` does);
    with ``evidence`` (:class:`~sae_hacking.absorption.evidence.collect.EvidenceCollector`)
    also collects what each latent fires on, and the logit lens at the end."""

    def __init__(
        self, lm, sae, hook: str, rows: Sequence[int] | None = None, evidence=None, pairs=True
    ):
        self.lm, self.sae, self.hook = lm, sae, hook
        device = lm.device if lm.device.type == "cuda" else torch.device("cpu")
        self.counter = PairCounter(sae.d_sae, rows, device, pairs=pairs)
        self.evidence = evidence

    def add(self, batch) -> int:
        batch = batch.to(self.lm.device)
        x_BSM = self.lm.read(batch.input_ids_BS, batch.attention_mask_BS, [self.hook])[self.hook]
        with torch.inference_mode():
            acts_Te = self.sae.encode(x_BSM[batch.real_token_mask_BS])
            latents_N, offsets_T1 = active_lists(acts_Te > 0)
        before = self.counter.tokens
        self.counter.add(latents_N, offsets_T1)
        if self.evidence is not None:
            token_N = torch.repeat_interleave(
                torch.arange(len(offsets_T1) - 1, device=offsets_T1.device), offsets_T1.diff()
            )
            self.evidence.add(
                acts_Te,
                token_N,
                latents_N,
                batch.input_ids_BS,
                batch.real_token_mask_BS,
                torch.tensor(batch.prompt_rows, dtype=torch.int64),
            )
        return self.counter.tokens - before

    def state(self) -> dict[str, torch.Tensor]:
        evidence = self.evidence.state() if self.evidence is not None else {}
        return {**self.counter.state(), **evidence}

    def load_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        if self.evidence is not None and "top_values_eX" not in tensors:
            # A run started before evidence existed: its settings now read as the defaults.
            raise UsageError(
                "the checkpoint holds no latent evidence (the run was started by a version "
                "without it); finish it with that version, or start it again."
            )
        self.counter.load_state(tensors)
        if self.evidence is not None:
            self.evidence.load_state(tensors)

    def results(self) -> dict[str, torch.Tensor]:
        from sae_hacking.absorption.evidence.logit_lens import has_logit_lens, sae_logit_lens

        results = self.state()
        if self.evidence is not None and has_logit_lens(self.hook):
            results.update(sae_logit_lens(self.lm, self.sae))
        return results

    def same_tensors(self) -> tuple[str, ...]:
        same = ("rows_D",) if self.counter.rows_D is not None else ()
        return same + (("histogram_edges_J1",) if self.evidence is not None else ())

    def describe(self) -> dict[str, str]:
        from sae_hacking.absorption.evidence.logit_lens import DOCS as LENS_DOCS
        from sae_hacking.absorption.evidence.logit_lens import has_logit_lens

        docs = {k: DOCS[k] for k in self.counter.state()}
        if self.evidence is not None:
            docs.update(self.evidence.describe())
            if has_logit_lens(self.hook):
                docs.update(LENS_DOCS)
        return docs


class Cooccurrences:
    """Read a co-occurrence results file: one count, one row, activation frequencies.

    ``path``: the ``.safetensors.zst`` file, its ``.json`` sidecar, or the run directory.
    Results of only some shards of a run are refused unless ``allow_partial``.
    Nothing is loaded densely: a count reads one element (one 16 MiB zstd frame); a row of the
    full triangle reads row ``i``'s contiguous part and ``i`` scattered column entries, i.e. it
    decompresses every frame up to row ``i``'s end once (at e = 65,536: up to the whole 8.6 GB,
    streamed through 16 MiB of memory); a row of a rows-mode file reads ``e`` elements.
    """

    def __init__(self, path: str | Path, allow_partial: bool = False):
        path = Path(path)
        if path.is_dir():
            run_dir, path = path, results_paths(path / RESULTS_NAME)[0]
            if not path.is_file():
                raise UsageError(
                    f"{run_dir} holds no co-occurrence results: the run is unfinished (resume it "
                    "to the end first) or it is not a cooccurrences run."
                )
        elif path.suffix == ".json":
            path = path.with_name(path.name[: -len(".json")] + ".safetensors.zst")
        self.file = ResultsFile(path)
        self.meta = self.file.meta
        if self.meta.get("kind") != KIND:
            self.file.close()
            raise UsageError(
                f"{path} does not hold co-occurrence counts (kind {self.meta.get('kind')!r})."
            )
        if not self.meta.get("complete"):
            self.file.close()
            raise UsageError(
                f"{path} is the checkpoint of an unfinished run, not its results; resume the run "
                "to the end first."
            )
        try:
            check_all_shards(self.meta, path, allow_partial)
        except UsageError:
            self.file.close()
            raise
        self.e = self.file.shape("activations_e")[0]
        self.tokens = int(self.file.read("tokens_1")[0])
        self.rows = (
            self.file.read("rows_D").tolist() if "cooccurrences_De" in self.file.keys() else None
        )

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Cooccurrences:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check(self, i: int) -> int:
        if not 0 <= i < self.e:
            raise UsageError(f"latent {i} is out of range; this SAE has latents 0..{self.e - 1}.")
        return i

    def activations(self) -> torch.Tensor:
        """``[e]`` int64: tokens where each latent is active."""
        return self.file.read("activations_e")

    def frequencies(self) -> torch.Tensor:
        """``[e]`` float64: fraction of tokens where each latent is active."""
        return self.activations().double() / max(self.tokens, 1)

    def row(self, i: int) -> torch.Tensor:
        """``[e]`` int64: tokens where latent ``i`` and each latent are active together."""
        i = self._check(i)
        if self.rows is not None:
            if i not in self.rows:
                raise UsageError(f"latent {i} has no row in this file; its rows are {self.rows}.")
            d = self.rows.index(i)
            return self.file.read_range("cooccurrences_De", d * self.e, (d + 1) * self.e).long()
        start = int(row_starts(self.e)[i])
        column = self.file.read_elements("cooccurrences_P", row_starts(self.e)[:i] + i)
        rest = self.file.read_range("cooccurrences_P", start + i, start + self.e)
        return torch.cat([column.long(), rest.long()])

    def count(self, i: int, j: int) -> int:
        """Tokens where latents ``i`` and ``j`` are both active (``count(i, i)``: where ``i`` is)."""
        i, j = self._check(i), self._check(j)
        if self.rows is not None:
            if i not in self.rows and j not in self.rows:
                raise UsageError(
                    f"neither latent {i} nor {j} has a row in this file ({self.rows})."
                )
            d, other = (self.rows.index(i), j) if i in self.rows else (self.rows.index(j), i)
            flat = d * self.e + other
            return int(self.file.read_range("cooccurrences_De", flat, flat + 1)[0])
        flat = pair_index(i, j, self.e)
        return int(self.file.read_range("cooccurrences_P", flat, flat + 1)[0])
