"""The settings of an absorption-testbed world (torch-free; checked on construction)."""

from __future__ import annotations

from dataclasses import dataclass

from sae_hacking.config import Config, setting
from sae_hacking.errors import FieldError

MAX_GROUPS = 26  # one per letter
# Each group has a parent direction g and an output direction o, all orthonormal; the token
# directions live in the rest of the residual, which keeps at least this many dimensions.
MIN_TOKEN_DIMS = 8


@dataclass(frozen=True)
class WorldConfig(Config):
    """A tiny Gemma-2 model whose ablator-hook activations are ``a g_group(t) + b u_t + noise``
    and whose block 1 maps each parent direction g to an output direction o."""

    groups: int = setting(16, help="groups (first letters) of the vocabulary", ge=1, le=MAX_GROUPS)
    seed: int = setting(0, help="seed of the weights, the geometry and the prompts", ge=0)
    d_model: int = setting(64, help="residual width, a multiple of 16", ge=16, le=512)
    vocab_size: int = setting(
        1024, help="BPE vocabulary size (more gives more whole-word tokens)", ge=300, le=8192
    )
    prompts: int = setting(1000, help="prompts written to prompts.txt", ge=1, le=1_000_000)
    min_words: int = setting(16, help="fewest tokens in a prompt (BOS not counted)", ge=1)
    max_words: int = setting(32, help="most tokens in a prompt (BOS not counted)", ge=1, le=500)
    parent_scale: float = setting(1.0, help="a: norm of the parent part a·g_group", gt=0)
    child_scale: float = setting(1.0, help="b: norm of the token part b·u_t", ge=0)
    noise: float = setting(
        0.1, help="norm of the context-dependent noise block 0's attention adds", ge=0
    )
    zipf_exponent: float = setting(
        1.0, help="s: a token of rank r in its group is drawn with probability ∝ r^-s", ge=0
    )
    output_scale: float = setting(
        1.0, help="norm of the output direction o_group block 1 writes for a token", gt=0
    )

    def __post_init__(self):
        super().__post_init__()
        if self.d_model % 16:
            raise FieldError("d_model", f"must be a multiple of 16, got {self.d_model}.")
        most = (self.d_model - MIN_TOKEN_DIMS) // 2
        if self.groups > most:
            raise FieldError(
                "groups",
                f"must be at most {most} at d_model {self.d_model} (each group needs its own "
                f"parent and output direction, and {MIN_TOKEN_DIMS} dimensions stay for the "
                f"tokens'), got {self.groups}.",
            )
        if self.min_words > self.max_words:
            raise FieldError(
                "min_words", f"must not exceed max_words ({self.max_words}), got {self.min_words}."
            )
