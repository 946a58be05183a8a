"""``sae-hacking highlight`` (and the seed's ``prompt_client.py``): highlight a prompt by an SAE
latent through a running ``sae-hacking serve``; the HTML file is written on this side."""

from __future__ import annotations

import argparse

from sae_hacking.cli.configargs import Flags, OneLineParser, add_config_args, given
from sae_hacking.serve.client import HighlightConfig

HELP = (
    "Send a prompt to a running `sae-hacking serve` and write a self-contained HTML file "
    "(tokens coloured by how strongly the latent fires, hover for values and top latents) into "
    "--output-dir on this machine; prints its path."
)


def add_highlight_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    flags = Flags()
    add_config_args(parser, HighlightConfig, flags, titles={"": "highlight"})
    parser.set_defaults(func=highlight_command, flags=flags)
    return parser


def highlight_command(args: argparse.Namespace) -> int:
    from sae_hacking.config import from_flat
    from sae_hacking.serve.client import request_activations, write_page

    config = from_flat(HighlightConfig, given(args, HighlightConfig))
    config.require_prompt()
    config.check_output_dir()  # before the server does the work
    path = write_page(config, request_activations(config))
    print(path)
    return 0


def standalone_parser() -> argparse.ArgumentParser:
    return add_highlight_args(OneLineParser(prog="prompt_client.py", description=HELP))


def register(subparsers) -> None:
    add_highlight_args(
        subparsers.add_parser(
            "highlight", help="highlight a prompt through a running server", description=HELP
        )
    )
