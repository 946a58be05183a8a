"""``sae-hacking train`` (and the seed's ``train_sae.py`` and ``train_topk_sae.py``).

Flags come from :class:`~sae_hacking.train.config.TrainConfig`; the seed's spellings are kept:
``--sae_hidden_dim``, ``--max_step``, ``--l1_coefficient``, ``--only_count_tokens``,
``--abridge N`` (train on the first N prompts after the held-out ones only: ``--n-prompts``), ``--hierarchical``
(``--architecture hierarchical``) and ``--cuda`` (``--device cuda``). ``train_sae.py`` trains the
seed's ReLU + L1 SAE unless told otherwise; ``train_topk_sae.py`` a TopK SAE.
"""

from __future__ import annotations

import argparse

from sae_hacking.cli.configargs import Flags, OneLineParser, add_config_args, config_from
from sae_hacking.cli.toy import add_seed_aliases, apply_seed_aliases
from sae_hacking.errors import UsageError
from sae_hacking.train.config import KIND, TrainConfig

ALIASES = {
    "sae_hidden_dim": ["--sae_hidden_dim"],
    "max_step": ["--max_step"],
    "l1_coefficient": ["--l1_coefficient"],
    "only_count_tokens": ["--only_count_tokens"],
    "n_prompts": ["--abridge"],
    "max_tokens_in_prompt": ["--max-tokens"],
}
TITLES = {"": "SAE and training", "model": "model", "text": "text", "run": "run"}
METAVARS = {
    "resume": "RUN_DIR",
    "activation_cache": "DIR",
    "matryoshka_groups": "SIZE",
    "n_prompts": "N",
    "hook": "HOOK",
}
# The text's settings are shared with other commands; here they count training rows, read after
# the held-out ones.
HELP_OVERRIDES = {
    "n_prompts": "training rows to use (default: all): the dataset's first `eval_prompts` rows are "
    "held out for evaluation and training reads the N rows after them; a resumed, unfinished run "
    "may change it",
}
HELP = (
    "Train an SAE (relu, topk, batchtopk, jumprelu, hierarchical, matryoshka) on a language "
    "model's activations at one hook, streamed from a text dataset through a shuffle buffer "
    "(optionally cached on disk). Logs MSE, FVU, L0, dead latents and CE loss recovered on "
    "held-out prompts to TensorBoard and metrics.jsonl; checkpoints and resumes exactly; "
    "exports sae.safetensors and, where SAELens has the architecture, a SAELens folder."
)


def train_parser(parser: argparse.ArgumentParser, default_architecture: str | None = None):
    flags = Flags()
    add_config_args(parser, TrainConfig, flags, aliases=ALIASES, titles=TITLES, metavars=METAVARS)
    for action in parser._actions:
        if action.dest in HELP_OVERRIDES:
            action.help = UsageError(HELP_OVERRIDES[action.dest]).render(flags.name)
    add_seed_aliases(parser, flags)
    parser.set_defaults(func=run_train, flags=flags, seed_architecture=default_architecture)
    return parser


def run_train(args: argparse.Namespace) -> int:
    from sae_hacking.train.run import run

    apply_seed_aliases(args, args.flags)
    seed_architecture = getattr(args, "seed_architecture", None)
    if seed_architecture and getattr(args, "resume", None) is None:
        args.architecture = getattr(args, "architecture", seed_architecture)
    run(config_from(args, TrainConfig, KIND, extendable=True))
    return 0


def standalone_parser() -> argparse.ArgumentParser:
    """The seed's ``train_topk_sae.py``."""
    return train_parser(OneLineParser(prog="train_topk_sae.py", description=HELP), "topk")


def relu_parser() -> argparse.ArgumentParser:
    """The seed's ``train_sae.py``."""
    return train_parser(OneLineParser(prog="train_sae.py", description=HELP), "relu")


def register(subparsers) -> None:
    train_parser(
        subparsers.add_parser("train", help="train an SAE on LM activations", description=HELP)
    )
