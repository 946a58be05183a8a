"""``sae-hacking merge OUT INPUTS...``: combine the results of shards (``--shard i/n``) of one
run, exactly, whatever the run's kind."""

from __future__ import annotations

import argparse

HELP = (
    "Merge the results of shards of one run (same kind, model, SAEs, hooks, dataset, prompt "
    "length, prompt count) into OUT.safetensors.zst + OUT.json, exactly: co-occurrence counts "
    "are summed, ablation effects are matched by latent and their integer sums added. Each "
    "input is a run directory, its .json sidecar or its results file; an OUT that is an "
    "existing folder receives OUT/NAME.safetensors.zst (NAME: the inputs' results name). "
    "Incompatible inputs, unfinished runs and shards that share prompts are refused; a merge "
    "of some of a run's shards is marked partial, and pairs, cooccurrences-show and ablate "
    "--frequencies-from refuse it unless given --allow-partial."
)


def run_merge(args: argparse.Namespace) -> int:
    from sae_hacking.absorption.mergers import merger_of
    from sae_hacking.runs.merge import merge_paths
    from sae_hacking.runs.record import check_merge_output
    from sae_hacking.runs.results import read_meta
    from sae_hacking.runs.shards import partial_description

    out, files = merge_paths(args.out, args.files)
    check_merge_output(out, files)  # before anything is read

    data, sidecar = merger_of(read_meta(files[0]).get("kind"))(out, files)
    print(f"wrote {data} and {sidecar}")
    partial = partial_description(read_meta(sidecar))
    if partial is not None:
        print(
            f"note: {sidecar} {partial}; it is marked partial, and pairs, cooccurrences-show "
            "and ablate --frequencies-from refuse it unless given --allow-partial."
        )
    return 0


def register(subparsers) -> None:
    merge = subparsers.add_parser(
        "merge", help="merge the results of a run's shards exactly", description=HELP
    )
    merge.add_argument(
        "out", help="output stem or .safetensors.zst path, or an existing folder to write into"
    )
    merge.add_argument(
        "files",
        nargs="+",
        metavar="INPUT",
        help="the shards' results: run directories, .json sidecars or .safetensors.zst files",
    )
    merge.set_defaults(func=run_merge)
