"""Selective ablation speed: the batched partial forward (``fast``) against the legacy K + 2
full forwards per prompt (``naive``), on the same prompts; run by hand:

    uv run python benchmarks/ablation_speed.py [--prompts 6] [--k 100] [--threads 2] [--quick] [--json PATH]

Part 1 times both methods on a tiny local Gemma-2 with Gemma-2-2B's depth (26 layers, ablator
at layer 20's mlp_out, reader at layer 21's resid_post) and random JumpReLU SAEs, and checks
that their effects agree to 1e-4 relative. Part 2 counts the decoder-layer forward passes per
prompt of both methods at Gemma-2-2B geometry (from the code's structure; the tests check the
counting against hooks on a real model).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import torch
from _common import parse_args, write_json

from sae_hacking.absorption.ablation.core import fast_effects, make_setup, naive_effects
from sae_hacking.absorption.ablation.cost import GEMMA_2_2B, GEMMA_2_2B_LAYERS, block_passes
from sae_hacking.lm.arch import parse_hook
from sae_hacking.lm.hooked import HookedLM
from sae_hacking.lm.tiny import generate_texts, tiny_model_once
from sae_hacking.saes.tiny import random_jumprelu

ABLATOR_HOOK = "blocks.20.hook_mlp_out"
READER_HOOK = "blocks.21.hook_resid_post"
TOLERANCE = 1e-4  # largest effect difference, relative to the largest effect
QUICK = {"prompts": 2, "k": 4, "d_model": 32, "d_sae": 128, "seq_len": 20}


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def tiny_comparison(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = tiny_model_once(tmp, "gemma2", n_layers=GEMMA_2_2B_LAYERS, d_model=args.d_model)
        lm = HookedLM.from_pretrained(
            str(path), device="cpu", dtype="float32", threads=args.threads
        )
    ablator = random_jumprelu(args.d_model, args.d_sae, ABLATOR_HOOK, 0)
    reader = random_jumprelu(args.d_model, args.d_sae, READER_HOOK, 1)
    setup = make_setup(lm, ablator, reader, args.k)
    batch = lm.tokenize(generate_texts(args.prompts, seed=3, min_words=20, max_words=40), 64)
    fast_effects(setup, lm.tokenize(["Warm up the kernels."], 64))  # first-call overheads
    fast, fast_s = timed(fast_effects, setup, batch)
    naive, naive_s = timed(naive_effects, setup, batch)
    worst = 0.0
    ablations = 0
    for f, n in zip(fast, naive, strict=True):
        assert f.latents_D.tolist() == n.latents_D.tolist(), "the methods chose other latents"
        scale = float(n.effects_DE.abs().max())
        worst = max(worst, float((f.effects_DE - n.effects_DE).abs().max()) / scale)
        ablations += len(n.latents_D)
    print(
        f"tiny Gemma-2 ({GEMMA_2_2B_LAYERS} layers, d_model {args.d_model}, SAEs of "
        f"{args.d_sae} latents), {args.prompts} prompts of {batch.input_ids_BS.shape[1]} tokens "
        f"or fewer, K = {args.k} ({ablations / args.prompts:.0f} ablations per prompt), "
        f"{torch.get_num_threads()} threads"
    )
    print("| method | prompts/s | s/prompt |")
    print("|---|---|---|")
    for name, seconds in (("naive", naive_s), ("fast", fast_s)):
        print(f"| {name} | {args.prompts / seconds:.3g} | {seconds / args.prompts:.4f} |")
    print(f"speed-up fast / naive: {naive_s / fast_s:.1f}x")
    print(f"largest effect difference, relative to the largest effect: {worst:.2e}")
    return {
        "prompts_per_s": {"naive": args.prompts / naive_s, "fast": args.prompts / fast_s},
        "speedup_fast_over_naive": naive_s / fast_s,
        "ablations_per_prompt": ablations / args.prompts,
        "latents_equal": True,  # asserted above
        "largest_relative_effect_difference": worst,
        "effects_agree": worst <= TOLERANCE,
        "torch_threads": torch.get_num_threads(),
    }


def layer_counts(k: int, seq_len: int) -> dict:
    ablator = parse_hook(ABLATOR_HOOK, GEMMA_2_2B_LAYERS)
    reader = parse_hook(READER_HOOK, GEMMA_2_2B_LAYERS)
    print(
        f"\nGemma-2-2B geometry ({GEMMA_2_2B_LAYERS} layers, {ABLATOR_HOOK} -> {READER_HOOK}, "
        f"K = {k}, {seq_len}-token prompts), per prompt:"
    )
    print("| method | attention blocks | MLP blocks (whole prompt) | MLP blocks (last token) "
          "| decoder layers entered | FLOP-weighted decoder-layer passes |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    rows = {}
    for method in ("naive", "fast"):
        passes = block_passes(method, GEMMA_2_2B_LAYERS, ablator, reader, k)
        rows[method] = (passes.whole_layers, passes.layer_equivalents(GEMMA_2_2B, seq_len))
        print(
            f"| {method} | {passes.attention} | {passes.mlp} | {passes.mlp_last_token} "
            f"| {rows[method][0]} | {rows[method][1]:.1f} |"
        )
    print(
        f"fast needs {rows['naive'][1] / rows['fast'][1]:.1f}x fewer FLOP-weighted decoder-layer "
        f"passes ({rows['naive'][0] / rows['fast'][0]:.1f}x fewer layers entered)"
    )
    return {
        method: {"decoder_layers_entered": entered, "flop_weighted_layer_passes": weighted}
        for method, (entered, weighted) in rows.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--d-sae", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=100, help="for the layer counts")
    args = parse_args(parser, QUICK)
    torch.set_num_threads(args.threads)
    tiny = tiny_comparison(args)
    counts = layer_counts(args.k, args.seq_len)
    write_json(args, {"tiny_model": tiny, "gemma_2_2b_layer_counts": counts})
    if not tiny["effects_agree"]:
        sys.exit(f"the effects differ by more than {TOLERANCE:g} relative")


if __name__ == "__main__":
    main()
