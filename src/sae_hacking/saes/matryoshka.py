"""Matryoshka BatchTopK SAE (Bussmann et al. 2025; Nabeshima 2024).

The latents are split into nested groups; prefix ``[0, end_g)`` must reconstruct the input on its
own, for every group boundary ``end_g``, and the loss is the mean of those prefix losses. Early
latents therefore have to carry general (parent-like) features and cannot rely on later latents
to absorb them, which is why this architecture anchors the low-absorption end of comparisons.

Activation is BatchTopK: the ``B * k`` largest ReLU-ed pre-activations of the whole batch are
kept, so the number of active latents varies per input and averages k. At inference a single
threshold (EMA of the smallest kept activation during training) replaces the batch selection,
so an input's code does not depend on its batch-mates.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Bool, Float

from sae_hacking.errors import FieldError
from sae_hacking.saes.base import LinearSAE, SAEInfo
from sae_hacking.saes.losses import auxk_loss, batch_topk
from sae_hacking.saes.topk import check_k
from sae_hacking.saes.trainable import (
    PARENT,
    TrainableSAE,
    TrainOutput,
)

THRESHOLD_EMA = 0.01


class MatryoshkaBatchTopKSAE(LinearSAE, TrainableSAE):
    """Parameters as :class:`~sae_hacking.saes.topk.TopKSAE`; buffer ``threshold`` (scalar;
    negative until the first training step has set it).

    One latent bank (all E latents compete in one BatchTopK); for analyses the first group is
    the ``"parent"`` level and the other groups together the ``"child"`` level.
    """

    architecture = "matryoshka"

    def __init__(
        self,
        d_in: int,
        group_sizes: Sequence[int],
        k: int,
        info: SAEInfo | None = None,
        gen: torch.Generator | None = None,
    ):
        group_sizes = [int(g) for g in group_sizes]
        if not group_sizes or min(group_sizes) <= 0:
            raise FieldError("group_sizes", f"must be positive integers, got {group_sizes}.")
        d_sae = sum(group_sizes)
        super().__init__(d_in, d_sae, info, gen=gen)
        check_k(k, d_sae)
        self.k = k
        self.group_sizes = group_sizes
        self.register_buffer("threshold", torch.tensor(-1.0))

    def config(self) -> dict:
        return {
            "architecture": self.architecture,
            "d_in": self.d_in,
            "group_sizes": list(self.group_sizes),
            "k": self.k,
        }

    def pre_acts(self, x_BM: Float[torch.Tensor, "*B M"]) -> Float[torch.Tensor, "*B E"]:
        return super().pre_acts(x_BM).relu()

    def batch_topk(self, pre_BE: Float[torch.Tensor, "B E"]) -> Float[torch.Tensor, "B E"]:
        return batch_topk(pre_BE, self.k)

    def encode(self, x_BM: Float[torch.Tensor, "*B M"]) -> Float[torch.Tensor, "*B E"]:
        pre = self.pre_acts(x_BM)
        if self.threshold < 0:
            return self.batch_topk(pre.reshape(-1, self.d_sae)).view_as(pre)
        return pre * (pre > self.threshold)

    def prefix_recons_GBM(
        self, acts_BE: Float[torch.Tensor, "B E"]
    ) -> Float[torch.Tensor, "G B M"]:
        """Reconstruction from each nested prefix; the last one is the full reconstruction."""
        parts = [
            acts_BR @ W_dec_RM  # R: one group's range of E
            for acts_BR, W_dec_RM in zip(
                acts_BE.split(self.group_sizes, dim=-1),
                self.W_dec_EM.split(self.group_sizes, dim=0),
                strict=True,
            )
        ]
        return torch.stack(parts).cumsum(0) + self.b_dec_M

    def latent_banks(self) -> dict[str, int]:
        return {PARENT: self.d_sae}

    def levels(self) -> dict[str, int]:
        first = self.group_sizes[0]
        return {PARENT: first, "child": self.d_sae - first}

    def train_forward(
        self,
        x_BM: Float[torch.Tensor, "B M"],
        dead_E: Bool[torch.Tensor, " E"] | None = None,
        k_aux: int = 0,
    ) -> TrainOutput:
        pre_BE = self.pre_acts(x_BM)
        acts_BE = self.batch_topk(pre_BE)
        recons_GBM = self.prefix_recons_GBM(acts_BE)
        mse_G = ((recons_GBM - x_BM) ** 2).mean(dim=(1, 2))
        recon_BM = recons_GBM[-1]
        with torch.no_grad():
            kept = acts_BE[acts_BE > 0]
            if kept.numel():
                smallest = kept.min()
                if self.threshold < 0:
                    self.threshold.copy_(smallest)
                else:
                    self.threshold.lerp_(smallest, THRESHOLD_EMA)
        out = TrainOutput(recon_BM, mse_G.mean(), mse_G[-1], {PARENT: (acts_BE > 0).any(0)})
        if dead_E is not None and k_aux > 0:
            out.aux_loss = auxk_loss(pre_BE, dead_E, x_BM - recon_BM, self.W_dec_EM, k_aux)
        return out
