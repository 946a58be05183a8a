"""The settings of ``sae-hacking make-tiny-model`` (torch-free; checked on construction)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sae_hacking.config import Config, set_field, setting
from sae_hacking.lm.hook_names import parse_hook
from sae_hacking.lm.tiny import (
    MAX_D_MODEL,
    MAX_LAYERS,
    MAX_PROMPTS,
    MAX_VOCAB,
    MIN_VOCAB,
    TINY_ARCHS,
    check_tiny_model_args,
)


@dataclass(frozen=True)
class TinyModelConfig(Config):
    """A tiny random-weights model with a trained BPE tokenizer, optionally with calibrated
    random SAEs and generated prompts, for offline runs."""

    path: str = setting("tiny-model", help="folder to create (must not exist or be empty)")
    arch: Literal[TINY_ARCHS] = setting("gemma2", help="architecture")
    n_layers: int = setting(2, help="layers", key="layers", ge=1, le=MAX_LAYERS)
    d_model: int = setting(64, help="residual width, a multiple of 16", ge=16, le=MAX_D_MODEL)
    vocab_size: int = setting(
        512, help="BPE vocabulary size, at least 300", key="vocab", ge=MIN_VOCAB, le=MAX_VOCAB
    )
    seed: int = setting(0, help="seed of the weights, the tokenizer's text and the prompts")
    saes: tuple[str, ...] = setting(
        (),
        help="also write random JumpReLU SAEs for these hook points to PATH/saes/HOOK.safetensors "
        "(thresholds calibrated so ~5% of latents fire per token)",
    )
    sae_width: int = setting(256, help="latents per SAE")
    prompts: int = setting(
        0, help="also write N generated prompts to PATH/prompts.txt", ge=0, le=MAX_PROMPTS
    )

    def __post_init__(self):
        super().__post_init__()
        set_field(self, "path", str(Path(self.path).expanduser().absolute()))
        for hook in self.saes:  # unknown hooks are refused before anything is written
            parse_hook(hook, self.n_layers, parallel=self.arch == "neox")

    def check_inputs(self) -> None:
        """What :func:`~sae_hacking.lm.tiny.make_tiny_model` checks before any work: the folder
        (new or empty, its parent writable) and the sizes together (width a multiple of 16, at
        most 100M parameters, the SAE width). The bounds declared above come first, so its
        errors name settings under this config's keys."""
        check_tiny_model_args(
            self.path,
            self.arch,
            self.n_layers,
            self.d_model,
            self.vocab_size,
            self.prompts,
            self.sae_width if self.saes else None,
        )
