"""Run by tests/training/test_engine_ddp.py under torchrun (2 gloo processes): each rank trains the
same SAE on its own batches with resampling every 3 steps (inputs drawn from the rank's own data),
then rank 0 writes whether the replicas' parameters are equal. ``--no-broadcast`` disables the
broadcast after resampling, to show that the test can tell."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

from sae_hacking.runs.distributed import process_group
from sae_hacking.runs.ranks import ranks_from_env
from sae_hacking.saes.topk import TopKSAE
from sae_hacking.train.parallel import DataParallel
from sae_hacking.training.engine import Cadence, DeadRemedies, Engine
from sae_hacking.training.schedule import WarmupDecay


def main(out: str, broadcast: bool) -> None:
    ranks = ranks_from_env()
    with process_group(ranks, "cpu"):
        sae = TopKSAE(8, d_sae=32, k=1, gen=torch.Generator().manual_seed(0))
        parallel = DataParallel(sae, ranks, torch.device("cpu"))
        if not broadcast:
            parallel.broadcast_parameters = lambda: None
        engine = Engine(
            sae,
            out,
            lr=1e-2,
            schedule=WarmupDecay(1e-2, 12),
            remedies=DeadRemedies(dead_steps=2, resample_every=3, seed=5),
            cadence=Cadence(12, eval_every=100, log_every=100, checkpoint_every=100),
            tokens_per_step=32,
            parallel=parallel,
            rank=ranks.rank,
            quiet=True,
        )
        own = torch.Generator().manual_seed(100 + ranks.rank)  # each rank its own data

        def batches():
            while True:
                yield torch.randn(16, 8, generator=own)

        def inputs(n, gen):
            return torch.randn(64, 8, generator=torch.Generator().manual_seed(ranks.rank))

        moved = []
        real = engine.resample_dead
        engine.resample_dead = lambda f: moved.append(real(f)) or moved[-1]
        engine.save_checkpoint = lambda state: None
        engine.train(batches(), dict, dict, inputs)
        flat = torch.cat([p.detach().flatten() for p in sae.parameters()])
        gathered = [torch.zeros_like(flat) for _ in range(ranks.world)]
        dist.all_gather(gathered, flat)
        if ranks.rank == 0:
            equal = all(torch.equal(gathered[0], g) for g in gathered)
            with open(f"{out}/result.json", "w") as handle:
                json.dump({"equal": equal, "moved": sum(moved)}, handle)


if __name__ == "__main__":
    main(sys.argv[1], "--no-broadcast" not in sys.argv)
