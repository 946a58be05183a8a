"""How well an SAE recovered the toy dataset's ground truth.

Definitions (all cosines are between directions, so decoder norms do not matter):

- **effective decoder vectors**: what each latent claims is a feature
  (:meth:`~sae_hacking.saes.trainable.TrainableSAE.feature_vectors`). Flat and Matryoshka SAEs:
  the decoder rows. Hierarchical SAE: the parent decoder rows plus the *adjusted* child vectors
  (parent row + EMA ratio * child row).
- **parent-level vectors**: the decoder rows of the SAE's ``"parent"`` level
  (:meth:`~sae_hacking.saes.trainable.TrainableSAE.levels`): hierarchical: the parent decoder
  rows; Matryoshka: the rows of the first (outermost) group; flat: all decoder rows.
- **child recovery** (mean, min): for each of the 2A true child vectors, the largest cosine with
  any effective decoder vector; averaged / minimised over children.
- **parent recovery** (mean, min): for each of the A parent vectors, the largest cosine with any
  parent-level vector.
- **pair detection rate** (SAEs with children per parent latent: hierarchical): the fraction of
  parent latents whose two adjusted child vectors have, as nearest true children (by cosine), the
  two distinct siblings of one parent.
- **single-feature detection rate** (hierarchical): the fraction of the 2A true children that are
  the nearest true child of at least one adjusted child vector.
- **absorption rate**: match each parent feature to the parent-level latent whose decoder row has
  the largest cosine with it. Over validation samples in which that parent is active, the
  fraction where the matched latent does not fire; averaged over parents that are active at
  least once. A latent that does not fire when its feature is present had the feature absorbed.
- **dead fraction** (parent level, and child level where the SAE has one: hierarchical children,
  Matryoshka's inner groups): latents that fire on no validation sample.
- **MSE, FVU, explained variance, L0**: as every trainer reports them
  (:func:`sae_hacking.training.metrics.reconstruction_metrics`), on the validation samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float

from sae_hacking.data.toy import ToyBatch, ToyDataset
from sae_hacking.saes.trainable import PARENT, TrainableSAE
from sae_hacking.training.metrics import reconstruction_metrics


def cosine_matrix(
    a: Float[torch.Tensor, "_ M"], b: Float[torch.Tensor, "_ M"]
) -> Float[torch.Tensor, "_ _"]:
    """Entry ``[i, j]``: the cosine between row ``i`` of ``a`` and row ``j`` of ``b`` (any two
    sets of vectors: latents, true features)."""
    return F.normalize(a, dim=-1, eps=1e-12) @ F.normalize(b, dim=-1, eps=1e-12).T


def effective_vectors(sae: TrainableSAE) -> Float[torch.Tensor, "L M"]:
    return sae.feature_vectors()


def parent_level_vectors(sae: TrainableSAE) -> Float[torch.Tensor, "E M"]:
    return sae.W_dec[: sae.levels()[PARENT]]


def child_vectors(sae: TrainableSAE) -> Float[torch.Tensor, "H M"]:
    """The effective vectors of the child level, ``children_per_parent`` per parent latent."""
    return sae.feature_vectors()[sae.levels()[PARENT] :]


def pair_success_E(sae: TrainableSAE, dataset: ToyDataset) -> Bool[torch.Tensor, " E"]:
    """Bool per parent latent: do its adjusted children hit the two siblings of one parent?"""
    nearest_H = cosine_matrix(child_vectors(sae), dataset.all_children_DM).argmax(-1)
    first_E, second_E = nearest_H[0::2], nearest_H[1::2]
    return (first_E != second_E) & (first_E // 2 == second_E // 2)


def absorption_rate(
    acts_BL: torch.Tensor, matched_A: torch.Tensor, active_BA: torch.Tensor
) -> float:
    """See the module docstring; ``acts_BL`` holds the SAE's latents in ``encode``'s order
    (or a leading range of them, such as the parent level), ``matched_A[a]`` is the column
    matched to parent ``a``."""
    fires_BA = acts_BL[:, matched_A] > 0
    missed_A = (active_BA & ~fires_BA).sum(0).float()
    present_A = active_BA.sum(0).float()
    seen = present_A > 0
    return float((missed_A[seen] / present_A[seen]).mean()) if seen.any() else float("nan")


@torch.no_grad()
def evaluate(sae: TrainableSAE, dataset: ToyDataset, val: ToyBatch) -> dict[str, float]:
    """All metrics of the module docstring on the validation batch ``val``."""
    acts_BL = sae.encode(val.x_BM)
    out = reconstruction_metrics(sae, val.x_BM, codes_TL=acts_BL)
    child_cos = cosine_matrix(dataset.all_children_DM, effective_vectors(sae)).max(-1).values
    parent_vecs = parent_level_vectors(sae)
    parent_cos_AE = cosine_matrix(dataset.parents_AM, parent_vecs)
    out["child_recovery_mean"] = float(child_cos.mean())
    out["child_recovery_min"] = float(child_cos.min())
    out["parent_recovery_mean"] = float(parent_cos_AE.max(-1).values.mean())
    out["parent_recovery_min"] = float(parent_cos_AE.max(-1).values.min())
    n_parent_level = sae.levels()[PARENT]
    parent_acts_BE = acts_BL[:, :n_parent_level]
    out["absorption_rate"] = absorption_rate(
        parent_acts_BE, parent_cos_AE.argmax(-1), dataset.active_parents_BA(val)
    )
    out["dead_parent_frac"] = float((parent_acts_BE > 0).sum(0).eq(0).float().mean())
    if "child" in sae.levels():
        child_acts_BH = acts_BL[:, n_parent_level:]
        out["dead_child_frac"] = float((child_acts_BH > 0).sum(0).eq(0).float().mean())
    if sae.children_per_parent == 2:
        out["pair_detection_rate"] = float(pair_success_E(sae, dataset).float().mean())
        nearest_H = cosine_matrix(child_vectors(sae), dataset.all_children_DM).argmax(-1)
        out["single_feature_detection_rate"] = float(
            nearest_H.unique().numel() / dataset.all_children_DM.shape[0]
        )
    return out
