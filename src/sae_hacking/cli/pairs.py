"""``sae-hacking pairs`` (and the legacy ``look_for_pairs.py``): absorption candidates from the
results of ``ablate`` and ``cooccurrences``."""

from __future__ import annotations

import argparse

from sae_hacking.absorption.configs import PairsConfig
from sae_hacking.cli.commands import COMMANDS
from sae_hacking.cli.configargs import add_command_args, command_parser, given, script_parser

COMMAND = COMMANDS["pairs"]
# The legacy script keeps the legacy semantics: effects compared by sign, only pairs that never
# fire together (``sae-hacking pairs`` compares raw effects and keeps rare co-occurrence, as the
# absorption testbed showed better; README, "Absorption that training produces").
LEGACY_DEFAULTS = {"compare": "sign", "max_cooccurrence_share": 0.0}
LEGACY_HELP = {
    "compare": "compare the signs of the mean effects (sign(mean effect)), as this script always "
    "did, or the raw effects (sae-hacking pairs' default; also --skip-torch-sign) (default sign)",
    "max_cooccurrence_share": "also keep pairs active together on at most this share of the "
    "rarer latent's active tokens, in [0, 1] (sae-hacking pairs: 0.5) (default 0: only "
    "--cooccurrence-threshold counts, as this script always did)",
}


def add_pairs_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    return add_command_args(parser, COMMAND, pairs_command)


def pairs_command(args: argparse.Namespace) -> int:
    from sae_hacking.absorption.pairs.run import run
    from sae_hacking.config import from_flat

    settings = given(args, PairsConfig)
    for key, value in getattr(args, "legacy_defaults", {}).items():
        settings.setdefault(key, value)
    run(from_flat(PairsConfig, settings))
    return 0


def standalone_parser() -> argparse.ArgumentParser:
    parser = add_pairs_args(script_parser(COMMAND, "look_for_pairs.py"))
    parser.set_defaults(legacy_defaults=LEGACY_DEFAULTS)
    for action in parser._actions:
        if action.dest in LEGACY_HELP:
            action.help = LEGACY_HELP[action.dest].replace("%", "%%")
    return parser


def register(subparsers) -> None:
    add_pairs_args(command_parser(subparsers, COMMAND))
