"""``sae-hacking ablate`` (and the seed's
``gemma_selective_ablate.py``): selective ablation effects, ablator SAE -> reader SAE."""

from __future__ import annotations

import argparse

from sae_hacking.absorption.ablation.identity import KIND
from sae_hacking.absorption.configs import AblateConfig
from sae_hacking.cli.configargs import Flags, OneLineParser, add_config_args, config_from
from sae_hacking.cli.cooccurrence import ALIASES, METAVARS, TITLES

ABLATE_HELP = (
    "For each prompt, zero each of the top K active latents of the ablator SAE (spliced with "
    "its error term) in turn and record how the reader SAE's latents change at the last real "
    "token. Writes ablations.safetensors.zst + ablations.json to the run directory: effects_DE "
    "(summed baseline - ablated, one row per ablated latent latents_D), ablation_counts_D, "
    "n_prompts. Shards (--shard i/n) are combined with `sae-hacking merge`."
)


def add_ablate_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    flags = Flags()
    add_config_args(
        parser,
        AblateConfig,
        flags,
        aliases=ALIASES,
        titles={**TITLES, "": "ablation"},
        metavars=METAVARS,
    )
    parser.set_defaults(func=ablate_command, flags=flags)
    return parser


def ablate_command(args: argparse.Namespace) -> int:
    from sae_hacking.absorption.ablation.run import run

    run(config_from(args, AblateConfig, KIND))
    return 0


def standalone_parser() -> argparse.ArgumentParser:
    return add_ablate_args(OneLineParser(prog="gemma_selective_ablate.py", description=ABLATE_HELP))


def register(subparsers) -> None:
    add_ablate_args(
        subparsers.add_parser(
            "ablate",
            help="selective ablation effects, ablator SAE -> reader SAE",
            description=ABLATE_HELP,
        )
    )
