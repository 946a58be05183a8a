"""``sae-hacking validate-absorption`` and ``sae-hacking demo``: the absorption search, end to
end, on a tiny model whose ablator SAE has planted absorption pairs
(:mod:`sae_hacking.absorption.planted.run`)."""

from __future__ import annotations

import argparse

from sae_hacking.absorption.planted.run import ValidateConfig
from sae_hacking.cli.configargs import Flags, add_config_args, given

EXIT_FAIL = 1  # the check failed (2 stays "bad input", as everywhere)

HELP = (
    "Plant absorption and check that the search finds it. Builds a tiny Gemma-2-style model, "
    "an ablator SAE at blocks.1.hook_mlp_out with planted pairs (two latents with decoder "
    "cosine >= --min-decoder-cosine that never fire on the same token, splitting one parent "
    "feature's tokens), co-occurring controls (equally similar decoders, firing together) and "
    "exclusive controls (never together, unrelated decoders), and a reader SAE at "
    "blocks.2.hook_resid_post; then runs cooccurrences -> ablate -> pairs through the same code "
    "as those commands, all in one new run directory. Passes when every planted pair is in the "
    "output and ranks above every other pair by effect cosine, and no co-occurring control is "
    "in the output. Prints precision/recall at k = the number of planted pairs for the "
    "effect-cosine ranking and for decoder cosine alone. Exit code 0: pass; 1: fail; 2: bad "
    "input."
)
DEMO_HELP = (
    "See the absorption search work: the whole pipeline (cooccurrences -> ablate -> pairs) on a "
    "tiny model with planted absorption pairs (as validate-absorption; under a minute on a "
    "2-core CPU), ending with the path of the pairs report (report.html). Exit code 0: the "
    "planted pairs were found; 1: they were not; 2: bad input."
)
TITLES = {"": "planted absorption"}


def add_validate_args(parser: argparse.ArgumentParser, demo: bool) -> argparse.ArgumentParser:
    flags = Flags()
    add_config_args(parser, ValidateConfig, flags, titles=TITLES, metavars={"output_dir": "DIR"})
    parser.set_defaults(func=demo_command if demo else validate_command, flags=flags)
    return parser


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
    add_validate_args(
        subparsers.add_parser(
            "validate-absorption",
            help="plant absorption in a tiny model's SAE and check the search finds it",
            description=HELP,
        ),
        demo=False,
    )
    add_validate_args(
        subparsers.add_parser(
            "demo",
            help="see the absorption search work on a tiny model (under a minute)",
            description=DEMO_HELP,
        ),
        demo=True,
    )
