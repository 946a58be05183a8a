"""Hierarchical TopK SAE: E parent latents, each with two child latents.

Forward pass, per input:

1. parents: TopK over E parent pre-activations (ReLU-ed), as in a flat TopK SAE;
2. children: a child can only fire where its parent fires; of a parent's two children only the
   one with the larger pre-activation is kept (ReLU-ed);
3. reconstruction = b_dec + sum over active parents of (parent act * parent decoder row
   + winning child act * that child's decoder row).

Children are indexed ``h = C e + j`` (C = 2 children per parent, H = C E). During training an
EMA (coefficient 0.01) of the ratio child act / parent act is kept per child, over the inputs
where that child won (:meth:`HierarchicalTopKSAE.after_step`); the *adjusted* child vector
``W_dec_EM[e] + ratio[h] * W_dec_HM[h]`` is the SAE's estimate of the full child feature. The
ratios are buffers: they move with ``.to(device)`` and are saved.

Optional auxiliary loss (:func:`parent_child_cosine_loss`, weight ``aux_loss_coeff``): minus the
cosine between the parent's scaled decoder vector and parent + child contribution, averaged over
active parents per sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int

from sae_hacking.saes.base import SAEInfo, unit_rows
from sae_hacking.saes.losses import auxk_loss, fired_mask, sparse_decode
from sae_hacking.saes.topk import check_k
from sae_hacking.saes.trainable import (
    PARENT,
    Resampled,
    TrainableSAE,
    TrainOutput,
    restart_children,
)

EMA_COEFF = 0.01
CHILD = "child"
# Norm of a child decoder row at initialisation and after resampling: a small correction.
CHILD_INIT_NORM = 0.1


@dataclass(kw_only=True)
class HierarchicalTrainOutput(TrainOutput):
    """:class:`TrainOutput` plus the sparse code, which :meth:`HierarchicalTopKSAE.after_step`
    reads for the EMA of child ratios."""

    idx_BK: Int[torch.Tensor, "B K"]
    vals_BK: Float[torch.Tensor, "B K"]
    child_idx_BK: Int[torch.Tensor, "B K"]
    child_vals_BK: Float[torch.Tensor, "B K"]


class HierarchicalTopKSAE(TrainableSAE):
    """Parameters: parent ``W_enc_ME b_enc_E W_dec_EM``, child ``W_enc_MH b_enc_H W_dec_HM``,
    shared ``b_dec_M``; buffer ``child_ratio_H``.

    The flat :class:`SAE` view (``encode``/``decode``/``W_dec``) has ``d_sae = 3 E`` latents:
    parents first, then the H children. ``aux_loss_coeff`` weights the parent/child cosine
    loss in :meth:`train_forward` (a training setting: not saved with the weights).
    """

    architecture = "hierarchical"
    children_per_parent = 2

    def __init__(
        self,
        d_in: int,
        n_parents: int,
        k: int,
        info: SAEInfo | None = None,
        gen: torch.Generator | None = None,
        aux_loss_coeff: float = 0.0,
    ):
        C = self.children_per_parent
        super().__init__(d_in, (1 + C) * n_parents, info)
        check_k(k, n_parents)
        self.n_parents = n_parents
        self.k = k
        self.aux_loss_coeff = aux_loss_coeff
        W_dec_EM = unit_rows(n_parents, d_in, gen)
        W_dec_HM = CHILD_INIT_NORM * unit_rows(C * n_parents, d_in, gen)
        self.W_dec_EM = torch.nn.Parameter(W_dec_EM)
        self.W_enc_ME = torch.nn.Parameter(W_dec_EM.T.clone())
        self.b_enc_E = torch.nn.Parameter(torch.zeros(n_parents))
        self.W_dec_HM = torch.nn.Parameter(W_dec_HM)
        self.W_enc_MH = torch.nn.Parameter(F.normalize(W_dec_HM, dim=-1).T.clone())
        self.b_enc_H = torch.nn.Parameter(torch.zeros(C * n_parents))
        self.b_dec_M = torch.nn.Parameter(torch.zeros(d_in))
        self.register_buffer("child_ratio_H", torch.ones(C * n_parents))

    def config(self) -> dict:
        return {
            "architecture": self.architecture,
            "d_in": self.d_in,
            "n_parents": self.n_parents,
            "k": self.k,
        }

    @property
    def W_dec(self) -> Float[torch.Tensor, "L M"]:  # noqa: N802
        """The flat view's decoder: L = E + H = 3 E rows, parents (``W_dec_EM``) then children
        (``W_dec_HM``)."""
        return torch.cat([self.W_dec_EM, self.W_dec_HM])

    def adjusted_children_HM(self) -> Float[torch.Tensor, "H M"]:
        """Parent decoder + ratio * child decoder: each child's estimate of a whole feature."""
        parents_HM = self.W_dec_EM.repeat_interleave(self.children_per_parent, dim=0)
        return parents_HM + self.child_ratio_H[:, None] * self.W_dec_HM

    def latent_banks(self) -> dict[str, int]:
        return {PARENT: self.n_parents, CHILD: self.children_per_parent * self.n_parents}

    def levels(self) -> dict[str, int]:
        return self.latent_banks()

    def feature_vectors(self) -> Float[torch.Tensor, "L M"]:
        """Parent decoder rows, then the adjusted children (:meth:`adjusted_children_HM`)."""
        return torch.cat([self.W_dec_EM, self.adjusted_children_HM()])

    def _sparse_forward(self, x_BM: Float[torch.Tensor, "B M"]):
        C = self.children_per_parent
        xc_BM = x_BM - self.b_dec_M
        pre_BE = xc_BM @ self.W_enc_ME + self.b_enc_E
        top = pre_BE.topk(self.k, dim=-1)
        child_pre_BEC = (xc_BM @ self.W_enc_MH + self.b_enc_H).unflatten(-1, (-1, C))
        # Only the children of active parents compete.
        child_pre_BKC = child_pre_BEC.gather(1, top.indices[..., None].expand(-1, -1, C))
        best = child_pre_BKC.max(dim=-1)
        child_idx_BK = C * top.indices + best.indices
        vals_BK = top.values.relu()
        # A parent in the top k with a non-positive pre-activation does not fire, so neither
        # may its children.
        child_vals_BK = torch.where(vals_BK > 0, best.values.relu(), 0.0)
        return pre_BE, top.indices, vals_BK, child_idx_BK, child_vals_BK

    def encode_sparse(
        self, x_BM: Float[torch.Tensor, "B M"]
    ) -> tuple[
        Int[torch.Tensor, "B K"],
        Float[torch.Tensor, "B K"],
        Int[torch.Tensor, "B K"],
        Float[torch.Tensor, "B K"],
    ]:
        """Active parents, their acts, each one's winning child index (in H) and its act."""
        return self._sparse_forward(x_BM)[1:]

    def encode(self, x_BM: Float[torch.Tensor, "*B M"]) -> Float[torch.Tensor, "*B L"]:
        lead = x_BM.shape[:-1]
        idx, vals, cidx, cvals = self.encode_sparse(x_BM.reshape(-1, self.d_in))
        acts = torch.zeros(idx.shape[0], self.d_sae, dtype=x_BM.dtype, device=x_BM.device)
        acts.scatter_(1, idx, vals).scatter_(1, cidx + self.n_parents, cvals)
        return acts.reshape(*lead, self.d_sae)

    def decode(self, acts_BL: Float[torch.Tensor, "*B L"]) -> Float[torch.Tensor, "*B M"]:
        return acts_BL @ self.W_dec + self.b_dec_M

    def train_forward(
        self,
        x_BM: Float[torch.Tensor, "B M"],
        dead_E: Bool[torch.Tensor, " E"] | None = None,
        k_aux: int = 0,
    ) -> HierarchicalTrainOutput:
        pre_BE, idx_BK, vals_BK, child_idx_BK, child_vals_BK = self._sparse_forward(x_BM)
        recon_BM = (
            sparse_decode(idx_BK, vals_BK, self.W_dec_EM)
            + sparse_decode(child_idx_BK, child_vals_BK, self.W_dec_HM)
            + self.b_dec_M
        )
        mse = ((recon_BM - x_BM) ** 2).mean()
        loss = mse
        if self.aux_loss_coeff:
            cos = parent_child_cosine_loss(
                idx_BK, vals_BK, child_idx_BK, child_vals_BK, self.W_dec_EM, self.W_dec_HM
            )
            loss = loss + self.aux_loss_coeff * cos
        banks = self.latent_banks()
        fired = {
            PARENT: fired_mask(idx_BK, vals_BK, banks[PARENT]),
            CHILD: fired_mask(child_idx_BK, child_vals_BK, banks[CHILD]),
        }
        out = HierarchicalTrainOutput(
            recon_BM=recon_BM,
            loss=loss,
            mse=mse,
            fired=fired,
            idx_BK=idx_BK,
            vals_BK=vals_BK,
            child_idx_BK=child_idx_BK,
            child_vals_BK=child_vals_BK,
        )
        if dead_E is not None and k_aux > 0:
            out.aux_loss = auxk_loss(pre_BE, dead_E, x_BM - recon_BM, self.W_dec_EM, k_aux)
        return out

    def after_step(self, out: HierarchicalTrainOutput) -> None:
        self.update_child_ratios(out.vals_BK, out.child_idx_BK, out.child_vals_BK)

    @torch.no_grad()
    def resample(
        self,
        dead_Z: Int[torch.Tensor, " Z"],
        dirs_ZM: Float[torch.Tensor, "Z M"],
        gen: torch.Generator,
    ) -> Resampled:
        """Parents as a flat SAE's latents; their children start small, random and with ratio 1."""
        entries = super().resample(dead_Z, dirs_ZM, gen).entries
        children_N, child_entries = restart_children(self, dead_Z, gen, CHILD_INIT_NORM)
        self.child_ratio_H[children_N] = 1.0
        return Resampled({PARENT: dead_Z, CHILD: children_N}, {**entries, **child_entries})

    @torch.no_grad()
    def update_child_ratios(
        self,
        vals_BK: Float[torch.Tensor, "B K"],
        child_idx_BK: Int[torch.Tensor, "B K"],
        child_vals_BK: Float[torch.Tensor, "B K"],
    ) -> None:
        """EMA of child act / parent act, per child, over the inputs where that child won.

        Each child that won at least once in the batch moves 1 % of the way towards its mean
        ratio in this batch; the others keep their value.
        """
        fired_BK = (vals_BK > 0) & (child_vals_BK > 0)
        ratio_BK = torch.where(fired_BK, child_vals_BK / vals_BK.clamp_min(1e-12), 0.0)
        H = self.child_ratio_H.shape[0]
        sums_H = torch.zeros(H, device=vals_BK.device).index_add_(
            0, child_idx_BK.flatten(), ratio_BK.flatten()
        )
        counts_H = torch.zeros(H, device=vals_BK.device).index_add_(
            0, child_idx_BK.flatten(), fired_BK.flatten().float()
        )
        mean_H = sums_H / counts_H.clamp_min(1)
        new_H = (1 - EMA_COEFF) * self.child_ratio_H + EMA_COEFF * mean_H
        self.child_ratio_H.copy_(torch.where(counts_H > 0, new_H, self.child_ratio_H))


def parent_child_cosine_loss(
    idx_BK: Int[torch.Tensor, "B K"],
    vals_BK: Float[torch.Tensor, "B K"],
    child_idx_BK: Int[torch.Tensor, "B K"],
    child_vals_BK: Float[torch.Tensor, "B K"],
    W_dec_EM: Float[torch.Tensor, "E M"],
    W_dec_HM: Float[torch.Tensor, "H M"],
) -> Float[torch.Tensor, ""]:
    """Minus the mean cosine between ``p * d_parent`` and ``p * d_parent + c * d_child``.

    The mean is over active parents (parent act > 0) per sample, then over samples that have
    any. Pushing this down keeps the shared direction in the parent and the child a small
    correction, which is what makes parent latents readable as parents.
    """
    parent_BKM = vals_BK[..., None] * W_dec_EM[idx_BK]
    both_BKM = parent_BKM + child_vals_BK[..., None] * W_dec_HM[child_idx_BK]
    cos_BK = F.cosine_similarity(parent_BKM, both_BKM, dim=-1, eps=1e-8)
    active_BK = (vals_BK > 0).float()
    n_active_B = active_BK.sum(-1)
    per_sample_B = (cos_BK * active_BK).sum(-1) / n_active_B.clamp_min(1)
    has_any_B = (n_active_B > 0).float()
    return -(per_sample_B * has_any_B).sum() / has_any_B.sum().clamp_min(1)
