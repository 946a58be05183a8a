"""``sae-hacking latents-report RUN``: browse every latent's evidence as a folder of pages."""

from __future__ import annotations

import argparse

from sae_hacking.cli.configargs import Flags

PER_PAGE = 128  # reports.latents.PER_PAGE (not imported: the CLI starts without it)


def run_latents_report(args: argparse.Namespace) -> int:
    from sae_hacking.absorption.evidence.report import write_report

    index = write_report(
        args.run,
        output_dir=args.output_dir,
        latents_per_page=args.latents_per_page,
        latents=args.latents,
        explanations_file=args.explanations_file,
        allow_partial=args.allow_partial,
        ablations=args.ablations,
        reader_evidence=args.reader_evidence,
    )
    print(index)
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _latent(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"a latent index is not negative, got {value}")
    return value


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "latents-report",
        help="browse every latent's evidence: an index and pages of examples",
        description="Write a folder of self-contained HTML pages from a cooccurrences or latents "
        "run with evidence: index.html lists every latent (searchable, sortable) and each "
        "page-NNNNN.html shows --latents-per-page latents in full (top examples in context, "
        "quantile bands, histogram, logit lens and, for cooccurrences runs, the latents each "
        "co-occurs with most; with --ablations, the reader latents each ablated latent moves "
        "most). The folder opens from disk with no network. Prints index.html's path.",
    )
    parser.add_argument("run", help="run directory (or its results file or .json sidecar)")
    parser.add_argument(
        "--output-dir",
        default=None,
        help="a new or empty folder for the report (default: RUN/latents-report)",
    )
    parser.add_argument(
        "--latents-per-page",
        type=_positive_int,
        default=PER_PAGE,
        metavar="N",
        help="latents on each page (default %(default)s)",
    )
    parser.add_argument(
        "--latents",
        type=_latent,
        nargs="+",
        default=None,
        metavar="I",
        help="only these latents (and only their pages)",
    )
    parser.add_argument(
        "--explanations-file",
        default=None,
        help="explanations as a JSON list of {index, description} (Neuronpedia's export "
        "format); default: Neuronpedia's, when the SAE has a Neuronpedia id",
    )
    parser.add_argument(
        "--ablations",
        default=None,
        metavar="ABLATE_RUN",
        help="an ablate run of RUN's SAE (as ablator): each latent it ablated shows the reader "
        "latents its ablation moves most, up and down (mean effect), and the index how often "
        "it was ablated",
    )
    parser.add_argument(
        "--reader-evidence",
        default=None,
        metavar="READER_RUN",
        help="a latents or cooccurrences run of the ablate run's reader SAE: label each reader "
        "with its count, density and top tokens (default: the tokens its logit lens promotes)",
    )
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="read a merge of only some of a run's shards (or one shard) all the same",
    )
    flags = Flags()
    keys = ("output_dir", "latents_per_page", "latents", "explanations_file", "allow_partial")
    for key in (*keys, "ablations", "reader_evidence"):
        flags.add(key, "--" + key.replace("_", "-"))
    parser.set_defaults(func=run_latents_report, flags=flags)
