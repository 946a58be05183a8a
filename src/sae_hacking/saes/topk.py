"""TopK SAE (Gao et al. 2024) with an auxiliary-k loss for dead latents.

Encoding keeps the k largest pre-activations per input (ReLU-ed); decoding is a weighted sum of
those k decoder rows. The sparse path (indices + values, decoded with one ``embedding_bag``) is
what training and analyses use, so cost scales with k, not E, in the decoder; :meth:`encode` /
:meth:`decode` are the dense reference the tests compare it with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int

from sae_hacking.errors import FieldError
from sae_hacking.saes.base import LinearSAE, SAEInfo
from sae_hacking.saes.trainable import (
    PARENT,
    TrainableSAE,
    TrainOutput,
)


def check_k(k: int, d_sae: int) -> None:
    if k <= 0:
        raise FieldError("k", f"must be positive, got {k}.")
    if k > d_sae:
        raise FieldError("k", f"({k}) must be at most the SAE's hidden dim ({d_sae}).")


def fired_mask(
    idx_BK: Int[torch.Tensor, "B K"], vals_BK: Float[torch.Tensor, "B K"], n: int
) -> Bool[torch.Tensor, " D"]:
    """Bool ``[n]``: latents with a positive activation somewhere in the batch (an index in
    the top k whose value was ReLU-ed to zero did not fire). No host sync."""
    hits = torch.zeros(n, device=idx_BK.device).index_add_(
        0, idx_BK.flatten(), (vals_BK > 0).flatten().float()
    )
    return hits > 0


def sparse_decode(
    idx_BK: Int[torch.Tensor, "B K"],
    vals_BK: Float[torch.Tensor, "B K"],
    W_dec_EM: Float[torch.Tensor, "E M"],
) -> Float[torch.Tensor, "B M"]:
    """``sum_k vals[b, k] * W_dec[idx[b, k]]`` in one kernel, gradients to both operands."""
    return F.embedding_bag(idx_BK, W_dec_EM, per_sample_weights=vals_BK, mode="sum")


def auxk_loss(
    pre_BE: Float[torch.Tensor, "B E"],
    dead_E: Bool[torch.Tensor, " E"],
    residual_BM: Float[torch.Tensor, "B M"],
    W_dec_EM: Float[torch.Tensor, "E M"],
    k_aux: int,
) -> Float[torch.Tensor, ""]:
    """Auxiliary-k loss: the top ``k_aux`` *dead* latents try to reconstruct the residual.

    Dead latents then get gradient from the errors the live ones leave, which pulls them towards
    unexplained directions instead of leaving them stuck. Normalised by the residual's own
    energy, so it is scale-free; zero when nothing is dead.
    """
    # No host sync on the dead count: with nothing dead every candidate is -inf, ReLU makes it
    # 0, and the final multiply by ``dead_E.any()`` zeroes the loss.
    masked_BE = pre_BE.masked_fill(~dead_E, float("-inf"))
    top = masked_BE.topk(min(k_aux, pre_BE.shape[-1]), dim=-1)
    target_BM = residual_BM.detach()
    approx_BM = sparse_decode(top.indices, top.values.relu(), W_dec_EM)
    err = ((approx_BM - target_BM) ** 2).sum(-1).mean()
    return err / (target_BM**2).sum(-1).mean().clamp_min(1e-12) * dead_E.any()


class TopKSAE(LinearSAE, TrainableSAE):
    """Flat TopK SAE. Parameters: ``W_enc_ME``, ``b_enc_E``, ``W_dec_EM``, ``b_dec_M``."""

    architecture = "topk"

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        k: int,
        info: SAEInfo | None = None,
        gen: torch.Generator | None = None,
    ):
        super().__init__(d_in, d_sae, info, gen=gen)
        check_k(k, d_sae)
        self.k = k

    def config(self) -> dict:
        return {**super().config(), "k": self.k}

    def encode_sparse(
        self, x_BM: Float[torch.Tensor, "B M"]
    ) -> tuple[Int[torch.Tensor, "B K"], Float[torch.Tensor, "B K"]]:
        top = self.pre_acts(x_BM).topk(self.k, dim=-1)
        return top.indices, top.values.relu()

    def encode(self, x_BM: Float[torch.Tensor, "*B M"]) -> Float[torch.Tensor, "*B E"]:
        top = self.pre_acts(x_BM).topk(self.k, dim=-1)
        acts = top.values.new_zeros(*x_BM.shape[:-1], self.d_sae)
        return acts.scatter_(-1, top.indices, top.values.relu())

    def latent_banks(self) -> dict[str, int]:
        return {PARENT: self.d_sae}

    def train_forward(
        self,
        x_BM: Float[torch.Tensor, "B M"],
        dead_E: Bool[torch.Tensor, " E"] | None = None,
        k_aux: int = 0,
    ) -> TrainOutput:
        pre_BE = self.pre_acts(x_BM)
        top = pre_BE.topk(self.k, dim=-1)
        vals_BK = top.values.relu()
        recon_BM = sparse_decode(top.indices, vals_BK, self.W_dec_EM) + self.b_dec_M
        mse = ((recon_BM - x_BM) ** 2).mean()
        out = TrainOutput(
            recon_BM, mse, mse, {PARENT: fired_mask(top.indices, vals_BK, self.d_sae)}
        )
        if dead_E is not None and k_aux > 0:
            out.aux_loss = auxk_loss(pre_BE, dead_E, x_BM - recon_BM, self.W_dec_EM, k_aux)
        return out
