"""One unattended GPU check: every stage at Gemma-2-2B geometry, random weights, one table.

A random-weights model of Gemma-2-2B's shape (26 layers, d_model 2304, MLP 9216, 8 heads of 256,
vocabulary 256,000: the embedding's memory and the naive method's logits are real) in bfloat16,
random 65,536-latent JumpReLU SAEs at ``blocks.20.hook_mlp_out`` (ablator) and
``blocks.21.hook_resid_post`` (reader) with thresholds leaving about ``--l0`` latents active per
token (calibrated on one prompt, as ``gpu_ablation.py`` does), random token ids; nothing is
downloaded (``HF_HUB_OFFLINE=1``). Each stage is timed with the GPU synchronised and has its own
peak GPU memory (``max_memory_allocated`` after a reset):

- setup: the model and the SAEs; check: L0 of both SAEs on another prompt within 2x of ``--l0``.
- cooccurrences: ``CooccurrenceAccumulator`` (what ``sae-hacking cooccurrences`` runs: forward,
  encode, packed int32 counts on the GPU) against the legacy method (the same forward and encode,
  then per prompt a sparse binary A and ``AᵀA`` into a dense float32 e × e on the GPU), end to end
  and counting alone (both count the active lists the legacy run recorded); checks: those
  counts are equal exactly, and equal to the accumulator's own (so the forward is deterministic).
- ablation, bfloat16 and float32 model: fast against naive prompts/s (naive on the first
  prompts, within a time cap) and fast == naive on them (see :func:`effects_agree`).
- pairs: the blocked pair finder against the legacy per-row loop on the GPU over the first
  ``--pairs-rows`` latents (identical pairs required), then all ``--pairs-d`` latents.
- analysis tools: ``four-tuples``' dense sign-matrix counts on the device against its sparse CPU
  counts (``--tuples-d`` x ``--tuples-e`` effects, 1% non-zero per sign; the total and the kept
  tuples must be equal), and ``decoder-pairs``' blocked top 1000 over the ablator SAE's decoder
  on the device, checked against the CPU on its first ``--decoder-check`` latents (same pairs up
  to float near-ties: cosines within 1e-5).
- training: ``sae-hacking train``'s trainer, a 65,536-latent TopK SAE on the model's
  activations (tokens/s; check: finite metrics, L0 <= k).

A stage that raises is marked FAIL and the next one runs; a stage whose estimated time exceeds
what is left of ``--budget-s`` (default 480 s, counted from the start) is skipped. The table is
printed on stdout at the end (progress and details on stderr); the exit status is 1 if any check
failed. ``--quick``: every stage on the CPU at tiny shapes (a smoke test, seconds).

    uv run python benchmarks/gpu_check.py                  # on a GPU, within 8 minutes
    uv run python benchmarks/gpu_check.py --quick --device cuda   # tiny shapes on the GPU
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
import traceback
from types import SimpleNamespace

START = time.perf_counter()
# Before anything imports huggingface_hub: never download.
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")

import torch  # noqa: E402
from _common import parse_args, write_json  # noqa: E402
from cooccurrence_speed import LegacyCounter, dense_equals_packed  # noqa: E402
from gpu_ablation import (  # noqa: E402
    ABLATOR_HOOK,
    GEMMA_2_2B,
    READER_HOOK,
    TINY,
    calibrated_sae,
    padded,
    random_model,
    random_prompts,
    timed,
    train_on_device,
)
from pairs_speed import make_input, per_row_loop  # noqa: E402
from tools_speed import make_means  # noqa: E402

from sae_hacking.absorption.ablation.core import (  # noqa: E402
    fast_effects,
    make_setup,
    naive_effects,
)
from sae_hacking.absorption.cooccurrence.accumulator import (  # noqa: E402
    CooccurrenceAccumulator,
    PairCounter,
)
from sae_hacking.absorption.pairs.search import (  # noqa: E402
    PairFilter,
    comparable_rows,
    find_pairs,
)
from sae_hacking.absorption.tools.decoder_search import top_decoder_pairs  # noqa: E402
from sae_hacking.absorption.tools.tuple_search import strongest_tuples  # noqa: E402

# fast == naive: the CPU tests' tolerance (1e-4 of the largest naive effect) in float32. In
# bfloat16 (8 significant bits, u = 2^-8) the two methods run layers 20-21 with different batch
# shapes, so the GPU may round any of the ~10 intermediate results between the hooks one unit
# differently: 8 units, 2^-5 of the largest effect, bound that. A reader latent whose
# pre-activation sits within that noise of its threshold may fire on one side only: such an
# entry differs by about the threshold and is accepted as a crossing, up to a share of the
# naive effects' non-zero entries (a wrong effect would differ everywhere).
TOLERANCE = {torch.float32: (1e-4, 0.01), torch.bfloat16: (2.0**-5, 0.10)}
QUICK = dict(
    tiny=True, device="cpu", cooc_batches=3, batch_prompts=2, prompts=3, naive_prompts=2,
    k=4, seq_len=16, l0=8, pairs_d=256, pairs_rows=32, pairs_block=64, tuples_d=100,
    tuples_e=512, decoder_check=256, train_tokens=2048,
    train_k=16, train_batch_tokens=256, train_buffer_tokens=1024, train_context=32,
    train_prompt_batch=8,
)  # fmt: skip


def gib(*xs: float) -> str:
    """Peak GiB figures joined by " / " ("—" on the CPU, where there are none)."""
    return "—" if all(math.isnan(x) for x in xs) else " / ".join(f"{x:.1f}" for x in xs)


def row(stage, ours="—", ref="—", ratio=float("nan"), peak="—", check="ok", **figures):
    return dict(stage=stage, ours=ours, reference=ref, ratio=ratio, peak=peak, check=check,
                figures=figures)  # fmt: skip


def cast_parameters(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """The model's dtype, parameters only: buffers such as the rotary frequencies stay float32
    (``model.to`` would round them when going back to bfloat16)."""
    for p in model.parameters():
        p.data = p.data.to(dtype)


def free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def stage_setup(c) -> list:
    shape = TINY if c.args.tiny else GEMMA_2_2B
    c.vocab = shape["vocab_size"]
    c.lm, seconds, peak = timed(c.device, random_model, shape, c.device, torch.bfloat16)
    sample, other = random_prompts(2, c.args.seq_len, c.vocab, c.device, seed=1)
    c.ablator = calibrated_sae(c.lm, ABLATOR_HOOK, c.d_sae, sample, c.args.l0, seed=2)
    c.reader = calibrated_sae(c.lm, READER_HOOK, c.d_sae, sample, c.args.l0, seed=3)
    cache = c.lm.read(other.input_ids_BS, other.attention_mask_BS, [ABLATOR_HOOK, READER_HOOK])
    with torch.inference_mode():
        l0s = [
            float((sae.encode(cache[sae.info.hook_name][other.real_token_mask_BS]) > 0).sum(1)
                  .float().mean())
            for sae in (c.ablator, c.reader)
        ]  # fmt: skip
    ok = all(c.args.l0 / 2 <= x <= 2 * c.args.l0 for x in l0s)
    resident = torch.cuda.memory_allocated() / 2**30 if c.cuda else float("nan")
    return [
        row(
            f"setup: model + 2 SAEs of {c.d_sae:,} (L0)",
            f"{l0s[0]:.0f} / {l0s[1]:.0f}",
            f"{c.args.l0} target",
            peak=gib(resident),
            check="ok" if ok else "FAIL: L0 off target",
            l0_ablator=l0s[0], l0_reader=l0s[1], model_seconds=seconds, resident_gib=resident,
        )
    ]  # fmt: skip


def stage_cooccurrences(c) -> list:
    args, lm, sae, dev = c.args, c.lm, c.ablator, c.device
    singles = random_prompts(args.cooc_batches * args.batch_prompts, args.seq_len, c.vocab, dev, 5)
    n = args.batch_prompts
    batches = [padded(singles[i : i + n]) for i in range(0, len(singles), n)]
    # batch 0 warms both methods up, untimed
    timed_tokens = sum(int(b.real_token_mask_BS.sum()) for b in batches[1:])

    acc = CooccurrenceAccumulator(lm, sae, ABLATOR_HOOK)
    acc.add(batches[0])
    _, ours_s, ours_peak = timed(dev, lambda: [acc.add(b) for b in batches[1:]])
    ours_counts, ours_tokens, acc = acc.counter.counts.cpu(), acc.counter.tokens, None
    free(dev)  # each method's peak: the model, the SAEs and its own accumulator

    legacy = LegacyCounter(sae.d_sae, dev)
    legacy.add(lm, sae, ABLATOR_HOOK, batches[0], timing=False)
    _, legacy_s, legacy_peak = timed(
        dev, lambda: [legacy.add(lm, sae, ABLATOR_HOOK, b) for b in batches[1:]]
    )
    base = torch.cuda.memory_allocated(dev) / 2**30 if c.cuda else float("nan")
    # The torch kernel, as on a GPU; on the CPU the run above used the numba one.
    counter = PairCounter(sae.d_sae, device=dev if c.cuda else "cpu", kernel="torch")
    counter.add(*legacy.recorded[0])
    _, count_s, count_peak = timed(dev, lambda: [counter.add(*r) for r in legacy.recorded[1:]])
    same_tokens = dense_equals_packed(legacy.counts_ee, counter.counts)
    legacy_count_s, legacy = legacy.count_s, None
    free(dev)
    recount = counter.tokens == ours_tokens and torch.equal(
        counter.counts, ours_counts.to(counter.counts.device)
    )
    e = f"e = {sae.d_sae:,}"
    return [
        row(
            f"cooccurrences {e}: forward+SAE+count (tokens/s)",
            f"{timed_tokens / ours_s:,.0f}", f"{timed_tokens / legacy_s:,.0f}",
            legacy_s / ours_s, gib(ours_peak, legacy_peak),
            "ok" if recount else "FAIL: counts from the run != recount of its tokens",
            tokens=timed_tokens, ours_s=ours_s, seed_s=legacy_s, ours_peak_gib=ours_peak,
            seed_peak_gib=legacy_peak, recount_equal=recount,
        ),
        row(
            f"cooccurrences {e}: counting only (tokens/s)",
            f"{timed_tokens / count_s:,.0f}", f"{timed_tokens / legacy_count_s:,.0f}",
            legacy_count_s / count_s, gib(count_peak - base) + " (ours, added)" * c.cuda,
            "ok" if same_tokens else "FAIL: counts != legacy AᵀA",
            ours_s=count_s, seed_s=legacy_count_s, peak_gib=count_peak,
            counts_equal=same_tokens,
        ),
    ]  # fmt: skip


def effects_agree(fast, naive, threshold_E, dtype) -> dict:
    """fast == naive within :data:`TOLERANCE`: same prompts used, same ablated latents (matched
    by id), every entry within tolerance or a threshold crossing, crossings rare."""
    rel, share = TOLERANCE[dtype]
    out = dict(prompts=len(naive), compared=0, crossings=0, nonzero=0, worst=0.0, problem="")
    theta_E = threshold_E.detach().float().cpu()
    for f, n in zip(fast, naive, strict=True):
        if f.used != n.used or sorted(f.latents_D.tolist()) != sorted(n.latents_D.tolist()):
            out["problem"] = "different prompts used or latents ablated"
            continue
        order = [f.latents_D.tolist().index(latent) for latent in n.latents_D.tolist()]
        F, N = f.effects_DE[order].float().cpu(), n.effects_DE.float().cpu()
        atol = rel * float(N.abs().max().clamp(min=1e-6)) if N.numel() else 0.0
        diff = (F - N).abs()
        crossing = (diff > atol) & ((diff - theta_E).abs() <= 2 * atol)
        rest = diff[~crossing]
        if (rest > atol).any():
            out["problem"] = "effects differ beyond tolerance"
        out["worst"] = max(out["worst"], float(rest.max()) / atol if rest.numel() else 0.0)
        out["crossings"] += int(crossing.sum())
        out["nonzero"] += int((N != 0).sum())
        out["compared"] += N.numel()
    if not out["problem"] and out["crossings"] > share * out["nonzero"]:
        out["problem"] = "too many threshold crossings"
    if not out["problem"] and out["nonzero"] == 0:
        out["problem"] = "vacuous: every naive effect is zero"
    return out


def stage_ablation(c, dtype) -> list:
    args, dev = c.args, c.device
    cast_parameters(c.lm.model, dtype)
    free(dev)
    prompts = random_prompts(args.prompts, args.seq_len, c.vocab, dev, seed=7)
    setup = make_setup(c.lm, c.ablator, c.reader, args.k, rows_per_chunk=args.variants_per_batch)
    fast_effects(setup, prompts[0])  # warm-up: kernels, allocator
    cap = min(args.naive_cap_s, max(c.remaining() / 4, 1.0))

    def naive_run():
        out, start = [], time.perf_counter()
        for p in prompts[: args.naive_prompts]:
            out += naive_effects(setup, p)
            if time.perf_counter() - start > cap:  # at least one prompt, then the cap
                break
        return out

    naive, naive_s, naive_peak = timed(dev, naive_run)
    fast, fast_s, fast_peak = timed(
        dev, lambda: [x for p in prompts for x in fast_effects(setup, p)]
    )
    agree = effects_agree(fast[: len(naive)], naive, c.reader.threshold_E, dtype)
    fast_rate, naive_rate = len(prompts) / fast_s, len(naive) / naive_s
    name = str(dtype).removeprefix("torch.")
    detail = f"{agree['crossings']} crossings / {agree['nonzero']} nonzero, worst {agree['worst']:.2g} atol"
    check = f"ok ({detail})" if not agree["problem"] else f"FAIL: {agree['problem']} ({detail})"
    return [
        row(
            f"ablation {name}, K={args.k} (prompts/s, naive on {len(naive)})",
            f"{fast_rate:.3g}", f"{naive_rate:.3g}", fast_rate / naive_rate,
            gib(fast_peak, naive_peak), check,
            fast_prompts=len(prompts), naive_prompts=len(naive), fast_s=fast_s, naive_s=naive_s,
            fast_peak_gib=fast_peak, naive_peak_gib=naive_peak, tolerance=TOLERANCE[dtype],
            **agree,
        )
    ]  # fmt: skip


def stage_pairs(c) -> list:
    if not c.args.pairs_d:
        return [row("pairs", check="skipped: --pairs-d 0")]
    args, dev, d, e = c.args, c.device, c.args.pairs_d, c.d_sae
    latents_D, _, activations_D, count_pairs = make_input(d, 1, 0, 0.01)  # all but the effects
    gen = torch.Generator(device=dev).manual_seed(0)
    effects_DE = torch.randn(d, e, generator=gen, device=dev)  # made on the device: fast
    effects_DE[torch.rand(d, e, generator=gen, device=dev) < 0.5] = 0.0
    rows_DE, norms_D = comparable_rows(effects_DE, sign=True)
    del effects_DE
    rules = PairFilter(
        threshold=0.0,
        max_cooccurrence=0,
        min_expected=0.0,
        max_pairs=100_000,
        block_size=args.pairs_block,
    )
    n_rows, tokens = min(args.pairs_rows, d), 10**7
    firsts_D = torch.arange(d) < n_rows
    inputs = (latents_D, rows_DE, norms_D, activations_D, tokens, count_pairs, rules)
    found, ours_s, ours_peak = timed(dev, lambda: find_pairs(*inputs, firsts_D))
    (n_loop, first, second, cosine), loop_s, loop_peak = timed(
        dev, lambda: per_row_loop(*inputs, n_rows)
    )
    same = zip(
        (first, second, cosine), (found.first_K, found.second_K, found.cosine_K), strict=True
    )
    identical = n_loop == found.n_passing and all(torch.equal(a, b) for a, b in same)
    full, full_s, full_peak = timed(dev, lambda: find_pairs(*inputs))
    del rows_DE
    free(dev)
    return [
        row(
            f"pairs: first {n_rows} of D={d:,} over E={e:,} (s); all D: {full_s:.2f} s",
            f"{ours_s:.3g}", f"{loop_s:.3g}", loop_s / ours_s,
            gib(ours_peak, loop_peak),
            "ok" if identical else "FAIL: pairs differ from the per-row loop",
            ours_s=ours_s, loop_s=loop_s, identical=identical, n_passing=n_loop,
            all_pairs_s=full_s, all_pairs_peak_gib=full_peak, all_pairs_passing=full.n_passing,
        )
    ]  # fmt: skip


def stage_tools(c) -> list:
    args, dev, cpu = c.args, c.device, torch.device("cpu")
    mean_DE = make_means(args.tuples_d, args.tuples_e, 0.01, 0)
    found, dense_s, dense_peak = timed(dev, lambda: strongest_tuples(mean_DE.to(dev), 0.0, 1000))
    sparse, sparse_s, _ = timed(cpu, lambda: strongest_tuples(mean_DE, 0.0, 1000))
    same_tuples = found.total == sparse.total and (found.abcd_K4 == sparse.abcd_K4).all()
    unit_eM = torch.nn.functional.normalize(c.ablator.W_dec.detach().float(), dim=-1)
    pairs, pairs_s, pairs_peak = timed(dev, top_decoder_pairs, unit_eM, 1000, 4096)
    n = min(args.decoder_check, unit_eM.shape[0])
    on_dev = top_decoder_pairs(unit_eM[:n], 1000, 4096)
    on_cpu = top_decoder_pairs(unit_eM[:n].cpu(), 1000, 4096)
    shared = set(zip(on_dev.first_K.tolist(), on_dev.second_K.tolist(), strict=True)) & set(
        zip(on_cpu.first_K.tolist(), on_cpu.second_K.tolist(), strict=True)
    )
    close = (on_dev.cosine_K - on_cpu.cosine_K).abs().max().item() < 1e-5
    same_pairs = close and len(shared) >= 0.99 * on_cpu.first_K.numel()
    del unit_eM
    free(dev)
    return [
        row(
            f"four-tuples: D={args.tuples_d:,} x E={args.tuples_e:,}, top 1000 (s, device "
            f"dense vs CPU sparse)",
            f"{dense_s:.3g}", f"{sparse_s:.3g}", sparse_s / dense_s, gib(dense_peak),
            "ok" if same_tuples else "FAIL: tuples differ between the two counts",
            dense_s=dense_s, sparse_s=sparse_s, total=found.total, counts=found.counts,
        ),
        row(
            f"decoder-pairs: top 1000 of e={c.d_sae:,} (s)", f"{pairs_s:.3g}", peak=gib(pairs_peak),
            check="ok" if same_pairs else f"FAIL: device and CPU pairs differ ({len(shared)})",
            seconds=pairs_s, n_passing=pairs.n_passing, checked_on=n,
        ),
    ]  # fmt: skip


def stage_training(c) -> list:
    if not c.args.train_tokens:
        return [row("training", check="skipped: --train-tokens 0")]
    cast_parameters(c.lm.model, torch.bfloat16)
    free(c.device)
    figures = train_on_device(c.lm, c.args, c.device)
    k = c.args.train_k
    ok = all(math.isfinite(figures[key]) for key in ("tokens_per_s", "fvu", "l0"))
    ok = ok and 0 < figures["l0"] <= k
    return [
        row(
            f"training: TopK {figures['d_sae']:,}, k={k}, bfloat16 model (tokens/s)",
            f"{figures['tokens_per_s']:,.0f}", peak=gib(figures["peak_gib"]),
            check="ok" if ok else f"FAIL: l0 {figures['l0']}, fvu {figures['fvu']}",
            **figures,
        )
    ]  # fmt: skip


STAGES = [  # name, estimated seconds at full size and tiny, function
    ("setup", 60, 5, stage_setup),
    ("cooccurrences", 45, 3, stage_cooccurrences),
    ("ablation bfloat16", 45, 3, lambda c: stage_ablation(c, torch.bfloat16)),
    ("ablation float32", 60, 3, lambda c: stage_ablation(c, torch.float32)),
    ("pairs", 30, 2, stage_pairs),
    ("analysis tools", 40, 3, stage_tools),
    ("training", 150, 5, stage_training),  # not interruptible: a wide margin
]


def print_table(rows: list, header: str) -> None:
    print(header)
    print("| stage | ours | reference | ratio | peak GiB (ours / ref) | check |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ratio = "—" if math.isnan(r["ratio"]) else f"{r['ratio']:.3g}x"
        print(f"| {r['stage']} | {r['ours']} | {r['reference']} | {ratio} | {r['peak']} | {r['check']} |")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--device", default="cuda")
    add("--tiny", action="store_true", help="tiny shapes (a smoke test)")
    add("--budget-s", type=float, default=480.0, help="stop starting stages after this")
    add("--d-sae", type=int, default=65_536)
    add("--l0", type=int, default=80, help="active SAE latents per token")
    add("--seq-len", type=int, default=100, help="prompts of seq_len/2..seq_len tokens")
    add("--cooc-batches", type=int, default=40, help="batches counted (the first untimed)")
    add("--batch-prompts", type=int, default=5, help="prompts per co-occurrence batch")
    add("--prompts", type=int, default=16, help="ablation prompts (fast)")
    add("--naive-prompts", type=int, default=4, help="of which naive runs at most")
    add("--naive-cap-s", type=float, default=25.0, help="naive stops after this (>= 1 prompt)")
    add("--k", type=int, default=100, help="ablated latents per prompt")
    add("--variants-per-batch", type=int, default=256)
    add("--pairs-d", type=int, default=8192)
    add("--pairs-rows", type=int, default=256, help="first latents compared with the loop")
    add("--pairs-block", type=int, default=4096)
    add("--tuples-d", type=int, default=2000, help="four-tuples: ablated latents")
    add("--tuples-e", type=int, default=16_384, help="four-tuples: reader latents")
    add("--decoder-check", type=int, default=8192, help="decoder-pairs: latents checked on CPU")
    add("--train-tokens", type=int, default=1_000_000)
    add("--train-hook", default="blocks.12.hook_resid_post")
    add("--train-d-sae", type=int, default=65_536)
    add("--train-k", type=int, default=64)
    add("--train-batch-tokens", type=int, default=4096)
    add("--train-buffer-tokens", type=int, default=65_536)
    add("--train-context", type=int, default=256)
    add("--train-prompt-batch", type=int, default=32)
    args = parse_args(parser, QUICK)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA GPU here (use --quick for the CPU smoke test)", file=sys.stderr)
        return 2
    deadline = START + args.budget_s
    c = SimpleNamespace(
        args=args, device=device, cuda=device.type == "cuda",
        d_sae=1024 if args.tiny else args.d_sae,
        remaining=lambda: deadline - time.perf_counter(),
    )  # fmt: skip
    rows, results = [], {}
    for name, full_s, tiny_s, fn in STAGES:
        why = None
        if name != "setup" and not hasattr(c, "ablator"):
            why = "skipped: no model (setup failed)"
        elif c.remaining() < (tiny_s if args.tiny else full_s):
            why = "skipped: budget"
        if why:
            rows.append(row(name, check=why))
            results[name] = {"check": why}
            continue
        print(f"[{time.perf_counter() - START:6.1f} s] {name}", file=sys.stderr, flush=True)
        try:
            with contextlib.redirect_stdout(sys.stderr):  # stdout: the table only
                got = fn(c)
        except Exception as error:  # noqa: BLE001 - one stage's failure must not stop the rest
            traceback.print_exc()
            got = [row(name, check=f"FAIL: {type(error).__name__}: {error}"[:160])]
        free(device)  # after the except block, which held the failed stage's frames
        rows += got
        results[name] = got
    elapsed = time.perf_counter() - START
    device_name = torch.cuda.get_device_name(device) if c.cuda else "CPU"
    header = (
        f"{device_name}, {'tiny shapes' if args.tiny else 'Gemma-2-2B geometry'}, random "
        f"weights; {elapsed:.0f} s of a {args.budget_s:.0f} s budget"
    )
    print_table(rows, header)
    failed = [r["stage"] for r in rows if r["check"].startswith("FAIL")]
    write_json(args, {"stages": results, "failed": failed, "seconds": elapsed},
               device_name=device_name, d_sae=c.d_sae)  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
