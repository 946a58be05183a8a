"""Text streams: prompts from a Hugging Face dataset or local files, tokenised into batches.

Rows come from :mod:`sae_hacking.data.streams` (torch-free; ``open_text_stream`` and
``LOCAL_SUFFIXES`` are re-exported here). Rows whose text is empty are counted but produce no
prompt.

Tokenisation follows the model's tokenizer and then makes sure every prompt starts with BOS
(``tokenize_prompts``). The batch carries ``attention_mask_BS`` (0 at right padding) and
``real_token_mask_BS`` (False at padding *and* at the leading BOS), which analyses use to count
only real tokens.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Int

from sae_hacking.data.streams import LOCAL_SUFFIXES, open_text_stream
from sae_hacking.errors import FieldError

__all__ = [
    "LOCAL_SUFFIXES",
    "TokenBatch",
    "batch_prompts",
    "bos_token_id",
    "length_sorted",
    "encode_prefixes",
    "open_text_stream",
    "pad_token_id",
    "tokenize_prompts",
]


@dataclass
class TokenBatch:
    """Right-padded token ids of a batch of prompts, with masks and where they came from."""

    input_ids_BS: Int[torch.Tensor, "B S"]
    attention_mask_BS: Int[torch.Tensor, "B S"]
    real_token_mask_BS: Bool[torch.Tensor, "B S"]
    texts: list[str]
    first_row: int = 0  # source row of the first prompt in this batch
    next_row: int = 0  # rows consumed through this batch: skip this many to resume after it
    rows: list[int] | None = None  # row of each prompt, counted as first_row is (None: 0, 1, ...)

    def to(self, device: torch.device | str) -> TokenBatch:
        return TokenBatch(
            self.input_ids_BS.to(device),
            self.attention_mask_BS.to(device),
            self.real_token_mask_BS.to(device),
            self.texts,
            self.first_row,
            self.next_row,
            self.rows,
        )

    @property
    def prompt_rows(self) -> list[int]:
        return list(range(len(self.texts))) if self.rows is None else self.rows

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
        raise FieldError(
            "max_tokens_in_prompt", f"must be at least 2 (BOS + a token), got {max_tokens}."
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


def length_sorted(batch: TokenBatch, size: int) -> list[TokenBatch]:
    """``batch`` cut into batches of ``size`` prompts of similar length, each trimmed to its
    longest prompt, so a forward over them computes few padding positions (right padding: the
    trimmed columns are padding in every row). Sub-batches carry the rows of ``batch``."""
    lengths = batch.attention_mask_BS.sum(1)
    order = torch.argsort(lengths, stable=True)
    parts = []
    for start in range(0, len(order), size):
        rows = order[start : start + size]
        width = int(lengths[rows].max())
        parts.append(
            TokenBatch(
                batch.input_ids_BS[rows, :width],
                batch.attention_mask_BS[rows, :width],
                batch.real_token_mask_BS[rows, :width],
                [batch.texts[i] for i in rows.tolist()],
                batch.first_row,
                batch.next_row,
                [batch.prompt_rows[i] for i in rows.tolist()],
            )
        )
    return parts


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
        raise FieldError("batch_size", f"must be at least 1, got {batch_size}.")
    if n_rows is not None and n_rows < 0:
        raise ValueError(f"n_rows must not be negative, got {n_rows}.")
    source = iter(rows) if n_rows is None else itertools.islice(rows, n_rows)
    row = start_row
    while True:
        first, texts, prompt_rows = row, [], []
        for text in source:
            row += 1
            if text and text.strip():
                texts.append(text)
                prompt_rows.append(row - 1)
                if len(texts) == batch_size:
                    break
        if not texts:
            return
        batch = tokenize_prompts(tokenizer, texts, max_tokens, prepend_bos)
        batch.first_row, batch.next_row, batch.rows = first, row, prompt_rows
        yield batch
