"""Standard ReLU SAE (SAELens's ``standard`` architecture, e.g. the GPT-2 residual SAEs).

acts = relu((x - b_dec · apply_b_dec_to_input) @ W_enc + b_enc),   x̂ = acts @ W_dec + b_dec

Training objective (:meth:`ReLUSAE.train_forward`), SAELens's ``StandardTrainingSAE`` with
``lp_norm=1``, so an ``l1_coefficient`` tuned there means the same here::

    loss = mean_B sum_M (x̂ - x)^2  +  l1_coefficient · mean_B sum_E acts_E · ||W_dec[E]||

The squared error is summed over the model dimension (not averaged, unlike the TopK-family
losses here) and the L1 penalty weights each activation by its decoder row's norm, so the SAE
cannot shrink activations by growing decoder rows. ``TrainOutput.mse`` is still the
per-element mean, for logging alongside the other architectures.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float

from sae_hacking.saes.base import LinearSAE, SAEInfo
from sae_hacking.saes.losses import penalised_output
from sae_hacking.saes.trainable import PARENT, TrainableSAE, TrainOutput


class ReLUSAE(LinearSAE, TrainableSAE):
    """Parameters ``W_enc_ME``, ``b_enc_E``, ``W_dec_EM``, ``b_dec_M``.

    ``l1_coefficient`` weights the sparsity penalty in :meth:`train_forward` (a training
    setting: not part of :meth:`config`, not saved with the weights).
    """

    architecture = "relu"

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        apply_b_dec_to_input: bool = True,
        info: SAEInfo | None = None,
        gen: torch.Generator | None = None,
        l1_coefficient: float = 0.0,
    ):
        super().__init__(d_in, d_sae, info, apply_b_dec_to_input, gen=gen)
        self.l1_coefficient = l1_coefficient

    def config(self) -> dict:
        return {**super().config(), "apply_b_dec_to_input": self.apply_b_dec_to_input}

    def encode(self, x_BM: Float[torch.Tensor, "*B M"]) -> Float[torch.Tensor, "*B E"]:
        return torch.relu(self.pre_acts(x_BM))

    def latent_banks(self) -> dict[str, int]:
        return {PARENT: self.d_sae}

    def train_forward(
        self,
        x_BM: Float[torch.Tensor, "B M"],
        dead_E: Bool[torch.Tensor, " E"] | None = None,
        k_aux: int = 0,
    ) -> TrainOutput:
        pre_BE = self.pre_acts(x_BM)
        acts_BE = pre_BE.relu()
        penalty_B = None
        if self.l1_coefficient:
            l1_B = (acts_BE * self.W_dec_EM.norm(dim=-1)).sum(-1)
            penalty_B = self.l1_coefficient * l1_B
        return penalised_output(self, x_BM, pre_BE, acts_BE, penalty_B, dead_E, k_aux)
