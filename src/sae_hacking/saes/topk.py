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
from sae_hacking.saes.losses import auxk_loss, fired_mask, sparse_decode
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


class _GatherPre(torch.autograd.Function):
    """``pre_BE.gather(1, idx_BK)`` for ``pre = (x - b_dec) @ W_enc + b_enc`` computed without
    gradients, with the gradients of that formula at the gathered entries only.

    A TopK SAE uses k of E pre-activations per input, so the dense backward (two B x E x M
    matmuls through ``pre``) is almost all zeros: here the encoder's gradient is one sparse
    (E x B, k nonzeros a column) times dense product, ``b_enc``'s an index_add, and ``b_dec``'s
    ``-W_enc @ grad(b_enc)`` (the sum over the batch of the gradient of ``x - b_dec``). The
    forward values are bit for bit those of the dense path (the same ``pre``)."""

    @staticmethod
    def forward(ctx, pre_BE, x_BM, b_dec_M, W_enc_ME, b_enc_E, idx_BK):
        ctx.save_for_backward(x_BM, b_dec_M, W_enc_ME, idx_BK)
        return pre_BE.gather(1, idx_BK)

    @staticmethod
    def backward(ctx, grad_BK):
        x_BM, b_dec_M, W_enc_ME, idx_BK = ctx.saved_tensors
        (B, K), E = idx_BK.shape, W_enc_ME.shape[1]
        flat_N, grad_N = idx_BK.flatten(), grad_BK.flatten()
        grad_b_enc_E = grad_BK.new_zeros(E).index_add_(0, flat_N, grad_N)
        rows_N = torch.arange(B, device=idx_BK.device).repeat_interleave(K)
        grad_EB = torch.sparse_coo_tensor(
            torch.stack([flat_N, rows_N]), grad_N, (E, B), check_invariants=False
        )
        grad_W_enc = torch.sparse.mm(grad_EB, x_BM - b_dec_M).T
        grad_x = None
        if ctx.needs_input_grad[1]:
            grad_x = F.embedding_bag(idx_BK, W_enc_ME.T, per_sample_weights=grad_BK, mode="sum")
        grad_b_dec = -(W_enc_ME @ grad_b_enc_E) if ctx.needs_input_grad[2] else None
        return None, grad_x, grad_b_dec, grad_W_enc, grad_b_enc_E, None


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
        """The loss with gradients only where latents are used (:class:`_GatherPre`); the same
        loss, and up to rounding the same gradients, as :meth:`train_forward_dense`."""
        if not self.input_transform.is_identity:
            return self.train_forward_dense(x_BM, dead_E, k_aux)
        x_BM = x_BM.to(self.W_enc_ME.dtype)
        with torch.no_grad():
            pre_BE = torch.addmm(self.b_enc_E, x_BM - self.b_dec_M, self.W_enc_ME)
        idx_BK = pre_BE.topk(self.k, dim=-1).indices

        def gather(idx):
            return _GatherPre.apply(pre_BE, x_BM, self.b_dec_M, self.W_enc_ME, self.b_enc_E, idx)

        vals_BK = gather(idx_BK).relu()
        recon_BM = sparse_decode(idx_BK, vals_BK, self.W_dec_EM) + self.b_dec_M
        mse = ((recon_BM - x_BM) ** 2).mean()
        out = TrainOutput(recon_BM, mse, mse, {PARENT: fired_mask(idx_BK, vals_BK, self.d_sae)})
        if dead_E is not None and k_aux > 0:
            out.aux_loss = self._auxk_loss(pre_BE, dead_E, x_BM - recon_BM, k_aux, gather)
        return out

    def _auxk_loss(self, pre_BE, dead_E, residual_BM, k_aux: int, gather):
        """:func:`auxk_loss` over the dead latents' columns only (one host sync to list them):
        the same loss, without a masked copy and a top-k over all E columns."""
        dead_Z = dead_E.nonzero().flatten()
        if dead_Z.numel() == 0:
            return pre_BE.new_zeros(())
        top = pre_BE[:, dead_Z].topk(min(k_aux, dead_Z.numel()), dim=-1)
        idx_BK = dead_Z[top.indices]
        target_BM = residual_BM.detach()
        approx_BM = sparse_decode(idx_BK, gather(idx_BK).relu(), self.W_dec_EM)
        err = ((approx_BM - target_BM) ** 2).sum(-1).mean()
        return err / (target_BM**2).sum(-1).mean().clamp_min(1e-12)

    def train_forward_dense(
        self,
        x_BM: Float[torch.Tensor, "B M"],
        dead_E: Bool[torch.Tensor, " E"] | None = None,
        k_aux: int = 0,
    ) -> TrainOutput:
        """The plain autograd version of :meth:`train_forward` (the tests' reference)."""
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
