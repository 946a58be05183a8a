"""``sae-hacking cooccurrences`` and ``cooccurrences-show`` (and the legacy
``gemma_cooccurrences.py``)."""

from __future__ import annotations

import argparse

from sae_hacking.absorption.configs import CooccurrenceConfig
from sae_hacking.absorption.cooccurrence.identity import KIND
from sae_hacking.cli.commands import COMMANDS
from sae_hacking.cli.configargs import (
    Flags,
    add_command_args,
    command_parser,
    config_from,
    script_parser,
)

COMMAND = COMMANDS["cooccurrences"]


def add_cooccurrence_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    return add_command_args(parser, COMMAND, run_cooccurrences)


def run_cooccurrences(args: argparse.Namespace) -> int:
    from sae_hacking.absorption.cooccurrence.run import run

    run(config_from(args, CooccurrenceConfig, KIND))
    return 0


def run_show(args: argparse.Namespace) -> int:
    from sae_hacking.absorption.cooccurrence.accumulator import Cooccurrences

    with Cooccurrences(args.file, allow_partial=args.allow_partial) as co:
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


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _latent(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"a latent id is not negative, got {value}")
    return value


def standalone_parser() -> argparse.ArgumentParser:
    return add_cooccurrence_args(script_parser(COMMAND, "gemma_cooccurrences.py"))


def register(subparsers) -> None:
    add_cooccurrence_args(command_parser(subparsers, COMMAND))
    show = subparsers.add_parser(
        "cooccurrences-show",
        help="print one count, one row or the activation frequencies of a co-occurrence file",
        description="Read a complete cooccurrences results file without loading it densely: "
        "with I and J, the tokens where both are active; with I, latent I's row (largest "
        "counts); with neither, the most frequent latents.",
    )
    show.add_argument("file", help="cooccurrences.safetensors.zst, its .json, or the run directory")
    show.add_argument("i", type=_latent, nargs="?", default=None, help="latent id")
    show.add_argument("j", type=_latent, nargs="?", default=None, help="second latent id")
    show.add_argument(
        "--top", type=_positive_int, default=10, help="entries listed (default %(default)s)"
    )
    show.add_argument(
        "--allow-partial",
        action="store_true",
        help="read a merge of only some of a run's shards (or one shard) all the same",
    )
    show_flags = Flags()
    show_flags.add("allow_partial", "--allow-partial")
    show.set_defaults(func=run_show, flags=show_flags)
