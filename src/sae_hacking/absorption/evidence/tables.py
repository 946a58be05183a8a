"""Per-latent tables of examples kept by an exact, order-independent rule: the top activations
and a seeded uniform sample, each example with the token ids and activations around it.

A table keeps, for every latent, the ``n`` examples with the smallest key in the lexicographic
order ``(key, prompt, position)``: for the top examples the key is ``-activation`` (largest
first, ties broken by the earlier prompt, then the earlier position), for the sample a hash of
``(seed, prompt, position, latent)`` (bottom-k sampling: a uniform sample without replacement).
Which examples a table keeps depends only on the set of examples offered, never on their order
or on how they were split into batches, shards or resumed runs, so every merge is exact.

How (fast enough to ride along the counting): an example's context is written once, into a
free slot of its latent, and never moved; a batch's candidates are first filtered by the
latent's worst kept key (once a latent's slots are full, few pass), reduced to the ``n`` best
per latent by one sort, and only latents whose slots overflow merge old and new in a batched
sort of ``[rows, 2n]``. The slots are put in order only when the state is read
(:meth:`ExampleTable.state`: checkpoints and results), so files are canonical.

Letters: e latents, X slots per latent (the table's ``n``), W context tokens (``2w + 1``),
N candidate examples, Y latents a batch touches, O those whose slots overflow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int

EMPTY_PRIORITY = 2**62  # above every priority: an empty slot of a sample sorts last
NO_KEY = 2**63 - 1  # above every key: an empty slot, or a latent whose slots are not all full
POSITION_BITS = 20  # positions in a prompt < 2^20: (prompt, position) packs into one int64
_MASK31 = 2**31 - 1
_MIX = 0x45D9F3B  # < 2^27, so a 31-bit value times it stays far inside int64


def _mix31(h: torch.Tensor) -> torch.Tensor:
    """A 31-bit integer hash, on int64 tensors without overflow (device independent)."""
    for _ in range(2):
        h = h ^ (h >> 16)
        h = (h * _MIX) & _MASK31
    return h ^ (h >> 16)


@torch.no_grad()
def sample_priority(
    seed: int,
    prompt_N: Int[torch.Tensor, " N"],
    position_N: Int[torch.Tensor, " N"],
    latent_N: Int[torch.Tensor, " N"],
) -> Int[torch.Tensor, " N"]:
    """A 62-bit pseudo-random priority of each example, a function of its identity only."""
    h = _mix31((prompt_N.long() + seed) & _MASK31)
    h = _mix31(h ^ (prompt_N.long() >> 31) ^ (position_N.long() & _MASK31))
    high = _mix31(h ^ (latent_N.long() & _MASK31))
    low = _mix31(high ^ 0x5BD1E995)
    return (high << 31) | low


def order_key(values: Float[torch.Tensor, "*shape"]) -> Int[torch.Tensor, "*shape"]:
    """An int64 that orders positive float32 activations largest first (their bit patterns
    increase with the value), so a top table and a sample sort the same way."""
    return (2**31 - 1) - values.float().contiguous().view(torch.int32).long()


def packed_place(prompt_N: torch.Tensor, position_N: torch.Tensor) -> torch.Tensor:
    return (prompt_N.long() << POSITION_BITS) | position_N.long()


def _lexsort(columns: list[torch.Tensor], dim: int = -1) -> torch.Tensor:
    """Indices sorting by ``columns`` (first = most significant) along ``dim``."""
    order = torch.argsort(columns[-1], dim=dim, stable=True)
    for column in reversed(columns[:-1]):
        order = order.gather(dim, torch.argsort(column.gather(dim, order), dim=dim, stable=True))
    return order


def _sorted_without_ties(packed: torch.Tensor, dim: int = -1) -> torch.Tensor | None:
    """One sort by ``packed``; ``None`` when two equal values (other than ``NO_KEY``, which
    marks empty slots, all alike) make it ambiguous."""
    order = torch.argsort(packed, dim=dim)
    ranked = packed.gather(dim, order)
    after, before = (
        ranked.narrow(dim, 1, ranked.shape[dim] - 1),
        ranked.narrow(dim, 0, ranked.shape[dim] - 1),
    )
    if bool(((after == before) & (before != NO_KEY)).any()):
        return None
    return order


def keep_smallest(
    latent_N: Int[torch.Tensor, " N"],
    key_N: Int[torch.Tensor, " N"],
    place_N: Int[torch.Tensor, " N"],
    n: int,
) -> tuple[Int[torch.Tensor, " K"], Int[torch.Tensor, " K"]]:
    """``(kept, rank)``: the candidates among the ``n`` smallest of their latent in the order
    ``(key, place)``, in that order (latent by latent), and their rank there (0 = smallest).
    Keys are non-negative int64 below 2^62; most batches hold no two candidates of one latent
    whose keys agree in their top 31 bits, and then one sort of ``latent, top bits`` packed in
    an int64 decides everything; otherwise the full three-column sort does."""
    if len(latent_N) < 2:
        order = torch.arange(len(latent_N), device=latent_N.device)
    else:
        shift = 31 if int(key_N.max()) >= 2**31 else 0
        order = _sorted_without_ties((latent_N << 31) | (key_N >> shift))
        if order is None:
            order = _lexsort([latent_N, key_N, place_N])
    latent_sorted = latent_N[order]
    _, counts = torch.unique_consecutive(latent_sorted, return_counts=True)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    rank = torch.arange(len(order), device=order.device) - starts
    keep = rank < n
    return order[keep], rank[keep]


def row_order(key_OD: torch.Tensor, place_OD: torch.Tensor) -> torch.Tensor:
    """Column indices sorting each row by ``(key, place)`` (empty slots, ``NO_KEY``, last)."""
    order = _sorted_without_ties(key_OD, 1)
    if order is not None:
        return order
    return _lexsort([key_OD, place_OD], dim=1)


# What a table stores per slot, besides the order key; the first part of every tensor name.
FIELDS = ("values", "prompts", "positions", "context_ids", "context_acts")


@dataclass
class Candidates:
    """Examples offered to a table: ``contexts(indices)`` gives the ``[K, W]`` token ids and
    activations of the candidates ``indices`` (computed only for those a table keeps)."""

    latent_N: Int[torch.Tensor, " N"]
    value_N: Float[torch.Tensor, " N"]
    prompt_N: Int[torch.Tensor, " N"]
    position_N: Int[torch.Tensor, " N"]
    contexts: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    priority_N: Int[torch.Tensor, " N"] | None = None


class ExampleTable:
    """``n`` examples per latent: the top activations (``sampled=False``) or a sample. Slots
    ``0 .. filled - 1`` of a latent hold its examples in no particular order."""

    def __init__(
        self,
        name: str,
        letter: str,
        e: int,
        n: int,
        width: int,
        sampled: bool,
        device: torch.device,
    ):
        self.name, self.letter, self.e, self.n = name, letter, e, n
        self.width, self.sampled = width, sampled
        self.values_eX = torch.zeros((e, n), dtype=torch.float32, device=device)
        self.prompts_eX = torch.full((e, n), -1, dtype=torch.int64, device=device)
        self.positions_eX = torch.full((e, n), -1, dtype=torch.int32, device=device)
        self.context_ids_eXW = torch.full((e, n, width), -1, dtype=torch.int32, device=device)
        # float32 while collecting (the compiled CPU path cannot write float16); float16 in
        # checkpoints and results, where they are for display.
        self.context_acts_eXW = torch.zeros((e, n, width), dtype=torch.float32, device=device)
        self.key_eX = torch.full((e, n), NO_KEY, dtype=torch.int64, device=device)
        self.place_eX = torch.full((e, n), NO_KEY, dtype=torch.int64, device=device)
        self.filled_e = torch.zeros(e, dtype=torch.int64, device=device)
        # Both paths keep both: the worst kept key (the torch path's filter) and its slot.
        self.worst_e = torch.full((e,), NO_KEY, dtype=torch.int64, device=device)
        self.worst_slot_e = torch.zeros(e, dtype=torch.int64, device=device)

    def key_of(self, cand: Candidates) -> torch.Tensor:
        return cand.priority_N if self.sampled else order_key(cand.value_N)

    def offer(self, cand: Candidates) -> None:
        """Keep, for every latent, the ``n`` smallest of its kept examples and ``cand``."""
        if self.n == 0 or cand.latent_N.numel() == 0:
            return
        key_N = self.key_of(cand)
        # Ties with the worst kept key pass: (prompt, position) decides them in the merge.
        passing = (key_N <= self.worst_e[cand.latent_N]).nonzero().squeeze(1)
        if passing.numel() == 0:
            return
        place_N = packed_place(cand.prompt_N, cand.position_N)
        best, rank = keep_smallest(cand.latent_N[passing], key_N[passing], place_N[passing], self.n)
        new_K, rank_K = passing[best], rank
        latent_K = cand.latent_N[new_K]
        touched_Y, count_Y = torch.unique_consecutive(latent_K, return_counts=True)
        filled_Y = self.filled_e[touched_Y]
        fits_Y = filled_Y + count_Y <= self.n
        row_of_K = torch.repeat_interleave(
            torch.arange(len(touched_Y), device=latent_K.device), count_Y
        )
        fits_K = fits_Y[row_of_K]
        # Latents with room: the new examples take the next free slots.
        slots = [filled_Y[row_of_K[fits_K]] + rank_K[fits_K]]
        placed = [new_K[fits_K]]
        latents = [latent_K[fits_K]]
        over_O = (~fits_Y).nonzero().squeeze(1)
        if over_O.numel():
            slot, which = self._merge(
                touched_Y[over_O], over_O, row_of_K, rank_K, new_K, key_N, place_N
            )
            slots.append(slot)
            placed.append(which)
            latents.append(cand.latent_N[which])
        slot_K, new_K, latent_K = torch.cat(slots), torch.cat(placed), torch.cat(latents)
        self.values_eX[latent_K, slot_K] = cand.value_N[new_K].float()
        self.prompts_eX[latent_K, slot_K] = cand.prompt_N[new_K].long()
        self.positions_eX[latent_K, slot_K] = cand.position_N[new_K].int()
        self.key_eX[latent_K, slot_K] = key_N[new_K]
        self.place_eX[latent_K, slot_K] = place_N[new_K]
        ids_KW, acts_KW = cand.contexts(new_K)
        self.context_ids_eXW[latent_K, slot_K] = ids_KW.to(torch.int32)
        self.context_acts_eXW[latent_K, slot_K] = acts_KW.float()
        self.filled_e[touched_Y] = torch.clamp(filled_Y + count_Y, max=self.n)
        self._find_worst(touched_Y)

    def _find_worst(self, rows_Y: torch.Tensor) -> None:
        """The worst kept example of the latents ``rows_Y`` (``NO_KEY``: not full, admit all)."""
        slot_Y = row_order(self.key_eX[rows_Y], self.place_eX[rows_Y])[:, -1]
        full_Y = self.filled_e[rows_Y] == self.n
        self.worst_slot_e[rows_Y] = slot_Y
        self.worst_e[rows_Y] = torch.where(full_Y, self.key_eX[rows_Y, slot_Y], NO_KEY)

    def _merge(self, latent_O, over_O, row_of_K, rank_K, new_K, key_N, place_N):
        """For latents whose slots overflow: the slots the kept new examples take (freed by
        evicted ones or empty) and those examples, as two aligned ``[K]`` tensors."""
        n, device = self.n, latent_O.device
        empty_OX = torch.arange(n, device=device) >= self.filled_e[latent_O][:, None]
        old_key = self.key_eX[latent_O].masked_fill(empty_OX, NO_KEY)
        old_place = self.place_eX[latent_O].masked_fill(empty_OX, NO_KEY)
        row_in_O = torch.full((int(row_of_K.max()) + 1,), -1, dtype=torch.int64, device=device)
        row_in_O[over_O] = torch.arange(len(over_O), device=device)
        mine = row_in_O[row_of_K] >= 0
        r, c = row_in_O[row_of_K[mine]], rank_K[mine]
        # Rarely more than a few new examples per latent once its slots are full: as many
        # columns as the most of them, not n.
        width = (len(over_O), int(c.max()) + 1)
        new_key = torch.full(width, NO_KEY, dtype=torch.int64, device=device)
        new_place = torch.full(width, NO_KEY, dtype=torch.int64, device=device)
        new_key[r, c] = key_N[new_K[mine]]
        new_place[r, c] = place_N[new_K[mine]]
        new_index = torch.full(width, -1, dtype=torch.int64, device=device)
        new_index[r, c] = new_K[mine]
        kept = row_order(torch.cat([old_key, new_key], 1), torch.cat([old_place, new_place], 1))
        kept = kept[:, :n]  # columns < n: old slots; >= n: new examples by rank
        rows_OX = torch.arange(len(latent_O), device=device)[:, None].expand_as(kept)
        is_old = kept < n
        old_kept = torch.zeros_like(empty_OX)
        old_kept[rows_OX[is_old], kept[is_old]] = True
        new_kept = torch.zeros(width, dtype=torch.bool, device=device)
        new_kept[rows_OX[~is_old], kept[~is_old] - n] = True
        # Row by row, the free slots (ascending) take the kept new examples (by rank): equal counts.
        free_row, free_slot = (~old_kept).nonzero(as_tuple=True)
        new_row, new_rank = new_kept.nonzero(as_tuple=True)
        return free_slot, new_index[new_row, new_rank]

    # -- state --

    def tensor_names(self) -> dict[str, str]:
        """Attribute -> tensor name in a results file (``top_values_eX``, ``sample_values_eQ``:
        the table's own letter for its slots)."""
        x = self.letter
        names = {f"{f}_eX": f"{self.name}_{f}_e{x}" for f in FIELDS[:3]}
        names.update({f"{f}_eXW": f"{self.name}_{f}_e{x}W" for f in FIELDS[3:]})
        if self.sampled:
            names["key_eX"] = f"{self.name}_priority_e{x}"
        return names

    def state(self) -> dict[str, torch.Tensor]:
        """The slots in order (smallest key first, then prompt, position; empty slots last:
        prompt -1, top value -inf, sample priority EMPTY_PRIORITY), whatever order filled them."""
        empty = self.prompts_eX < 0
        order = row_order(
            self.key_eX.masked_fill(empty, NO_KEY), self.place_eX.masked_fill(empty, NO_KEY)
        )
        out = {}
        for attr, name in self.tensor_names().items():
            tensor = getattr(self, attr)
            index = order if tensor.dim() == 2 else order[:, :, None].expand_as(tensor)
            out[name] = tensor.gather(1, index)
            if tensor.dtype == torch.float32 and tensor.dim() == 3:
                out[name] = out[name].half()
        empty = out[f"{self.name}_prompts_e{self.letter}"] < 0
        if self.sampled:
            out[f"{self.name}_priority_e{self.letter}"].masked_fill_(empty, EMPTY_PRIORITY)
        else:
            out[f"{self.name}_values_e{self.letter}"].masked_fill_(empty, -torch.inf)
        return out

    def load_state(self, tensors) -> None:
        for attr, name in self.tensor_names().items():
            mine = getattr(self, attr)
            stored = tensors[name]
            if attr == "context_acts_eXW" and stored.dtype == torch.float16:
                stored = stored.float()
            if tuple(stored.shape) != tuple(mine.shape) or stored.dtype != mine.dtype:
                from sae_hacking.errors import UsageError

                raise UsageError(
                    f"the checkpoint's {name} has shape {tuple(stored.shape)}, not "
                    f"{tuple(mine.shape)}; it was written with other evidence settings."
                )
            setattr(self, attr, stored.to(mine.device).clone())
        empty = self.prompts_eX < 0
        if not self.sampled:
            self.key_eX = order_key(self.values_eX.masked_fill(empty, 1.0))
        self.key_eX.masked_fill_(empty, NO_KEY)
        self.place_eX = packed_place(self.prompts_eX, self.positions_eX).masked_fill(empty, NO_KEY)
        self.filled_e = (~empty).sum(1)
        self._find_worst(torch.arange(self.e, device=self.key_eX.device))

    def stored_candidates(self, tensors) -> Candidates:
        """Every non-empty slot of a stored table (another shard's), as candidates."""
        names = self.tensor_names()
        device = self.values_eX.device
        values = tensors[names["values_eX"]].to(device)
        filled = tensors[names["prompts_eX"]].to(device) >= 0

        def read(attr: str) -> torch.Tensor:
            return tensors[names[attr]].to(device)[filled]

        latent = torch.arange(self.e, device=device)[:, None].expand_as(values)[filled]
        ids, acts = read("context_ids_eXW"), read("context_acts_eXW")
        priority = read("key_eX") if self.sampled else None
        return Candidates(
            latent,
            values[filled],
            read("prompts_eX"),
            read("positions_eX"),
            lambda i: (ids[i], acts[i]),
            priority,
        )
