"""``sae-hacking train`` (and the legacy ``train_sae.py`` and ``train_topk_sae.py``).

Flags come from :class:`~sae_hacking.train.config.TrainConfig`; the legacy spellings
(``--sae_hidden_dim``, ``--max_step``, ``--l1_coefficient``, ``--only_count_tokens``, ``--abridge
N`` for ``--n-prompts``, ``--hierarchical``, ``--cuda``) are in the command table
(:mod:`sae_hacking.cli.commands`). ``train_sae.py`` trains the legacy ReLU + L1 SAE unless told
otherwise; ``train_topk_sae.py`` a TopK SAE.
"""

from __future__ import annotations

import argparse

from sae_hacking.cli.commands import COMMANDS
from sae_hacking.cli.configargs import (
    add_command_args,
    apply_switches,
    command_parser,
    config_from,
    script_parser,
)
from sae_hacking.train.config import KIND, TrainConfig

COMMAND = COMMANDS["train"]


def train_parser(parser: argparse.ArgumentParser, default_architecture: str | None = None):
    add_command_args(parser, COMMAND, run_train)
    parser.set_defaults(legacy_architecture=default_architecture)
    return parser


def run_train(args: argparse.Namespace) -> int:
    from sae_hacking.train.run import run

    apply_switches(args)  # before the script's default architecture: --hierarchical wins
    legacy_architecture = getattr(args, "legacy_architecture", None)
    if legacy_architecture and getattr(args, "resume", None) is None:
        args.architecture = getattr(args, "architecture", legacy_architecture)
    run(config_from(args, TrainConfig, KIND, extendable=True))
    return 0


def standalone_parser() -> argparse.ArgumentParser:
    """The legacy ``train_topk_sae.py``."""
    return train_parser(script_parser(COMMAND, "train_topk_sae.py"), "topk")


def relu_parser() -> argparse.ArgumentParser:
    """The legacy ``train_sae.py``."""
    return train_parser(script_parser(COMMAND, "train_sae.py"), "relu")


def register(subparsers) -> None:
    train_parser(command_parser(subparsers, COMMAND))
