"""Co-occurrence counting speed: the legacy method against ours, on one synthetic stream.

The stream: prompts of 100 tokens; every token has exactly L0 = 70 distinct active latents out of
e = 16,384, drawn with Zipf-like popularity (p_i ∝ (i + 1)^-s). Both methods count the same
stream, each in a child process (so each peak RSS is its own):

- legacy (``seed`` in the JSON, as in earlier results files): per prompt, a sparse binary
  A [100, e], ``torch.sparse.mm(Aᵀ, A)`` added into a dense float32 e × e matrix.
- ours: :class:`sae_hacking.absorption.cooccurrence.accumulator.PairCounter` (packed int32
  upper triangle, compiled pair loop), fed batches of ``--batch-prompts`` prompts; ``--kernel torch`` times the
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


def legacy_add(counts_ee: torch.Tensor, rows_N: torch.Tensor, latents_N: torch.Tensor, tokens: int):
    """The legacy update for one prompt: its sparse binary ``A [tokens, e]`` (a one at each
    token's active latents: ``A[rows_N[n], latents_N[n]]``), ``counts_ee += AᵀA`` by
    ``torch.sparse.mm``, on ``counts_ee``'s device."""
    ones = torch.ones(latents_N.shape[0], device=counts_ee.device)
    A = torch.sparse_coo_tensor(
        torch.stack([rows_N, latents_N]), ones, (tokens, counts_ee.shape[0])
    )
    counts_ee += torch.sparse.mm(A.t(), A)


class LegacyCounter:
    """The legacy method end to end on a model's device, one batch at a time: the forward to the
    SAE's hook, the encoding of the real tokens, then per prompt :func:`legacy_add` into a dense
    float32 ``e × e``. Keeps each batch's active lists (``recorded``, to count them again) and the
    seconds spent counting (``count_s``, the device synchronised around it)."""

    def __init__(self, e: int, device: torch.device):
        self.counts_ee = torch.zeros(e, e, dtype=torch.float32, device=device)
        self.recorded: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.count_s = 0.0

    def add(self, lm, sae, hook: str, batch, timing: bool = True) -> None:
        from sae_hacking.absorption.cooccurrence.kernels import active_lists

        x_BSM = lm.read(batch.input_ids_BS, batch.attention_mask_BS, [hook])[hook]
        with torch.inference_mode():
            latents_N, offsets_T1 = active_lists(sae.encode(x_BSM[batch.real_token_mask_BS]) > 0)
        self.recorded.append((latents_N, offsets_T1))
        offsets, active_T = offsets_T1.tolist(), offsets_T1.diff()
        device = self.counts_ee.device
        sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
        sync()
        start, t0 = time.perf_counter(), 0
        for length in batch.real_token_mask_BS.sum(1).tolist():  # one prompt at a time
            t1 = t0 + length
            rows_N = torch.arange(length, device=device).repeat_interleave(active_T[t0:t1])
            legacy_add(self.counts_ee, rows_N, latents_N[offsets[t0] : offsets[t1]], length)
            t0 = t1
        sync()
        self.count_s += (time.perf_counter() - start) * timing


def dense_equals_packed(counts_ee: torch.Tensor, packed_P: torch.Tensor, block: int = 1024):
    """Whether the legacy dense ``e × e`` float32 counts hold exactly our packed upper triangle
    (row ``i`` holds pairs ``(i, i..e-1)``), ``block`` rows at a time on ``counts_ee``'s device, so
    no second ``e × e`` matrix or index list is ever made. float32 holds counts exactly up to
    2^24, as far as the legacy accumulator itself is exact."""
    e = counts_ee.shape[0]
    if packed_P.numel() != e * (e + 1) // 2:
        return False
    cols = torch.arange(e, device=counts_ee.device)

    def start(i: int) -> int:  # where row i's first pair (i, i) lies
        return i * e - i * (i - 1) // 2

    for i0 in range(0, e, block):
        i1 = min(i0 + block, e)
        upper = counts_ee[i0:i1][cols[None, :] >= cols[i0:i1, None]]  # row-major, as packed
        ours = packed_P[start(i0) : start(i1)].to(counts_ee.device, torch.float32)
        if not torch.equal(upper, ours):
            return False
    return True


def run_legacy(stream: torch.Tensor, e: int) -> np.ndarray:
    counts_ee = torch.zeros((e, e), dtype=torch.float32)
    tokens, l0 = stream.shape[1], stream.shape[2]
    rows = torch.arange(tokens).repeat_interleave(l0)
    start = time.perf_counter()
    for prompt in stream:
        legacy_add(counts_ee, rows, prompt.reshape(-1), tokens)
    elapsed = time.perf_counter() - start
    i, j = torch.triu_indices(e, e)
    return counts_ee[i, j].to(torch.int32).numpy(), elapsed


def run_ours(stream: torch.Tensor, e: int, batch_prompts: int, kernel: str):
    from sae_hacking.absorption.cooccurrence.accumulator import PairCounter

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
    if args.method == "legacy":
        packed, elapsed = run_legacy(stream, args.e)
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
    parser.add_argument("--method", choices=("legacy", "ours"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parse_args(parser, QUICK)
    if args.method:
        child(args)
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("legacy", "ours"):
            out = str(Path(tmp) / f"{method}.npy")
            argv = [a for a in sys.argv[1:]] + ["--method", method, "--out", out]
            done = subprocess.run(
                [sys.executable, __file__, *argv], capture_output=True, text=True, check=True
            )
            results[method] = json.loads(done.stdout.strip().splitlines()[-1])
        legacy_counts = np.load(Path(tmp) / "legacy.npy", mmap_mode="r")
        our_counts = np.load(Path(tmp) / "ours.npy", mmap_mode="r")
        equal = bool(np.array_equal(legacy_counts, our_counts))
    e = args.e
    print(
        f"stream: {args.prompts} prompts x {args.tokens} tokens, e = {e}, L0 = {args.l0}, "
        f"Zipf s = {args.zipf}; ours: {args.kernel} kernel, {args.batch_prompts} prompts per call"
    )
    for method in ("legacy", "ours"):
        r = results[method]
        print(
            f"{method:>6}: {r['tokens_per_s']:>10,.0f} tokens/s ({r['seconds']:.2f} s), "
            f"peak RSS {r['peak_rss_gb']:.2f} GB"
        )
    ratio = results["ours"]["tokens_per_s"] / results["legacy"]["tokens_per_s"]
    print(f"speed-up: {ratio:.1f}x; counts exactly equal: {equal}")
    for width in (e, 65_536):
        dense = width * width * 4
        packed = width * (width + 1) // 2 * 4
        print(
            f"accumulator at e = {width:,}: legacy dense float32 {dense / 1e9:.3f} GB, ours packed "
            f"int32 {packed / 1e9:.3f} GB ({packed / dense:.6f} of the legacy one)"
        )
    write_json(
        args,
        {
            "seed": results["legacy"],  # keys as earlier results files name them
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
