"""``sae-hacking make-tiny-model``: a tiny random-weights model for offline runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from sae_hacking.cli.commands import COMMANDS
from sae_hacking.cli.configargs import add_command_args, command_parser, given
from sae_hacking.lm.tiny_config import TinyModelConfig

COMMAND = COMMANDS["make-tiny-model"]


def make_tiny_model_command(args: argparse.Namespace) -> int:
    from sae_hacking.config import from_flat

    config = from_flat(TinyModelConfig, {**given(args, TinyModelConfig), "path": args.path})
    config.check_inputs()  # the folder and the sizes together, before anything is written
    from sae_hacking.lm.tiny import make_tiny_model

    def write_saes(folder: Path) -> None:
        from sae_hacking.lm.hooked import HookedLM
        from sae_hacking.lm.tiny import generate_texts
        from sae_hacking.saes.io import save_sae_checkpoint
        from sae_hacking.saes.tiny import calibrated_random_sae

        lm = HookedLM.from_pretrained(str(folder), device="cpu", dtype="float32")
        texts = generate_texts(64, seed=config.seed + 2)
        for i, hook in enumerate(config.saes):
            sae = calibrated_random_sae(lm, hook, config.sae_width, texts, seed=config.seed + i)
            save_sae_checkpoint(sae, folder / "saes" / f"{hook}.safetensors")

    path = make_tiny_model(
        config.path,
        config.arch,
        n_layers=config.n_layers,
        d_model=config.d_model,
        vocab_size=config.vocab_size,
        seed=config.seed,
        prompts=config.prompts,
        finish=write_saes if config.saes else None,
    )
    print(f"wrote a tiny {config.arch} model to {path} (use it with --model {path})")
    if config.prompts:
        print(f"wrote {config.prompts} prompts to {path / 'prompts.txt'} (--dataset-id)")
    for hook in config.saes:
        print(
            f"wrote a random {config.sae_width}-latent JumpReLU SAE for {hook} to "
            f"{path / 'saes' / f'{hook}.safetensors'}"
        )
    return 0


def register(subparsers) -> None:
    parser = command_parser(subparsers, COMMAND)
    parser.add_argument("path", help="folder to create (must not exist or be empty)")
    add_command_args(parser, COMMAND, make_tiny_model_command)
    parser.get_default("flags").add("path", "PATH")
