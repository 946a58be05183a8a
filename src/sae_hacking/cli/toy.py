"""``sae-hacking toy`` and ``sae-hacking toy-compare`` (and the legacy ``train_topk_sae_toy.py``).

Flags come from :class:`~sae_hacking.toy.config.ToyConfig`; the legacy spellings
(``--perturbation_size``, ``--hierarchical`` for ``--architecture hierarchical``, ``--cuda`` for
``--device cuda``) are in the command table (:mod:`sae_hacking.cli.commands`).
"""

from __future__ import annotations

import argparse

from sae_hacking.cli.commands import COMMANDS
from sae_hacking.cli.configargs import (
    add_command_args,
    command_parser,
    config_from,
    given,
    script_parser,
)
from sae_hacking.toy.config import KIND, ToyCompareConfig, ToyConfig


def toy_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    return add_command_args(parser, COMMANDS["toy"], run_toy)


def run_toy(args: argparse.Namespace) -> int:
    from sae_hacking.toy.experiment import run

    run(config_from(args, ToyConfig, KIND, extendable=True))
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from sae_hacking.config import from_flat
    from sae_hacking.toy.compare import run_comparison

    run_comparison(from_flat(ToyCompareConfig, given(args, ToyCompareConfig)))
    return 0


def standalone_parser() -> argparse.ArgumentParser:
    return toy_parser(script_parser(COMMANDS["toy"], "train_topk_sae_toy.py"))


def register(subparsers) -> None:
    toy_parser(command_parser(subparsers, COMMANDS["toy"]))
    compare = COMMANDS["toy-compare"]
    add_command_args(command_parser(subparsers, compare), compare, run_compare)
