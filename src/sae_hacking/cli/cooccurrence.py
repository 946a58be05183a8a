"""``sae-hacking cooccurrences`` and ``cooccurrences-show`` (and the seed's
``gemma_cooccurrences.py``)."""

from __future__ import annotations

import argparse

from sae_hacking.cli.lm import (
    add_dataset_args,
    add_model_args,
    add_sae_args,
    fill_default_sae_ids,
)
from sae_hacking.runs.args import add_run_args

DEFAULT_ABLATOR_RELEASE = "gemma-scope-2b-pt-mlp-canonical"
DEFAULT_ABLATOR_ID = "layer_20/width_65k/canonical"
# Flags that identify what a run counts (checked on --resume and by merge); batch_size is free.
SETTING_FLAGS = (
    "model",
    "dtype",
    "ablator_sae_release",
    "ablator_sae_id",
    "ablator_sae_hook",
    "dataset_id",
    "text_column",
    "max_tokens_in_prompt",
    "n_prompts",
    "batch_size",
    "rows",
)
FREE_SETTINGS = ("batch_size",)

HELP = (
    "Count, over the real tokens of the first --n-prompts prompts, how often each pair of "
    "ablator-SAE latents is active together (exact integers; the diagonal is each latent's "
    "activation count). Writes cooccurrences.safetensors.zst + cooccurrences.json to the run "
    "directory; checkpoints every --save-frequency prompts; --resume, --shard i/n and "
    "`sae-hacking merge` for long runs."
)


def add_cooccurrence_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_model_args(parser)
    add_sae_args(parser, "ablator", release=DEFAULT_ABLATOR_RELEASE, sae_id=DEFAULT_ABLATOR_ID)
    add_dataset_args(parser, batch_size=5, max_tokens=100, n_prompts=None)
    parser.add_argument(
        "--rows",
        type=int,
        nargs="+",
        default=None,
        metavar="LATENT",
        help="count only the rows of these latents ([D, e] instead of the e(e+1)/2 triangle)",
    )
    add_run_args(parser, save_frequency=10_000)
    parser.set_defaults(func=run_cooccurrences)
    return parser


def _settings(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name in SETTING_FLAGS}


def run_cooccurrences(args: argparse.Namespace) -> int:
    from sae_hacking.absorption.cooccurrence import KIND, RESULTS_NAME, CooccurrenceAccumulator
    from sae_hacking.cli.lm import load_lm, load_sae_from_args
    from sae_hacking.errors import UsageError
    from sae_hacking.runs.stream import StreamRun
    from sae_hacking.saes.splice import check_sae_fits

    fill_default_sae_ids(args)
    if args.n_prompts is not None and args.n_prompts <= 0:
        raise UsageError(f"--n-prompts must be positive, got {args.n_prompts}.")
    if args.save_frequency < 1:
        raise UsageError(f"--save-frequency must be at least 1, got {args.save_frequency}.")
    if args.resume:
        run = StreamRun.open(args.resume, KIND)
        if args.shard != run.shard and str(args.shard) != "0/1":
            raise UsageError(f"--shard {args.shard} differs from the resumed run's {run.shard}.")
        parser = add_cooccurrence_args(argparse.ArgumentParser())
        defaults = _settings(fill_default_sae_ids(parser.parse_args([])))
        settings = run.resolve_settings(_settings(args), defaults)
        if run.is_complete():
            print(f"{run.run_dir} is complete: {run.results_path}")
            return 0
        state = run.load_checkpoint()
    else:
        settings, state, run = _settings(args), None, None
    for name in SETTING_FLAGS:
        setattr(args, name, settings[name])

    lm = load_lm(args)
    sae = load_sae_from_args(args, "ablator", lm.device)
    hook = check_sae_fits(lm, sae, args.ablator_sae_hook)
    identity = {"hook": hook, "d_sae": sae.d_sae, "neuronpedia_id": sae.neuronpedia_id}
    if run is None:
        run = StreamRun.create(
            args.output_dir,
            "cooccurrences",
            KIND,
            {**settings, **identity},
            args.shard,
            RESULTS_NAME,
            FREE_SETTINGS,
        )
    elif any(run.settings.get(k) != v for k, v in identity.items()):
        raise UsageError(
            f"the SAE loaded now ({identity}) is not the one {run.run_dir} was counting with."
        )
    accumulator = CooccurrenceAccumulator(lm, sae, hook, args.rows)
    path = run.run_prompts(accumulator, args, lm.tokenizer, state)
    p = run.progress
    print(f"counted {p.tokens_done} tokens of {p.prompts_done} prompts; wrote {path}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from sae_hacking.absorption.cooccurrence import Cooccurrences

    with Cooccurrences(args.file) as co:
        settings = co.meta.get("settings", {})
        sae = " ".join(
            str(part)
            for part in (settings.get("ablator_sae_release"), settings.get("ablator_sae_id"))
            if part
        )
        print(
            f"{co.meta.get('kind')} of {sae} at {settings.get('hook')} on "
            f"{settings.get('model')}: e = {co.e}, {co.tokens} tokens of "
            f"{co.meta.get('prompts_done')} prompts"
            + (f", rows {co.rows}" if co.rows is not None else "")
        )
        if args.i is None:
            freq = co.frequencies()
            top = freq.topk(min(args.top, co.e))
            print(f"most frequent latents (of {int((freq > 0).sum())} ever active):")
            for latent, f in zip(top.indices.tolist(), top.values.tolist(), strict=True):
                print(f"  {latent:>7}  {f:.6f}")
        elif args.j is None:
            row = co.row(args.i)
            print(f"latent {args.i}: active on {int(row[args.i])} tokens")
            top = row.double().topk(min(args.top, co.e))
            print(f"latents most often active with {args.i}:")
            for latent, count in zip(top.indices.tolist(), top.values.tolist(), strict=True):
                if count > 0:
                    print(f"  {latent:>7}  {int(count)}")
        else:
            both = co.count(args.i, args.j)
            print(f"latents {args.i} and {args.j}: both active on {both} tokens")
    return 0


def standalone_parser() -> argparse.ArgumentParser:
    return add_cooccurrence_args(
        argparse.ArgumentParser(prog="gemma_cooccurrences.py", description=HELP)
    )


def register(subparsers) -> None:
    add_cooccurrence_args(
        subparsers.add_parser(
            "cooccurrences", help="count latent co-occurrences over a text stream", description=HELP
        )
    )
    show = subparsers.add_parser(
        "cooccurrences-show",
        help="print one count, one row or the activation frequencies of a co-occurrence file",
        description="Read a cooccurrences results file without loading it densely: with I and "
        "J, the tokens where both are active; with I, latent I's row (largest counts); with "
        "neither, the most frequent latents.",
    )
    show.add_argument("file", help="cooccurrences.safetensors.zst, its .json, or the run directory")
    show.add_argument("i", type=int, nargs="?", default=None, help="latent id")
    show.add_argument("j", type=int, nargs="?", default=None, help="second latent id")
    show.add_argument("--top", type=int, default=10, help="entries listed (default %(default)s)")
    show.set_defaults(func=run_show)
