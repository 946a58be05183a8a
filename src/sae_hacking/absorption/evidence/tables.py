"""Per-latent tables of examples kept by an exact, order-independent rule: the top activations
and a seeded uniform sample, each example with the token ids and activations around it.

A table keeps, for every latent, the ``n`` examples with the smallest key in the lexicographic
order ``(key, prompt, position)``: for the top examples the key is ``-activation`` (largest
first, ties broken by the earlier prompt, then the earlier position), for the sample a hash of
``(seed, prompt, position, latent)`` (bottom-k sampling: a uniform sample without replacement).
Which examples a table keeps depends only on the set of examples offered, never on their order
or on how they were split into batches, shards or resumed runs, so every merge is exact.

Letters: e latents, X slots per latent (the table's ``n``), W context tokens (``2w + 1``),
N candidate examples, U latents a batch touches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int

EMPTY_PRIORITY = 2**62  # above every priority: an empty slot of a sample sorts last
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


def keep_smallest(
    latent_N: Int[torch.Tensor, " N"],
    key_N: torch.Tensor,
    prompt_N: Int[torch.Tensor, " N"],
    position_N: Int[torch.Tensor, " N"],
    n: int,
) -> tuple[Int[torch.Tensor, " K"], Int[torch.Tensor, " K"]]:
    """``(kept, rank)``: the candidates that are among the ``n`` smallest of their latent in the
    order ``(key, prompt, position)``, and their rank there (0 = smallest)."""
    order = torch.argsort(position_N, stable=True)
    for column in (prompt_N, key_N, latent_N):
        order = order[torch.argsort(column[order], stable=True)]
    latent_sorted = latent_N[order]
    _, counts = torch.unique_consecutive(latent_sorted, return_counts=True)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    rank = torch.arange(len(order), device=order.device) - starts
    keep = rank < n
    return order[keep], rank[keep]


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
    """``n`` examples per latent: the top activations (``sampled=False``) or a sample."""

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
        self.context_acts_eXW = torch.zeros((e, n, width), dtype=torch.float16, device=device)
        if sampled:
            self.priority_eX = torch.full((e, n), EMPTY_PRIORITY, dtype=torch.int64, device=device)
        else:
            self.values_eX.fill_(-torch.inf)

    def key_of(self, values: torch.Tensor, priority: torch.Tensor | None) -> torch.Tensor:
        return priority if self.sampled else -values

    def worst_key_e(self) -> torch.Tensor:
        """The key an example must not exceed to enter (an empty slot admits everything)."""
        last = self.priority_eX[:, -1] if self.sampled else -self.values_eX[:, -1]
        return last

    def offer(self, cand: Candidates) -> None:
        """Keep, for every latent, the ``n`` smallest of the kept examples and ``cand``."""
        if self.n == 0 or cand.latent_N.numel() == 0:
            return
        key_N = self.key_of(cand.value_N, cand.priority_N)
        # Equal keys may still win on (prompt, position): only strictly worse ones are dropped.
        passing = (key_N <= self.worst_key_e()[cand.latent_N]).nonzero().squeeze(1)
        if passing.numel() == 0:
            return
        touched_U = torch.unique(cand.latent_N[passing])
        n, device = self.n, touched_U.device
        old = {
            f: getattr(self, f"{f}_eX" if f in FIELDS[:3] else f"{f}_eXW")[touched_U]
            for f in FIELDS
        }
        old_key = (self.priority_eX[touched_U] if self.sampled else -old["values"]).reshape(-1)
        n_old = touched_U.numel() * n
        latent_all = torch.cat([touched_U.repeat_interleave(n), cand.latent_N[passing]])
        kept, rank = keep_smallest(
            latent_all,
            torch.cat([old_key, key_N[passing]]),
            torch.cat([old["prompts"].reshape(-1), cand.prompt_N[passing]]),
            torch.cat([old["positions"].reshape(-1).long(), cand.position_N[passing].long()]),
            n,
        )
        from_old = kept < n_old
        old_slot, new_idx = kept[from_old], passing[kept[~from_old] - n_old]
        dest_latent = latent_all[kept]
        ids_KW = torch.empty((kept.numel(), self.width), dtype=torch.int32, device=device)
        acts_KW = torch.empty((kept.numel(), self.width), dtype=torch.float16, device=device)
        ids_KW[from_old] = old["context_ids"].reshape(n_old, -1)[old_slot]
        acts_KW[from_old] = old["context_acts"].reshape(n_old, -1)[old_slot]
        if new_idx.numel():
            new_ids, new_acts = cand.contexts(new_idx)
            ids_KW[~from_old] = new_ids.to(torch.int32)
            acts_KW[~from_old] = new_acts.to(torch.float16)

        def merged(old_flat: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
            out = torch.empty(kept.numel(), dtype=old_flat.dtype, device=device)
            out[from_old] = old_flat[old_slot]
            out[~from_old] = new[new_idx].to(old_flat.dtype)
            return out

        self.values_eX[dest_latent, rank] = merged(old["values"].reshape(-1), cand.value_N)
        self.prompts_eX[dest_latent, rank] = merged(old["prompts"].reshape(-1), cand.prompt_N)
        self.positions_eX[dest_latent, rank] = merged(old["positions"].reshape(-1), cand.position_N)
        if self.sampled:
            self.priority_eX[dest_latent, rank] = merged(old_key, cand.priority_N)
        self.context_ids_eXW[dest_latent, rank] = ids_KW
        self.context_acts_eXW[dest_latent, rank] = acts_KW

    # -- state --

    def tensor_names(self) -> dict[str, str]:
        """Attribute -> tensor name in a results file (``top_values_eX``, ``sample_values_eQ``:
        the table's own letter for its slots)."""
        x = self.letter
        names = {f"{f}_eX": f"{self.name}_{f}_e{x}" for f in FIELDS[:3]}
        names.update({f"{f}_eXW": f"{self.name}_{f}_e{x}W" for f in FIELDS[3:]})
        if self.sampled:
            names["priority_eX"] = f"{self.name}_priority_e{x}"
        return names

    def state(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, attr) for attr, name in self.tensor_names().items()}

    def load_state(self, tensors) -> None:
        for attr, name in self.tensor_names().items():
            mine = getattr(self, attr)
            stored = tensors[name]
            if tuple(stored.shape) != tuple(mine.shape) or stored.dtype != mine.dtype:
                from sae_hacking.errors import UsageError

                raise UsageError(
                    f"the checkpoint's {name} has shape {tuple(stored.shape)}, not "
                    f"{tuple(mine.shape)}; it was written with other evidence settings."
                )
            setattr(self, attr, stored.to(mine.device))

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
        priority = read("priority_eX") if self.sampled else None
        return Candidates(
            latent,
            values[filled],
            read("prompts_eX"),
            read("positions_eX"),
            lambda i: (ids[i], acts[i]),
            priority,
        )
