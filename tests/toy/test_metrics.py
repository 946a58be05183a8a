import torch
import torch.nn.functional as F

from sae_hacking.data.toy import ToyDataset, ToyDatasetConfig
from sae_hacking.saes.hierarchical import HierarchicalTopKSAE
from sae_hacking.saes.topk import TopKSAE
from sae_hacking.toy.handcode import handcode
from sae_hacking.toy.metrics import (
    absorption_rate,
    evaluate,
    pair_success_E,
)


def dataset(A=6, M=24, seed=0):
    return ToyDataset.generate(ToyDatasetConfig(A, M, 0.4, 2), seed=seed)


@torch.no_grad()
def pair_success_reference(sae: HierarchicalTopKSAE, dataset: ToyDataset) -> list[bool]:
    """Plain-loop oracle for :func:`pair_success_E`."""
    adjusted = sae.adjusted_children_HM()
    truth = dataset.all_children_DM
    out = []
    for e in range(sae.n_parents):
        nearest = []
        for h in (2 * e, 2 * e + 1):
            sims = [float(F.cosine_similarity(adjusted[h], t, dim=0)) for t in truth]
            nearest.append(max(range(len(sims)), key=sims.__getitem__))
        out.append(nearest[0] != nearest[1] and nearest[0] // 2 == nearest[1] // 2)
    return out


def test_pair_detection_vectorised_equals_loop_on_random_and_partly_true_saes():
    ds = dataset()
    for seed in range(4):
        sae = HierarchicalTopKSAE(24, 6, 2, gen=torch.Generator().manual_seed(seed))
        if seed % 2:
            handcode(sae, ds)
            with torch.no_grad():  # break two latents: both children the same vector
                sae.W_dec_HM[1] = sae.W_dec_HM[0]
                sae.W_dec_HM[6] = sae.W_dec_HM[7]
        got = pair_success_E(sae, ds).tolist()
        assert got == pair_success_reference(sae, ds)
    assert got == [False, True, True, False, True, True]


def test_absorption_rate_on_a_hand_built_example():
    # 4 samples, 2 parents; parent 0 is matched to column 1, parent 1 to column 0.
    active = torch.tensor([[1, 0], [1, 1], [1, 1], [0, 1]], dtype=torch.bool)
    acts = torch.tensor([[0.0, 1.0], [0.0, 0.0], [2.0, 1.0], [1.0, 0.0]])
    # parent 0: active in 3 samples, column 1 silent in 1 -> 1/3;
    # parent 1: active in 3 samples, column 0 silent in 1 -> 1/3.
    rate = absorption_rate(acts, torch.tensor([1, 0]), active)
    assert abs(rate - 1 / 3) < 1e-6


def test_flat_sae_made_of_child_vectors_absorbs_half_of_each_parent():
    """A flat SAE whose latents are exactly the child vectors: the latent best matched to a
    parent is one of its children, silent whenever the sibling is the one present."""
    ds = dataset(A=4, M=256)
    sae = TopKSAE(256, 8, 2)
    with torch.no_grad():
        sae.W_dec_EM.copy_(ds.all_children_DM)
        sae.W_enc_ME.copy_(ds.all_children_DM.T)
        sae.b_enc_E.fill_(-0.6)  # only the child actually present clears the bias
    val = ds.sample(4000, torch.Generator().manual_seed(0))
    metrics = evaluate(sae, ds, val)
    assert abs(metrics["absorption_rate"] - 0.5) < 0.05
    assert metrics["child_recovery_min"] > 0.999
    assert metrics["parent_recovery_mean"] < 0.95
