"""Toy training speed on the legacy example configuration (hierarchical, E = A = 30, M = 50,
batch 100, rho = 0.4, lr 1e-4), with the default logging cadence; run by hand:

    uv run python benchmarks/toy_speed.py [--steps 10000] [--device cpu] [--quick] [--json PATH]

Prints steps/s of the real trainer, then where a step's time goes (each phase timed in
isolation over the same number of steps), and the cost of the legacy logging cadence (metrics
every 10 steps, TensorBoard scalars every step) for comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch
from _common import parse_args, write_json

from sae_hacking.toy.config import LEGACY_EXAMPLE, ToyConfig
from sae_hacking.toy.experiment import use_few_threads
from sae_hacking.toy.train import CHUNK_STEPS, ToyTrainer

SETTINGS = {**LEGACY_EXAMPLE, "plots": False}
QUICK = {"steps": 100, "seed_cadence_steps": 100}


def trainer_speed(config: ToyConfig) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        trainer = ToyTrainer(config, Path(tmp), quiet=True)
        trainer.writer  # noqa: B018 (TensorBoard's import is not a training cost)
        start = time.perf_counter()
        metrics = trainer.train()
        return config.max_step / (time.perf_counter() - start), metrics


def phase_breakdown(config: ToyConfig, steps: int) -> dict[str, float]:
    """Seconds per step of each phase of a training step, timed separately."""
    with tempfile.TemporaryDirectory() as tmp:
        tr = ToyTrainer(config, Path(tmp), quiet=True)
        sae, opt = tr.sae, tr.optimizer
        times = dict.fromkeys(("data", "forward", "backward", "adam", "bookkeeping", "eval"), 0.0)
        xs = None
        for step in range(steps):
            t0 = time.perf_counter()
            if step % CHUNK_STEPS == 0:
                xs = tr.chunk(step // CHUNK_STEPS)
            x = xs[step % CHUNK_STEPS]
            t1 = time.perf_counter()
            out = sae.train_forward(x, tr.engine.since_fired["parent"] >= config.dead_steps, 0)
            t2 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            t3 = time.perf_counter()
            opt.step()
            t4 = time.perf_counter()
            since = tr.engine.since_fired
            for bank, fired in out.fired.items():
                since[bank] = torch.where(fired, 0, since[bank] + 1)
            sae.after_step(out)
            t5 = time.perf_counter()
            if (step + 1) % config.eval_every == 0:
                tr.evaluate()
            t6 = time.perf_counter()
            for key, dt in zip(
                times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5), strict=True
            ):
                times[key] += dt
        return {k: v / steps for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--seed-cadence-steps",
        type=int,
        help="steps of the legacy-cadence run (max(1000, steps/10))",
    )
    args = parse_args(parser, QUICK)
    config = ToyConfig(max_step=args.steps, device=args.device, **SETTINGS)
    use_few_threads(config)
    ours, metrics = trainer_speed(config)
    legacy_cadence = dataclasses.replace(
        config,
        eval_every=10,
        log_every=1,
        max_step=args.seed_cadence_steps or max(1000, args.steps // 10),
    )
    legacy, _ = trainer_speed(legacy_cadence)
    phases = phase_breakdown(config, min(args.steps, 5000))
    total = sum(phases.values())
    print(f"device {args.device}, torch threads {torch.get_num_threads()}")
    print(
        f"trainer, default cadence (eval every {config.eval_every}, TensorBoard every "
        f"{config.log_every}): {ours:8.0f} steps/s"
    )
    print(
        f"trainer, the legacy cadence (eval every 10, TensorBoard every step): "
        f"{legacy:8.0f} steps/s  (ours / legacy cadence = {ours / legacy:.1f}x)"
    )
    print(
        f"final pair detection {metrics['pair_detection_rate']:.3f}, "
        f"fvu {metrics['fvu']:.4f}, dead parents {metrics['dead_parent_frac']:.3f}"
    )
    print("where a step's time goes (phases timed alone):")
    for key, seconds in phases.items():
        print(f"  {key:12s} {1e6 * seconds:8.1f} us  {100 * seconds / total:5.1f} %")
    write_json(
        args,
        {
            "steps_per_s": ours,
            "seed_cadence_steps_per_s": legacy,  # keys as earlier results files name them
            "ratio_ours_over_seed_cadence": ours / legacy,
            "final_metrics": {
                k: metrics[k] for k in ("pair_detection_rate", "fvu", "dead_parent_frac")
            },
            "phase_us_per_step": {k: 1e6 * v for k, v in phases.items()},
        },
        torch_threads=torch.get_num_threads(),
        toy_config=config.to_dict(),
        seed_cadence_steps=legacy_cadence.max_step,
    )


if __name__ == "__main__":
    main()
