"""Pieces the trainable architectures share: sparse codes (which latents fired, decoding k
rows at once) and the training losses (the auxiliary-k loss for dead latents, the penalised
output of dense-code SAEs trained as SAELens trains its L1 and JumpReLU SAEs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int

from sae_hacking.saes.base import LinearSAE
from sae_hacking.saes.trainable import PARENT, TrainOutput


def fired_mask(
    idx_BK: Int[torch.Tensor, "B K"], vals_BK: Float[torch.Tensor, "B K"], n: int
) -> Bool[torch.Tensor, " _"]:
    """Bool ``[n]`` over one bank's latents: those with a positive activation somewhere in the
    batch (an index in the top k whose value was ReLU-ed to zero did not fire). No host sync."""
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


def penalised_output(
    sae: LinearSAE,
    x_BM: Float[torch.Tensor, "B M"],
    pre_BE: Float[torch.Tensor, "B E"],
    acts_BE: Float[torch.Tensor, "B E"],
    penalty_B: Float[torch.Tensor, " B"] | None,
    dead_E: Bool[torch.Tensor, " E"] | None,
    k_aux: int,
) -> TrainOutput:
    """The training output of a dense-code SAE trained as SAELens trains its L1 and JumpReLU
    SAEs: squared error summed over M and averaged over the batch, plus the mean of the
    (already weighted) sparsity ``penalty_B``; ``mse`` per element for logging."""
    recon_BM = acts_BE @ sae.W_dec_EM + sae.b_dec_M
    err_BM = (recon_BM - x_BM) ** 2
    loss = err_BM.sum(-1).mean()
    if penalty_B is not None:
        loss = loss + penalty_B.mean()
    out = TrainOutput(recon_BM, loss, err_BM.mean(), {PARENT: (acts_BE > 0).any(0)})
    if dead_E is not None and k_aux > 0:
        out.aux_loss = auxk_loss(pre_BE, dead_E, x_BM - recon_BM, sae.W_dec_EM, k_aux)
    return out


def batch_topk(pre_BE: Float[torch.Tensor, "B E"], k: int) -> Float[torch.Tensor, "B E"]:
    """BatchTopK (Bussmann et al. 2024): the ``B · k`` largest entries of the whole batch kept
    (ties: torch's top-k order), every other entry 0. ``pre_BE`` is ReLU-ed already."""
    flat = pre_BE.flatten()
    top = flat.topk(min(k * pre_BE.shape[0], flat.numel()))
    return torch.zeros_like(flat).scatter_(0, top.indices, top.values).view_as(pre_BE)
