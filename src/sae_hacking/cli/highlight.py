"""``sae-hacking highlight`` (and the legacy ``prompt_client.py``): highlight a prompt by an SAE
latent through a running ``sae-hacking serve``; the HTML file is written on this side."""

from __future__ import annotations

import argparse

from sae_hacking.cli.commands import COMMANDS
from sae_hacking.cli.configargs import add_command_args, command_parser, given, script_parser
from sae_hacking.serve.client import HighlightConfig

COMMAND = COMMANDS["highlight"]


def add_highlight_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    return add_command_args(parser, COMMAND, highlight_command)


def highlight_command(args: argparse.Namespace) -> int:
    from sae_hacking.config import from_flat
    from sae_hacking.serve.client import request_activations, write_page

    config = from_flat(HighlightConfig, given(args, HighlightConfig))
    config.require_prompt()
    config.check_inputs()  # the output folder, before the server does the work
    path = write_page(config, request_activations(config))
    print(path)
    return 0


def standalone_parser() -> argparse.ArgumentParser:
    return add_highlight_args(script_parser(COMMAND, "prompt_client.py"))


def register(subparsers) -> None:
    add_highlight_args(command_parser(subparsers, COMMAND))
