"""The ``sae-hacking`` command line.

Each subcommand lives in a module of this package that defines ``register(subparsers)``; it adds
its parser and sets ``func`` to a function taking the parsed namespace. Those modules import only
argparse-level things at import time, so ``sae-hacking --help`` starts fast; torch, transformers
and sae-lens are imported inside the functions that run a command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from sae_hacking import __version__
from sae_hacking.errors import EXIT_USAGE, UsageError

# Order is the order of ``sae-hacking --help``.
COMMAND_MODULES = (
    "sae_hacking.cli.toy",
    "sae_hacking.cli.lm",
    "sae_hacking.cli.cooccurrence",
    "sae_hacking.cli.ablate",
    "sae_hacking.cli.merge",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sae-hacking",
        description="Sparse-autoencoder research toolkit: toy hierarchical SAEs, absorption "
        "search on language models, prompt highlighting, SAE training.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def run_guarded(func: Callable[[], int | None]) -> int:
    """Run ``func``; a :class:`UsageError` becomes one line on stderr and exit code 2."""
    try:
        return func() or 0
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: args.func(args))


def script_main(module: str, argv: Sequence[str] | None = None) -> int:
    """Entry for the seed's script paths: run one subcommand module's parser standalone."""
    mod = importlib.import_module(module)
    parser = mod.standalone_parser()
    args = parser.parse_args(argv)
    return run_guarded(lambda: args.func(args))
