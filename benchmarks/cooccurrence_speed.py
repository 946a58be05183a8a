"""Co-occurrence counting speed: the seed's method against ours, on one synthetic stream.

The stream: prompts of 100 tokens; every token has exactly L0 = 70 distinct active latents out of
e = 16,384, drawn with Zipf-like popularity (p_i ∝ (i + 1)^-s). Both methods count the same
stream, each in a child process (so each peak RSS is its own):

- seed: per prompt, a sparse binary A [100, e], ``torch.sparse.mm(Aᵀ, A)`` added into a dense
  float32 e × e matrix.
- ours: :class:`sae_hacking.absorption.cooccurrence.PairCounter` (packed int32 upper triangle,
  compiled pair loop), fed batches of ``--batch-prompts`` prompts; ``--kernel torch`` times the
  index_add_ kernel instead (the one used on CUDA).

The parent checks the two results are exactly equal and prints tokens/s, the ratio, peak RSS and
the accumulators' memory, measured and projected to e = 65,536.

    uv run python benchmarks/cooccurrence_speed.py            # defaults: 300 prompts
    uv run python benchmarks/cooccurrence_speed.py --quick --json out.json   # smoke test
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import parse_args, write_json

# Children get the parent's command line, --quick included, so both sides count the same stream.
QUICK = {"prompts": 6, "e": 2048, "l0": 16, "tokens": 20}


def make_stream(n_prompts: int, e: int, l0: int, tokens: int, zipf: float, seed: int):
    """``[n_prompts, tokens, l0]`` int64: each token's active latents, ascending."""
    gen = torch.Generator().manual_seed(seed)
    p_e = (torch.arange(1, e + 1, dtype=torch.float64) ** -zipf).float()
    prompts = [
        torch.multinomial(p_e.expand(tokens, e), l0, replacement=False, generator=gen)
        .sort(dim=1)
        .values
        for _ in range(n_prompts)
    ]
    return torch.stack(prompts)


def run_seed(stream: torch.Tensor, e: int) -> np.ndarray:
    counts_ee = torch.zeros((e, e), dtype=torch.float32)
    tokens, l0 = stream.shape[1], stream.shape[2]
    rows = torch.arange(tokens).repeat_interleave(l0)
    start = time.perf_counter()
    for prompt in stream:
        A = torch.sparse_coo_tensor(
            torch.stack([rows, prompt.reshape(-1)]), torch.ones(tokens * l0), (tokens, e)
        )
        counts_ee += torch.sparse.mm(A.t(), A)
    elapsed = time.perf_counter() - start
    i, j = torch.triu_indices(e, e)
    return counts_ee[i, j].to(torch.int32).numpy(), elapsed


def run_ours(stream: torch.Tensor, e: int, batch_prompts: int, kernel: str):
    from sae_hacking.absorption.cooccurrence import PairCounter

    counter = PairCounter(e, kernel=kernel)
    tokens, l0 = stream.shape[1], stream.shape[2]
    warm = stream[0, :2].reshape(-1)  # compile the kernel outside the timing
    PairCounter(e, kernel=kernel).add(warm, torch.arange(0, 2 * l0 + 1, l0))
    start = time.perf_counter()
    for b in range(0, stream.shape[0], batch_prompts):
        chunk = stream[b : b + batch_prompts]
        n_tokens = chunk.shape[0] * tokens
        counter.add(chunk.reshape(-1), torch.arange(0, n_tokens * l0 + 1, l0))
    elapsed = time.perf_counter() - start
    return counter.counts.numpy(), elapsed


def child(args) -> None:
    torch.set_num_threads(args.threads)
    stream = make_stream(args.prompts, args.e, args.l0, args.tokens, args.zipf, args.seed)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if args.method == "seed":
        packed, elapsed = run_seed(stream, args.e)
    else:
        packed, elapsed = run_ours(stream, args.e, args.batch_prompts, args.kernel)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    np.save(args.out, packed)
    n_tokens = args.prompts * args.tokens
    print(
        json.dumps(
            {
                "tokens_per_s": n_tokens / elapsed,
                "seconds": elapsed,
                "peak_rss_gb": peak * 1024 / 1e9,
                "rss_before_gb": before * 1024 / 1e9,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--e", type=int, default=16_384)
    parser.add_argument("--l0", type=int, default=70)
    parser.add_argument("--tokens", type=int, default=100, help="tokens per prompt")
    parser.add_argument("--zipf", type=float, default=0.8, help="popularity exponent s")
    parser.add_argument("--batch-prompts", type=int, default=5, help="prompts per call (ours)")
    parser.add_argument("--kernel", choices=("numba", "torch"), default="numba")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", choices=("seed", "ours"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parse_args(parser, QUICK)
    if args.method:
        child(args)
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("seed", "ours"):
            out = str(Path(tmp) / f"{method}.npy")
            argv = [a for a in sys.argv[1:]] + ["--method", method, "--out", out]
            done = subprocess.run(
                [sys.executable, __file__, *argv], capture_output=True, text=True, check=True
            )
            results[method] = json.loads(done.stdout.strip().splitlines()[-1])
        seed_counts = np.load(Path(tmp) / "seed.npy", mmap_mode="r")
        our_counts = np.load(Path(tmp) / "ours.npy", mmap_mode="r")
        equal = bool(np.array_equal(seed_counts, our_counts))
    e = args.e
    print(
        f"stream: {args.prompts} prompts x {args.tokens} tokens, e = {e}, L0 = {args.l0}, "
        f"Zipf s = {args.zipf}; ours: {args.kernel} kernel, {args.batch_prompts} prompts per call"
    )
    for method in ("seed", "ours"):
        r = results[method]
        print(
            f"{method:>5}: {r['tokens_per_s']:>10,.0f} tokens/s ({r['seconds']:.2f} s), "
            f"peak RSS {r['peak_rss_gb']:.2f} GB"
        )
    ratio = results["ours"]["tokens_per_s"] / results["seed"]["tokens_per_s"]
    print(f"speed-up: {ratio:.1f}x; counts exactly equal: {equal}")
    for width in (e, 65_536):
        dense = width * width * 4
        packed = width * (width + 1) // 2 * 4
        print(
            f"accumulator at e = {width:,}: seed dense float32 {dense / 1e9:.3f} GB, ours packed "
            f"int32 {packed / 1e9:.3f} GB ({packed / dense:.6f} of the seed's)"
        )
    write_json(
        args,
        {
            "seed": results["seed"],
            "ours": results["ours"],
            "speedup": ratio,
            "counts_equal": equal,
            "accumulator_gb": {
                str(width): {
                    "seed_dense_float32": width * width * 4 / 1e9,
                    "ours_packed_int32": width * (width + 1) // 2 * 4 / 1e9,
                }
                for width in (e, 65_536)
            },
        },
        exclude=("method", "out"),
    )
    if not equal:
        sys.exit("the counts differ")


if __name__ == "__main__":
    main()
