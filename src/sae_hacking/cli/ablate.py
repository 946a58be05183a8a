"""``sae-hacking ablate`` (and the legacy
``gemma_selective_ablate.py``): selective ablation effects, ablator SAE -> reader SAE."""

from __future__ import annotations

import argparse

from sae_hacking.absorption.ablation.identity import KIND
from sae_hacking.absorption.configs import AblateConfig
from sae_hacking.cli.commands import COMMANDS
from sae_hacking.cli.configargs import (
    add_command_args,
    command_parser,
    config_from,
    script_parser,
)

COMMAND = COMMANDS["ablate"]


def add_ablate_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    return add_command_args(parser, COMMAND, ablate_command)


def ablate_command(args: argparse.Namespace) -> int:
    from sae_hacking.absorption.ablation.run import run

    run(config_from(args, AblateConfig, KIND))
    return 0


def standalone_parser() -> argparse.ArgumentParser:
    return add_ablate_args(script_parser(COMMAND, "gemma_selective_ablate.py"))


def register(subparsers) -> None:
    add_ablate_args(command_parser(subparsers, COMMAND))
