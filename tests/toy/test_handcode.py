"""The hand-built hierarchical SAE (:func:`sae_hacking.toy.handcode.handcode`) is the ground
truth the toy metrics score perfectly."""

import torch

from sae_hacking.data.toy import ToyDataset, ToyDatasetConfig
from sae_hacking.saes.hierarchical import HierarchicalTopKSAE
from sae_hacking.toy.handcode import handcode
from sae_hacking.toy.metrics import evaluate


def test_handcoded_hierarchical_sae_is_the_ground_truth():
    # Nearly orthogonal features (M >> A) so that cross-talk is small.
    ds = ToyDataset.generate(ToyDatasetConfig(8, 512, 0.4, 2), seed=0)
    sae = HierarchicalTopKSAE(512, 8, 2)
    handcode(sae, ds)
    val = ds.sample(2000, torch.Generator().manual_seed(11))
    metrics = evaluate(sae, ds, val)
    assert metrics["pair_detection_rate"] == 1.0
    assert metrics["child_recovery_min"] > 0.999
    assert metrics["absorption_rate"] == 0.0
    assert metrics["fvu"] < 0.01
