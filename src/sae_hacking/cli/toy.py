"""``sae-hacking toy`` and ``sae-hacking toy-compare`` (and the seed's ``train_topk_sae_toy.py``).

Flags come from :class:`~sae_hacking.toy.config.ToyConfig`; the seed's spellings are kept:
``--perturbation_size``, ``--hierarchical`` (``--architecture hierarchical``) and ``--cuda``
(``--device cuda``).
"""

from __future__ import annotations

import argparse

from sae_hacking.cli.configargs import Flags, OneLineParser, add_config_args, config_from, given
from sae_hacking.errors import FieldError
from sae_hacking.toy.config import KIND, ToyCompareConfig, ToyConfig

ALIASES = {"perturbation_size": ["--perturbation_size"]}
METAVARS = {"magnitude_range": ("LO", "HI"), "resume": "RUN_DIR", "seeds": "SEED"}
TITLES = {"": "toy dataset, SAE and training", "run": "run", "base": "toy dataset, SAE, training"}
# Settings that a comparison chooses itself, per architecture.
COMPARE_SKIPS = ("architecture", "handcode_sae", "init", "matryoshka_groups", "resume", "plots")

TOY_HELP = (
    "Train an SAE on the toy hierarchical dataset (A parents, each with two perturbed children) "
    "and measure feature recovery, pair detection and absorption. Writes a run directory with "
    "run.json, args.yaml, TensorBoard events, metrics.jsonl/metrics.json, safetensors "
    "checkpoints and plots."
)
COMPARE_HELP = (
    "Train flat TopK, hierarchical TopK and Matryoshka SAEs on identical toy data with a matched "
    "latent budget over several seeds; print a side-by-side table (mean ± std) and write "
    "markdown, CSV and a comparison plot."
)


def add_seed_aliases(parser: argparse.ArgumentParser, flags: Flags) -> None:
    group = parser.add_argument_group("the seed's flags")
    group.add_argument(
        "--hierarchical",
        action="store_true",
        help="train the hierarchical TopK SAE (same as --architecture hierarchical)",
    )
    group.add_argument("--cuda", action="store_true", help="same as --device cuda")


def apply_seed_aliases(args: argparse.Namespace, flags: Flags) -> None:
    """``--hierarchical`` and ``--cuda`` as the settings they stand for."""
    for alias, key, value in (
        ("hierarchical", "architecture", "hierarchical"),
        ("cuda", "device", "cuda"),
    ):
        if getattr(args, alias, False):
            if getattr(args, key, value) != value:
                raise FieldError(key, f"{getattr(args, key)} contradicts --{alias}; give one.")
            setattr(args, key, value)


def toy_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    flags = Flags()
    add_config_args(parser, ToyConfig, flags, aliases=ALIASES, titles=TITLES, metavars=METAVARS)
    add_seed_aliases(parser, flags)
    parser.set_defaults(func=run_toy, flags=flags)
    return parser


def run_toy(args: argparse.Namespace) -> int:
    from sae_hacking.toy.experiment import run

    apply_seed_aliases(args, args.flags)
    run(config_from(args, ToyConfig, KIND, extendable=True))
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from sae_hacking.config import from_flat
    from sae_hacking.toy.compare import run_comparison

    apply_seed_aliases(args, args.flags)
    run_comparison(from_flat(ToyCompareConfig, given(args, ToyCompareConfig)))
    return 0


def standalone_parser() -> argparse.ArgumentParser:
    return toy_parser(OneLineParser(prog="train_topk_sae_toy.py", description=TOY_HELP))


def register(subparsers) -> None:
    toy_parser(subparsers.add_parser("toy", help="train one SAE on toy data", description=TOY_HELP))
    compare = subparsers.add_parser(
        "toy-compare",
        help="flat vs hierarchical vs Matryoshka on toy data",
        description=COMPARE_HELP,
    )
    flags = Flags()
    add_config_args(
        compare,
        ToyCompareConfig,
        flags,
        aliases=ALIASES,
        skip=COMPARE_SKIPS,
        titles=TITLES | {"": "comparison"},
        metavars=METAVARS,
    )
    compare.add_argument_group("the seed's flags").add_argument(
        "--cuda", action="store_true", help="same as --device cuda"
    )
    compare.set_defaults(func=run_compare, flags=flags)
