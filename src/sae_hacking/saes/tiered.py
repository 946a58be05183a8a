"""Tiered SAE: E parent latents chosen by BatchTopK, each with C child latents that are free
directions added on top of their parent, trained with a nested (Matryoshka-style) loss.

Why another hierarchical SAE: the legacy one (:mod:`sae_hacking.saes.hierarchical`) picks a
fixed number of parents per input, fires exactly one child with each, and reads a child as
"parent + ratio × child". On hierarchies it was not built for (SAELens's synthetic ones: a
varying number of active roots, children about as large as their parent and nearly orthogonal
to it, a root that fires without any child 20 % of the time) it loses to flat TopK and
Matryoshka (README, "SAELens's synthetic hierarchies"). This design takes what the data call
for, after Matryoshka SAEs (Bussmann et al. 2025; Nabeshima 2024), BatchTopK (Bussmann et al.
2024) and H-SAE's per-parent children (Muchane et al. 2025):

1. parents: the ``B · k`` largest ReLU-ed parent pre-activations of the batch are kept
   (BatchTopK), so an input has as many active parents as it needs;
2. children: a child's pre-activation counts only where its parent fires; of those, the
   ``B · child_k`` largest of the batch are kept (BatchTopK again), so a parent may fire
   alone, with one child (mutually exclusive children) or with several;
3. reconstruction ``b_dec + sum_e p_e P_e + sum_h c_h D_h``: a child's decoder row ``D_h`` is its
   own direction, added to its parent's ``P_e`` (not "parent + ratio × child");
4. loss: the squared error of the whole reconstruction, plus (weight ``nested_weight`` w) that
   of the parents alone (``b_dec + sum_e p_e P_e``), ``(w SE_parents + SE_all) / (1 + w)``:
   Matryoshka's nested loss with the parents as the outer group, kept light. The gate already
   stops absorption (a child cannot fire without its parent, so a child row gains nothing by
   taking over its parent's direction); a heavy nested term (w = 1, Matryoshka's equal
   weights) pulls each parent row towards its root plus the mean of its children and costs
   the rows their match to the true features, a light one keeps children quiet where only
   their parent is present (measured in the README).

At inference each bank's batch selection is replaced by a threshold (an EMA of the smallest
kept activation in training, as the BatchTopK and Matryoshka SAEs do), so an input's code
does not depend on its batch-mates; a child still fires only under an active parent.

The flat view (``encode``/``W_dec``) has ``E + C E`` latents: parents, then the children
parent-major (child ``h = C e + j`` belongs to parent ``e``). Its decoder rows are the effective
rows (``feature_vectors``) as they are: ``decode(encode(x))`` is the reconstruction, so exports
(SAELens's synthetic evaluation) need no re-expression. Letters: B batch, M input, E parents,
H children (``C E``), L all latents (``E + H``), N resampled children.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int

from sae_hacking.errors import FieldError
from sae_hacking.saes.base import SAEInfo, unit_rows
from sae_hacking.saes.losses import auxk_loss, batch_topk
from sae_hacking.saes.tiered_settings import TIERED_DEFAULTS
from sae_hacking.saes.topk import check_k
from sae_hacking.saes.trainable import (
    PARENT,
    Resampled,
    TrainableSAE,
    TrainOutput,
    restart_children,
)

CHILD = "child"
THRESHOLD_EMA = 0.01
# Weight w of the parents-alone error in the loss (w SE_parents + SE_all) / (1 + w); measured in
# the README ("A hierarchical SAE that holds on others' hierarchies"): 0 gives the cleanest
# directions, a little keeps children from firing where only their parent is present.
NESTED_WEIGHT = TIERED_DEFAULTS["nested_weight"]


class TieredSAE(TrainableSAE):
    """Parameters: parent ``W_enc_ME b_enc_E W_dec_EM``, child ``W_enc_MH b_enc_H W_dec_HM``,
    shared ``b_dec_M``; buffers ``threshold`` (parents) and ``child_threshold`` (scalars,
    negative until the first training step has set them). ``nested_weight`` is a training
    setting, not saved with the weights (as the hierarchical SAE's ``aux_loss_coeff``)."""

    architecture = "tiered"

    def __init__(
        self,
        d_in: int,
        n_parents: int,
        k: int,
        children_per_parent: int = 2,
        child_k: int | None = None,
        info: SAEInfo | None = None,
        gen: torch.Generator | None = None,
        nested_weight: float = NESTED_WEIGHT,
    ):
        if children_per_parent < 1:
            raise FieldError(
                "children_per_parent", f"must be at least 1, got {children_per_parent}."
            )
        C = children_per_parent
        super().__init__(d_in, (1 + C) * n_parents, info)
        check_k(k, n_parents)
        child_k = k if child_k is None else child_k
        if not 0 < child_k <= C * n_parents:
            raise FieldError("child_k", f"must lie in [1, {C * n_parents}], got {child_k}.")
        self.n_parents, self.k, self.child_k = n_parents, k, child_k
        self.children_per_parent = C
        if nested_weight < 0:
            raise FieldError("nested_weight", f"must be at least 0, got {nested_weight}.")
        self.nested_weight = nested_weight
        W_dec_EM = unit_rows(n_parents, d_in, gen)
        W_dec_HM = unit_rows(C * n_parents, d_in, gen)
        self.W_dec_EM = torch.nn.Parameter(W_dec_EM)
        self.W_enc_ME = torch.nn.Parameter(W_dec_EM.T.clone())
        self.b_enc_E = torch.nn.Parameter(torch.zeros(n_parents))
        self.W_dec_HM = torch.nn.Parameter(W_dec_HM)
        self.W_enc_MH = torch.nn.Parameter(W_dec_HM.T.clone())
        self.b_enc_H = torch.nn.Parameter(torch.zeros(C * n_parents))
        self.b_dec_M = torch.nn.Parameter(torch.zeros(d_in))
        self.register_buffer("threshold", torch.tensor(-1.0))
        self.register_buffer("child_threshold", torch.tensor(-1.0))

    def config(self) -> dict:
        return {
            "architecture": self.architecture,
            "d_in": self.d_in,
            "n_parents": self.n_parents,
            "k": self.k,
            "children_per_parent": self.children_per_parent,
            "child_k": self.child_k,
        }

    @property
    def W_dec(self) -> Float[torch.Tensor, "L M"]:  # noqa: N802
        """Parents' rows then children's: the flat view's decoder and the effective rows."""
        return torch.cat([self.W_dec_EM, self.W_dec_HM])

    def latent_banks(self) -> dict[str, int]:
        return {PARENT: self.n_parents, CHILD: self.children_per_parent * self.n_parents}

    def levels(self) -> dict[str, int]:
        return self.latent_banks()

    def pre_acts(
        self, x_BM: Float[torch.Tensor, "B M"]
    ) -> tuple[Float[torch.Tensor, "B E"], Float[torch.Tensor, "B H"]]:
        """ReLU-ed parent and child pre-activations (children not yet gated)."""
        xc_BM = x_BM - self.b_dec_M
        return (
            (xc_BM @ self.W_enc_ME + self.b_enc_E).relu(),
            (xc_BM @ self.W_enc_MH + self.b_enc_H).relu(),
        )

    def gate(
        self, parents_BE: Float[torch.Tensor, "B E"], child_pre_BH: Float[torch.Tensor, "B H"]
    ) -> Float[torch.Tensor, "B H"]:
        """Child pre-activations where the parent fires, 0 elsewhere."""
        on_BH = (parents_BE > 0).repeat_interleave(self.children_per_parent, dim=-1)
        return child_pre_BH * on_BH

    def _codes(self, x_BM, train: bool):
        """Parent and child activations; in training (or before thresholds exist) by batch
        selection, else by the thresholds."""
        pre_BE, child_pre_BH = self.pre_acts(x_BM)
        if train or self.threshold < 0:
            parents_BE = batch_topk(pre_BE, self.k)
        else:
            parents_BE = pre_BE * (pre_BE > self.threshold)
        gated_BH = self.gate(parents_BE, child_pre_BH)
        if train or self.child_threshold < 0:
            children_BH = batch_topk(gated_BH, self.child_k)
        else:
            children_BH = gated_BH * (gated_BH > self.child_threshold)
        return pre_BE, parents_BE, children_BH

    def encode(self, x_BM: Float[torch.Tensor, "*B M"]) -> Float[torch.Tensor, "*B L"]:
        lead = x_BM.shape[:-1]
        _, parents_BE, children_BH = self._codes(x_BM.reshape(-1, self.d_in), train=False)
        return torch.cat([parents_BE, children_BH], dim=-1).reshape(*lead, self.d_sae)

    def decode(self, acts_BL: Float[torch.Tensor, "*B L"]) -> Float[torch.Tensor, "*B M"]:
        return acts_BL @ self.W_dec + self.b_dec_M

    def train_forward(
        self,
        x_BM: Float[torch.Tensor, "B M"],
        dead_E: Bool[torch.Tensor, " E"] | None = None,
        k_aux: int = 0,
    ) -> TrainOutput:
        pre_BE, parents_BE, children_BH = self._codes(x_BM, train=True)
        outer_BM = parents_BE @ self.W_dec_EM + self.b_dec_M
        recon_BM = outer_BM + children_BH @ self.W_dec_HM
        mse = ((recon_BM - x_BM) ** 2).mean()
        w = self.nested_weight
        loss = (w * ((outer_BM - x_BM) ** 2).mean() + mse) / (1 + w) if w else mse
        with torch.no_grad():
            self._track(self.threshold, parents_BE)
            self._track(self.child_threshold, children_BH)
        fired = {PARENT: (parents_BE > 0).any(0), CHILD: (children_BH > 0).any(0)}
        out = TrainOutput(recon_BM, loss, mse, fired)
        if dead_E is not None and k_aux > 0:
            out.aux_loss = auxk_loss(pre_BE, dead_E, x_BM - recon_BM, self.W_dec_EM, k_aux)
        return out

    @staticmethod
    def _track(threshold: torch.Tensor, acts: torch.Tensor) -> None:
        """EMA of the smallest kept activation (set outright the first time)."""
        kept = acts[acts > 0]
        if kept.numel():
            smallest = kept.min()
            if threshold < 0:
                threshold.copy_(smallest)
            else:
                threshold.lerp_(smallest, THRESHOLD_EMA)

    @torch.no_grad()
    def resample(
        self,
        dead_Z: Int[torch.Tensor, " Z"],
        dirs_ZM: Float[torch.Tensor, "Z M"],
        gen: torch.Generator,
    ) -> Resampled:
        """Parents as a flat SAE's latents; their children start afresh on random unit
        directions (encoder = decoder transpose, zero bias), as at initialisation."""
        entries = super().resample(dead_Z, dirs_ZM, gen).entries
        children_N, child_entries = restart_children(self, dead_Z, gen, 1.0)
        return Resampled({PARENT: dead_Z, CHILD: children_N}, {**entries, **child_entries})
