"""``sae-hacking pairs`` (and the seed's ``look_for_pairs.py``): absorption candidates from the
results of ``ablate`` and ``cooccurrences``."""

from __future__ import annotations

import argparse

from sae_hacking.absorption.configs import PairsConfig
from sae_hacking.cli.configargs import Flags, OneLineParser, add_config_args, given

HELP = (
    "Find pairs of ablated ablator latents that never (or rarely) fire together yet change the "
    "reader SAE alike: absorption candidates. Only latents ablated at least --min-ablations "
    "times are compared; effects are mean effects (sum / ablation count), compared by sign "
    "unless --skip-torch-sign; each pair also carries its decoder cosine, expected "
    "co-occurrence under independence (N f1 f2) and Neuronpedia explanations. Inputs of only "
    "some shards of a run, or counted on different datasets, are refused unless "
    "--allow-partial / --allow-other-dataset. Writes pairs.csv, histogram.png, "
    "effect_vs_decoder.png, report.html and, last, pairs.json to a new run directory."
)
METAVARS = {"just_these": "LATENT", "input_path": "PATH", "cooccurrence_path": "PATH"}
TITLES = {"": "pairs", "ablator": "ablator SAE (decoder cosines)", "run": "run"}


def add_pairs_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    flags = Flags()
    add_config_args(parser, PairsConfig, flags, skip=("resume",), titles=TITLES, metavars=METAVARS)
    parser.set_defaults(func=pairs_command, flags=flags)
    return parser


def pairs_command(args: argparse.Namespace) -> int:
    from sae_hacking.absorption.pairs.run import run
    from sae_hacking.config import from_flat

    run(from_flat(PairsConfig, given(args, PairsConfig)))
    return 0


def standalone_parser() -> argparse.ArgumentParser:
    return add_pairs_args(OneLineParser(prog="look_for_pairs.py", description=HELP))


def register(subparsers) -> None:
    add_pairs_args(
        subparsers.add_parser(
            "pairs",
            help="absorption candidates from ablation effects + co-occurrences",
            description=HELP,
        )
    )
