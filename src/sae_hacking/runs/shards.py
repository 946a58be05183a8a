"""Shards: ``--shard i/n`` takes every n-th source row of a text stream, starting at row i.

Rows are numbered in the source's order (:mod:`sae_hacking.data.text`); shard ``i/n`` owns the
rows ``r`` with ``r % n == i``. Rows are selected *before* batching, so every batch of a shard is
full. Within a shard, rows are numbered again from 0 ("shard rows"): shard row ``k`` is source
row ``i + k·n``; checkpoints count shard rows, which is all resuming needs.

Pure Python (no torch): :class:`~sae_hacking.runs.options.RunOptions` checks ``shard`` with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sae_hacking.errors import FieldError, UsageError


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (``0/1``: the whole stream)."""

    index: int = 0
    count: int = 1

    def __post_init__(self):
        if self.count < 1 or not 0 <= self.index < self.count:
            raise FieldError(
                "shard", f"is {self.index}/{self.count}, expected i/n with n ≥ 1 and 0 ≤ i < n."
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/n"`` → ``Shard(i, n)``; anything else is a :class:`FieldError`."""
        parts = str(text).split("/")
        try:
            index, count = (int(p) for p in parts)
        except ValueError:
            raise FieldError(
                "shard", f"is {text!r}, expected i/n, e.g. 0/4 for the first of four shards."
            ) from None
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def to_json(self) -> dict[str, int]:
        return {"index": self.index, "count": self.count}

    @classmethod
    def from_json(cls, obj: dict) -> Shard:
        return cls(int(obj["index"]), int(obj["count"]))

    def n_rows(self, n_source_rows: int | None) -> int | None:
        """How many of the first ``n_source_rows`` source rows belong to this shard."""
        if n_source_rows is None:
            return None
        return max(0, -(-(n_source_rows - self.index) // self.count))

    def source_row(self, shard_row: int) -> int:
        return self.index + shard_row * self.count

    def overlaps(self, other: Shard) -> bool:
        """Whether some source row belongs to both shards."""
        return (self.index - other.index) % math.gcd(self.count, other.count) == 0


def covers_everything(shards: list[Shard]) -> bool:
    """Whether ``shards`` (pairwise disjoint) together own every source row."""
    if not shards:
        return False
    period = math.lcm(*(s.count for s in shards))
    return sum(period // s.count for s in shards) == period


def coverage(shards: list[Shard]) -> tuple[list[int], int]:
    """``(present, of)``: the residues modulo ``of`` (the least common multiple of the shard
    counts) whose rows ``shards`` own; ``present == list(range(of))`` means every row. Shards of
    one count give their indices: ``0/3`` and ``2/3`` → ``([0, 2], 3)``."""
    if not shards:
        return [], 1
    period = math.lcm(*(s.count for s in shards))
    present = sorted({r for s in shards for r in range(s.index, period, s.count)})
    return present, period


def shards_of(meta: dict) -> list[Shard] | None:
    """The shards a results file's metadata lists; ``None`` when it lists none (files written
    before shards were recorded: nothing can be said)."""
    entries = meta.get("shards")
    if not isinstance(entries, list) or not entries:
        return None
    try:
        return [Shard.from_json(entry) for entry in entries]
    except (KeyError, TypeError, ValueError, FieldError):
        return None


def partial_description(meta: dict) -> str | None:
    """Why the results ``meta`` describes miss part of their prompts (``None``: they do not):
    a lone shard ``--shard i/n``, or the merge of some of a run's shards."""
    shards = shards_of(meta)
    if shards is None or covers_everything(shards):
        return None
    present, of = coverage(shards)
    names = ", ".join(str(s) for s in shards)
    what = f"shard {names} only" if len(shards) == 1 else f"the merge of shards {names} only"
    prompts = meta.get("prompts_done", "?")
    return f"holds {what} ({len(present)} of {of} shards' prompts, {prompts} prompts)"


def check_all_shards(meta: dict, source: object, allow_partial: bool = False) -> None:
    """Refuse (:class:`UsageError`) results that hold only some shards of a run, unless
    ``allow_partial`` (the ``allow_partial`` setting of the reading command)."""
    why = partial_description(meta)
    if why is not None and not allow_partial:
        raise UsageError(
            f"{source} {why}; merge the missing shards into it (sae-hacking merge), or give "
            "`allow_partial` to use part of the prompts."
        )
