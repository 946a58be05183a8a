"""``sae-hacking pairs`` (and the legacy ``look_for_pairs.py``): absorption candidates from the
results of ``ablate`` and ``cooccurrences``."""

from __future__ import annotations

import argparse

from sae_hacking.absorption.configs import PairsConfig
from sae_hacking.cli.commands import COMMANDS
from sae_hacking.cli.configargs import add_command_args, command_parser, given, script_parser

COMMAND = COMMANDS["pairs"]


def add_pairs_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    return add_command_args(parser, COMMAND, pairs_command)


def pairs_command(args: argparse.Namespace) -> int:
    from sae_hacking.absorption.pairs.run import run
    from sae_hacking.config import from_flat

    run(from_flat(PairsConfig, given(args, PairsConfig)))
    return 0


def standalone_parser() -> argparse.ArgumentParser:
    return add_pairs_args(script_parser(COMMAND, "look_for_pairs.py"))


def register(subparsers) -> None:
    add_pairs_args(command_parser(subparsers, COMMAND))
