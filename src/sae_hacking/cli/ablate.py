"""``sae-hacking ablate`` (and the seed's
``gemma_selective_ablate.py``): selective ablation effects, ablator SAE -> reader SAE."""

from __future__ import annotations

import argparse

from sae_hacking.cli.lm import (
    add_dataset_args,
    add_model_args,
    add_sae_args,
    fill_default_sae_ids,
)
from sae_hacking.runs.args import add_run_args

ABLATE_HELP = (
    "For each prompt, zero each of the top K active latents of the ablator SAE (spliced with "
    "its error term) in turn and record how the reader SAE's latents change at the last real "
    "token. Writes ablations.safetensors.zst + ablations.json to the run directory: effects_DE "
    "(summed baseline - ablated, one row per ablated latent latents_D), ablation_counts_D, "
    "n_prompts. Shards (--shard i/n) are combined with `sae-hacking merge`."
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


def add_ablate_args(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    add_sae_args(
        parser, "ablator", "gemma-scope-2b-pt-mlp-canonical", "layer_20/width_65k/canonical"
    )
    add_sae_args(
        parser, "reader", "gemma-scope-2b-pt-res-canonical", "layer_21/width_65k/canonical"
    )
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


def ablate_command(args: argparse.Namespace) -> int:
    parser = argparse.ArgumentParser()
    add_ablate_args(parser)
    defaults = vars(fill_default_sae_ids(parser.parse_args([])))
    fill_default_sae_ids(args)
    given = {key: getattr(args, key) for key in SETTINGS}
    return run_ablate(args, given, {key: defaults[key] for key in SETTINGS})


# -- running the command --------------------------------------------------------------------------------


def run_ablate(args, given: dict, defaults: dict) -> int:
    """``sae-hacking ablate``: ``given``/``defaults`` are the identifying settings as parsed and
    as the parser's defaults (a resumed run takes its saved values for flags left at default)."""
    from sae_hacking.absorption.ablation import make_setup
    from sae_hacking.absorption.ablation_run import (
        KIND,
        RESULTS_NAME,
        AblationAccumulator,
        exclusion_mask,
        read_frequencies,
    )
    from sae_hacking.cli.lm import load_lm, load_sae_from_args
    from sae_hacking.errors import UsageError
    from sae_hacking.runs.stream import StreamRun

    run = None
    if args.resume is not None:
        run = StreamRun.open(args.resume, KIND)
        for key, value in run.resolve_settings(given, defaults).items():
            setattr(args, key, value)
        args.shard = run.shard
        if run.is_complete():
            print(f"{run.results_path} is already complete; nothing to do.")
            return 0
    if args.exclude_latent_threshold is None and args.frequencies_from is not None:
        raise UsageError("--frequencies-from is only used with --exclude-latent-threshold F.")
    if args.exclude_latent_threshold is not None and not 0 <= args.exclude_latent_threshold <= 1:
        raise UsageError(
            f"--exclude-latent-threshold must be a fraction in [0, 1], got "
            f"{args.exclude_latent_threshold}."
        )
    lm = load_lm(args)
    ablator = load_sae_from_args(args, "ablator", lm.device)
    reader = load_sae_from_args(args, "reader", lm.device)
    setup = make_setup(
        lm,
        ablator,
        reader,
        args.abridge_ablations_to,
        selected=args.selected_features,
        ablator_hook=args.ablator_sae_hook,
        reader_hook=args.reader_sae_hook,
        rows_per_chunk=args.variants_per_batch,
        batch_prompts=args.batch_prompts,
    )
    # Record the hooks the SAEs read (they may come from the SAE files, not the flags).
    args.ablator_sae_hook, args.reader_sae_hook = setup.ablator_hook, setup.reader_hook
    settings = {key: getattr(args, key) for key in given}
    frequencies = None
    if args.exclude_latent_threshold is not None and args.frequencies_from is not None:
        frequencies = (*read_frequencies(args.frequencies_from, settings), args.frequencies_from)
    elif args.exclude_latent_threshold is not None and args.n_prompts is None:
        raise UsageError(
            "--exclude-latent-threshold without --frequencies-from counts frequencies in a first "
            "pass over the prompts, which needs --n-prompts N (or pass --frequencies-from FILE)."
        )
    if run is None:
        free = () if args.batch_prompts else ("batch_size",)
        run = StreamRun.create(
            args.output_dir, "ablate", KIND, settings, args.shard, RESULTS_NAME, free
        )
        print(f"run directory: {run.run_dir}")
    if args.exclude_latent_threshold is not None:
        if frequencies is None:
            frequencies = _first_pass_frequencies(args, run, lm, ablator, setup.ablator_hook)
        setup.excluded_e = exclusion_mask(
            *frequencies[:2], args.exclude_latent_threshold, ablator.d_sae, frequencies[2]
        ).to(lm.device)
        print(
            f"excluding {int(setup.excluded_e.sum())} of {ablator.d_sae} ablator latents active "
            f"on more than {args.exclude_latent_threshold:g} of tokens"
        )
    accumulator = AblationAccumulator(setup, args.method)
    state = run.load_checkpoint()
    if state is not None:
        print(f"resuming after {run.progress.rows_done} prompts of this shard")
    path = run.run_prompts(accumulator, args, lm.tokenizer, state)
    sums = accumulator.sums
    print(
        f"{sums.n_prompts} of {sums.n_prompts_seen} prompts used; {len(sums.row_of)} ablator "
        f"latents ablated; wrote {path}"
    )
    return 0


def _first_pass_frequencies(args, run, lm, ablator, hook: str):
    """Latent frequencies over all ``--n-prompts`` prompts (every shard counts the same ones,
    so all shards exclude the same latents), saved in the run directory for resuming."""
    from sae_hacking.absorption.ablation_run import (
        FREQUENCIES_FILE,
        count_frequencies,
        read_frequencies,
        save_frequencies,
    )
    from sae_hacking.runs.stream import shard_batches

    path = run.run_dir / FREQUENCIES_FILE
    if path.is_file():
        return (*read_frequencies(path), str(path))
    print(f"counting ablator latent frequencies over {args.n_prompts} prompts (first pass)")
    batches = shard_batches(
        args.dataset_id,
        args.text_column,
        lm.tokenizer,
        args.batch_size,
        args.max_tokens_in_prompt,
        args.n_prompts,
    )
    active_e, tokens = count_frequencies(lm, ablator, hook, batches)
    save_frequencies(run.run_dir, active_e, tokens, "first pass")
    return active_e, tokens, str(path)


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
