"""Merging the results of shards (``--shard i/n``) exactly: ``sae-hacking merge OUT FILES...``.

Results written by :class:`sae_hacking.runs.stream.StreamRun` are merged when they are all
complete, of the same ``kind``, with equal ``settings`` (model, SAE, hook, dataset, prompt
length, … — every key except the ``free_settings`` such as ``batch_size``), hold the same
tensors (names, dtypes, shapes), agree on the ``same_tensors`` (e.g. the latent ids of a rows
run), and come from shards that own no source row in common. Every other tensor is summed
(integers exactly: an ``int32`` sum that would overflow is promoted to ``int64``); the
progress counters are summed; ``shards`` lists every input shard, ``covers_all_rows`` says
whether they own every row (e.g. ``0/2`` and ``1/2``), and ``partial`` the opposite, with
``shards_present`` (``{"present": [0, 2], "of": 3}``) saying which: readers of results
(``pairs``, ``cooccurrences-show``, ``ablate --frequencies-from``) refuse a partial merge unless
given ``--allow-partial`` (:func:`sae_hacking.runs.shards.check_all_shards`). Sums are computed and written chunk by
chunk (:data:`CHUNK` elements), so the memory does not grow with the tensors: see
:func:`merge_results`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from sae_hacking.errors import UsageError
from sae_hacking.runs.files import provenance
from sae_hacking.runs.locate import results_file_of
from sae_hacking.runs.record import check_merge_output, results_stem
from sae_hacking.runs.results import ResultsFile, TensorStream, write_results
from sae_hacking.runs.shards import Shard, coverage, covers_everything
from sae_hacking.runs.stream import RESULTS_FORMAT

CHUNK = 2**24  # elements summed at a time
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


PROGRESS_COUNTERS = ("rows_done", "prompts_done", "tokens_done")


def check_runs(entries: list[tuple[Path, dict[str, Any]]]) -> list[tuple[Path, Shard]]:
    """Raise :class:`UsageError` unless the runs described by ``(path, meta)`` may be merged:
    all complete, of one kind, with equal settings (but the free ones) and disjoint shards.
    Returns every (path, shard). Whatever the kind's tensors are, these checks are the same."""
    first_path, first = entries[0]
    free = set(first.get("free_settings", ()))
    base = {k: v for k, v in first["settings"].items() if k not in free}
    shards: list[tuple[Path, Shard]] = []
    for path, meta in entries:
        if meta.get("format") != RESULTS_FORMAT:
            raise UsageError(
                f"{path} is not an sae_hacking results file (no {RESULTS_FORMAT} metadata)."
            )
        if not meta.get("complete"):
            raise UsageError(
                f"{path} is a checkpoint of an unfinished run; resume it to the end first."
            )
        if meta["kind"] != first["kind"]:
            raise UsageError(
                f"{path} holds {meta['kind']!r} results but {first_path} holds "
                f"{first['kind']!r}; merge results of one kind."
            )
        settings = {k: v for k, v in meta["settings"].items() if k not in free}
        for key in sorted(set(base) | set(settings)):
            if base.get(key) != settings.get(key):
                raise UsageError(
                    f"{path} was computed with {key} = {settings.get(key)!r} but {first_path} "
                    f"with {base.get(key)!r}; only results of the same settings merge."
                )
        for entry in meta.get("shards", []):
            shards.append((path, Shard.from_json(entry)))
    for i, (path_a, a) in enumerate(shards):
        for path_b, b in shards[i + 1 :]:
            if a.overlaps(b):
                raise UsageError(
                    f"shard {a} of {path_a} and shard {b} of {path_b} share prompts; each "
                    "prompt may be counted once."
                )
    return shards


def merged_meta(
    metas: list[dict[str, Any]], paths: list[str | Path], shards: list[tuple[Path, Shard]]
) -> dict[str, Any]:
    """The first run's metadata with the progress counters summed and the shards listed."""
    meta = dict(metas[0])
    for counter in PROGRESS_COUNTERS:
        meta[counter] = sum(int(m[counter]) for m in metas)
    meta["shards"] = [entry for m in metas for entry in m["shards"]]
    covers = covers_everything([shard for _, shard in shards])
    meta["covers_all_rows"] = covers
    # "complete" stays: every input run finished (a partial merge may still be merged with the
    # missing shards); "partial" is what readers refuse without --allow-partial.
    present, of = coverage([shard for _, shard in shards])
    meta["partial"] = not covers
    meta["shards_present"] = {"present": present, "of": of}
    meta["merged_from"] = [str(Path(p)) for p in paths]
    meta["provenance"] = provenance()
    return meta


def check_compatible(files: list[ResultsFile]) -> list[tuple[Path, Shard]]:
    """:func:`check_runs`, plus: the files hold the same tensors (names, dtypes, shapes)."""
    shards = check_runs([(f.path, f.meta) for f in files])
    first = files[0]
    for f in files[1:]:
        if f.keys() != first.keys() or any(
            f.shape(k) != first.shape(k) or f.dtype(k) != first.dtype(k) for k in f.keys()
        ):
            raise UsageError(f"{f.path} and {first.path} hold different tensors.")
    return shards


def merge_paths(out: str | Path, inputs: list[str | Path]) -> tuple[Path, list[Path]]:
    """``(output stem, results files)`` of ``sae-hacking merge OUT INPUTS...``: each input is a
    run directory, a ``.json`` sidecar or a results file (:func:`results_file_of`); an ``OUT``
    that is an existing folder receives the merge under the inputs' results name
    (``OUT/cooccurrences.safetensors.zst``). Nothing is read but names and ``run.json``."""
    paths = []
    for given in inputs:
        path = results_file_of(given)
        if not path.is_file():
            raise UsageError(f"{given}: no results file there (is the run finished?).")
        paths.append(path)
    out = Path(out)
    if out.is_dir():
        out = out / results_stem(paths[0]).name
    return out, paths


class _Promote(Exception):
    """An ``int32`` sum left the int32 range while being written: write it again in int64."""

    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _chunk_sum(
    files: list[ResultsFile], key: str, start: int, stop: int, dtype: torch.dtype
) -> torch.Tensor:
    """Elements ``[start, stop)`` of ``key`` summed over ``files`` in order, as ``dtype``.
    An ``int32`` tensor is summed exactly in int64; written as ``int32``, a running sum outside
    the int32 range raises :class:`_Promote`. Other dtypes add in their own type, as ``+=``."""
    total = files[0].read_range(key, start, stop)
    if total.dtype != torch.int32:
        for f in files[1:]:
            total += f.read_range(key, start, stop)
        return total
    total = total.long()
    for f in files[1:]:
        total += f.read_range(key, start, stop)
        if dtype == torch.int32 and total.numel():
            low, high = torch.aminmax(total)
            if int(high) > INT32_MAX or int(low) < INT32_MIN:
                raise _Promote(key)
    return total.to(dtype)


def _summed(files: list[ResultsFile], key: str, dtype: torch.dtype) -> TensorStream:
    n = files[0].numel(key)

    def pieces() -> Iterator[torch.Tensor]:
        for start in range(0, n, CHUNK):
            piece = _chunk_sum(files, key, start, min(start + CHUNK, n), dtype)
            yield piece
            del piece  # the writer has let go of it: free it before the next one exists

    return TensorStream(dtype, files[0].shape(key), pieces)


def _copied(f: ResultsFile, key: str) -> TensorStream:
    return TensorStream(
        f.dtype(key), f.shape(key), lambda: (chunk for _, chunk in f.iter_ranges(key, CHUNK))
    )


def _check_same(files: list[ResultsFile], key: str) -> None:
    first = files[0]
    for f in files[1:]:
        for start, chunk in first.iter_ranges(key, CHUNK):
            if not torch.equal(f.read_range(key, start, start + chunk.numel()), chunk):
                raise UsageError(
                    f"{f.path} and {first.path} differ in {key!r}, which must be equal."
                )


Combine = Callable[[list[ResultsFile]], dict[str, torch.Tensor]]


def merge_results(
    out: str | Path, paths: list[str | Path], combine: Combine | None = None
) -> tuple[Path, Path]:
    """Merge the results files ``paths`` into ``OUT.safetensors.zst`` + ``OUT.json`` by summing
    every tensor but those ``combine(files)`` returns (a kind's own rule for some tensors, e.g.
    the top examples of latent evidence); kinds whose rows are keyed, like ablations, merge
    with their own function on top of :func:`check_runs` and :func:`merged_meta`.

    Streamed: each output tensor is written ``CHUNK`` elements at a time, read from every input
    as it is written. An ``int32`` tensor is written as ``int32`` until a sum leaves its range;
    then the (unfinished, never visible) file is written again with that tensor in int64."""
    stem = check_merge_output(out, paths)
    with ExitStack() as stack:
        files = [stack.enter_context(ResultsFile(path)) for path in paths]
        shards = check_compatible(files)
        first = files[0]
        same = set(first.meta.get("same_tensors", ())) & set(first.keys())
        for key in first.keys():
            if key in same:
                _check_same(files, key)
        meta = merged_meta([f.meta for f in files], paths, shards)
        combined = combine(files) if combine is not None else {}
        promoted: set[str] = set()
        while True:
            tensors = {
                key: combined[key]
                if key in combined
                else _copied(first, key)
                if key in same
                else _summed(files, key, torch.int64 if key in promoted else first.dtype(key))
                for key in first.keys()
            }
            try:
                return write_results(stem, tensors, meta)
            except _Promote as promote:
                promoted.add(promote.key)
