"""What keeps the toy hierarchical SAE's latents alive: initialisation vs remedies.

    uv run python benchmarks/toy_dead_latents.py [--steps 5000] [--seeds 1 2 3] [--quick] [--json PATH]

Trains the hierarchical SAE on the legacy example configuration (E = A = 30, M = 50, batch
100, rho = 0.4, lr 1e-4) with the legacy ``nn.Linear`` initialisation and with ours (unit
decoder rows, encoder = decoder transpose), each with and without dead-latent resampling and the
auxiliary-k loss, and prints pair detection and dead fractions per seed.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from _common import parse_args, write_json

from sae_hacking.toy.config import LEGACY_EXAMPLE, ToyConfig
from sae_hacking.toy.train import ToyTrainer

SETTINGS = {**LEGACY_EXAMPLE, "plots": False, "device": "cpu"}
QUICK = {"steps": 60, "seeds": [1], "resample_every": 30}


def remedies(resample_every: int) -> dict[str, dict]:
    return {
        "no remedy": {"resample_every": 0, "auxk_coeff": 0.0},
        "resampling": {"resample_every": resample_every, "auxk_coeff": 0.0},
        "auxk": {"resample_every": 0, "auxk_coeff": 1 / 32},
        "resampling + auxk": {"resample_every": resample_every, "auxk_coeff": 1 / 32},
    }


def column(rows: list[dict], key: str) -> str:
    return " ".join(f"{r[key]:.2f}" for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--resample-every", type=int, default=1000, help="when resampling")
    args = parse_args(parser, QUICK)
    torch.set_num_threads(1)
    print(
        f"{'init':7s} {'remedy':18s} {'pair detection':>22s} {'dead parents':>20s} "
        f"{'dead children':>20s}"
    )
    results = []
    for init in ("linear", "tied"):
        for name, remedy in remedies(args.resample_every).items():
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
            results.append({"init": init, "remedy": name, **remedy, "per_seed": rows})
    write_json(args, {"runs": results}, settings=SETTINGS)


if __name__ == "__main__":
    main()
