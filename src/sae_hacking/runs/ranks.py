"""This process's place in a ``torchrun`` job, and rank 0 deciding for all (torch-free at import).

Below :mod:`sae_hacking.runs.distributed` and :mod:`sae_hacking.runs.rundir`, so that both
use it: the run directory of a torchrun job is created by rank 0, and the other ranks learn its
path (and rank 0's errors) through :func:`on_rank0`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sae_hacking.errors import UsageError


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int
    local_rank: int


def ranks_from_env(env: dict[str, str] | None = None) -> Ranks | None:
    """This process's place in a torchrun job; ``None`` outside one (or with one process)."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    rank = int(env["RANK"])
    return Ranks(rank, world, int(env.get("LOCAL_RANK", rank)))


def on_rank0(ranks: Ranks, fn: Callable[[], Any]) -> Any:
    """``fn()`` on rank 0 only; its result (picklable), or its :class:`UsageError`, reaches every
    rank, so no rank waits forever for one that failed."""
    import torch.distributed as dist

    box: list[Any] = [None]
    if ranks.rank == 0:
        try:
            box = [{"ok": fn()}]
        except UsageError as err:  # sent as text: exceptions with extra fields do not pickle
            box = [{"error": str(err)}]
        except BaseException as err:
            dist.broadcast_object_list([{"crash": repr(err)}], src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    if "error" in box[0]:
        raise UsageError(box[0]["error"])
    if "crash" in box[0]:
        raise RuntimeError(f"rank 0 failed: {box[0]['crash']}")
    return box[0]["ok"]
