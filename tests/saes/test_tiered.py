"""The tiered SAE against a plain reference (forward, loss, gradients), its gate and thresholds,
resampling, checkpoints and an exact resume of a toy run."""

import pytest
import torch
import torch.nn.functional as F

from sae_hacking.errors import FieldError
from sae_hacking.saes.io import load_sae_checkpoint, save_sae_checkpoint
from sae_hacking.saes.tiered import TieredSAE

M, E, C = 8, 5, 2


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def perturbed(seed=0, **options):
    sae = TieredSAE(M, E, options.pop("k", 2), gen=gen(seed), **options)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen(seed + 1)))
    return sae


def reference_loss(sae, x_BM):
    """The loss in plain loops: batch top-k of the parents, the gate, batch top-k of the gated
    children, both reconstructions, the weighted mean of their errors."""
    B = x_BM.shape[0]
    xc = x_BM - sae.b_dec_M
    pre = F.relu(xc @ sae.W_enc_ME + sae.b_enc_E)
    child_pre = F.relu(xc @ sae.W_enc_MH + sae.b_enc_H)
    entries = sorted(((pre[b, e].item(), b, e) for b in range(B) for e in range(E)), reverse=True)
    parents = torch.zeros_like(pre)
    for _, b, e in entries[: B * sae.k]:
        parents[b, e] = pre[b, e]
    gated = [
        (child_pre[b, h].item(), b, h)
        for b in range(B)
        for h in range(C * E)
        if parents[b, h // C] > 0
    ]
    children = torch.zeros_like(child_pre)
    for _, b, h in sorted(gated, reverse=True)[: B * sae.child_k]:
        children[b, h] = child_pre[b, h]
    outer = torch.stack(
        [sae.b_dec_M + sum(parents[b, e] * sae.W_dec_EM[e] for e in range(E)) for b in range(B)]
    )
    whole = outer + torch.stack(
        [sum(children[b, h] * sae.W_dec_HM[h] for h in range(C * E)) for b in range(B)]
    )
    w = sae.nested_weight
    se_outer, se_whole = ((outer - x_BM) ** 2).mean(), ((whole - x_BM) ** 2).mean()
    return (w * se_outer + se_whole) / (1 + w), whole, parents, children


@pytest.mark.parametrize(
    "options", [{}, {"nested_weight": 0.0}, {"nested_weight": 1.0, "child_k": 3, "k": 1}]
)
def test_loss_reconstruction_and_gradients_equal_the_plain_reference(options):
    sae = perturbed(**options)
    x = torch.randn(6, M, generator=gen(5))
    out = sae.train_forward(x)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()
    loss, whole, parents, children = reference_loss(sae, x)
    loss.backward()
    assert torch.allclose(out.loss, loss, atol=1e-6)
    assert torch.allclose(out.recon_BM, whole, atol=1e-5)
    assert torch.allclose(out.mse, ((whole - x) ** 2).mean(), atol=1e-6)
    assert torch.equal(out.fired["parent"], (parents > 0).any(0))
    assert torch.equal(out.fired["child"], (children > 0).any(0))
    for name, p in sae.named_parameters():
        assert torch.allclose(grads[name], p.grad, atol=1e-5), name


def test_children_fire_only_under_their_parent_and_thresholds_replace_the_batch():
    sae = perturbed()
    x = torch.randn(64, M, generator=gen(6))
    before = sae.encode(x)  # no thresholds yet: batch selection
    assert (before[:, :E] > 0).sum() <= 64 * sae.k
    out = sae.train_forward(x)
    assert sae.threshold > 0 and sae.child_threshold > 0
    acts = sae.encode(x)
    parents, children = acts[:, :E], acts[:, E:].view(64, E, C)
    assert not ((children > 0).any(-1) & (parents <= 0)).any()
    assert ((parents == 0) | (parents > sae.threshold)).all()
    # An input's code does not depend on its batch-mates once the thresholds are set.
    alone = sae.encode(x[:3])
    assert torch.equal(alone > 0, acts[:3] > 0) and torch.allclose(alone, acts[:3], atol=1e-6)
    assert torch.allclose(sae.decode(acts), sae(x), atol=1e-6)
    assert out.recon_BM.shape == x.shape


def test_resample_restarts_the_parents_and_their_children():
    sae = perturbed()
    dead = torch.tensor([1, 3])
    dirs = F.normalize(torch.randn(2, M, generator=gen(7)), dim=-1)
    done = sae.resample(dead, dirs, gen(8))
    assert done.latents["child"].tolist() == [2, 3, 6, 7]
    assert torch.allclose(F.normalize(sae.W_dec_EM[dead], dim=-1), dirs, atol=1e-6)
    assert torch.allclose(sae.W_dec_HM[[2, 3, 6, 7]].norm(dim=-1), torch.ones(4))
    assert torch.equal(sae.W_enc_MH[:, [2, 3, 6, 7]], sae.W_dec_HM[[2, 3, 6, 7]].T)
    assert set(done.entries) >= {
        "W_dec_EM",
        "W_enc_ME",
        "b_enc_E",
        "W_dec_HM",
        "W_enc_MH",
        "b_enc_H",
    }


def test_checkpoint_round_trip_and_settings(tmp_path):
    sae = perturbed(children_per_parent=3, child_k=4)
    sae.train_forward(torch.randn(16, M, generator=gen(9)))
    loaded = load_sae_checkpoint(save_sae_checkpoint(sae, tmp_path / "t.safetensors", {"step": 1}))
    assert type(loaded) is TieredSAE and loaded.config() == sae.config()
    x = torch.randn(10, M, generator=gen(10))
    assert torch.equal(loaded.encode(x), sae.encode(x))
    with pytest.raises(FieldError, match="child_k"):
        TieredSAE(M, E, 2, child_k=E * C + 1)
    with pytest.raises(FieldError, match="children_per_parent"):
        TieredSAE(M, E, 2, children_per_parent=0)


def test_a_toy_run_resumes_exactly(tmp_path):
    from dataclasses import replace

    from sae_hacking.toy.config import ToyConfig
    from sae_hacking.toy.train import ToyTrainer

    config = ToyConfig(
        architecture="tiered", data="saelens", sae_hidden_dim=8, sae_k=2, batch_size=32,
        resample_every=20, dead_steps=10, auxk_coeff=0.03, eval_every=40, checkpoint_every=40,
        val_size=300, device="cpu", plots=False, max_step=120,
    )  # fmt: skip
    straight = ToyTrainer(config, tmp_path / "a", quiet=True)
    straight.train()
    ToyTrainer(replace(config, max_step=40), tmp_path / "b", quiet=True).train()
    resumed = ToyTrainer(config, tmp_path / "b", quiet=True)
    resumed.load_checkpoint()
    resumed.train()
    for name, tensor in straight.sae.state_dict().items():
        assert torch.equal(resumed.sae.state_dict()[name], tensor), name


@pytest.mark.parametrize(
    "config_path", ["sae_hacking.toy.config:ToyConfig", "sae_hacking.train.config:TrainConfig"]
)
def test_tiered_settings_are_checked_by_every_trainer_config(config_path):
    import importlib

    from sae_hacking.config import from_flat

    module, name = config_path.split(":")
    cls = getattr(importlib.import_module(module), name)
    k_key = "sae_k" if name == "ToyConfig" else "k"
    for key, value in (("child_k", 3), ("children_per_parent", 3), ("nested_weight", 0.5)):
        with pytest.raises(FieldError, match="only applies to the tiered SAE") as err:
            from_flat(cls, {"architecture": "topk", key: value})
        assert err.value.field == key
    tiered = {"architecture": "tiered", "sae_hidden_dim": 4, k_key: 2}
    assert from_flat(cls, {**tiered, "child_k": 8}).child_k == 8
    with pytest.raises(FieldError, match="at most the tiered SAE's children") as err:
        from_flat(cls, {**tiered, "child_k": 9})
    assert err.value.field == "child_k"
