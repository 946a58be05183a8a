"""Selective ablation and SAE training on a GPU at Gemma-2-2B scale, with random weights.

Builds a random-weights model of Gemma-2-2B's shape (26 layers, hidden 2304, MLP 9216, 8 heads,
4 KV heads, head dim 256, vocabulary 256,000; bfloat16) directly on the GPU, random
65,536-latent JumpReLU SAEs at ``blocks.20.hook_mlp_out`` (ablator) and
``blocks.21.hook_resid_post`` (reader) with thresholds calibrated to about ``--l0`` active
latents per token, and random token ids. Times ``fast`` (per prompt, and with
``--batch-prompts`` semantics) and ``naive`` (fewer prompts: it is ~100x slower) and prints a
table. Run by hand wherever a GPU is available:

    uv run python benchmarks/gpu_ablation.py [--prompts 16] [--naive-prompts 2] [--k 100]

Then trains a ``--train-d-sae``-latent TopK SAE (k ``--train-k``) with ``sae-hacking train``'s
trainer on that model's activations at ``--train-hook`` (the forwards stop there; prompts are
generated text through a small BPE tokenizer whose ids the model takes) and prints training
tokens/s, peak GPU memory and where the time goes (model forward vs SAE step; every timed part
waits for the GPU, which costs a little speed). ``--only-train`` skips the ablation and pairs,
``--train-tokens 0`` the training.

``--device cpu --tiny`` shrinks every shape (a smoke test of this script without a GPU);
``--quick`` is ``--tiny`` with few prompts and a small K, on the GPU if there is one, else on
the CPU. ``--json PATH`` also writes the figures to PATH.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import parse_args, write_json

from sae_hacking.absorption.ablation.core import fast_effects, make_setup, naive_effects
from sae_hacking.data.text import TokenBatch
from sae_hacking.lm.hooked import HookedLM
from sae_hacking.saes.base import SAEInfo
from sae_hacking.saes.jumprelu import JumpReLUSAE

TRAIN_HOOK = "blocks.12.hook_resid_post"
ABLATOR_HOOK = "blocks.20.hook_mlp_out"
READER_HOOK = "blocks.21.hook_resid_post"
GEMMA_2_2B = dict(
    vocab_size=256_000,
    hidden_size=2304,
    intermediate_size=9216,
    num_hidden_layers=26,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=256,
    query_pre_attn_scalar=256,
    sliding_window=4096,
    max_position_embeddings=8192,
    attn_logit_softcapping=50.0,
    final_logit_softcapping=30.0,
)
TINY = dict(
    GEMMA_2_2B,
    vocab_size=512,
    hidden_size=64,
    intermediate_size=256,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    query_pre_attn_scalar=16,
)


def random_model(shape: dict, device: torch.device, dtype: torch.dtype) -> HookedLM:
    from transformers import AutoModelForCausalLM, Gemma2Config

    config = Gemma2Config(**shape, bos_token_id=2, eos_token_id=1, pad_token_id=0)
    torch.manual_seed(0)
    with device:  # initialise on the device: a 2.6B-parameter CPU init takes minutes
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return HookedLM(model, None, "random-gemma-2-2b-shape")


def calibrated_sae(lm: HookedLM, hook: str, d_sae: int, sample: TokenBatch, l0: int, seed: int):
    """Random JumpReLU SAE whose threshold leaves about ``l0`` latents active per token."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    sae = JumpReLUSAE(lm.d_model, d_sae, info=SAEInfo(hook_name=hook))
    with torch.no_grad():
        W_dec = torch.randn(d_sae, lm.d_model, generator=gen)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        sae.W_dec_EM.copy_(W_dec)
        sae.W_enc_ME.copy_(W_dec.T)
    sae = sae.to(lm.device).requires_grad_(False)
    x = lm.read(sample.input_ids_BS, sample.attention_mask_BS, [hook])[hook]
    with torch.inference_mode():
        pre = sae.pre_acts(x.float()).flatten()
        threshold = pre.kthvalue(pre.numel() - l0 * x.shape[0] * x.shape[1]).values
    with torch.no_grad():
        sae.threshold_E.fill_(float(threshold))
    return sae


def random_prompts(n: int, seq_len: int, vocab: int, device, seed: int) -> list[TokenBatch]:
    """``n`` single-prompt batches of random ids, BOS first, lengths between seq_len/2 and
    seq_len."""
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        length = int(torch.randint(seq_len // 2, seq_len + 1, (1,), generator=gen))
        ids = torch.randint(3, vocab, (1, length), generator=gen)
        ids[0, 0] = 2
        mask = torch.ones_like(ids)
        real = mask.bool()
        real[0, 0] = False
        batches.append(TokenBatch(ids.to(device), mask.to(device), real.to(device), [""]))
    return batches


def padded(batches: list[TokenBatch]) -> TokenBatch:
    length = max(b.input_ids_BS.shape[1] for b in batches)

    def pad(t, value):
        return torch.nn.functional.pad(t, (0, length - t.shape[1]), value=value)

    return TokenBatch(
        torch.cat([pad(b.input_ids_BS, 0) for b in batches]),
        torch.cat([pad(b.attention_mask_BS, 0) for b in batches]),
        torch.cat([pad(b.real_token_mask_BS, False) for b in batches]),
        [""] * len(batches),
    )


def timed(device, fn, *args):
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return out, time.perf_counter() - start, peak


def pairs_on_device(d: int, e: int, device: torch.device) -> dict:
    """Stage 3 (``sae-hacking pairs``) on the device: the blocked all-pairs of ``d`` latents'
    sign effects over ``e`` readers (half zero), threshold 0, pairs that never co-occur kept."""
    from pairs_speed import make_input

    from sae_hacking.absorption.pairs.search import PairFilter, comparable_rows, find_pairs

    latents_D, effects_DE, activations_D, count_pairs = make_input(d, e, 0, 0.01)
    rows_DE, norms_D = comparable_rows(effects_DE.to(device), sign=True)
    rules = PairFilter(
        threshold=0.0, max_cooccurrence=0, min_expected=0.0, max_pairs=100_000, block_size=4096
    )
    found, seconds, peak = timed(
        device,
        lambda: find_pairs(latents_D, rows_DE, norms_D, activations_D, 10**7, count_pairs, rules),
    )
    print(
        f"pairs: D = {d} latents over E = {e} readers, {found.n_passing} pairs pass, "
        f"{seconds:.2f} s, peak {peak:.1f} GiB (effects {d * e * 4 / 2**30:.1f} GiB)"
    )
    return {"d": d, "e": e, "seconds": seconds, "n_passing": found.n_passing, "peak_gib": peak}


def train_on_device(lm: HookedLM, args, device: torch.device) -> dict:
    """``sae-hacking train``'s trainer (TopK, expected-norm scaling, its default cadence apart
    from one evaluation at the end) on ``lm``'s activations at ``args.train_hook``."""
    from _train_timers import OURS_PARTS, Timers, ours_profile

    from sae_hacking.config import from_flat
    from sae_hacking.lm.tiny import generate_texts, train_tokenizer
    from sae_hacking.train.config import TrainConfig
    from sae_hacking.train.trainer import LMTrainer

    lm.tokenizer = train_tokenizer("gemma2", min(4096, lm.model.config.vocab_size))
    d_sae = 1024 if args.tiny else args.train_d_sae
    steps = -(-args.train_tokens // args.train_batch_tokens)
    # ~1.5 tokens a word: prompts of 0.4..0.8 x the context; one epoch, and a block to spare
    words = args.train_context * 2 // 5
    rows = math.ceil(2 * (args.train_tokens + 2 * args.train_buffer_tokens) / words) + 8
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts.txt"
        texts = generate_texts(rows, seed=4, min_words=words // 2, max_words=words)
        prompts.write_text("\n".join(texts) + "\n", encoding="utf-8")
        flat = {
            "model": "random-gemma-2-2b-shape", "dataset_id": str(prompts),
            "max_tokens_in_prompt": args.train_context, "batch_size": args.train_prompt_batch,
            "hook": args.train_hook, "architecture": "topk", "sae_hidden_dim": d_sae,
            "k": args.train_k, "max_step": steps, "batch_tokens": args.train_batch_tokens,
            "buffer_tokens": args.train_buffer_tokens, "eval_prompts": 8,
            "eval_every": steps + 1, "checkpoint_every": steps + 1, "quiet": True,
        }  # fmt: skip
        config = from_flat(TrainConfig, flat)
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        cuda = device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**30 if cuda else float("nan")
        trainer = LMTrainer(config, run_dir, lm)
        timers = Timers(sync=cuda)
        with ours_profile(timers):
            metrics = trainer.train()
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    seconds = steps * args.train_batch_tokens / metrics["tokens_per_s"]
    parts = timers.breakdown(OURS_PARTS, seconds)
    positions, real = timers.counts["read"], timers.counts["real tokens"]
    print(
        f"train: TopK {d_sae} latents, k {args.train_k}, at {args.train_hook} ({lm.dtype} model, "
        f"float32 SAE); {steps} steps of {args.train_batch_tokens} tokens, buffer "
        f"{args.train_buffer_tokens}, {args.train_prompt_batch} prompts of <= "
        f"{args.train_context} tokens per forward ({positions} positions read, {real} real)"
    )
    print(
        f"train: {metrics['tokens_per_s']:.0f} tokens/s; peak {peak:.1f} GiB ({before:.1f} GiB "
        f"allocated before: the model and the rest); explained variance "
        f"{metrics['explained_variance']:.3f} (random model), L0 {metrics['l0']:.1f}"
    )
    print("| training part | seconds | share |")
    print("|---|---|---|")
    for part, value in parts.items():
        print(f"| {part} | {value:.2f} | {100 * value / seconds:.0f}% |")
    keep = ("tokens_per_s", "seconds_activations", "seconds_sae", "seconds_eval", "fvu", "l0")
    return {
        "d_sae": d_sae,
        "steps": steps,
        "peak_gib": peak,
        "allocated_before_gib": before,
        "seconds": parts,
        "forward_positions": positions,
        "real_tokens_read": real,
        **{key: metrics[key] for key in keep},
    }


def ablation_on_device(lm: HookedLM, args, device: torch.device, shape: dict, d_sae: int) -> dict:
    """Fast against naive selective ablation on random SAEs at the two hooks."""
    prompts = random_prompts(args.prompts, args.seq_len, shape["vocab_size"], device, seed=1)
    sample = prompts[0]
    ablator = calibrated_sae(lm, ABLATOR_HOOK, d_sae, sample, args.l0, seed=2)
    reader = calibrated_sae(lm, READER_HOOK, d_sae, sample, args.l0, seed=3)
    setups = {
        batch_prompts: make_setup(
            lm,
            ablator,
            reader,
            args.k,
            rows_per_chunk=args.variants_per_batch,
            batch_prompts=batch_prompts,
        )
        for batch_prompts in (False, True)
    }
    fast_effects(setups[False], prompts[0])  # warm-up: kernels, allocator
    naive = prompts[: args.naive_prompts]
    runs = {
        "naive": timed(device, lambda: [naive_effects(setups[False], p) for p in naive]),
        "fast": timed(device, lambda: [fast_effects(setups[False], p) for p in prompts]),
        f"fast, --batch-prompts (batches of {args.batch_size})": timed(
            device,
            lambda: [
                fast_effects(setups[True], padded(prompts[i : i + args.batch_size]))
                for i in range(0, len(prompts), args.batch_size)
            ],
        ),
    }
    counts = {"naive": len(naive)}
    print(
        f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, {lm.dtype}, "
        f"{'tiny shapes' if args.tiny else 'Gemma-2-2B shape'}, SAEs of {d_sae} latents, "
        f"K = {args.k}, prompts of {args.seq_len // 2}..{args.seq_len} tokens"
    )
    print("| method | prompts | s/prompt | prompts/s | speed-up vs naive | peak GiB |")
    print("|---|---|---|---|---|---|")
    naive_rate = counts["naive"] / runs["naive"][1]
    figures = {}
    for name, (_, seconds, peak) in runs.items():
        n = counts.get(name, len(prompts))
        print(
            f"| {name} | {n} | {seconds / n:.4f} | {n / seconds:.3g} | "
            f"{n / seconds / naive_rate:.1f}x | {peak:.1f} |"
        )
        figures[name] = {
            "prompts": n,
            "prompts_per_s": n / seconds,
            "speedup_vs_naive": n / seconds / naive_rate,
            "peak_gib": peak,
        }
    comparisons = []
    fast_out = [p for batch in runs["fast"][0] for p in batch][: len(naive)]
    naive_out = [p for batch in runs["naive"][0] for p in batch]
    for f, n in zip(fast_out, naive_out, strict=True):
        same = len(set(f.latents_D.tolist()) & set(n.latents_D.tolist()))
        shared = [i for i, latent in enumerate(n.latents_D.tolist()) if latent in f.latents_D]
        if not shared:
            continue
        f_rows = [f.latents_D.tolist().index(int(n.latents_D[i])) for i in shared]
        diff = (f.effects_DE[f_rows] - n.effects_DE[shared]).abs().max()
        print(
            f"fast vs naive: {same}/{len(n.latents_D)} latents in common; largest effect "
            f"difference {float(diff):.3g} (largest effect {float(n.effects_DE.abs().max()):.3g})"
        )
        comparisons.append(
            {
                "latents_in_common": same,
                "latents": len(n.latents_D),
                "largest_effect_difference": float(diff),
                "largest_effect": float(n.effects_DE.abs().max()),
            }
        )
    return {"methods": figures, "fast_vs_naive": comparisons}


def quick_settings() -> dict:
    """--quick: tiny shapes, on the GPU if there is one (else the CPU smoke test)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return dict(
        tiny=True,
        device=device,
        prompts=2,
        naive_prompts=1,
        k=4,
        seq_len=16,
        l0=8,
        batch_size=2,
        pairs_d=256,
        train_tokens=2048,
        train_k=16,
        train_batch_tokens=256,
        train_buffer_tokens=1024,
        train_context=32,
        train_prompt_batch=8,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="shrink every shape (smoke test)")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--naive-prompts", type=int, default=2)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--seq-len", type=int, default=100)
    parser.add_argument("--d-sae", type=int, default=65_536)
    parser.add_argument("--l0", type=int, default=80, help="active SAE latents per token")
    parser.add_argument("--batch-size", type=int, default=8, help="for --batch-prompts")
    parser.add_argument("--variants-per-batch", type=int, default=256)
    parser.add_argument(
        "--pairs-d",
        type=int,
        default=16_384,
        help="stage 3 on the device too: blocked all-pairs of this many ablated latents over "
        "--d-sae readers, sign mode (0: skip)",
    )
    parser.add_argument("--only-train", action="store_true", help="skip ablation and pairs")
    parser.add_argument("--train-tokens", type=int, default=2_000_000, help="0: skip training")
    parser.add_argument("--train-hook", default=TRAIN_HOOK)
    parser.add_argument("--train-d-sae", type=int, default=65_536)
    parser.add_argument("--train-k", type=int, default=64)
    parser.add_argument("--train-batch-tokens", type=int, default=4096)
    parser.add_argument("--train-buffer-tokens", type=int, default=65_536)
    parser.add_argument("--train-context", type=int, default=256, help="tokens per prompt")
    parser.add_argument("--train-prompt-batch", type=int, default=32, help="prompts per forward")
    args = parse_args(parser, quick_settings())
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "error: no CUDA GPU here; this benchmark is for a GPU (use --quick, or --device cpu "
            "--tiny, for a smoke test of the script)",
            file=sys.stderr,
        )
        return 2
    shape = TINY if args.tiny else GEMMA_2_2B
    d_sae = 1024 if args.tiny else args.d_sae
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    lm = random_model(shape, device, dtype)
    results = {}
    if not args.only_train:
        results.update(ablation_on_device(lm, args, device, shape, d_sae))
        results["pairs"] = pairs_on_device(args.pairs_d, d_sae, device) if args.pairs_d else None
    if device.type == "cuda":
        torch.cuda.empty_cache()
    results["train"] = train_on_device(lm, args, device) if args.train_tokens else None
    write_json(
        args,
        results,
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        dtype=str(dtype),
        d_sae=d_sae,  # --tiny overrides --d-sae
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
