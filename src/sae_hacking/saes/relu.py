"""Standard ReLU SAE (SAELens's ``standard`` architecture, e.g. the GPT-2 residual SAEs).

acts = relu((x - b_dec · apply_b_dec_to_input) @ W_enc + b_enc),   x̂ = acts @ W_dec + b_dec
"""

from __future__ import annotations

import torch
from jaxtyping import Float

from sae_hacking.saes.base import SAE, SAEInfo
from sae_hacking.saes.topk import unit_rows


class ReLUSAE(SAE):
    """Parameters ``W_enc_ME``, ``b_enc_E``, ``W_dec_EM``, ``b_dec_M``."""

    architecture = "relu"

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        apply_b_dec_to_input: bool = True,
        info: SAEInfo | None = None,
    ):
        super().__init__(d_in, d_sae, info)
        self.apply_b_dec_to_input = apply_b_dec_to_input
        W_dec_EM = unit_rows(d_sae, d_in)
        self.W_dec_EM = torch.nn.Parameter(W_dec_EM)
        self.W_enc_ME = torch.nn.Parameter(W_dec_EM.T.contiguous())
        self.b_enc_E = torch.nn.Parameter(torch.zeros(d_sae))
        self.b_dec_M = torch.nn.Parameter(torch.zeros(d_in))

    @property
    def W_dec(self) -> Float[torch.Tensor, "E M"]:  # noqa: N802
        return self.W_dec_EM

    def config(self) -> dict:
        return {**super().config(), "apply_b_dec_to_input": self.apply_b_dec_to_input}

    def encode(self, x_BM: Float[torch.Tensor, "*B M"]) -> Float[torch.Tensor, "*B E"]:
        x_BM = x_BM.to(self.W_enc_ME.dtype)
        if self.apply_b_dec_to_input:
            x_BM = x_BM - self.b_dec_M
        return torch.relu(x_BM @ self.W_enc_ME + self.b_enc_E)

    def decode(self, acts_BE: Float[torch.Tensor, "*B E"]) -> Float[torch.Tensor, "*B M"]:
        return acts_BE @ self.W_dec_EM + self.b_dec_M
