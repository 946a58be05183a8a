"""The SAE architectures (TopK, hierarchical, Matryoshka) and their losses against loop
references, and checkpoints of each round-tripped."""

import torch
import torch.nn.functional as F

from sae_hacking.saes.hierarchical import (
    EMA_COEFF,
    HierarchicalTopKSAE,
    parent_child_cosine_loss,
)
from sae_hacking.saes.io import load_sae_checkpoint, save_sae_checkpoint
from sae_hacking.saes.losses import auxk_loss
from sae_hacking.saes.matryoshka import MatryoshkaBatchTopKSAE
from sae_hacking.saes.topk import TopKSAE


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def perturb(sae, seed=0):
    """Random weights and biases, so tests do not pass by the symmetry of the init."""
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen(seed)))
    return sae


def test_topk_sparse_path_equals_dense_reference():
    sae = perturb(TopKSAE(16, 40, 5, gen=gen()))
    x = torch.randn(32, 16, generator=gen(1))
    out = sae.train_forward(x)
    dense = sae.encode(x)
    assert ((dense > 0).sum(-1) <= 5).all()
    assert torch.allclose(out.recon_BM, sae.decode(dense), atol=1e-5)
    assert torch.equal(out.fired["parent"], (dense > 0).any(0))


def test_hierarchical_children_fire_only_under_their_parent_and_one_per_parent():
    sae = perturb(HierarchicalTopKSAE(16, 10, 3, gen=gen()))
    x = torch.randn(64, 16, generator=gen(2))
    acts = sae.encode(x)
    parents, children = acts[:, :10], acts[:, 10:].view(64, 10, 2)
    assert ((children > 0).sum(-1) <= 1).all()
    assert not ((children > 0).any(-1) & (parents <= 0)).any()
    out = sae.train_forward(x)
    assert torch.allclose(out.recon_BM, sae.decode(acts), atol=1e-5)
    assert torch.equal(out.fired["parent"], (parents > 0).any(0))
    assert torch.equal(out.fired["child"], (acts[:, 10:] > 0).any(0))


def test_hierarchical_forward_matches_a_loop_reference():
    sae = perturb(HierarchicalTopKSAE(8, 6, 2, gen=gen()))
    x = torch.randn(5, 8, generator=gen(3))
    recon = sae.train_forward(x).recon_BM
    for b in range(5):
        xc = x[b] - sae.b_dec_M
        pre = xc @ sae.W_enc_ME + sae.b_enc_E
        expected = sae.b_dec_M.clone()
        for e in pre.topk(2).indices.tolist():
            expected += F.relu(pre[e]) * sae.W_dec_EM[e]
            c = [xc @ sae.W_enc_MH[:, 2 * e + j] + sae.b_enc_H[2 * e + j] for j in (0, 1)]
            j = 0 if c[0] >= c[1] else 1
            expected += F.relu(c[j]) * sae.W_dec_HM[2 * e + j]
        assert torch.allclose(recon[b], expected, atol=1e-5)


def test_ema_update_equals_loop_reference():
    sae = perturb(HierarchicalTopKSAE(8, 6, 3, gen=gen()))
    sae.child_ratio_H.copy_(torch.rand(12, generator=gen(4)) + 0.5)
    before = sae.child_ratio_H.clone()
    x = torch.randn(40, 8, generator=gen(5))
    with torch.no_grad():
        idx, vals, cidx, cvals = sae.encode_sparse(x)
    sae.update_child_ratios(vals, cidx, cvals)
    expected = before.clone()
    for h in range(12):
        ratios = [
            float(cvals[b, j] / vals[b, j])
            for b in range(40)
            for j in range(3)
            if int(cidx[b, j]) == h and vals[b, j] > 0 and cvals[b, j] > 0
        ]
        if ratios:
            mean = sum(ratios) / len(ratios)
            expected[h] = (1 - EMA_COEFF) * before[h] + EMA_COEFF * mean
    assert torch.allclose(sae.child_ratio_H, expected, atol=1e-6)
    assert not torch.equal(sae.child_ratio_H, before)


def test_parent_child_cosine_loss_equals_loop_reference():
    sae = perturb(HierarchicalTopKSAE(8, 6, 3, gen=gen()))
    x = torch.randn(20, 8, generator=gen(6))
    idx, vals, cidx, cvals = sae.encode_sparse(x)
    vals[0] = 0.0  # a sample with no active parent is left out of the mean
    got = parent_child_cosine_loss(idx, vals, cidx, cvals, sae.W_dec_EM, sae.W_dec_HM)
    per_sample = []
    for b in range(20):
        cos = [
            F.cosine_similarity(
                vals[b, j] * sae.W_dec_EM[idx[b, j]],
                vals[b, j] * sae.W_dec_EM[idx[b, j]] + cvals[b, j] * sae.W_dec_HM[cidx[b, j]],
                dim=0,
            )
            for j in range(3)
            if vals[b, j] > 0
        ]
        if cos:
            per_sample.append(sum(cos) / len(cos))
    assert torch.allclose(got, -sum(per_sample) / len(per_sample), atol=1e-6)


def test_auxk_loss_uses_only_dead_latents():
    W = torch.randn(10, 6, generator=gen(7))
    pre = torch.randn(4, 10, generator=gen(8))
    residual = torch.randn(4, 6, generator=gen(9))
    none_dead = torch.zeros(10, dtype=torch.bool)
    assert auxk_loss(pre, none_dead, residual, W, 3).item() == 0.0
    dead = torch.zeros(10, dtype=torch.bool)
    dead[[1, 4, 7]] = True
    got = auxk_loss(pre, dead, residual, W, 2)
    expected_num, expected_den = 0.0, 0.0
    for b in range(4):
        cands = sorted([1, 4, 7], key=lambda i: -float(pre[b, i]))[:2]
        approx = sum(F.relu(pre[b, i]) * W[i] for i in cands)
        expected_num += float(((approx - residual[b]) ** 2).sum())
        expected_den += float((residual[b] ** 2).sum())
    assert abs(got.item() - expected_num / expected_den) < 1e-5


def test_matryoshka_prefixes_reconstruct_from_their_own_latents():
    sae = perturb(MatryoshkaBatchTopKSAE(8, [3, 5, 4], 4, gen=gen()))
    x = torch.randn(16, 8, generator=gen(10))
    acts = sae.batch_topk(sae.pre_acts(x))
    assert (acts > 0).sum() <= 16 * 4
    recons = sae.prefix_recons_GBM(acts)
    for g, end in enumerate([3, 8, 12]):
        assert torch.allclose(
            recons[g], acts[:, :end] @ sae.W_dec_EM[:end] + sae.b_dec_M, atol=1e-5
        )
    out = sae.train_forward(x)
    assert sae.threshold > 0  # set from the batch, then used at inference
    assert torch.allclose(out.recon_BM, recons[-1], atol=1e-6)


def test_checkpoints_round_trip_for_every_architecture(tmp_path):
    x = torch.randn(12, 8, generator=gen(12))
    saes = [
        perturb(TopKSAE(8, 20, 3, gen=gen())),
        perturb(HierarchicalTopKSAE(8, 5, 2, gen=gen())),
        perturb(MatryoshkaBatchTopKSAE(8, [4, 6], 3, gen=gen())),
    ]
    saes[1].child_ratio_H.fill_(0.7)
    saes[2].train_forward(x)  # sets the inference threshold buffer
    for i, sae in enumerate(saes):
        path = save_sae_checkpoint(sae, tmp_path / f"{i}.safetensors", {"step": 5})
        loaded = load_sae_checkpoint(path)
        assert type(loaded) is type(sae)
        assert loaded.config() == sae.config()
        assert torch.equal(loaded.encode(x), sae.encode(x))
        for name, tensor in sae.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], tensor), name
