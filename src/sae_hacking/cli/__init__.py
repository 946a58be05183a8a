"""The ``sae-hacking`` command line.

Each subcommand lives in a module of this package that defines ``register(subparsers)``; it adds
its parser (flags generated from the command's typed config, :mod:`sae_hacking.cli.configargs`)
and sets ``func`` (a function of the parsed namespace) and ``flags`` (key -> flag, to show errors
from below with the user's flags). Those modules import only torch-free things at import time,
so ``sae-hacking --help`` and every check of the settings answer before torch is imported.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import select
import sys
import time
import warnings
from collections.abc import Callable, Sequence

from sae_hacking import __version__
from sae_hacking.cli.configargs import Flags, OneLineParser
from sae_hacking.errors import EXIT_USAGE, SettingWarning, UsageError

# What a shell reports for a command killed by SIGPIPE (128 + 13), as `seq 1e6 | head -1` does:
# the reader of stdout stopped reading, which is not an error of this command.
EXIT_BROKEN_PIPE = 141
RANK0_GRACE_S = 2.0

# Order is the order of ``sae-hacking --help``.
COMMAND_MODULES = (
    "sae_hacking.cli.toy",
    "sae_hacking.cli.lm",
    "sae_hacking.cli.train",
    "sae_hacking.cli.cooccurrence",
    "sae_hacking.cli.latents",
    "sae_hacking.cli.latents_report",
    "sae_hacking.cli.ablate",
    "sae_hacking.cli.pairs",
    "sae_hacking.cli.tools",
    "sae_hacking.cli.merge",
    "sae_hacking.cli.validate",
    "sae_hacking.cli.bench",
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
    command's flags) and exit code 2; a :class:`SettingWarning` one ``warning:`` line; stdout
    closed by its reader (``... | head``) a quiet exit with :data:`EXIT_BROKEN_PIPE`."""
    name_of = flags.name if flags is not None else lambda key: None
    show = warnings.showwarning

    def show_setting_warning(message, category, *args, **kwargs):
        if issubclass(category, SettingWarning):
            if _shown_here(""):  # under torchrun, every rank warns alike: rank 0 says it
                print(f"warning: {UsageError(str(message)).render(name_of)}", file=sys.stderr)
        else:
            show(message, category, *args, **kwargs)

    warnings.showwarning = show_setting_warning
    try:
        code = func() or 0
        if sys.stdout is not None:  # None when started with stdout closed (`>&-`)
            sys.stdout.flush()  # a reader that has gone shows here, not as a traceback at exit
        return code
    except BrokenPipeError:
        if not _stdout_closed():
            raise
        # The interpreter flushes stdout once more at exit; let that go nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    except UsageError as err:
        line = err.render(name_of)
        if _shown_here(line):
            print(f"error: {line}", file=sys.stderr)
        else:
            # Rank 0 prints this line; torchrun stops the job when the first rank ends, so
            # leave rank 0 the time to print it (and to be the failure torchrun names).
            time.sleep(RANK0_GRACE_S)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = show


def _stdout_closed() -> bool:
    """Whether stdout is a pipe or socket whose reader has gone (a broken pipe elsewhere, such
    as a network connection, is a bug to show)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no file descriptor, or no poll()
        return False


def _shown_here(line: str) -> bool:
    """Under torchrun, one error line per job, not one per rank (torch-free)."""
    from sae_hacking.runs.distributed import shown_on_this_rank

    return shown_on_this_rank(line)


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``; under torchrun only rank 0 prints its errors and --help
    (every rank parses the same command line)."""
    if _shown_here(""):
        return parser.parse_args(argv)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    return run_guarded(lambda: args.func(args), getattr(args, "flags", None))


def script_main(
    module: str, argv: Sequence[str] | None = None, factory: str = "standalone_parser"
) -> int:
    """Entry for the legacy script paths: run one subcommand module's parser standalone
    (``factory`` names the module's function that builds it)."""
    parser = getattr(importlib.import_module(module), factory)()
    args = parse(parser, argv)
    return run_guarded(lambda: args.func(args), getattr(args, "flags", None))
