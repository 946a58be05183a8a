"""``sae-hacking make-tiny-model``, and the flags every language-model command shares.

Later commands build their parsers from :func:`add_model_args`, :func:`add_sae_args` and
:func:`add_dataset_args` (the seed's flag names) and turn the parsed flags into objects with
:func:`load_lm`, :func:`load_sae_from_args` and :func:`text_batches`.
"""

from __future__ import annotations

import argparse

DEFAULT_MODEL = "google/gemma-2-2b"
DEFAULT_DATASET = "monology/pile-uncopyrighted"
TINY_ARCHS = ("gemma2", "gpt2", "neox", "llama", "qwen2")  # == sae_hacking.lm.tiny.TINY_ARCHS


def add_model_args(parser: argparse.ArgumentParser, default_model: str = DEFAULT_MODEL) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default=default_model,
        help="Hugging Face hub id or local model folder (default %(default)s)",
    )
    group.add_argument(
        "--device", default="auto", help="auto, cpu, cuda, cuda:N, mps (default auto)"
    )
    group.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16", "float16"),
        help="model dtype; auto = bfloat16 on CUDA, float32 elsewhere",
    )


def add_sae_args(
    parser: argparse.ArgumentParser,
    prefix: str,
    release: str | None = None,
    sae_id: str | None = None,
) -> None:
    """``--{prefix}-sae-release``, ``--{prefix}-sae-id`` and ``--{prefix}-sae-hook``.

    ``sae_id`` is the id used when the release is a release name and no id is given (a local
    path takes none); :func:`fill_default_sae_ids` applies it after parsing.
    """
    group = parser.add_argument_group(f"{prefix} SAE")
    group.add_argument(
        f"--{prefix}-sae-release",
        default=release,
        required=release is None,
        help="SAELens release name, or a local SAE path: Gemma Scope params.npz, "
        "SAELens folder or sae_hacking .safetensors"
        + (" (default %(default)s)" if release else ""),
    )
    group.add_argument(
        f"--{prefix}-sae-id",
        default=None,
        help="SAE id within the release (for a local path: a sub-path)"
        + (f" (default for a release name: {sae_id})" if sae_id else ""),
    )
    if sae_id:
        parser.set_defaults(**{f"{prefix}{_DEFAULT_ID_SUFFIX}": sae_id})
    group.add_argument(
        f"--{prefix}-sae-hook",
        default=None,
        help="hook point the SAE reads, when the SAE does not say (blocks.L.hook_...)",
    )


_DEFAULT_ID_SUFFIX = "_default_sae_id"


def fill_default_sae_ids(args: argparse.Namespace) -> argparse.Namespace:
    """Give every SAE named by a release name without ``--*-sae-id`` the default id that
    :func:`add_sae_args` was given (the default id belongs to the default release, not a file)."""
    from sae_hacking.saes.releases import looks_like_path

    for key, sae_id in list(vars(args).items()):
        if key.endswith(_DEFAULT_ID_SUFFIX):
            prefix = key[: -len(_DEFAULT_ID_SUFFIX)]
            release = getattr(args, f"{prefix}_sae_release")
            if getattr(args, f"{prefix}_sae_id") is None and not looks_like_path(release):
                setattr(args, f"{prefix}_sae_id", sae_id)
    return args


def add_dataset_args(
    parser: argparse.ArgumentParser,
    batch_size: int = 8,
    max_tokens: int = 1024,
    n_prompts: int | None = None,
) -> None:
    group = parser.add_argument_group("text")
    group.add_argument(
        "--dataset-id",
        default=DEFAULT_DATASET,
        help="HF dataset id (streamed) or a local .txt/.jsonl/.parquet file or "
        "folder (default %(default)s)",
    )
    group.add_argument("--text-column", default="text", help="(default %(default)s)")
    group.add_argument(
        "--max-tokens-in-prompt",
        "--max-tokens",
        dest="max_tokens_in_prompt",
        type=int,
        default=max_tokens,
        help="tokens per prompt including BOS; longer prompts are cut (default %(default)s)",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        default=batch_size,
        help="prompts per forward pass (default %(default)s)",
    )
    group.add_argument(
        "--n-prompts", type=int, default=n_prompts, help="rows of the dataset to use (default: all)"
    )


def load_lm(args: argparse.Namespace):
    from sae_hacking.lm.hooked import HookedLM

    return HookedLM.from_pretrained(args.model, device=args.device, dtype=args.dtype)


def load_sae_from_args(args: argparse.Namespace, prefix: str, device):
    from sae_hacking.saes.releases import load_sae

    key = prefix.replace("-", "_")
    return load_sae(
        getattr(args, f"{key}_sae_release"),
        getattr(args, f"{key}_sae_id"),
        device=device,
        hook_name=getattr(args, f"{key}_sae_hook"),
    )


def text_batches(args: argparse.Namespace, tokenizer, skip: int = 0):
    """Tokenised batches of the dataset the flags name, starting after ``skip`` rows."""
    from sae_hacking.data.text import batch_prompts, open_text_stream

    n_rows = None if args.n_prompts is None else max(args.n_prompts - skip, 0)
    rows = open_text_stream(args.dataset_id, args.text_column, skip)
    return batch_prompts(
        rows, tokenizer, args.batch_size, args.max_tokens_in_prompt, start_row=skip, n_rows=n_rows
    )


def make_tiny_model_command(args: argparse.Namespace) -> int:
    from sae_hacking.lm.arch import parse_hook
    from sae_hacking.lm.tiny import make_tiny_model

    for hook in args.saes:  # unknown hooks are refused before anything is written
        parse_hook(hook, args.layers, parallel=args.arch == "neox")

    path = make_tiny_model(
        args.path,
        args.arch,
        n_layers=args.layers,
        d_model=args.d_model,
        vocab_size=args.vocab,
        seed=args.seed,
    )
    print(f"wrote a tiny {args.arch} model to {path} (use it with --model {path})")
    if args.prompts:
        from sae_hacking.atomic import atomic_write_text
        from sae_hacking.lm.tiny import generate_texts

        texts = generate_texts(args.prompts, seed=args.seed + 1)
        atomic_write_text(path / "prompts.txt", "\n".join(texts) + "\n")
        print(f"wrote {args.prompts} prompts to {path / 'prompts.txt'} (--dataset-id)")
    if args.saes:
        _write_tiny_saes(path, args)
    return 0


def _write_tiny_saes(path, args: argparse.Namespace) -> None:
    from sae_hacking.lm.hooked import HookedLM
    from sae_hacking.lm.tiny import generate_texts
    from sae_hacking.saes.io import save_sae_checkpoint
    from sae_hacking.saes.tiny import calibrated_random_sae

    lm = HookedLM.from_pretrained(str(path), device="cpu", dtype="float32")
    texts = generate_texts(64, seed=args.seed + 2)
    for i, hook in enumerate(args.saes):
        sae = calibrated_random_sae(lm, hook, args.sae_width, texts, seed=args.seed + i)
        out = save_sae_checkpoint(sae, path / "saes" / f"{hook}.safetensors")
        print(f"wrote a random {args.sae_width}-latent JumpReLU SAE for {hook} to {out}")


def add_make_tiny_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="folder to create (must not exist or be empty)")
    parser.add_argument(
        "--arch", choices=TINY_ARCHS, default="gemma2", help="(default %(default)s)"
    )
    parser.add_argument("--layers", type=int, default=2, help="(default %(default)s)")
    parser.add_argument(
        "--d-model",
        type=int,
        default=64,
        help="residual width, a multiple of 16 (default %(default)s)",
    )
    parser.add_argument(
        "--vocab",
        type=int,
        default=512,
        help="BPE vocabulary size, at least 300 (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="(default %(default)s)")
    parser.add_argument(
        "--saes",
        nargs="+",
        default=[],
        metavar="HOOK",
        help="also write random JumpReLU SAEs for these hook points to PATH/saes/HOOK.safetensors"
        " (thresholds calibrated so ~5%% of latents fire per token)",
    )
    parser.add_argument(
        "--sae-width", type=int, default=256, help="latents per SAE (default %(default)s)"
    )
    parser.add_argument(
        "--prompts",
        type=int,
        default=0,
        help="also write N generated prompts to PATH/prompts.txt (default %(default)s)",
    )
    parser.set_defaults(func=make_tiny_model_command)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "make-tiny-model",
        help="write a tiny random-weight model with a trained tokenizer, for offline runs",
        description="Write a local Hugging Face model folder with random weights and a BPE "
        "tokenizer trained on generated text. Every LM command accepts it as --model PATH.",
    )
    add_make_tiny_model_args(parser)
