"""The text of each token of a sequence, for showing tokens one by one (the serve page, the
latent evidence reports): ``"".join`` of the pieces is the decoded text."""

from __future__ import annotations

from collections.abc import Sequence

REPLACEMENT = "\ufffd"
MAX_BYTES_PER_CHAR = 4  # a UTF-8 character split over byte tokens spans at most 4


def token_pieces(tokenizer, ids: Sequence[int]) -> list[str]:
    """The text of each token, so that ``"".join`` is the decoded prompt.

    Each id is decoded on its own (``convert_ids_to_tokens`` gives vocabulary entries such as
    ``▁the`` or ``Ġthe``, not text). A character split over byte tokens decodes to U+FFFD piece
    by piece: its first token then carries the whole character and the rest are empty. Where
    decoding one id at a time still differs from decoding them together (tokenizers that strip a
    leading space), each piece is the growth of the decoded prefix instead."""
    ids = [int(i) for i in ids]
    whole = tokenizer.decode(ids)
    pieces = _grouped(ids, lambda group: tokenizer.decode(group))
    if "".join(pieces) == whole:
        return pieces
    return _prefix_growth(tokenizer, ids)


def _grouped(ids: list[int], decode) -> list[str]:
    pieces: list[str] = []
    i = 0
    while i < len(ids):
        text, width = decode(ids[i : i + 1]), 1
        if REPLACEMENT in text:
            for n in range(2, MAX_BYTES_PER_CHAR + 1):
                joined = decode(ids[i : i + n])
                if REPLACEMENT not in joined:
                    text, width = joined, n
                    break
        pieces.append(text)
        pieces.extend([""] * (width - 1))
        i += width
    return pieces[: len(ids)]


def _prefix_growth(tokenizer, ids: list[int]) -> list[str]:
    pieces, shown = [], ""
    for n in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:n])
        if REPLACEMENT in text[len(shown) :] and n < len(ids):
            pieces.append("")  # an incomplete character: shown with the token that ends it
            continue
        pieces.append(text[len(shown) :] if text.startswith(shown) else text)
        shown = text
    return pieces
