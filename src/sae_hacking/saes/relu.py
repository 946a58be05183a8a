"""Standard ReLU SAE (SAELens's ``standard`` architecture, e.g. the GPT-2 residual SAEs).

acts = relu((x - b_dec · apply_b_dec_to_input) @ W_enc + b_enc),   x̂ = acts @ W_dec + b_dec
"""

from __future__ import annotations

import torch
from jaxtyping import Float

from sae_hacking.saes.base import LinearSAE, SAEInfo


class ReLUSAE(LinearSAE):
    """Parameters ``W_enc_ME``, ``b_enc_E``, ``W_dec_EM``, ``b_dec_M``."""

    architecture = "relu"

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        apply_b_dec_to_input: bool = True,
        info: SAEInfo | None = None,
    ):
        super().__init__(d_in, d_sae, info, apply_b_dec_to_input)

    def config(self) -> dict:
        return {**super().config(), "apply_b_dec_to_input": self.apply_b_dec_to_input}

    def encode(self, x_BM: Float[torch.Tensor, "*B M"]) -> Float[torch.Tensor, "*B E"]:
        return torch.relu(self.pre_acts(x_BM))
