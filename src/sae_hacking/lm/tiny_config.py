"""The settings of ``sae-hacking make-tiny-model`` (torch-free; checked on construction)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sae_hacking.config import set_field, setting
from sae_hacking.errors import FieldError
from sae_hacking.lm.hook_names import parse_hook
from sae_hacking.lm.tiny import TINY_ARCHS, check_tiny_model_args

# check_tiny_model_args's parameters under this config's names.
KEYS = {"n_layers": "layers", "vocab_size": "vocab"}


@dataclass(frozen=True)
class TinyModelConfig:
    """A tiny random-weights model with a trained BPE tokenizer, optionally with calibrated
    random SAEs and generated prompts, for offline runs."""

    path: str = setting("tiny-model", help="folder to create (must not exist or be empty)")
    arch: str = setting("gemma2", help="architecture", choices=TINY_ARCHS)
    n_layers: int = setting(2, help="layers", key="layers")
    d_model: int = setting(64, help="residual width, a multiple of 16")
    vocab_size: int = setting(512, help="BPE vocabulary size, at least 300", key="vocab")
    seed: int = setting(0, help="seed of the weights, the tokenizer's text and the prompts")
    saes: tuple[str, ...] = setting(
        (),
        help="also write random JumpReLU SAEs for these hook points to PATH/saes/HOOK.safetensors "
        "(thresholds calibrated so ~5% of latents fire per token)",
    )
    sae_width: int = setting(256, help="latents per SAE")
    prompts: int = setting(0, help="also write N generated prompts to PATH/prompts.txt")

    def __post_init__(self):
        try:
            check_tiny_model_args(
                self.path,
                self.arch,
                self.n_layers,
                self.d_model,
                self.vocab_size,
                self.prompts,
                self.sae_width if self.saes else None,
            )
        except FieldError as err:
            raise err.with_keys(KEYS) from None
        set_field(self, "path", str(Path(self.path).expanduser().absolute()))
        for hook in self.saes:  # unknown hooks are refused before anything is written
            parse_hook(hook, self.n_layers, parallel=self.arch == "neox")
