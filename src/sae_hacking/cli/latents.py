"""``sae-hacking latents`` (what each latent fires on, without pair counts)."""

from __future__ import annotations

import argparse

from sae_hacking.absorption.evidence.identity import KIND
from sae_hacking.absorption.evidence.options import LatentsConfig
from sae_hacking.cli.commands import COMMANDS
from sae_hacking.cli.configargs import add_command_args, command_parser, config_from

COMMAND = COMMANDS["latents"]


def run_latents(args: argparse.Namespace) -> int:
    from sae_hacking.absorption.evidence.run import run

    run(config_from(args, LatentsConfig, KIND))
    return 0


def register(subparsers) -> None:
    add_command_args(command_parser(subparsers, COMMAND), COMMAND, run_latents)
