"""What keeps the toy hierarchical SAE's latents alive: initialisation vs remedies.

    uv run python benchmarks/toy_dead_latents.py [--steps 5000] [--seeds 1 2 3]

Trains the hierarchical SAE on the seed's example configuration (E = A = 30, M = 50, batch
100, rho = 0.4, lr 1e-4) with the seed's ``nn.Linear`` initialisation and with ours (unit
decoder rows, encoder = decoder transpose), each with and without dead-latent resampling and the
auxiliary-k loss, and prints pair detection and dead fractions per seed.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from sae_hacking.toy.config import SEED_EXAMPLE, ToyConfig
from sae_hacking.toy.train import ToyTrainer

SETTINGS = {**SEED_EXAMPLE, "plots": False, "device": "cpu"}
REMEDIES = {
    "no remedy": {"resample_every": 0, "auxk_coeff": 0.0},
    "resampling": {"resample_every": 1000, "auxk_coeff": 0.0},
    "auxk": {"resample_every": 0, "auxk_coeff": 1 / 32},
    "resampling + auxk": {"resample_every": 1000, "auxk_coeff": 1 / 32},
}


def column(rows: list[dict], key: str) -> str:
    return " ".join(f"{r[key]:.2f}" for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"{'init':7s} {'remedy':18s} {'pair detection':>22s} {'dead parents':>20s} "
        f"{'dead children':>20s}"
    )
    for init in ("linear", "tied"):
        for name, remedy in REMEDIES.items():
            rows = []
            for seed in args.seeds:
                config = ToyConfig(init=init, seed=seed, max_step=args.steps, **SETTINGS, **remedy)
                with tempfile.TemporaryDirectory() as tmp:
                    rows.append(ToyTrainer(config, Path(tmp), quiet=True).train())

            print(
                f"{init:7s} {name:18s} {column(rows, 'pair_detection_rate'):>22s} "
                f"{column(rows, 'dead_parent_frac'):>20s} {column(rows, 'dead_child_frac'):>20s}",
                flush=True,
            )


if __name__ == "__main__":
    main()
