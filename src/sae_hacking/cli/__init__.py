"""The ``sae-hacking`` command line.

Each subcommand lives in a module of this package that defines ``register(subparsers)``; it adds
its parser (flags generated from the command's typed config, :mod:`sae_hacking.cli.configargs`)
and sets ``func`` (a function of the parsed namespace) and ``flags`` (key -> flag, to show errors
from below with the user's flags). Those modules import only torch-free things at import time,
so ``sae-hacking --help`` and every check of the settings answer before torch is imported.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Callable, Sequence

from sae_hacking import __version__
from sae_hacking.cli.configargs import Flags, OneLineParser
from sae_hacking.errors import EXIT_USAGE, SettingWarning, UsageError

# Order is the order of ``sae-hacking --help``.
COMMAND_MODULES = (
    "sae_hacking.cli.toy",
    "sae_hacking.cli.lm",
    "sae_hacking.cli.train",
    "sae_hacking.cli.cooccurrence",
    "sae_hacking.cli.ablate",
    "sae_hacking.cli.pairs",
    "sae_hacking.cli.merge",
    "sae_hacking.cli.validate",
    "sae_hacking.cli.serve",
    "sae_hacking.cli.highlight",
)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="sae-hacking",
        description="Sparse-autoencoder research toolkit: toy hierarchical SAEs and the "
        "absorption search on language models (latent co-occurrences, selective ablation, pairs).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def run_guarded(func: Callable[[], int | None], flags: Flags | None = None) -> int:
    """Run ``func``; a :class:`UsageError` becomes one line on stderr (settings shown as the
    command's flags) and exit code 2; a :class:`SettingWarning` one ``warning:`` line."""
    name_of = flags.name if flags is not None else lambda key: None
    show = warnings.showwarning

    def show_setting_warning(message, category, *args, **kwargs):
        if issubclass(category, SettingWarning):
            print(f"warning: {UsageError(str(message)).render(name_of)}", file=sys.stderr)
        else:
            show(message, category, *args, **kwargs)

    warnings.showwarning = show_setting_warning
    try:
        return func() or 0
    except UsageError as err:
        print(f"error: {err.render(name_of)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = show


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: args.func(args), getattr(args, "flags", None))


def script_main(
    module: str, argv: Sequence[str] | None = None, factory: str = "standalone_parser"
) -> int:
    """Entry for the seed's script paths: run one subcommand module's parser standalone
    (``factory`` names the module's function that builds it)."""
    parser = getattr(importlib.import_module(module), factory)()
    args = parser.parse_args(argv)
    return run_guarded(lambda: args.func(args), getattr(args, "flags", None))
