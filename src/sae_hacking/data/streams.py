"""Rows of text from a Hugging Face dataset or local files (torch-free).

A *row* is one record of the source: a dataset row, a ``.jsonl`` line, a parquet row, or a
non-empty line of a ``.txt`` file. Rows are read in a fixed order (files of a folder in sorted
name order), so "skip the first N rows" resumes a run exactly; skipping reads no text it does not
need (parquet skips whole row groups from the metadata, hub datasets use ``IterableDataset.skip``).

:func:`check_text_source` checks a source without reading it (for a command to call before any
heavy import); :func:`open_text_stream` checks what it can up front and reads lazily, and any
problem met later (bytes that are not UTF-8 deep in a file, a corrupt parquet row group) is a
:class:`UsageError` naming the file and the place, whenever the reader reaches it.
"""

from __future__ import annotations

import codecs
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

from sae_hacking.errors import FieldError, UsageError
from sae_hacking.hub import check_repo_id, hub_unreachable_reason, unreachable_message

LOCAL_SUFFIXES = (".txt", ".jsonl", ".parquet")
DEFAULT_TEXT_COLUMN = "text"
COLUMNAR_SUFFIXES = (".jsonl", ".parquet")  # the local files a text column applies to


def looks_local(dataset_id: str) -> bool:
    """Whether ``dataset_id`` names a local file or folder rather than a hub dataset."""
    return (
        Path(dataset_id).expanduser().exists()
        or dataset_id.startswith((".", "/", "~"))
        or dataset_id.endswith(LOCAL_SUFFIXES)
    )


def check_text_source(
    dataset_id: str, text_column: str | None = None, probe_hub: bool = True
) -> list[Path] | None:
    """Refuse a text source that cannot be read, without reading it (milliseconds; no torch,
    no ``datasets``); returns the local files in reading order, or ``None`` for a hub dataset.

    Local: the path exists, is a ``.txt`` / ``.jsonl`` / ``.parquet`` file or a folder holding
    some, and a ``text_column`` given (not ``None``) applies to one of them (a ``.txt`` file has no
    columns). Hub: ``dataset_id`` is a valid repository id and, with ``probe_hub``, the hub
    answers within about a second (streaming needs it). Whether the column exists is checked
    when the source is opened.
    """
    if looks_local(dataset_id):
        files = _local_files(dataset_id)
        if text_column is not None and not any(f.suffix in COLUMNAR_SUFFIXES for f in files):
            raise FieldError(
                "text_column",
                f"{text_column!r} does not apply to {dataset_id}: a .txt file has one prompt per "
                "line and no columns.",
            )
        return files
    check_repo_id(dataset_id, "dataset_id")
    if probe_hub:
        reason = hub_unreachable_reason()
        if reason is not None:
            raise _hub_unreachable(dataset_id, reason)
    return None


def open_text_stream(
    dataset_id: str, text_column: str | None = None, skip: int = 0
) -> Iterator[str]:
    """The texts of ``dataset_id`` from row ``skip`` on: a local ``.txt`` / ``.jsonl`` /
    ``.parquet`` file or a folder of them, else a Hugging Face dataset id (streamed).

    ``text_column`` (``None``: ``text``) is the field or column of ``.jsonl`` / parquet files and
    hub datasets; for a ``.txt`` source only ``None`` or the default name are accepted (a
    command refuses a column the user gave for a ``.txt`` file with :func:`check_text_source`).
    Problems visible up front (missing file, unknown suffix, missing column, unreachable hub)
    raise :class:`UsageError` here rather than at the first ``next``.
    """
    if skip < 0:
        raise ValueError(f"the number of rows to skip must not be negative, got {skip}.")
    given = None if text_column == DEFAULT_TEXT_COLUMN else text_column
    files = check_text_source(dataset_id, given, probe_hub=False)
    column = text_column or DEFAULT_TEXT_COLUMN
    if files is None:
        return _hub_rows(dataset_id, column, skip)
    for file in files:
        _check_file(file, column)
    return _local_rows(files, column, skip)


def _local_files(dataset_id: str) -> list[Path]:
    path = Path(dataset_id).expanduser()
    if not path.exists():
        raise FieldError("dataset_id", f"{dataset_id}: no such file or folder.")
    if path.is_file():
        if path.suffix not in LOCAL_SUFFIXES:
            raise FieldError(
                "dataset_id",
                f"{dataset_id} is a {path.suffix or 'suffix-less'} file; expected one of "
                f"{', '.join(LOCAL_SUFFIXES)} or a folder of them.",
            )
        return [path]
    try:
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in LOCAL_SUFFIXES)
    except OSError as err:
        raise FieldError("dataset_id", f"{dataset_id} cannot be read ({err.strerror}).") from None
    if not files:
        raise FieldError(
            "dataset_id", f"{dataset_id} is a folder with no {', '.join(LOCAL_SUFFIXES)} files."
        )
    return files


def _check_file(file: Path, text_column: str) -> None:
    try:
        if file.suffix == ".parquet":
            import pyarrow.parquet as pq

            names = pq.ParquetFile(file).schema_arrow.names
            if text_column not in names:
                raise FieldError(
                    "text_column",
                    f"{file} has no column {text_column!r}; its columns are {', '.join(names)}.",
                )
        else:
            with open(file, encoding="utf-8") as handle:
                handle.read(1)  # one buffer: what is readable, and UTF-8 at the start
            if file.suffix == ".jsonl":
                next(_jsonl_rows(file, text_column, 0), None)
    except UsageError:
        raise
    except UnicodeDecodeError:
        raise UsageError(_not_utf8(file)) from None
    except Exception as err:  # pyarrow raises its own types; all mean "cannot read this file"
        raise UsageError(f"{file} cannot be read as {file.suffix[1:]} ({err}).") from err


def _lines(file: Path) -> Iterator[str]:
    """The lines of ``file``, decoded as UTF-8; a failure is a :class:`UsageError` naming the
    file (and for bytes that are not UTF-8, where they are) whenever the reader gets there."""
    try:
        with open(file, encoding="utf-8") as handle:
            yield from handle
    except UnicodeDecodeError:
        raise UsageError(_not_utf8(file)) from None
    except OSError as err:
        raise UsageError(f"{file} cannot be read ({err.strerror or err}).") from None


def _not_utf8(file: Path) -> str:
    """Where the first bytes that are not UTF-8 are, found by decoding ``file`` again in
    chunks (the text reader's error only knows the offset within its buffer)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, line = 0, 1  # bytes and newlines before the current chunk
    with open(file, "rb") as handle:
        while True:
            chunk = handle.read(1 << 20)
            pending = decoder.getstate()[0]  # an unfinished character from the last chunk
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as err:
                data = pending + chunk  # ``pending`` holds no newline: it is a partial character
                where = offset - len(pending) + err.start
                line += data.count(b"\n", 0, err.start)
                return (
                    f"{file} is not UTF-8 text: line {line} (byte {where}) holds "
                    f"{data[err.start : err.end]!r}; convert the file to UTF-8."
                )
            if not chunk:
                return f"{file} is not UTF-8 text; convert the file to UTF-8."
            offset += len(chunk)
            line += chunk.count(b"\n")


def _count_rows(file: Path) -> int:
    if file.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(file).metadata.num_rows
    return sum(1 for line in _lines(file) if line.strip())


def _local_rows(files: list[Path], text_column: str, skip: int) -> Iterator[str]:
    for file in files:
        if skip:
            n = _count_rows(file)
            if skip >= n:
                skip -= n
                continue
        if file.suffix == ".parquet":
            yield from _parquet_rows(file, text_column, skip)
        elif file.suffix == ".jsonl":
            yield from _jsonl_rows(file, text_column, skip)
        else:
            yield from _txt_rows(file, skip)
        skip = 0


def _txt_rows(file: Path, skip: int) -> Iterator[str]:
    lines = (line.rstrip("\r\n") for line in _lines(file) if line.strip())
    yield from itertools.islice(lines, skip, None)


def _jsonl_rows(file: Path, text_column: str, skip: int) -> Iterator[str]:
    numbered = ((n, line) for n, line in enumerate(_lines(file), 1) if line.strip())
    for line_no, line in itertools.islice(numbered, skip, None):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UsageError(f"{file} line {line_no} is not valid JSON ({err.msg}).") from err
        if not isinstance(record, dict) or text_column not in record:
            keys = ", ".join(record) if isinstance(record, dict) else type(record).__name__
            raise FieldError(
                "text_column",
                f"{file} line {line_no} has no field {text_column!r}; it has: {keys}.",
            )
        yield _as_text(record[text_column])


def _parquet_rows(file: Path, text_column: str, skip: int) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(file)
    for group in range(parquet.num_row_groups):
        n = parquet.metadata.row_group(group).num_rows
        if skip >= n:
            skip -= n
            continue
        try:
            column = parquet.read_row_group(group, columns=[text_column]).column(0)
        except (OSError, pa.ArrowException) as err:
            raise UsageError(f"{file}: row group {group} cannot be read ({err}).") from None
        for value in column.slice(skip).to_pylist():
            yield _as_text(value)
        skip = 0


def _hub_unreachable(dataset_id: str, reason: str) -> UsageError:
    # Streaming always needs the hub (the Arrow cache of a downloaded copy is not used).
    return UsageError(
        unreachable_message(
            f"`dataset_id` {dataset_id}",
            reason,
            "streamed datasets need the hub; pass a local .txt, .jsonl or .parquet file or "
            "folder instead.",
        )
    )


def _hub_rows(dataset_id: str, text_column: str, skip: int) -> Iterator[str]:
    # An unreachable hub is reported before `datasets` starts its own retries.
    reason = hub_unreachable_reason()
    if reason is not None:
        raise _hub_unreachable(dataset_id, reason)
    import datasets

    try:
        dataset = datasets.load_dataset(dataset_id, split="train", streaming=True)
        first = next(iter(dataset), None)
    except (OSError, ValueError) as err:  # DatasetNotFoundError is an OSError
        raise FieldError("dataset_id", f"{dataset_id} could not be opened ({err}).") from err
    if first is not None and text_column not in first:
        raise FieldError(
            "text_column",
            f"dataset {dataset_id} has no column {text_column!r}; its columns are "
            f"{', '.join(first)}.",
        )
    return (_as_text(row[text_column]) for row in dataset.skip(skip))


def _as_text(value) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))
