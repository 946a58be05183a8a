"""Training speed and quality of ``sae-hacking train`` against SAELens's
``LanguageModelSAETrainingRunner`` on the same tiny local model, on the CPU; run by hand:

    uv run python benchmarks/train_vs_saelens.py [--tokens N] [--threads 1] [--quick] [--json PATH]

SAELens runs the model itself, offline: ``model_class_name="AutoModelForCausalLM"`` loads the
local folder and wraps it in its ``HookedProxyLM`` (the hook is the HF module whose output is our
``blocks.L.hook_resid_post``; the script checks both read the same activations). Matched: the
model and its float32 weights, the layer, a TopK SAE of the same width and k, tokens per step,
training tokens, Adam's learning rate (constant), the shuffle buffer's size, the dead-latent
window, normalisation to expected norm sqrt(M) (SAELens's ``expected_average_only_in``), BOS and
other special tokens left out (SAELens's ``exclude_special_tokens=True``), no evaluation and no
checkpoint while training (ours evaluates once, after the timed part; SAELens without wandb never
does), the same torch threads. Left as each does it: SAELens packs prompts into ``--context``-token
sequences, ours pads each batch of prompts (cut at ``--context`` tokens); SAELens clips gradients
and weights its aux-k loss 1.0 (ours 1/32, normalised); ours logs train metrics every 20 steps.

Tokens/s are training tokens over the training time: ours is the trainer's ``tokens_per_s``
(model forwards, shuffling, SAE steps, logging; evaluation excluded); SAELens's is the time of
``SAETrainer.fit`` less its norm-scaling estimate (which reads extra batches that it does not
train on, so leaving it out flatters SAELens; it is printed too). Explained variance: both
trained SAEs (each takes raw activations: ours as exported, SAELens's with the scaling folded in)
measured by one function on the same held-out prompts' activations, read per prompt as ours trains
(the main figure) and packed as SAELens trains. Where the time goes: the functions of each
trainer that read the model, shuffle, step the SAE, run Adam and log are wrapped in timers.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import os
import tempfile
import warnings
from pathlib import Path

import torch
from _common import parse_args, write_json
from _train_timers import OURS_PARTS, SAELENS_PARTS, Timers, ours_profile, saelens_profile

HF_BLOCK = {"gpt_neo": "transformer.h.{}", "gemma2": "model.layers.{}"}
QUICK = dict(d_model=128, width=512, k=16, batch_tokens=256, tokens=4096, buffer_tokens=1024)
QUICK.update(context=32, prompt_batch=8, eval_prompts=8)


def make_inputs(folder: Path, args) -> tuple[Path, Path, int]:
    """The tiny model, a prompts file long enough for one epoch, and the rows it holds."""
    from transformers import AutoTokenizer

    from sae_hacking.lm.tiny import generate_texts, make_tiny_model

    model = make_tiny_model(
        folder / "model", args.arch, n_layers=args.layers, d_model=args.d_model,
        vocab_size=args.vocab, seed=args.seed,
    )  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    words = {"min_words": args.min_words, "max_words": args.max_words}
    sample = generate_texts(200, seed=args.seed + 1, **words)
    per_prompt = sum(min(len(tokenizer(t)["input_ids"]), args.context) for t in sample) / 200
    # One epoch for both: the training tokens, SAELens's norm estimate, a buffer of slack.
    needed = args.tokens + 3 * args.buffer_tokens
    rows = args.eval_prompts + math.ceil(1.2 * needed / per_prompt)
    texts = generate_texts(rows, seed=args.seed + 1, **words)
    prompts = folder / "prompts.txt"
    prompts.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return model, prompts, rows


def train_ours(model: Path, prompts: Path, args, out: Path, timers: Timers):
    from sae_hacking.config import from_flat
    from sae_hacking.train.config import TrainConfig
    from sae_hacking.train.run import run

    steps = args.tokens // args.batch_tokens
    flat = {
        "model": str(model), "device": "cpu", "dtype": "float32", "dataset_id": str(prompts),
        "threads": args.threads,
        "max_tokens_in_prompt": args.context, "batch_size": args.prompt_batch,
        "hook": f"blocks.{args.layer}.hook_resid_post", "architecture": "topk",
        "sae_hidden_dim": args.width, "k": args.k, "max_step": steps,
        "batch_tokens": args.batch_tokens, "lr": args.lr, "lr_decay": "constant",
        "normalize": "expected_norm", "buffer_tokens": args.buffer_tokens,
        "dead_tokens": args.dead_tokens, "seed": args.seed, "eval_prompts": args.eval_prompts,
        "eval_every": steps + 1, "checkpoint_every": steps + 1,
        "output_dir": str(out / "ours"), "quiet": True,
    }  # fmt: skip
    config = from_flat(TrainConfig, flat)
    with ours_profile(timers), contextlib.redirect_stdout(io.StringIO()):  # its summary
        run_dir, metrics = run(config)
    from sae_hacking.saes.releases import load_sae

    return load_sae(str(run_dir / "sae.safetensors")), metrics


def saelens_config(model: Path, args, d_model: int):
    from sae_lens import LanguageModelSAERunnerConfig, LoggingConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAEConfig

    return LanguageModelSAERunnerConfig(
        sae=TopKTrainingSAEConfig(
            d_in=d_model, d_sae=args.width, k=args.k, device="cpu",
            normalize_activations="expected_average_only_in",
        ),
        model_name=str(model), model_class_name="AutoModelForCausalLM",
        model_from_pretrained_kwargs={"dtype": torch.float32},
        hook_name=HF_BLOCK[args.arch].format(args.layer), is_dataset_tokenized=False,
        streaming=False, context_size=args.context, store_batch_size_prompts=args.prompt_batch,
        n_batches_in_buffer=args.buffer_tokens // args.context, training_tokens=args.tokens,
        train_batch_size_tokens=args.batch_tokens, lr=args.lr, lr_scheduler_name="constant",
        dead_feature_window=args.dead_tokens // args.batch_tokens,
        n_batches_for_norm_estimate=max(1, args.buffer_tokens // args.batch_tokens),
        exclude_special_tokens=True, device="cpu", seed=args.seed,
        logger=LoggingConfig(log_to_wandb=False), n_checkpoints=0, checkpoint_path=None,
        output_path=None, verbose=False,
    )  # fmt: skip


def train_saelens(model: Path, texts: list[str], args, d_model: int, timers: Timers):
    from datasets import Dataset
    from sae_lens import LanguageModelSAETrainingRunner

    cfg = saelens_config(model, args, d_model)
    dataset = Dataset.from_dict({"text": texts})
    with quiet_saelens():
        runner = LanguageModelSAETrainingRunner(cfg, override_dataset=dataset)
        with saelens_profile(timers):
            sae = runner.run()
    return sae.eval(), runner


@contextlib.contextmanager
def quiet_saelens():
    """No progress bars, and not its warnings about an untokenised or short dataset (both are
    what this benchmark means to give it) or an overridden model and dataset."""
    logger = logging.getLogger("sae_lens")
    level, logger.level = logger.level, logging.ERROR
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore", UserWarning)
        yield
    logger.setLevel(level)


def packed_held_out(runner, texts: list[str]) -> torch.Tensor:
    """The held-out prompts' activations as SAELens trains on them: packed, specials left out."""
    from datasets import Dataset
    from sae_lens.training.activations_store import ActivationsStore

    with quiet_saelens():
        store = ActivationsStore.from_config(
            runner.model, runner.cfg, override_dataset=Dataset.from_dict({"text": texts})
        )
    store.store_batch_size_prompts = 1
    parts = []
    with contextlib.suppress(StopIteration):
        while True:
            parts.append(store.get_filtered_llm_batch(raise_on_epoch_end=True))
    return torch.cat(parts)


def hooks_agree(lm, runner, hook: str, text: str) -> float:
    """Largest difference between our hook and SAELens's HF module output on one prompt."""
    batch = lm.tokenize([text], 64)
    ours = lm.read(batch.input_ids_BS, batch.attention_mask_BS, [hook])[hook]
    _, cache = runner.model.run_with_cache(batch.input_ids_BS, names_filter=[runner.cfg.hook_name])
    return float((ours - cache[runner.cfg.hook_name]).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="gpt_neo", choices=sorted(HF_BLOCK))
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--layer", type=int, default=1, help="hook: blocks.L.hook_resid_post")
    parser.add_argument("--width", type=int, default=4096, help="SAE latents")
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--tokens", type=int, default=409_600, help="training tokens")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--buffer-tokens", type=int, default=65_536)
    parser.add_argument("--dead-tokens", type=int, default=1_000_000)
    parser.add_argument("--context", type=int, default=128, help="tokens per sequence")
    parser.add_argument("--prompt-batch", type=int, default=32, help="sequences per forward")
    parser.add_argument("--min-words", type=int, default=20, help="shortest prompt, words")
    parser.add_argument("--max-words", type=int, default=70, help="longest (~1.8 tokens a word)")
    parser.add_argument("--eval-prompts", type=int, default=128, help="held-out prompts")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both")
    parser.add_argument("--seed", type=int, default=0)
    args = parse_args(parser, QUICK)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(args.threads)
    from sae_hacking.lm.hooked import HookedLM
    from sae_hacking.training.metrics import reconstruction_metrics

    hook = f"blocks.{args.layer}.hook_resid_post"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model, prompts, rows = make_inputs(folder, args)
        texts = prompts.read_text(encoding="utf-8").splitlines()
        held_texts, train_texts = texts[: args.eval_prompts], texts[args.eval_prompts :]
        ours_timers, theirs_timers = Timers(), Timers()
        ours_sae, metrics = train_ours(model, prompts, args, folder, ours_timers)
        lm = HookedLM.from_pretrained(
            str(model), device="cpu", dtype="float32", threads=args.threads
        )
        theirs_sae, runner = train_saelens(model, train_texts, args, lm.d_model, theirs_timers)
        held = lm.tokenize(held_texts, args.context)
        acts_TM = lm.read(held.input_ids_BS, held.attention_mask_BS, [hook])[hook]
        acts_TM = acts_TM[held.real_token_mask_BS].float()
        packed_TM = packed_held_out(runner, held_texts).float()
        hook_diff = hooks_agree(lm, runner, hook, held_texts[0])

    with torch.no_grad():
        quality = {
            name: {
                "per_prompt": reconstruction_metrics(sae, acts_TM),
                "packed": reconstruction_metrics(sae, packed_TM),
            }
            for name, sae in (("ours", ours_sae), ("saelens", theirs_sae))
        }
    ours_rate = metrics["tokens_per_s"]
    ours_seconds = args.tokens / ours_rate
    fit = theirs_timers.seconds["fit"]
    estimate = theirs_timers.seconds["norm estimate"]
    theirs_rate = args.tokens / (fit - estimate)
    ratio = ours_rate / theirs_rate
    ev = {n: q["per_prompt"]["explained_variance"] for n, q in quality.items()}
    ev_gap = ev["saelens"] - ev["ours"]

    print(
        f"CPU, torch threads {torch.get_num_threads()} (both); tiny {args.arch} "
        f"({args.layers} layers, d_model {args.d_model}, vocab {args.vocab}, float32), hook "
        f"{hook} (SAELens: {runner.cfg.hook_name}, max difference {hook_diff:.2g}); TopK "
        f"width {args.width}, k {args.k}; {args.batch_tokens} tokens/step, {args.tokens} "
        f"training tokens; Adam lr {args.lr:g} constant; buffer {args.buffer_tokens} tokens; "
        f"{args.prompt_batch} prompts/forward of <= {args.context} tokens; {rows} prompts, "
        f"{args.eval_prompts} held out ({acts_TM.shape[0]} tokens per prompt, "
        f"{packed_TM.shape[0]} packed)"
    )
    print("SAELens ran the model itself (LanguageModelSAETrainingRunner, AutoModelForCausalLM).")
    print(f"ours    (sae_hacking.train.run.run):      {ours_rate:9.0f} tokens/s")
    print(
        f"SAELens (LanguageModelSAETrainingRunner): {theirs_rate:9.0f} tokens/s "
        f"({args.tokens / fit:.0f} with its norm estimate, {estimate:.2f} s)"
    )
    print(f"ratio ours / SAELens: {ratio:.2f}x (goal >= 2x)")
    print("| held-out explained variance | ours | SAELens | SAELens - ours |")
    print("|---|---|---|---|")
    for view in ("per_prompt", "packed"):
        a = quality["ours"][view]["explained_variance"]
        b = quality["saelens"][view]["explained_variance"]
        print(f"| {view.replace('_', ' ')} | {a:.4f} | {b:.4f} | {b - a:+.4f} |")
    print(
        f"L0 held out: ours {quality['ours']['per_prompt']['l0']:.1f}, SAELens "
        f"{quality['saelens']['per_prompt']['l0']:.1f}; ours' own final eval: explained "
        f"variance {metrics['explained_variance']:.4f}"
    )
    goal = ratio >= 2 and ev_gap <= 0.01
    print(f"goal (>= 2x tokens/s, explained variance within 0.01): {'met' if goal else 'NOT met'}")
    ours_parts = ours_timers.breakdown(OURS_PARTS, ours_seconds)
    theirs_parts = theirs_timers.breakdown(SAELENS_PARTS, fit - estimate)
    print(
        f"ours' metrics: seconds_activations {metrics['seconds_activations']:.2f}, "
        f"seconds_sae {metrics['seconds_sae']:.2f}, seconds_eval {metrics['seconds_eval']:.2f}, "
        f"training {ours_seconds:.2f} s"
    )
    ours_pos, theirs_pos = ours_timers.counts["read"], theirs_timers.counts["read"]
    real = ours_timers.counts["real tokens"]
    print(
        f"model forwards while training: ours {ours_pos} positions ({real} real tokens, "
        f"{100 * (1 - real / max(ours_pos, 1)):.0f}% padding and BOS; "
        f"{ours_pos / ours_timers.seconds['read']:.0f} positions/s); SAELens {theirs_pos} "
        f"positions ({theirs_pos / theirs_timers.seconds['read']:.0f} positions/s, plus "
        f"{theirs_timers.counts['norm estimate/read']} for its norm estimate); "
        f"{args.tokens} trained on"
    )
    print("| where the training time goes | ours s | ours % | SAELens s | SAELens % |")
    print("|---|---|---|---|---|")
    for part in dict.fromkeys([*ours_parts, *theirs_parts]):
        a, b = ours_parts.get(part), theirs_parts.get(part)
        cells = [
            f"{x:.2f} | {100 * x / total:.0f}%" if x is not None else "- | -"
            for x, total in ((a, ours_seconds), (b, fit - estimate))
        ]
        print(f"| {part} | {cells[0]} | {cells[1]} |")
    write_json(
        args,
        {
            "ours_tokens_per_s": ours_rate,
            "saelens_tokens_per_s": theirs_rate,
            "saelens_tokens_per_s_with_norm_estimate": args.tokens / fit,
            "ratio": ratio,
            "explained_variance": quality,
            "explained_variance_gap": ev_gap,
            "goal_met": goal,
            "hook_max_difference": hook_diff,
            "ours_metrics": {k: v for k, v in metrics.items() if isinstance(v, int | float)},
            "ours_seconds": ours_parts,
            "saelens_seconds": theirs_parts,
            "forward_positions": {"ours": ours_pos, "ours_real": real, "saelens": theirs_pos},
        },
        torch_threads=torch.get_num_threads(),
        saelens_mode="LanguageModelSAETrainingRunner (AutoModelForCausalLM)",
    )


if __name__ == "__main__":
    main()
