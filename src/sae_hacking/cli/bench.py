"""``sae-hacking absorption-bench``: the absorption search scored on absorption that training
produces (:mod:`sae_hacking.absorption.bench.run`)."""

from __future__ import annotations

import argparse

from sae_hacking.absorption.bench.config import BenchConfig
from sae_hacking.cli.commands import COMMANDS
from sae_hacking.cli.configargs import add_command_args, command_parser, given


def bench_command(args: argparse.Namespace) -> int:
    from sae_hacking.absorption.bench.run import run
    from sae_hacking.config import from_flat

    run_dir, _ = run(from_flat(BenchConfig, given(args, BenchConfig)))
    print(f"wrote {run_dir / 'bench.md'} and {run_dir / 'bench.json'}")
    return 0


def register(subparsers) -> None:
    command = COMMANDS["absorption-bench"]
    add_command_args(command_parser(subparsers, command), command, bench_command)
