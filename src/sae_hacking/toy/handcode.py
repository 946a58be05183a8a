"""A hierarchical SAE set by hand to a toy dataset's ground truth (``--handcode-sae``): the
reference point a trained SAE is measured against."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sae_hacking.data.toy import ToyDataset
from sae_hacking.saes.hierarchical import HierarchicalTopKSAE


@torch.no_grad()
def handcode(sae: HierarchicalTopKSAE, dataset: ToyDataset) -> None:
    """Set ``sae`` to the dataset's ground truth: parents = parent features, children =
    normalised perturbations, zero biases, ratios = perturbation size."""
    A, C = dataset.config.num_features, sae.children_per_parent
    if A != sae.n_parents or dataset.config.model_dim != sae.d_in:
        raise ValueError(
            f"handcoding needs n_parents == A ({sae.n_parents} vs {A}) and "
            f"d_in == M ({sae.d_in} vs {dataset.config.model_dim})"
        )
    child_dirs_HM = F.normalize(dataset.perturbations_ACM.reshape(C * A, -1), dim=-1)
    sae.W_dec_EM.copy_(dataset.parents_AM)
    sae.W_enc_ME.copy_(dataset.parents_AM.T)
    sae.W_dec_HM.copy_(child_dirs_HM)
    sae.W_enc_MH.copy_(child_dirs_HM.T)
    for bias in (sae.b_enc_E, sae.b_enc_H, sae.b_dec_M):
        bias.zero_()
    sae.child_ratio_H.fill_(dataset.config.perturbation_size)
