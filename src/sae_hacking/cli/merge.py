"""``sae-hacking merge OUT FILES...``: combine the results of shards (``--shard i/n``) of one
run, exactly, whatever the run's kind."""

from __future__ import annotations

import argparse

HELP = (
    "Merge the results files of shards of one run (same kind, model, SAEs, hooks, dataset, "
    "prompt length, prompt count) into OUT.safetensors.zst + OUT.json, exactly: co-occurrence "
    "counts are summed, ablation effects are matched by latent and their integer sums added. "
    "Incompatible inputs, unfinished runs and shards that share prompts are refused."
)


def run_merge(args: argparse.Namespace) -> int:
    from sae_hacking.runs.record import check_merge_output
    from sae_hacking.runs.results import read_meta

    check_merge_output(args.out, args.files)  # before anything is read

    # Kinds whose rows are keyed by latent merge with their own function; the rest sum.
    if read_meta(args.files[0]).get("kind") == "ablations":
        from sae_hacking.absorption.ablation_stream import merge_ablations as merge
    else:
        from sae_hacking.runs.merge import merge_results as merge
    data, sidecar = merge(args.out, args.files)
    print(f"wrote {data} and {sidecar}")
    return 0


def register(subparsers) -> None:
    merge = subparsers.add_parser(
        "merge", help="merge the results of a run's shards exactly", description=HELP
    )
    merge.add_argument("out", help="output stem or .safetensors.zst path")
    merge.add_argument("files", nargs="+", help="results files (.safetensors.zst) of the shards")
    merge.set_defaults(func=run_merge)
