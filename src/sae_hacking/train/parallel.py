"""Data-parallel training under ``torchrun``: one SAE replica per rank, gradients averaged by
``DistributedDataParallel``, each rank reading its own shard of the text.

Every rank takes the same optimiser step (DDP averages the gradients; a latent counts as fired
when it fired on any rank; the input scale is the ranks' mean), so the replicas stay equal and
rank 0 alone evaluates, logs, checkpoints and exports. A checkpoint holds every rank's data
position, so ``--resume`` under the same world size continues exactly.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from sae_hacking.runs.distributed import Ranks
from sae_hacking.saes.trainable import TrainableSAE, TrainOutput


class _TrainForward(torch.nn.Module):
    """DDP hooks the gradients of what a module's ``forward`` computes: this one is the SAE's
    training forward."""

    def __init__(self, sae: TrainableSAE):
        super().__init__()
        self.sae = sae

    def forward(self, x_BM, dead_E, k_aux) -> TrainOutput:
        return self.sae.train_forward(x_BM, dead_E, k_aux)


class DataParallel:
    def __init__(self, sae: TrainableSAE, ranks: Ranks, device: torch.device):
        self.ranks = ranks
        device_ids = [device.index] if device.type == "cuda" else None
        # Constructing DDP broadcasts rank 0's parameters and buffers: the replicas start equal.
        self.module = DistributedDataParallel(_TrainForward(sae), device_ids=device_ids)

    def forward(self, x_BM, dead_E, k_aux) -> TrainOutput:
        return self.module(x_BM, dead_E, k_aux)

    def broadcast_parameters(self) -> None:
        """Every replica takes rank 0's parameters (after a change each rank made on its own
        inputs, such as resampling)."""
        for param in self.module.parameters():
            dist.broadcast(param.data, src=0)

    @staticmethod
    def sync_fired(fired: torch.Tensor) -> torch.Tensor:
        counts = fired.to(torch.int32)
        dist.all_reduce(counts, op=dist.ReduceOp.MAX)
        return counts.bool()

    @staticmethod
    def mean(value: float, device: torch.device) -> float:
        total = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(total)
        return float(total) / dist.get_world_size()

    @staticmethod
    def sum_floats(values: list[float], device: torch.device) -> list[float]:
        total = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(total)
        return total.tolist()

    @staticmethod
    def gather(state: dict) -> list[dict]:
        """Every rank's ``state`` (small, JSON-able), on every rank."""
        states: list = [None] * dist.get_world_size()
        dist.all_gather_object(states, json.dumps(state))
        return [json.loads(s) for s in states]


def rank_state(position, scaling) -> dict:
    return {"position": asdict(position), "scaling": scaling.state()}
