"""Memory of the ablation sums at full scale, projected from sizes measured on tiny models:

    uv run python benchmarks/ablation_memory.py [--prompts 200] [--k 20] [--quick] [--json PATH]

Part 1 measures how sparse the effects are: tiny Gemma-2 models with calibrated random JumpReLU
readers (two L0s) and a random TopK reader; per ablated (prompt, latent) row, the reader latents
with a non-zero effect (its *support*, as a multiple of the reader's L0 at the last token), and
the density of the summed rows against the uniform-union model ``1 - (1 - d)**n`` for a row
ablated in ``n`` prompts. Part 2 measures the accumulator's sizes with the real code:
device bytes per ablated row, host bytes per ablated row (tracemalloc over the latent-to-row
map and counts), the largest piece of sums copied to the host while writing (and the resident
set's growth while writing, on the CPU), bytes per non-zero of sparse storage. Part 3 projects
both to Gemma-2-2B geometry (e = E = 65,536, K = 100, 10^6 prompts, reader L0 ``--reader-l0``)
and checks the goal of at most 8 GB of host memory for the accumulator (exit 1 if missed).
Part 4: what the co-occurrence counts and the latent evidence collected beside them take on one
GPU at e = 65,536 and 131,072.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import threading
import time
import tracemalloc

import psutil
import torch
from _common import parse_args, write_json

from sae_hacking.absorption.ablation import effects as ablation_effects
from sae_hacking.absorption.ablation.core import PromptEffects, fast_effects, make_setup
from sae_hacking.absorption.ablation.effects import BLOCK_ROWS, EffectSums, chunk_rows
from sae_hacking.absorption.cooccurrence.kernels import PAIRS_PER_CHUNK, packed_size
from sae_hacking.lm.hooked import HookedLM
from sae_hacking.lm.tiny import generate_texts, tiny_model_once
from sae_hacking.runs.results import ResultsFile, StoredTensors, write_results, write_safetensors
from sae_hacking.runs.zstd_frames import FRAME_BYTES
from sae_hacking.saes.tiny import calibrated_random_sae
from tests.random_saes import random_sae

ABLATOR_HOOK = "blocks.1.hook_mlp_out"
READER_HOOK = "blocks.2.hook_resid_post"
GB = 1e9
GOAL_HOST_BYTES = 8 * GB
GEMMA_PARAMS = 2.61e9  # Gemma-2-2B, bfloat16 weights
GEMMA_M = 2304
QUICK = {"prompts": 16, "k": 4, "d_reader": 256, "measure_width": 4096, "measure_rows": 40}


# -- part 1: density ----------------------------------------------------------------------------


def density(lm, texts, reader, k: int, batch: int = 8) -> dict:
    """Support of per-prompt effect rows and density of their sums, for one reader."""
    ablator = calibrated_random_sae(lm, ABLATOR_HOOK, 512, texts[:50], 0.02, seed=0)
    setup = make_setup(lm, ablator, reader, k)
    sums = EffectSums(reader.d_sae)
    support, rows, l0 = 0, 0, 0
    for start in range(0, len(texts), batch):
        tokens = lm.tokenize(texts[start : start + batch], 64)
        outcomes = fast_effects(setup, tokens)
        sums.add_prompts(outcomes)
        for outcome in outcomes:
            support += int((outcome.effects_DE != 0).sum())
            rows += len(outcome.latents_D)
        last = tokens.real_token_mask_BS.cumsum(1).argmax(1)
        x = lm.read(tokens.input_ids_BS, tokens.attention_mask_BS, [READER_HOOK])[READER_HOOK]
        with torch.inference_mode():
            l0 += int((reader.encode(x[torch.arange(len(last)), last]) > 0).sum())
    per_row = support / max(rows, 1)
    reader_l0 = l0 / len(texts)
    state = sums.tensors()
    dens_D = (state["effects_fixed_DE"] != 0).double().mean(1)
    n_D = state["ablation_counts_D"].double()
    d = per_row / reader.d_sae
    uniform_D = 1 - (1 - d) ** n_D
    frequent = n_D >= n_D.median()
    return {
        "reader_width": reader.d_sae,
        "reader_l0_last_token": reader_l0,
        "support_per_row": per_row,
        "support_over_l0": per_row / max(reader_l0, 1e-9),
        "per_prompt_density": d,
        "sum_rows": len(n_D),
        "mean_ablations_per_row": float(n_D.mean()),
        "sums_density": float(dens_D.mean()),
        "uniform_model_density": float(uniform_D.mean()),
        "measured_over_model_frequent_rows": float(
            dens_D[frequent].sum() / uniform_D[frequent].sum()
        ),
        "sums": state,
    }


def part1(args) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        path = tiny_model_once(tmp, "gemma2", n_layers=3)
        lm = HookedLM.from_pretrained(
            str(path), device="cpu", dtype="float32", threads=args.threads
        )
    texts = generate_texts(args.prompts + 50, seed=3, min_words=10, max_words=40)
    calibration, texts = texts[:50], texts[50:]
    readers = {
        "jumprelu 2%": calibrated_random_sae(lm, READER_HOOK, args.d_reader, calibration, 0.02, 1),
        "jumprelu 0.5%": calibrated_random_sae(
            lm, READER_HOOK, args.d_reader, calibration, 0.005, 1
        ),
        "topk 1%": random_sae(READER_HOOK, args.d_reader, 1, kind="topk", k=args.d_reader // 100),
    }
    out = []
    print(f"Part 1: effect density on a tiny Gemma-2 ({args.prompts} prompts, K = {args.k})")
    print(
        f"{'reader':>14} {'E':>6} {'L0':>6} {'support/row':>12} {'= x L0':>7} {'of E':>7} "
        f"{'n/row':>6} {'sums dens.':>10} {'model':>7} {'meas/model':>10}"
    )
    for name, reader in readers.items():
        m = {"reader": name, **density(lm, texts, reader, args.k)}
        print(
            f"{name:>14} {m['reader_width']:>6} {m['reader_l0_last_token']:>6.1f} "
            f"{m['support_per_row']:>12.1f} {m['support_over_l0']:>7.2f} "
            f"{m['per_prompt_density']:>7.2%} {m['mean_ablations_per_row']:>6.1f} "
            f"{m['sums_density']:>10.2%} {m['uniform_model_density']:>7.2%} "
            f"{m['measured_over_model_frequent_rows']:>10.2f}"
        )
        out.append(m)
    return out


def line(label: str, value: str) -> None:
    print(f"  {label:<36} {value}")


# -- part 2: sizes ------------------------------------------------------------------------------


class PeakRSS:
    """The resident set's peak above its start, sampled every millisecond."""

    def __init__(self):
        self.process = psutil.Process()
        self.start = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.001)

    def stop(self) -> int:
        self.running = False
        self.thread.join()
        return self.peak - self.start


def synthetic(n_rows: int, width: int, support: int, seed: int = 0) -> list[PromptEffects]:
    """One prompt ablating ``n_rows`` latents with sparse effects."""
    gen = torch.Generator().manual_seed(seed)
    effects = torch.zeros(n_rows, width)
    cols = torch.randint(0, width, (n_rows, support), generator=gen)
    effects.scatter_(1, cols, torch.randn(n_rows, support, generator=gen))
    return [PromptEffects(True, torch.arange(n_rows), effects)]


def part2(args, sums_state: dict) -> dict:
    width, n_rows = args.measure_width, args.measure_rows
    print(f"\nPart 2: sizes measured with the real accumulator (E = {width:,}, {n_rows} rows)")
    # Device bytes per ablated row: whole blocks only, so the count is exact.
    sums = EffectSums(width)
    sums.add_prompts(synthetic(BLOCK_ROWS, width, 64))
    device_per_row = sum(b.nbytes for b in sums._blocks) / len(sums.row_of)
    del sums
    # Host bookkeeping per ablated row (latent -> row map, counts): Python objects.
    gc.collect()
    tracemalloc.start()
    sums = EffectSums(1)
    before = tracemalloc.get_traced_memory()[0]
    n = 50_000
    sums._add_fixed(list(range(n)), torch.zeros(n, 1, dtype=torch.long), [1] * n)
    host_per_row = (tracemalloc.get_traced_memory()[0] - before) / n
    tracemalloc.stop()
    del sums
    # Writing: every piece of sums copied to the host, and the RSS growth on the CPU.
    sums = EffectSums(width)
    sums.add_prompts(synthetic(n_rows, width, 64))
    pieces, reads = [], []
    real, real_read = ablation_effects.to_host, ResultsFile.read_range
    with tempfile.TemporaryDirectory() as tmp:
        ablation_effects.to_host = lambda t: pieces.append(t.nbytes) or real(t)
        try:
            gc.collect()
            rss = PeakRSS()
            write_results(f"{tmp}/ablations", sums.streams(), {})
            write_rss = rss.stop()
        finally:
            ablation_effects.to_host = real
        checkpoint = write_safetensors(f"{tmp}/checkpoint.safetensors", sums.streams(False), {})
        # Loading a checkpoint: the largest piece read from the file at once.
        ResultsFile.read_range = lambda f, k, a, b: (
            reads.append((b - a) * 8) or real_read(f, k, a, b)
        )
        try:
            loaded = EffectSums.from_tensors(StoredTensors(checkpoint))
        finally:
            ResultsFile.read_range = real_read
        assert loaded.tensors()["effects_fixed_DE"].equal(sums.tensors()["effects_fixed_DE"])
        del loaded
    sums_bytes = n_rows * width * 8
    # Sparse storage of the measured sums: torch COO (two int64 indices + int64 value).
    fixed = sums_state["effects_fixed_DE"]
    coo = fixed.to_sparse().coalesce()
    coo_per_nnz = (coo.indices().nbytes + coo.values().nbytes) / max(coo._nnz(), 1)
    m = {
        "device_bytes_per_row": device_per_row,
        "device_bytes_per_row_per_E": device_per_row / width,
        "host_bytes_per_row": host_per_row,
        "largest_host_piece_bytes": max(pieces),
        "host_pieces_bytes_total": sum(pieces),
        "sums_bytes": sums_bytes,
        "write_rss_growth_bytes": write_rss,
        "largest_piece_read_loading_bytes": max(reads),
        "sparse_coo_bytes_per_nnz": coo_per_nnz,
        "sparse_packed_bytes_per_nnz": 16.0,  # int64 key row * E + col, int64 value
    }
    line(
        "device bytes per ablated row",
        f"{device_per_row:,.0f} (= {device_per_row / width:.0f} x E)",
    )
    line("host bytes per ablated row", f"{host_per_row:,.0f} (latent -> row map, count)")
    line("largest sums piece on the host", f"{max(pieces):,} B ({chunk_rows(width)} rows)")
    line("all pieces / int64 sums", f"{sum(pieces):,} B / {sums_bytes:,} B (int64 + float32)")
    line("RSS growth while writing (CPU)", f"{write_rss:,} B")
    line("largest piece read when loading", f"{max(reads):,} B")
    line("sparse storage per non-zero", f"{coo_per_nnz:.0f} B (torch COO), 16 B (packed key)")
    return m


# -- part 3: projection -------------------------------------------------------------------------


def part3(args, densities: list[dict], sizes: dict) -> dict:
    e = E = 65_536
    print(
        f"\nPart 3: projection to Gemma-2-2B (e = E = {E:,}, K = {args.full_k}, "
        f"{args.full_prompts:.0e} prompts, reader L0 {args.reader_l0})"
    )
    ratio = max(d["support_over_l0"] for d in densities[:2])  # the JumpReLU readers
    correction = max(d["measured_over_model_frequent_rows"] for d in densities[:2])
    d = ratio * args.reader_l0 / E
    n = args.full_prompts * args.full_k / e
    sums_density = min(1.0, correction * (1 - (1 - d) ** n))  # Jensen: an upper bound
    dense_device = e * sizes["device_bytes_per_row_per_E"] * E
    sparse_device = sums_density * e * E * sizes["sparse_packed_bytes_per_nnz"]
    # Writing or loading holds one chunk of sums (a fixed number of bytes, whatever E) plus a
    # frame and its compressed copy; the measured RSS growth, where larger, stands instead.
    transient = max(
        chunk_rows(E) * E * 8 + 2 * FRAME_BYTES,
        sizes["write_rss_growth_bytes"],
        sizes["largest_piece_read_loading_bytes"] + 2 * FRAME_BYTES,
    )
    host_new = e * sizes["host_bytes_per_row"] + transient
    host_old = e * E * 8  # the sums, on the host; writing added 20 B per entry
    per_prompt_old = args.full_k * E * 4
    m = {
        "per_prompt_density": d,
        "ablations_per_latent": n,
        "sums_density_upper_bound": sums_density,
        "dense_device_bytes": dense_device,
        "sparse_device_bytes_upper_bound": sparse_device,
        "host_bytes_new": host_new,
        "host_bytes_new_transient": transient,
        "host_bytes_old": host_old,
        "host_bytes_old_peak_writing": e * E * 28,
        "per_prompt_copy_old": per_prompt_old,
        "per_prompt_copy_new": args.full_k * 8,
        "goal_met": host_new <= GOAL_HOST_BYTES,
    }
    line("per-prompt support", f"{ratio:.2f} x L0 = {d:.3%} of E")
    line("ablations per latent", f"{n:,.0f}")
    line("summed rows' density", f"{sums_density:.0%} (uniform-union bound)")
    line("device, dense int64 (chosen)", f"{dense_device / GB:.1f} GB")
    line("device, sparse 16 B per non-zero", f"{sparse_device / GB:.1f} GB (bound)")
    line("host, accumulator now", f"{host_new / GB:.2f} GB (goal <= 8 GB)")
    line("host, before", f"{host_old / GB:.1f} GB, {e * E * 28 / GB:.0f} GB while writing")
    line("device -> host per prompt", f"{args.full_k * 8:,} B (was {per_prompt_old / 1e6:.0f} MB)")
    return m


# -- part 4: co-occurrences on one GPU ----------------------------------------------------------


def part4(args) -> dict:
    print("\nPart 4: co-occurrence counts on one GPU (packed triangle, Gemma-2-2B bfloat16)")
    out = {}
    for e in (65_536, 131_072):
        int32, int64 = packed_size(e) * 4, packed_size(e) * 8
        sae = 2 * e * GEMMA_M * 4  # encoder + decoder, float32
        acts = args.batch_tokens * e * 5  # float32 activations + bool mask
        kernel = PAIRS_PER_CHUNK * 8 * 6  # index tensors of one index_add_ chunk
        evidence = e * evidence_bytes_per_latent()
        rest = GEMMA_PARAMS * 2 + sae + acts + kernel + evidence
        out[e] = {"int32": int32, "int64": int64, "rest": rest, "evidence": evidence}
        print(
            f"  e = {e:,}: triangle {int32 / GB:.1f} GB int32 ({int64 / GB:.1f} GB int64 after "
            f"2^31 tokens) + latent evidence {evidence / GB:.2f} GB + model, SAE, activations, "
            f"kernel ~{(rest - evidence) / GB:.1f} GB = {(int32 + rest) / GB:.1f} GB "
            f"({(int64 + rest) / GB:.1f} GB)"
        )
    return out


def evidence_bytes_per_latent() -> int:
    """What the co-occurrence pass's latent evidence holds per latent with its defaults (top 20,
    10 bands x 5 sampled, +-16 tokens of context, the histogram), measured on the collector's
    own tensors (plus the slot bookkeeping it keeps beside them)."""
    from sae_hacking.absorption.evidence.collect import EvidenceCollector
    from sae_hacking.absorption.evidence.options import EvidenceOptions

    options, e = EvidenceOptions(), 8
    collector = EvidenceCollector(
        e, options.top_examples, options.samples, options.context_tokens, 0
    )
    tensors = [*collector.state().values()]
    for table in (collector.top, collector.sample):
        tensors += [table.key_eX, table.filled_e, table.worst_e]
    per_latent = sum(t.numel() * t.element_size() for t in tensors if t.shape[0] == e)
    return per_latent // e


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=120, help="prompts for the density")
    parser.add_argument("--k", type=int, default=20, help="ablations per prompt (tiny model)")
    parser.add_argument("--d-reader", type=int, default=2048, help="tiny reader width")
    parser.add_argument("--measure-width", type=int, default=65_536, help="E for part 2")
    parser.add_argument("--measure-rows", type=int, default=300, help="rows written in part 2")
    parser.add_argument("--reader-l0", type=float, default=70, help="full-scale reader L0")
    parser.add_argument("--full-k", type=int, default=100)
    parser.add_argument("--full-prompts", type=float, default=1e6)
    parser.add_argument("--batch-tokens", type=int, default=8 * 1024, help="tokens per forward")
    parser.add_argument("--threads", type=int, default=2)
    args = parse_args(parser, QUICK, argv)
    torch.set_num_threads(args.threads)
    densities = part1(args)
    sizes = part2(args, densities[0]["sums"])
    projection = part3(args, densities, sizes)
    cooccurrence = part4(args)
    for d in densities:
        del d["sums"]
    write_json(
        args,
        {
            "density": densities,
            "sizes": sizes,
            "projection": projection,
            "cooccurrence": cooccurrence,
        },
    )
    return 0 if projection["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
