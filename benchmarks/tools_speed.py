"""The analysis tools against the original scripts' methods, same input, one run.

1. ``four-tuples``: ours (:func:`~sae_hacking.absorption.tools.tuple_search.strongest_tuples`:
   the exact total from two sign-matrix products per block, then the ``--max-results``
   strongest by bisecting the strength, each step one more count) against ``find_4tuples.py``'s
   method: a Python set of positive and of negative readers per ablator, a loop over every
   (A, C) pair listing every tuple, then (to give the same answer) the strength of each and a
   sort. Both answers are checked equal.
2. ``effect-network``'s edge selection: ours streams the results file
   (:func:`~sae_hacking.absorption.tools.network.select_edges` over
   :func:`~sae_hacking.absorption.tools.effects.mean_blocks`) against ``graph_network.py``'s
   method: every row in memory, one concatenated D x E vector plus its int64 flat indices,
   masks, ``topk`` per sign. Same edges checked; the memory each holds is computed from the
   shapes (the legacy method's D x E x 12 bytes against our one read block).

Input: D ablated latents x E reader latents of random mean effects, a fraction ``--density`` of
each sign non-zero (as effects are: most readers do not move).

    uv run python benchmarks/tools_speed.py            # D = 1500, E = 8192
    uv run python benchmarks/tools_speed.py --quick    # a smoke test
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import parse_args, write_json

from sae_hacking.absorption.tools.effects import ROWS_PER_READ, mean_blocks, open_ablations
from sae_hacking.absorption.tools.network import select_edges
from sae_hacking.absorption.tools.threshold import float32_floor
from sae_hacking.absorption.tools.tuple_search import strongest_tuples
from tests.absorption.tools.conftest import write_ablations

QUICK = {"d": 120, "e": 512, "density": 0.05, "max_results": 50, "n_edges": 100}


def make_means(d: int, e: int, density: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    mean_DE = torch.randn(d, e, generator=gen).abs()
    u = torch.rand(d, e, generator=gen)
    sign = torch.where(u < density, 1.0, torch.where(u < 2 * density, -1.0, 0.0))
    return mean_DE * sign


def seed_tuples(mean_DE: torch.Tensor, t: float, k: int):
    """find_4tuples.py's method (sets and nested loops), then the k strongest of its list."""
    tf = float32_floor(t)
    pos = [set(torch.where(row > tf)[0].tolist()) for row in mean_DE]
    neg = [set(torch.where(row < -tf)[0].tolist()) for row in mean_DE]
    found = []
    for a in range(len(pos)):
        for c in range(len(pos)):
            if a == c:
                continue
            for b in pos[a] & pos[c]:
                for dd in pos[a] & neg[c]:
                    found.append((a, b, c, dd))
    m = mean_DE.numpy()
    if not found:
        return 0, np.zeros((0, 4), np.int64)
    abcd = np.array(found, dtype=np.int64)
    a, b, c, dd = abcd.T
    strength = np.minimum(np.minimum(m[a, b], m[a, dd]), np.minimum(m[c, b], -m[c, dd]))
    order = np.lexsort((abcd[:, 3], abcd[:, 2], abcd[:, 1], abcd[:, 0], -strength))[:k]
    return len(found), abcd[order]


def seed_edges(mean_DE: torch.Tensor, latents_D: torch.Tensor, n_edges: int):
    """graph_network.py's method: one D x E vector and its flat indices, masks, topk."""
    d, e = mean_DE.shape
    values = mean_DE.reshape(-1).clone()
    flat = ((latents_D * e)[:, None] + torch.arange(e)).reshape(-1)
    n_pos = n_edges // 2
    pos, neg = values > 0, values < 0
    top_pos = torch.topk(values[pos], min(n_pos, int(pos.sum()))).indices
    top_neg = torch.topk(values[neg].abs(), min(n_edges - n_pos, int(neg.sum()))).indices
    chosen = torch.cat([flat[pos][top_pos], flat[neg][top_neg]])
    return {(int(i) // e, int(i) % e) for i in chosen}


def timed(func):
    start = time.perf_counter()
    out = func()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=1500, help="ablated latents")
    parser.add_argument("--e", type=int, default=8192, help="reader latents")
    parser.add_argument("--density", type=float, default=0.01, help="non-zero share per sign")
    parser.add_argument("--treat-as-zero", type=float, default=0.0)
    parser.add_argument("--max-results", type=int, default=1000)
    parser.add_argument("--n-edges", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parse_args(parser, QUICK)
    torch.manual_seed(args.seed)
    mean_DE = make_means(args.d, args.e, args.density, args.seed)
    figures = {"threads": torch.get_num_threads()}

    ours, t_ours = timed(lambda: strongest_tuples(mean_DE, args.treat_as_zero, args.max_results))
    (total, legacy), t_seed = timed(
        lambda: seed_tuples(mean_DE, args.treat_as_zero, args.max_results)
    )
    same = ours.total == total and np.array_equal(ours.abcd_K4, legacy)
    figures["four_tuples"] = {
        "total": total, "counts": ours.counts, "ours_s": t_ours, "seed_method_s": t_seed,
        "speedup": t_seed / t_ours, "equal": bool(same),
    }  # fmt: skip
    print(
        f"four-tuples: D={args.d} E={args.e}, {total:,} tuples, top {args.max_results}: ours "
        f"{t_ours:.2f} s ({ours.counts} counts), find_4tuples.py's method {t_seed:.2f} s -> "
        f"{t_seed / t_ours:.1f}x; equal: {same}"
    )

    latents_D = torch.arange(args.d)
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_ablations(Path(tmp) / "a", latents_D, torch.ones(args.d), mean_DE)
        effects = open_ablations(folder)
        try:
            edges, t_stream = timed(
                lambda: select_edges(mean_blocks(effects), args.e, args.n_edges)
            )
        finally:
            effects.close()
    chosen, t_dense = timed(lambda: seed_edges(mean_DE, latents_D, args.n_edges))
    ours_set = {(int(a), int(r)) for a, r in zip(edges.ablators_K, edges.readers_K, strict=True)}
    held = {"ours": min(ROWS_PER_READ, args.d * args.e) * 4, "seed_method": args.d * args.e * 12}
    figures["network"] = {
        "ours_s": t_stream, "seed_method_in_memory_s": t_dense, "bytes_held": held,
        "equal_sets": ours_set == chosen,
    }  # fmt: skip
    print(
        f"effect-network: {args.n_edges} edges of {args.d * args.e:,} effects: ours (streamed "
        f"from the file, decompression included) {t_stream:.2f} s holding "
        f"{held['ours'] / 2**20:.0f} MiB; graph_network.py's method (already in memory) "
        f"{t_dense:.2f} s holding {held['seed_method'] / 2**20:.0f} MiB; same edges: "
        f"{ours_set == chosen}"
    )
    write_json(args, figures)


if __name__ == "__main__":
    main()
