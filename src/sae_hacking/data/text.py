"""Text streams: prompts from a Hugging Face dataset or local files, tokenised into batches.

A *row* is one record of the source: a dataset row, a ``.jsonl`` line, a parquet row, or a
non-empty line of a ``.txt`` file. Rows are read in a fixed order (files of a folder in sorted
name order), so "skip the first N rows" resumes a run exactly; skipping reads no text it does not
need (parquet skips whole row groups from the metadata, hub datasets use ``IterableDataset.skip``).
Rows whose text is empty are counted but produce no prompt.

Tokenisation follows the model's tokenizer and then makes sure every prompt starts with BOS
(``tokenize_prompts``). The batch carries ``attention_mask_BS`` (0 at right padding) and
``real_token_mask_BS`` (False at padding *and* at the leading BOS), which analyses use to count
only real tokens.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Bool, Int

from sae_hacking.errors import UsageError
from sae_hacking.hub import hub_unreachable_reason, unreachable_message

LOCAL_SUFFIXES = (".txt", ".jsonl", ".parquet")


@dataclass
class TokenBatch:
    """Right-padded token ids of a batch of prompts, with masks and where they came from."""

    input_ids_BS: Int[torch.Tensor, "B S"]
    attention_mask_BS: Int[torch.Tensor, "B S"]
    real_token_mask_BS: Bool[torch.Tensor, "B S"]
    texts: list[str]
    first_row: int = 0  # source row of the first prompt in this batch
    next_row: int = 0  # rows consumed through this batch: skip this many to resume after it

    def to(self, device: torch.device | str) -> TokenBatch:
        return TokenBatch(
            self.input_ids_BS.to(device),
            self.attention_mask_BS.to(device),
            self.real_token_mask_BS.to(device),
            self.texts,
            self.first_row,
            self.next_row,
        )

    @property
    def n_real_tokens(self) -> int:
        return int(self.real_token_mask_BS.sum())


def bos_token_id(tokenizer) -> int | None:
    """The BOS id the model expects: the tokenizer's, else the one its vocabulary spells
    ``<|endoftext|>`` (GPT-2 / Pythia convention, also what SAELens prepends for them)."""
    if tokenizer.bos_token_id is not None:
        return tokenizer.bos_token_id
    return (
        tokenizer.convert_tokens_to_ids("<|endoftext|>")
        if "<|endoftext|>" in tokenizer.get_vocab()
        else None
    )


def pad_token_id(tokenizer) -> int:
    """Padding positions are masked out, so any id works; prefer the tokenizer's own."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id, bos_token_id(tokenizer)):
        if token_id is not None:
            return token_id
    return 0


# A prompt keeps only its first max_tokens tokens, but corpora like the Pile hold documents of
# hundreds of thousands of characters: tokenising them whole would cost more than the model's
# forward. So only a prefix of CHARS_PER_TOKEN * max_tokens characters is tokenised. Cutting the
# text can only change the tokens next to the cut (BPE merges and pre-tokenisation are local), so
# when the prefix still yields CUT_MARGIN tokens beyond max_tokens, its first max_tokens tokens
# are the full text's; otherwise (very long tokens) the whole text is tokenised.
CHARS_PER_TOKEN = 8
CUT_MARGIN = 16


def encode_prefixes(tokenizer, texts: Sequence[str], max_tokens: int) -> list[list[int]]:
    """Token ids (with the tokenizer's special tokens) of each text, of which at least the first
    ``max_tokens`` equal those of tokenising the whole text; see :data:`CHARS_PER_TOKEN`."""
    budget = CHARS_PER_TOKEN * (max_tokens + CUT_MARGIN)
    encoded = tokenizer([text[:budget] for text in texts], add_special_tokens=True)["input_ids"]
    for i, text in enumerate(texts):
        if len(text) > budget and len(encoded[i]) < max_tokens + CUT_MARGIN:
            encoded[i] = tokenizer(text, add_special_tokens=True)["input_ids"]
    return encoded


def tokenize_prompts(
    tokenizer, texts: Sequence[str], max_tokens: int, prepend_bos: bool = True
) -> TokenBatch:
    """Tokenise ``texts`` into one right-padded batch of at most ``max_tokens`` tokens each.

    The rule for BOS: the tokenizer adds its own special tokens (Gemma and Llama tokenizers add
    BOS); if ``prepend_bos`` and the sequence does not already start with BOS, BOS is prepended
    (GPT-2 and Pythia tokenizers add nothing). BOS counts towards ``max_tokens``. A leading BOS is
    never a real token, whoever put it there.
    """
    if max_tokens < 2:
        raise UsageError(
            f"--max-tokens-in-prompt must be at least 2 (BOS + a token), got {max_tokens}."
        )
    if not texts:
        raise ValueError("tokenize_prompts needs at least one text")
    bos = bos_token_id(tokenizer)
    encoded = encode_prefixes(tokenizer, texts, max_tokens)
    rows = []
    for ids in encoded:
        if prepend_bos and bos is not None and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        rows.append(ids[:max_tokens])
    length = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), length), pad_token_id(tokenizer), dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, ids in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[i, : len(ids)] = 1
    real = attention_mask.bool()
    if bos is not None:
        real[:, 0] &= input_ids[:, 0] != bos
    return TokenBatch(input_ids, attention_mask, real, list(texts), 0, len(texts))


def batch_prompts(
    rows: Iterable[str],
    tokenizer,
    batch_size: int,
    max_tokens: int,
    *,
    start_row: int = 0,
    n_rows: int | None = None,
    prepend_bos: bool = True,
) -> Iterator[TokenBatch]:
    """Group rows into tokenised batches of ``batch_size`` non-empty prompts.

    ``start_row`` is the source index of the first row of ``rows`` (what was skipped), so the
    batches' ``first_row`` / ``next_row`` are source indices; at most ``n_rows`` rows are read.
    """
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}.")
    if n_rows is not None and n_rows < 0:
        raise UsageError(f"--n-prompts must not be negative, got {n_rows}.")
    source = iter(rows) if n_rows is None else itertools.islice(rows, n_rows)
    row = start_row
    while True:
        first, texts = row, []
        for text in source:
            row += 1
            if text and text.strip():
                texts.append(text)
                if len(texts) == batch_size:
                    break
        if not texts:
            return
        batch = tokenize_prompts(tokenizer, texts, max_tokens, prepend_bos)
        batch.first_row, batch.next_row = first, row
        yield batch


def open_text_stream(dataset_id: str, text_column: str = "text", skip: int = 0) -> Iterator[str]:
    """The texts of ``dataset_id`` from row ``skip`` on: a local ``.txt`` / ``.jsonl`` /
    ``.parquet`` file or a folder of them, else a Hugging Face dataset id (streamed).

    Problems visible up front (missing file, unknown suffix, missing column, unreachable hub)
    raise :class:`UsageError` here rather than at the first ``next``.
    """
    if skip < 0:
        raise UsageError(f"the number of prompts to skip must not be negative, got {skip}.")
    path = Path(dataset_id).expanduser()
    if path.exists():
        files = _local_files(path, dataset_id)
        for file in files:
            _check_file(file, text_column)
        return _local_rows(files, text_column, skip)
    if dataset_id.startswith((".", "/", "~")) or dataset_id.endswith(LOCAL_SUFFIXES):
        raise UsageError(f"--dataset-id {dataset_id}: no such file or folder.")
    return _hub_rows(dataset_id, text_column, skip)


def _local_files(path: Path, dataset_id: str) -> list[Path]:
    if path.is_file():
        if path.suffix not in LOCAL_SUFFIXES:
            raise UsageError(
                f"--dataset-id {dataset_id} is a {path.suffix or 'suffix-less'} file; expected "
                f"one of {', '.join(LOCAL_SUFFIXES)} or a folder of them."
            )
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in LOCAL_SUFFIXES)
    if not files:
        raise UsageError(
            f"--dataset-id {dataset_id} is a folder with no {', '.join(LOCAL_SUFFIXES)} files."
        )
    return files


def _check_file(file: Path, text_column: str) -> None:
    try:
        if file.suffix == ".parquet":
            import pyarrow.parquet as pq

            names = pq.ParquetFile(file).schema_arrow.names
            if text_column not in names:
                raise UsageError(
                    f"{file} has no column {text_column!r} (--text-column); its columns are "
                    f"{', '.join(names)}."
                )
        else:
            with open(file, encoding="utf-8") as handle:
                handle.read(1)
            if file.suffix == ".jsonl":
                next(_jsonl_rows(file, text_column, 0), None)
    except UsageError:
        raise
    except Exception as err:  # pyarrow raises its own types; all mean "cannot read this file"
        raise UsageError(f"{file} cannot be read as {file.suffix[1:]} ({err}).") from err


def _count_rows(file: Path) -> int:
    if file.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(file).metadata.num_rows
    with open(file, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


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
    with open(file, encoding="utf-8") as handle:
        lines = (line.rstrip("\r\n") for line in handle if line.strip())
        yield from itertools.islice(lines, skip, None)


def _jsonl_rows(file: Path, text_column: str, skip: int) -> Iterator[str]:
    with open(file, encoding="utf-8") as handle:
        numbered = ((n, line) for n, line in enumerate(handle, 1) if line.strip())
        for line_no, line in itertools.islice(numbered, skip, None):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise UsageError(f"{file} line {line_no} is not valid JSON ({err.msg}).") from err
            if not isinstance(record, dict) or text_column not in record:
                keys = ", ".join(record) if isinstance(record, dict) else type(record).__name__
                raise UsageError(
                    f"{file} line {line_no} has no field {text_column!r} (--text-column); "
                    f"it has: {keys}."
                )
            yield _as_text(record[text_column])


def _parquet_rows(file: Path, text_column: str, skip: int) -> Iterator[str]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(file)
    for group in range(parquet.num_row_groups):
        n = parquet.metadata.row_group(group).num_rows
        if skip >= n:
            skip -= n
            continue
        column = parquet.read_row_group(group, columns=[text_column]).column(0)
        for value in column.slice(skip).to_pylist():
            yield _as_text(value)
        skip = 0


def _hub_rows(dataset_id: str, text_column: str, skip: int) -> Iterator[str]:
    # Streaming always needs the hub (the Arrow cache of a downloaded copy is not used), so an
    # unreachable hub is reported before `datasets` starts its own retries.
    reason = hub_unreachable_reason()
    if reason is not None:
        raise UsageError(
            unreachable_message(
                f"--dataset-id {dataset_id}",
                reason,
                "streamed datasets need the hub; pass a local .txt, .jsonl or .parquet file or "
                "folder instead.",
            )
        )
    import datasets

    try:
        dataset = datasets.load_dataset(dataset_id, split="train", streaming=True)
        first = next(iter(dataset), None)
    except (OSError, ValueError) as err:  # DatasetNotFoundError is an OSError
        raise UsageError(f"--dataset-id {dataset_id} could not be opened ({err}).") from err
    if first is not None and text_column not in first:
        raise UsageError(
            f"dataset {dataset_id} has no column {text_column!r} (--text-column); its columns "
            f"are {', '.join(first)}."
        )
    return (_as_text(row[text_column]) for row in dataset.skip(skip))


def _as_text(value) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))
