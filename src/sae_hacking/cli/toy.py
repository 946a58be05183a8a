"""``sae-hacking toy`` and ``sae-hacking toy-compare`` (and the seed's ``train_topk_sae_toy.py``)."""

from __future__ import annotations

import argparse

from sae_hacking.toy.config import ARCHITECTURES, ToyConfig

DEFAULTS = ToyConfig()


def add_toy_args(parser: argparse.ArgumentParser, single_run: bool = True) -> None:
    d = DEFAULTS
    data = parser.add_argument_group("toy dataset")
    data.add_argument(
        "--dataset-num-features",
        type=int,
        default=d.dataset_num_features,
        help="A: number of parent features (default %(default)s)",
    )
    data.add_argument(
        "--model-dim",
        type=int,
        default=d.model_dim,
        help="M: dimension of the samples (default %(default)s)",
    )
    data.add_argument(
        "--perturbation_size",
        "--perturbation-size",
        dest="perturbation_size",
        type=float,
        default=d.perturbation_size,
        help="rho: norm of each child's perturbation of its parent (default %(default)s)",
    )
    data.add_argument(
        "--dataset-k",
        type=int,
        default=d.dataset_k,
        help="distinct parents active per sample (default %(default)s)",
    )
    data.add_argument(
        "--parent-alone-prob",
        type=float,
        default=d.parent_alone_prob,
        help="probability an active parent appears without a child (default %(default)s)",
    )
    data.add_argument(
        "--magnitude-range",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        default=list(d.magnitude_range),
        help="active features scaled by U(LO, HI) (default: 1 1, unit magnitudes)",
    )
    sae = parser.add_argument_group("SAE")
    if single_run:
        sae.add_argument(
            "--architecture",
            choices=ARCHITECTURES,
            default=None,
            help="SAE to train (default: topk, or hierarchical with --hierarchical)",
        )
        sae.add_argument(
            "--hierarchical",
            action="store_true",
            help="train the hierarchical TopK SAE (same as --architecture hierarchical)",
        )
        sae.add_argument(
            "--handcode-sae",
            action="store_true",
            help="set the hierarchical SAE to the ground truth before training",
        )
        sae.add_argument(
            "--init",
            choices=("tied", "linear"),
            default=d.init,
            help="tied: unit decoder rows and encoder = decoder transpose; linear: "
            "torch.nn.Linear's uniform init, as the seed had (default %(default)s)",
        )
        sae.add_argument(
            "--matryoshka-groups",
            type=int,
            nargs="+",
            default=None,
            help="Matryoshka nested group sizes, summing to --sae-hidden-dim",
        )
    sae.add_argument(
        "--sae-hidden-dim",
        type=int,
        default=d.sae_hidden_dim,
        help="E: latents (parent latents of the hierarchical SAE) (default %(default)s)",
    )
    sae.add_argument(
        "--sae-k",
        type=int,
        default=d.sae_k,
        help="k of the TopK (parents, for the hierarchical SAE) (default %(default)s)",
    )
    opt = parser.add_argument_group("training")
    opt.add_argument(
        "--max-step", type=int, default=None, help=f"training steps (default {d.max_step})"
    )
    opt.add_argument("--batch-size", type=int, default=d.batch_size, help="(default %(default)s)")
    opt.add_argument(
        "--lr", type=float, default=d.lr, help="Adam learning rate (default %(default)s)"
    )
    opt.add_argument(
        "--min-lr",
        type=float,
        default=d.min_lr,
        help="floor of the plateau LR schedule (default %(default)s)",
    )
    opt.add_argument(
        "--aux-loss-coeff",
        type=float,
        default=d.aux_loss_coeff,
        help="weight of the hierarchical parent/child cosine loss (default %(default)s)",
    )
    opt.add_argument(
        "--auxk-coeff",
        type=float,
        default=d.auxk_coeff,
        help="weight of the auxiliary-k dead-latent loss, e.g. 1/32 (default 0: off)",
    )
    opt.add_argument(
        "--dead-steps",
        type=int,
        default=d.dead_steps,
        help="steps without firing before a latent counts as dead (default %(default)s)",
    )
    opt.add_argument(
        "--resample-every",
        type=int,
        default=d.resample_every,
        help="resample dead latents every N steps, 0 disables (default %(default)s)",
    )
    opt.add_argument("--seed", type=int, default=d.seed, help="(default %(default)s)")
    run = parser.add_argument_group("run")
    run.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (default auto)")
    run.add_argument("--cuda", action="store_true", help="same as --device cuda (seed flag)")
    run.add_argument(
        "--output-dir", default=None, help="run directory (default results/<timestamp>-<slug>)"
    )
    run.add_argument("--eval-every", type=int, default=d.eval_every, help="(default %(default)s)")
    run.add_argument(
        "--log-every",
        type=int,
        default=d.log_every,
        help="TensorBoard loss cadence in steps (default %(default)s)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    if single_run:
        run.add_argument(
            "--checkpoint-every", type=int, default=d.checkpoint_every, help="(default %(default)s)"
        )
        run.add_argument("--no-plots", action="store_true", help="skip the final plots")
        run.add_argument(
            "--resume",
            default=None,
            metavar="RUN_DIR",
            help="continue an interrupted run from its last checkpoint (settings "
            "come from its args.yaml; --max-step may extend it)",
        )


def config_from_args(args: argparse.Namespace, architecture: str) -> ToyConfig:
    from sae_hacking.errors import UsageError

    if args.cuda and args.device not in (None, "cuda"):
        raise UsageError(f"--cuda contradicts --device {args.device}; give one of them.")
    values = {
        "architecture": architecture,
        "device": "cuda" if args.cuda else (args.device or "auto"),
        "magnitude_range": tuple(args.magnitude_range),
    }
    for name in (
        "dataset_num_features",
        "model_dim",
        "perturbation_size",
        "dataset_k",
        "parent_alone_prob",
        "sae_hidden_dim",
        "sae_k",
        "max_step",
        "batch_size",
        "lr",
        "min_lr",
        "aux_loss_coeff",
        "auxk_coeff",
        "dead_steps",
        "resample_every",
        "seed",
        "eval_every",
        "log_every",
        "handcode_sae",
        "init",
        "checkpoint_every",
        "matryoshka_groups",
    ):
        if hasattr(args, name):
            values[name] = getattr(args, name)
    if values["max_step"] is None:
        values["max_step"] = DEFAULTS.max_step
    if getattr(args, "no_plots", False):
        values["plots"] = False
    if values.get("matryoshka_groups"):
        values["matryoshka_groups"] = tuple(values["matryoshka_groups"])
    return ToyConfig(**values)


def run_toy(args: argparse.Namespace) -> int:
    from sae_hacking.errors import UsageError
    from sae_hacking.toy.experiment import resume_toy, run_toy_experiment

    if args.resume:
        # Only --max-step may change on resume (to extend a run); the rest comes from args.yaml.
        return resume_toy(args.resume, args.quiet, args.max_step)
    architecture = args.architecture or ("hierarchical" if args.hierarchical else "topk")
    if args.hierarchical and architecture != "hierarchical":
        raise UsageError(f"--hierarchical contradicts --architecture {architecture}.")
    run_toy_experiment(config_from_args(args, architecture), args.output_dir, quiet=args.quiet)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from sae_hacking.toy.compare import run_comparison

    run_comparison(config_from_args(args, "hierarchical"), args)
    return 0


def toy_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_toy_args(parser)
    parser.set_defaults(func=run_toy)
    return parser


def standalone_parser() -> argparse.ArgumentParser:
    return toy_parser(argparse.ArgumentParser(prog="train_topk_sae_toy.py", description=TOY_HELP))


TOY_HELP = (
    "Train an SAE on the toy hierarchical dataset (A parents, each with two perturbed children) "
    "and measure feature recovery, pair detection and absorption. Writes a run directory with "
    "args.yaml, TensorBoard events, metrics.jsonl/metrics.json, safetensors checkpoints and plots."
)
COMPARE_HELP = (
    "Train flat TopK, hierarchical TopK and Matryoshka SAEs on identical toy data with a matched "
    "latent budget over several seeds; print a side-by-side table (mean ± std) and write "
    "markdown, CSV and a comparison plot."
)


def register(subparsers) -> None:
    toy_parser(subparsers.add_parser("toy", help="train one SAE on toy data", description=TOY_HELP))
    compare = subparsers.add_parser(
        "toy-compare",
        help="flat vs hierarchical vs Matryoshka on toy data",
        description=COMPARE_HELP,
    )
    add_toy_args(compare, single_run=False)
    compare.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[1, 2, 3],
        help="seeds to train each architecture with (default 1 2 3)",
    )
    compare.add_argument(
        "--flat-k",
        type=int,
        default=None,
        help="k of the flat and Matryoshka SAEs (default: --sae-k, the "
        "hierarchical SAE's parent choices per input; 2 * --sae-k matches L0)",
    )
    compare.add_argument(
        "--jobs", type=int, default=1, help="runs trained in parallel processes (default 1)"
    )
    compare.set_defaults(func=run_compare)
