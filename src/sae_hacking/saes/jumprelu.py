"""JumpReLU SAE (Rajamanoharan et al. 2024), the architecture of Gemma Scope.

    pre  = (x - b_dec · apply_b_dec_to_input) @ W_enc + b_enc
    acts = pre · 1[pre > max(threshold, 0)]
    x̂    = acts @ W_dec + b_dec

With a non-negative threshold (every trained one: thresholds are learnt as exp(log θ)) the
activation is Gemma Scope's ``pre · 1[pre > θ]``; the ``max(θ, 0)`` reproduces the ReLU that
the Gemma Scope reference code and SAELens apply before the mask, so a negative threshold
behaves as it does there. Gemma Scope does not subtract ``b_dec`` from the input; SAELens-format
JumpReLU SAEs may (``apply_b_dec_to_input``).
"""

from __future__ import annotations

import torch
from jaxtyping import Float

from sae_hacking.saes.base import LinearSAE, SAEInfo


class JumpReLUSAE(LinearSAE):
    """Parameters ``W_enc_ME``, ``b_enc_E``, ``W_dec_EM``, ``b_dec_M``, ``threshold_E``."""

    architecture = "jumprelu"

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        apply_b_dec_to_input: bool = False,
        info: SAEInfo | None = None,
    ):
        super().__init__(d_in, d_sae, info, apply_b_dec_to_input)
        self.threshold_E = torch.nn.Parameter(torch.zeros(d_sae))

    def config(self) -> dict:
        return {**super().config(), "apply_b_dec_to_input": self.apply_b_dec_to_input}

    def encode(self, x_BM: Float[torch.Tensor, "*B M"]) -> Float[torch.Tensor, "*B E"]:
        pre_BE = self.pre_acts(x_BM)
        return pre_BE * (pre_BE > self.threshold_E.clamp(min=0))
