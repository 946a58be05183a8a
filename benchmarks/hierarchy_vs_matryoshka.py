"""Flat TopK, Matryoshka, the legacy hierarchical SAE and the tiered SAE on one of SAELens's
synthetic hierarchies, scored by SAELens's own evaluation (``toy-compare --data saelens``).

    uv run python benchmarks/hierarchy_vs_matryoshka.py [--shape default] [--seeds 1 2 3 4 5]
        [--steps 3000] [--jobs 2] [--quick] [--json PATH]

Every SAE has 120 latents (the hierarchical and tiered SAEs 40 parents with 2 children each) at
L0 ≈ 7–8 (flat TopK k = 8; the others 4 parents + 4 children per input, Matryoshka k = 8 on
average), trained on the same samples. Prints mean ± std over seeds of MCC, uniqueness, F1,
absorption (ours: README), explained variance, L0 and dead latents, and whether the tiered SAE
meets issue 20's goal on this shape: MCC and F1 above both flat TopK and Matryoshka, absorption
no higher than Matryoshka's (+0.01) and explained variance no lower than flat TopK's (−0.01).
About 2–4 minutes per shape with 5 seeds on 2 cores.
"""

from __future__ import annotations

import argparse
import tempfile

from _common import parse_args, write_json

from sae_hacking.config import from_flat
from sae_hacking.toy.compare import ARCH_ORDER, LABELS, run_comparison
from sae_hacking.toy.config import ToyCompareConfig

SHAPES = {
    "default": {},
    "branching-3": {"synthetic_branching_factor": 3},
    "branching-4": {"synthetic_branching_factor": 4},
    "depth-2": {"synthetic_depth": 2, "synthetic_n_roots": 20},
    "not-exclusive": {"synthetic_mutually_exclusive": False},
    "aligned": {"synthetic_child_parent_cosine": 0.5},
}
COLUMNS = {
    "saelens_mcc": "MCC",
    "saelens_uniqueness": "uniqueness",
    "saelens_f1_score": "F1",
    "absorption_rate": "absorption",
    "explained_variance": "EV",
    "l0": "L0",
    "dead_eval_frac": "dead",
}
QUICK = {"seeds": [1], "steps": 40, "jobs": 1}


def goal(summary: dict) -> dict[str, bool]:
    """Issue 20's goal for the tiered SAE on one shape (means over seeds)."""

    def mean(arch: str, col: str) -> float:
        return summary[arch][col][0]

    others = ("topk", "matryoshka")
    return {
        "MCC above both": all(
            mean("tiered", "saelens_mcc") > mean(a, "saelens_mcc") for a in others
        ),
        "F1 above both": all(
            mean("tiered", "saelens_f1_score") > mean(a, "saelens_f1_score") for a in others
        ),
        "absorption ≤ Matryoshka's": mean("tiered", "absorption_rate")
        <= mean("matryoshka", "absorption_rate") + 0.01,
        "EV ≥ flat TopK's": mean("tiered", "explained_variance")
        >= mean("topk", "explained_variance") - 0.01,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=SHAPES, default="default")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--jobs", type=int, default=2)
    args = parse_args(parser, QUICK)
    with tempfile.TemporaryDirectory() as tmp:
        flat = {
            "data": "saelens",
            "sae_hidden_dim": 40,
            "sae_k": 4,
            "flat_k": 8,
            "max_step": args.steps,
            "eval_every": min(500, args.steps),
            "val_size": 2000 if args.quick else 10_000,
            "seeds": args.seeds,
            "jobs": args.jobs,
            "device": "cpu",
            "quiet": True,
            "output_dir": f"{tmp}/cmp",
            **SHAPES[args.shape],
        }
        result = run_comparison(from_flat(ToyCompareConfig, flat))
    summary = result["summary"]
    print(f"\nshape {args.shape}, seeds {' '.join(map(str, args.seeds))}, {args.steps} steps")
    print(f"{'SAE':18s}" + "".join(f"{label:>16s}" for label in COLUMNS.values()))
    for arch in ARCH_ORDER:
        cells = [summary[arch].get(col) for col in COLUMNS]
        print(
            f"{LABELS[arch]:18s}"
            + "".join(f"{'—' if c is None else f'{c[0]:.3f} ± {c[1]:.3f}':>16s}" for c in cells)
        )
    verdict = goal(summary)
    for name, met in verdict.items():
        print(f"  tiered: {name}: {'yes' if met else 'NO'}")
    write_json(
        args,
        {"summary": summary, "goal": verdict},
        shape=args.shape,
        seeds=args.seeds,
        steps=args.steps,
    )


if __name__ == "__main__":
    main()
