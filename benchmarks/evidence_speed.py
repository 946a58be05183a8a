"""What collecting latent evidence adds to the co-occurrence pass: counting alone against counting
plus evidence (top examples, the seeded sample, the histogram, contexts), on one synthetic
stream, and the evidence checked against a plain numpy reference.

The stream is ``cooccurrence_speed.py``'s (prompts of 100 tokens, exactly L0 = 70 active latents
of e = 16,384 per token, Zipf-like popularity), fed ``--repeats`` times, each time as new prompts
(other dataset rows) with new activation values (exponential). Per batch of ``--batch-prompts``
prompts, both sides start from the encoder's dense ``acts_Te`` (as the pass has it): counting =
``active_lists`` + ``PairCounter.add`` (numba); evidence = ``EvidenceCollector.add``. The model's
forward and the SAE's encoding, which the pass also spends time on, are left out of both, so the
ratio is the worst case for the pass.

Evidence costs most while the tables fill (every example of a latent with fewer than 20 / 50 is
kept and its context copied) and then less and less (an example enters the top 20 of a latent
seen c times with probability 20 / c): the slowdown is reported over the first pass, over the
last one, and over the whole run.

    uv run python benchmarks/evidence_speed.py                 # e = 16,384, 300 prompts x 10
    uv run python benchmarks/evidence_speed.py --quick --json out.json   # smoke test
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import parse_args, write_json
from cooccurrence_speed import make_stream

QUICK = {"prompts": 6, "e": 512, "l0": 16, "tokens": 20, "repeats": 2}


def batches(args, stream, repeat: int):
    """``(acts_Te, input_ids_BS, rows_B)`` per batch of pass ``repeat``, built outside the
    timing: the stream's active latents, new values, new rows."""
    gen = torch.Generator().manual_seed(args.seed + 1 + repeat)
    for b in range(0, args.prompts, args.batch_prompts):
        chunk = stream[b : b + args.batch_prompts]  # [B, S, L0]
        n_b, n_s = chunk.shape[0], chunk.shape[1]
        acts_Te = torch.zeros(n_b * n_s, args.e)
        values = torch.empty(chunk.numel()).exponential_(generator=gen) + 0.05
        acts_Te.scatter_(1, chunk.reshape(n_b * n_s, -1), values.reshape(n_b * n_s, -1))
        ids_BS = torch.randint(0, 50_000, (n_b, n_s), generator=gen)
        yield acts_Te, ids_BS, torch.arange(b, b + n_b) + repeat * args.prompts


def reference(examples: np.ndarray, values: np.ndarray, key: np.ndarray, n: int, e: int):
    """Per latent, the (prompt, position) of the n smallest (key, prompt, position): one numpy
    lexsort of every example (columns: latent, prompt, position)."""
    order = np.lexsort((examples[:, 2], examples[:, 1], key, examples[:, 0]))
    latent = examples[order, 0]
    starts = np.searchsorted(latent, np.arange(e))
    rank = np.arange(len(order)) - starts[latent]
    keep = order[rank < n]
    out = {}
    for row in keep:
        out.setdefault(int(examples[row, 0]), []).append(
            (float(values[row]), int(examples[row, 1]), int(examples[row, 2]))
        )
    return out


def table_of(table, e: int) -> dict[int, list[tuple[float, int, int]]]:
    state = {
        k.split("_", 1)[1].replace(f"_e{table.letter}", "_eX"): v for k, v in table.state().items()
    }
    prompts, positions = state["prompts_eX"].numpy(), state["positions_eX"].numpy()
    values = state["values_eX"].numpy()
    out = {}
    for i in range(e):
        filled = prompts[i] >= 0
        if filled.any():
            out[i] = [
                (float(v), int(p), int(s))
                for v, p, s in zip(
                    values[i][filled], prompts[i][filled], positions[i][filled], strict=True
                )
            ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--e", type=int, default=16_384)
    parser.add_argument("--l0", type=int, default=70)
    parser.add_argument("--tokens", type=int, default=100, help="tokens per prompt")
    parser.add_argument("--zipf", type=float, default=0.8, help="popularity exponent s")
    parser.add_argument("--batch-prompts", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10, help="passes over the stream")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parse_args(parser, QUICK)
    torch.set_num_threads(args.threads)
    from sae_hacking.absorption.cooccurrence.accumulator import PairCounter
    from sae_hacking.absorption.cooccurrence.kernels import active_lists
    from sae_hacking.absorption.evidence.collect import EvidenceCollector
    from sae_hacking.absorption.evidence.tables import sample_priority

    counter = PairCounter(args.e)
    PairCounter(args.e).add(torch.tensor([0, 1]), torch.tensor([0, 2]))  # compile outside
    collector = EvidenceCollector(args.e, args.top, args.samples, args.window, 0)
    stream = make_stream(args.prompts, args.e, args.l0, args.tokens, args.zipf, args.seed)
    warm = EvidenceCollector(args.e, args.top, args.samples, args.window, 0)  # compile outside
    one = torch.zeros(1, args.e)
    one[0, 0] = 1.0
    warm.add(one, torch.tensor([0]), torch.tensor([0]), torch.zeros(1, 1, dtype=torch.long),
             torch.ones(1, 1, dtype=torch.bool), torch.tensor([0]))  # fmt: skip
    count_s, evidence_s = [0.0] * args.repeats, [0.0] * args.repeats
    all_examples, all_values = [], []
    for repeat in range(args.repeats):
        for acts_Te, ids_BS, rows_B in batches(args, stream, repeat):
            real_BS = torch.ones(ids_BS.shape, dtype=torch.bool)
            start = time.perf_counter()
            latents_N, offsets_T1 = active_lists(acts_Te > 0)
            counter.add(latents_N, offsets_T1)
            middle = time.perf_counter()
            token_N = torch.repeat_interleave(torch.arange(len(offsets_T1) - 1), offsets_T1.diff())
            collector.add(acts_Te, token_N, latents_N, ids_BS, real_BS, rows_B)
            end = time.perf_counter()
            count_s[repeat] += middle - start
            evidence_s[repeat] += end - middle
            n_s = ids_BS.shape[1]
            all_examples.append(
                torch.stack([latents_N, rows_B[token_N // n_s], token_N % n_s], 1).numpy()
            )
            all_values.append(acts_Te[token_N, latents_N].numpy())
    examples, values = np.concatenate(all_examples), np.concatenate(all_values)
    top_ok = table_of(collector.top, args.e) == reference(
        examples, values, -values.astype(np.float64), args.top, args.e
    )
    t = torch.from_numpy(examples)
    priority = sample_priority(0, t[:, 1], t[:, 2], t[:, 0]).numpy()
    sample_ok = table_of(collector.sample, args.e) == reference(
        examples, values, priority, args.samples, args.e
    )

    def slowdown(passes: slice) -> float:
        return (sum(count_s[passes]) + sum(evidence_s[passes])) / sum(count_s[passes])

    first, last, ratio = slowdown(slice(0, 1)), slowdown(slice(-1, None)), slowdown(slice(None))
    tokens = args.prompts * args.tokens * args.repeats
    print(
        f"stream: {args.prompts} prompts x {args.tokens} tokens, {args.repeats} passes, "
        f"e = {args.e}, L0 = {args.l0}; evidence: top {args.top}, {args.samples} sampled, "
        f"+-{args.window} tokens"
    )
    print(f"counting alone:      {tokens / sum(count_s):>10,.0f} tokens/s")
    print(f"counting + evidence: {tokens / (sum(count_s) + sum(evidence_s)):>10,.0f} tokens/s")
    print(
        f"slowdown with evidence: {first:.2f}x over the first pass (tables filling), "
        f"{last:.2f}x over the last, {ratio:.2f}x over the run"
    )
    print(f"evidence equals the numpy reference: top {top_ok}, sample {sample_ok}")
    per_latent = sum(
        t.element_size() * t[0].numel()
        for t in collector.state().values()
        if t.dim() > 1 and t.shape[0] == args.e
    )
    print(
        f"evidence memory: {per_latent:,} B per latent; at e = 65,536: "
        f"{per_latent * 65_536 / 1e9:.2f} GB"
    )
    write_json(
        args,
        {
            "slowdown": ratio,
            "slowdown_first_pass": first,
            "slowdown_last_pass": last,
            "count_tokens_per_s": tokens / sum(count_s),
            "with_evidence_tokens_per_s": tokens / (sum(count_s) + sum(evidence_s)),
            "top_equal": top_ok,
            "sample_equal": sample_ok,
            "bytes_per_latent": per_latent,
        },
    )
    if not (top_ok and sample_ok):
        raise SystemExit("the evidence differs from the reference")


if __name__ == "__main__":
    main()
