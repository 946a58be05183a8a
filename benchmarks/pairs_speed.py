"""Pair finding (stage 3): our blocked all-pairs vs the legacy per-row loop, same input, one run.

Input: D ablated latents with random sign-structured mean effects over E reader latents (half
the entries zero, so sign vectors tie often), a co-occurrence lookup where a small fraction of
pairs never co-occur, random activation counts. Both methods run the same filters (effect
cosine ≥ threshold, co-occurrence count ≤ 0) and keep the same best ``max_pairs``.

- ours: :func:`sae_hacking.absorption.pairs.search.find_pairs` (``block × block`` matrix products);
- the legacy method: one matrix-vector product per latent against every other latent, then that
  row's filters (:func:`tests.oracles.find_pairs_reference` is the per-pair oracle of the
  tests; here the per-row loop is vectorised within a row, which favours the legacy method).

The per-row loop reads the whole effects matrix once per latent, so the comparison runs over the
first ``--rows`` latents as the first member of each pair (both methods, identical work and
identical pair sets checked), and ours also runs over all D. The projection to D = E = 65,536
scales the measured times by the FLOPs (ours) and by the bytes read (the loop).

    uv run python benchmarks/pairs_speed.py            # D = 8192, E = 16384
    uv run python benchmarks/pairs_speed.py --quick    # a smoke test
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import parse_args, write_json

from sae_hacking.absorption.pairs.search import PairFilter, comparable_rows, find_pairs
from sae_hacking.device import resolve_device

QUICK = {"d": 256, "e": 512, "rows": 64, "block": 64}


def make_input(d: int, e: int, seed: int, zero_fraction: float):
    gen = torch.Generator().manual_seed(seed)
    effects_DE = torch.randn(d, e, generator=gen)
    effects_DE[torch.rand(d, e, generator=gen) < 0.5] = 0.0
    latents_D = torch.arange(d)
    # Co-occurrence counts as a function of the pair (no D x D table): zero for a fraction.
    salt = int(torch.randint(1, 2**30, (1,), generator=gen))

    def count_pairs(a, b):
        h = (a.long() * 1_000_003 + b.long() * 999_983 + salt) % 10_007
        return torch.where(h < int(zero_fraction * 10_007), 0, 1 + h % 7)

    activations_D = torch.randint(1, 10_000, (d,), generator=gen)
    return latents_D, effects_DE, activations_D, count_pairs


def per_row_loop(latents_D, rows_DE, norms_D, activations_D, tokens, count_pairs, rules, n_rows):
    """The legacy method: for each latent, one matrix-vector product against all latents."""
    firsts, seconds, cosines = [], [], []
    d = rows_DE.shape[0]
    for i in range(n_rows):
        cosine_D = (rows_DE @ rows_DE[i]) / (norms_D[i] * norms_D)
        j = torch.arange(i + 1, d, device=rows_DE.device)
        c = cosine_D[i + 1 :]
        keep = c >= rules.threshold
        j, c = j[keep].cpu(), c[keep].cpu()
        ok = count_pairs(latents_D[torch.full_like(j, i)], latents_D[j]) <= rules.max_cooccurrence
        firsts.append(torch.full((int(ok.sum()),), i))
        seconds.append(j[ok])
        cosines.append(c[ok])
    first, second, cosine = torch.cat(firsts), torch.cat(seconds), torch.cat(cosines)
    order = torch.argsort(second, stable=True)
    order = order[torch.argsort(first[order], stable=True)]
    order = order[torch.argsort(-cosine[order], stable=True)][: rules.max_pairs]
    return first.numel(), latents_D[first[order]], latents_D[second[order]], cosine[order]


def rss_gb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last :func:`reset_peak`) in GB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as refs:  # "5" resets the peak RSS (Linux)
        refs.write("5")


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d", type=int, default=8192, help="ablated latents compared")
    parser.add_argument("--e", type=int, default=16384, help="reader latents")
    parser.add_argument("--rows", type=int, default=512, help="first latents in the comparison")
    parser.add_argument("--block", type=int, default=4096, help="our block size")
    parser.add_argument("--threshold", type=float, default=0.0)
    parser.add_argument("--zero-fraction", type=float, default=0.01)
    parser.add_argument("--max-pairs", type=int, default=100_000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parse_args(parser, QUICK)
    device = resolve_device(args.device)
    latents_D, effects_DE, activations_D, count_pairs = make_input(
        args.d, args.e, args.seed, args.zero_fraction
    )
    rows_DE, norms_D = comparable_rows(effects_DE, sign=True)
    del effects_DE
    rows_DE, norms_D = rows_DE.to(device), norms_D.to(device)
    rules = PairFilter(
        threshold=args.threshold,
        max_cooccurrence=0,
        min_expected=0.0,
        max_pairs=args.max_pairs,
        block_size=args.block,
    )
    tokens = 10**7
    firsts_D = torch.arange(args.d) < args.rows

    before_gb = rss_gb("VmRSS")
    reset_peak()
    found, ours_rows_s = timed(
        lambda: find_pairs(
            latents_D, rows_DE, norms_D, activations_D, tokens, count_pairs, rules, firsts_D
        ),
        device,
    )
    (n_loop, first, second, cosine), loop_rows_s = timed(
        lambda: per_row_loop(
            latents_D, rows_DE, norms_D, activations_D, tokens, count_pairs, rules, args.rows
        ),
        device,
    )
    identical = (
        n_loop == found.n_passing
        and torch.equal(first, found.first_K)
        and torch.equal(second, found.second_K)
        and torch.equal(cosine, found.cosine_K)
    )
    before_full_gb = rss_gb("VmRSS")
    reset_peak()
    full, ours_full_s = timed(
        lambda: find_pairs(latents_D, rows_DE, norms_D, activations_D, tokens, count_pairs, rules),
        device,
    )
    added_gb = rss_gb("VmHWM") - before_full_gb  # what the all-pairs search held on top
    del before_gb
    effects_gb = args.d * args.e * 4 / 2**30
    loop_full_s = loop_rows_s * args.d / args.rows  # every row reads the whole matrix again
    speedup_rows = loop_rows_s / ours_rows_s
    big = 65536
    ours_big_s = ours_full_s * (big / args.d) ** 2 * (big / args.e)
    loop_big_s = loop_full_s * (big / args.d) ** 2 * (big / args.e)
    print(
        f"D = {args.d} compared latents, E = {args.e} readers, sign mode, threshold "
        f"{args.threshold}, {args.zero_fraction:.0%} of pairs never co-occur; device {device}"
    )
    print(f"first {args.rows} latents as first member (identical work for both):")
    print(f"  legacy per-row loop: {loop_rows_s:8.2f} s")
    print(f"  ours (blocked):      {ours_rows_s:8.2f} s   -> {speedup_rows:.1f}x faster")
    print(f"  identical pair set, order and cosines: {identical} ({n_loop} passing pairs)")
    print(
        f"all pairs, ours: {ours_full_s:.2f} s, {full.n_passing} passing, "
        f"{len(full.first_K)} kept; the per-row loop would take ~{loop_full_s:.0f} s "
        f"({loop_full_s / ours_full_s:.0f}x)"
    )
    print(
        f"memory: the effects rows ({effects_gb:.2f} GB) plus {added_gb:.2f} GB at the peak of "
        f"the all-pairs search (blocks, candidates, kept pairs)"
    )
    print(
        f"projected at D = E = {big}: ours ~{ours_big_s / 60:.0f} min on this device, the loop "
        f"~{loop_big_s / 3600:.0f} h; effects matrix {big * big * 4 / 2**30:.0f} GB"
    )
    write_json(
        args,
        {
            "loop_rows_s": loop_rows_s,
            "ours_rows_s": ours_rows_s,
            "speedup": speedup_rows,
            "identical": identical,
            "ours_full_s": ours_full_s,
            "loop_full_projected_s": loop_full_s,
            "n_passing": full.n_passing,
            "added_peak_gb": added_gb,
            "effects_gb": effects_gb,
            "projected_65536_ours_s": ours_big_s,
            "projected_65536_loop_s": loop_big_s,
        },
        device=str(device),
    )
    if not identical:
        raise SystemExit("the two methods disagree")


if __name__ == "__main__":
    main()
