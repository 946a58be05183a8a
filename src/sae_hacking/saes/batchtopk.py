"""BatchTopK SAE (Bussmann et al. 2024): flat, the ``B · k`` largest ReLU-ed pre-activations of
the whole batch are kept in training (k active latents per input on average).

It is a Matryoshka BatchTopK SAE with a single group, so it shares that class's training step,
auxiliary-k loss and inference threshold (an EMA of the smallest kept activation, which
replaces the batch selection once set so that an input's code does not depend on its
batch-mates). Exported for SAELens as that inference form, a JumpReLU SAE whose every latent has
the global threshold, as SAELens saves its own BatchTopK SAEs.
"""

from __future__ import annotations

import torch

from sae_hacking.errors import FieldError
from sae_hacking.saes.base import SAEInfo
from sae_hacking.saes.matryoshka import MatryoshkaBatchTopKSAE
from sae_hacking.saes.trainable import PARENT


class BatchTopKSAE(MatryoshkaBatchTopKSAE):
    """Parameters as :class:`~sae_hacking.saes.topk.TopKSAE`; buffer ``threshold`` (scalar;
    negative until the first training step has set it)."""

    architecture = "batchtopk"

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        k: int,
        info: SAEInfo | None = None,
        gen: torch.Generator | None = None,
    ):
        if d_sae <= 0:
            raise FieldError("d_sae", f"must be positive, got {d_sae}.")
        super().__init__(d_in, [d_sae], k, info, gen)

    def config(self) -> dict:
        return {
            "architecture": self.architecture,
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "k": self.k,
        }

    def levels(self) -> dict[str, int]:
        return {PARENT: self.d_sae}
