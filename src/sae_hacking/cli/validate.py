"""``sae-hacking validate-absorption`` and ``sae-hacking demo``: the absorption search, end to
end, on a tiny model whose ablator SAE has planted absorption pairs
(:mod:`sae_hacking.absorption.planted.run`)."""

from __future__ import annotations

import argparse

from sae_hacking.absorption.planted.run import ValidateConfig
from sae_hacking.cli.commands import COMMANDS
from sae_hacking.cli.configargs import add_command_args, command_parser, given

EXIT_FAIL = 1  # the check failed (2 stays "bad input", as everywhere)


def _run(args: argparse.Namespace, slug: str):
    from sae_hacking.absorption.planted.run import format_evaluation, run
    from sae_hacking.config import from_flat

    run_dir, evaluation = run(from_flat(ValidateConfig, given(args, ValidateConfig)), slug)
    print(format_evaluation(evaluation))
    return run_dir, evaluation


def validate_command(args: argparse.Namespace) -> int:
    run_dir, evaluation = _run(args, "validate-absorption")
    print(f"wrote {run_dir / 'validation.json'}")
    return 0 if evaluation.passed else EXIT_FAIL


def demo_command(args: argparse.Namespace) -> int:
    run_dir, evaluation = _run(args, "demo")
    print(f"report: {run_dir / 'pairs' / 'report.html'}")
    return 0 if evaluation.passed else EXIT_FAIL


def register(subparsers) -> None:
    for name, func in (("validate-absorption", validate_command), ("demo", demo_command)):
        add_command_args(command_parser(subparsers, COMMANDS[name]), COMMANDS[name], func)
