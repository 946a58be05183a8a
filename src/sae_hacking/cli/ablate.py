"""``sae-hacking ablate`` and ``sae-hacking ablate-merge`` (and the seed's
``gemma_selective_ablate.py``): selective ablation effects, ablator SAE -> reader SAE."""

from __future__ import annotations

import argparse

from sae_hacking.cli.lm import add_dataset_args, add_model_args, add_sae_args
from sae_hacking.runs.args import add_run_args

ABLATE_HELP = (
    "For each prompt, zero each of the top K active latents of the ablator SAE (spliced with "
    "its error term) in turn and record how the reader SAE's latents change at the last real "
    "token. Writes ablations.safetensors.zst + ablations.json to the run directory: effects_DE "
    "(summed baseline - ablated, one row per ablated latent latents_D), ablation_counts_D, "
    "n_prompts. Shards (--shard i/n) are combined with `sae-hacking ablate-merge`."
)
MERGE_HELP = (
    "Merge the ablations results of disjoint shards of one run (same settings) into one "
    "results file, exactly (rows matched by latent id, integer sums)."
)
# Settings that identify what a run computes (stored in run.json; resume and merge compare
# them). ``batch_size`` is free unless --batch-prompts: prompts then run one at a time.
SETTINGS = (
    "model",
    "dtype",
    "ablator_sae_release",
    "ablator_sae_id",
    "ablator_sae_hook",
    "reader_sae_release",
    "reader_sae_id",
    "reader_sae_hook",
    "dataset_id",
    "text_column",
    "max_tokens_in_prompt",
    "n_prompts",
    "batch_size",
    "abridge_ablations_to",
    "selected_features",
    "exclude_latent_threshold",
    "frequencies_from",
    "method",
    "batch_prompts",
    "variants_per_batch",
)


# SAE ids used when the release is a release name (a local path takes no id unless given).
DEFAULT_SAE_IDS = {
    "ablator": "layer_20/width_65k/canonical",
    "reader": "layer_21/width_65k/canonical",
}


def add_ablate_args(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    add_sae_args(parser, "ablator", "gemma-scope-2b-pt-mlp-canonical")
    add_sae_args(parser, "reader", "gemma-scope-2b-pt-res-canonical")
    for action in parser._actions:  # the id defaults depend on the release: say so in --help
        for prefix, sae_id in DEFAULT_SAE_IDS.items():
            if action.dest == f"{prefix}_sae_id":
                action.help += f" (default for a release name: {sae_id})"
    add_dataset_args(parser, batch_size=5, max_tokens=100)
    group = parser.add_argument_group("ablation")
    group.add_argument(
        "--abridge-ablations-to",
        type=int,
        default=100,
        metavar="K",
        help="ablate the K active ablator latents with the largest activation summed over the "
        "prompt's real tokens (default %(default)s)",
    )
    group.add_argument(
        "--selected-features",
        type=int,
        nargs="+",
        default=None,
        metavar="LATENT",
        help="use only prompts whose top K contains one of these ablator latents (all K are "
        "then ablated); default: every prompt",
    )
    group.add_argument(
        "--exclude-latent-threshold",
        type=float,
        default=None,
        metavar="F",
        help="never ablate latents active on more than a fraction F of tokens; frequencies "
        "from --frequencies-from, else from a first pass over the same prompts",
    )
    group.add_argument(
        "--frequencies-from",
        default=None,
        metavar="FILE",
        help="co-occurrence results file (sae-hacking cooccurrences) of the ablator SAE, or a "
        "frequencies.safetensors of an earlier ablate run, for --exclude-latent-threshold",
    )
    group.add_argument(
        "--method",
        choices=("fast", "naive"),
        default="fast",
        help="fast: one forward to the ablator hook, then the K variants as one batch through "
        "the layers up to the reader only; naive: the seed's K + 2 full forwards per prompt "
        "(the reference) (default %(default)s)",
    )
    group.add_argument(
        "--variants-per-batch",
        type=int,
        default=256,
        help="ablation variants (rows) per partial forward; lower it if memory runs out "
        "(default %(default)s)",
    )
    group.add_argument(
        "--batch-prompts",
        action="store_true",
        help="fast: run the forwards up to the ablator hook of a --batch-size batch together "
        "(faster on a GPU); effects then depend on the batch's padding at float rounding "
        "level, so shards merge to the single run only approximately",
    )
    add_run_args(parser, save_frequency=10_000)
    parser.set_defaults(func=ablate_command)


def fill_default_sae_ids(args: argparse.Namespace) -> argparse.Namespace:
    """The Gemma Scope ids for release names given without ``--*-sae-id``."""
    from sae_hacking.saes.releases import looks_like_path

    for prefix, sae_id in DEFAULT_SAE_IDS.items():
        release = getattr(args, f"{prefix}_sae_release")
        if getattr(args, f"{prefix}_sae_id") is None and not looks_like_path(release):
            setattr(args, f"{prefix}_sae_id", sae_id)
    return args


def ablate_command(args: argparse.Namespace) -> int:
    from sae_hacking.absorption.ablation_run import run_ablate

    parser = argparse.ArgumentParser()
    add_ablate_args(parser)
    defaults = vars(fill_default_sae_ids(parser.parse_args([])))
    fill_default_sae_ids(args)
    given = {key: getattr(args, key) for key in SETTINGS}
    return run_ablate(args, given, {key: defaults[key] for key in SETTINGS})


def merge_command(args: argparse.Namespace) -> int:
    from sae_hacking.absorption.ablation_run import merge_ablations

    path, sidecar = merge_ablations(args.out, args.files)
    print(f"wrote {path} and {sidecar}")
    return 0


def standalone_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gemma_selective_ablate.py", description=ABLATE_HELP)
    add_ablate_args(parser)
    return parser


def register(subparsers) -> None:
    add_ablate_args(
        subparsers.add_parser(
            "ablate",
            help="selective ablation effects, ablator SAE -> reader SAE",
            description=ABLATE_HELP,
        )
    )
    merge = subparsers.add_parser(
        "ablate-merge", help="merge the shards of an ablate run", description=MERGE_HELP
    )
    merge.add_argument("out", help="output stem (OUT.safetensors.zst and OUT.json are written)")
    merge.add_argument("files", nargs="+", help="ablations.safetensors.zst of each shard")
    merge.set_defaults(func=merge_command)
