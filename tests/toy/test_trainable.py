"""The training interface, checked the way a trainer uses it: for every trainable architecture
in the registry, with no knowledge of which one it is."""

import copy

import pytest
import torch
import torch.nn.functional as F

from sae_hacking.saes.registry import TRAINABLE, architecture_class
from sae_hacking.saes.trainable import PARENT, reset_adam_entries

# Constructor arguments per architecture; a newly registered one must be added here.
OPTIONS = {
    "topk": {"d_sae": 12, "k": 3},
    "hierarchical": {"n_parents": 6, "k": 3, "aux_loss_coeff": 0.1},
    "matryoshka": {"group_sizes": [4, 8], "k": 3},
    "batchtopk": {"d_sae": 12, "k": 3},
    "jumprelu": {"d_sae": 12, "l0_coefficient": 0.1},
    "relu": {"d_sae": 12, "l1_coefficient": 0.1},
    "tiered": {"n_parents": 6, "k": 2, "children_per_parent": 2},
}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def build(name):
    sae = architecture_class(name)(8, gen=gen(), **OPTIONS[name])
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen(1)))
    return sae


def test_every_trainable_architecture_is_covered():
    assert set(OPTIONS) == set(TRAINABLE)


@pytest.mark.parametrize("name", TRAINABLE)
def test_train_forward_reports_firing_per_bank_and_the_auxiliary_loss(name):
    sae = build(name)
    banks = sae.latent_banks()
    assert next(iter(banks)) == PARENT
    x = torch.randn(32, 8, generator=gen(2))
    out = sae.train_forward(x)
    assert out.aux_loss is None
    assert {k: v.shape[0] for k, v in out.fired.items()} == banks
    assert all(v.dtype == torch.bool for v in out.fired.values())
    assert sum(sae.levels().values()) == sae.d_sae
    assert sae.feature_vectors().shape == sae.W_dec.shape
    dead = torch.zeros(banks[PARENT], dtype=torch.bool)
    dead[:2] = True
    out = sae.train_forward(x, dead, k_aux=4)
    assert out.aux_loss is not None and out.aux_loss > 0
    out.loss.backward()
    sae.after_step(out)


@pytest.mark.parametrize("name", TRAINABLE)
def test_resample_moves_the_given_latents_and_reports_every_entry_it_changed(name):
    sae = build(name)
    before = {n: p.detach().clone() for n, p in sae.named_parameters()}
    dead = torch.tensor([1, 4])
    dirs = F.normalize(torch.randn(2, 8, generator=gen(3)), dim=-1)
    done = sae.resample(dead, dirs, gen(4))
    assert torch.equal(done.latents[PARENT], dead)
    assert set(done.latents) <= set(sae.latent_banks())
    # The dead latents now write (and read) along their new directions.
    feature_rows = sae.W_dec[dead]
    assert torch.allclose(F.cosine_similarity(feature_rows, dirs, dim=-1), torch.ones(2))
    assert (sae.encode(10 * dirs)[torch.arange(2), dead] > 0).all()
    params = dict(sae.named_parameters())
    for pname, old in before.items():
        changed = params[pname].detach() != old
        reported = torch.zeros_like(changed)
        if pname in done.entries:
            dim, index = done.entries[pname]
            reported.index_fill_(dim, index, True)
        assert not (changed & ~reported).any(), f"{pname} changed where not reported"


def test_adam_moments_are_reset_exactly_at_the_reported_entries():
    sae = build("hierarchical")
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    out = sae.train_forward(torch.randn(32, 8, generator=gen(5)))
    out.loss.backward()
    opt.step()
    moments = {n: opt.state[p]["exp_avg"].clone() for n, p in sae.named_parameters()}
    done = sae.resample(torch.tensor([2]), F.normalize(torch.ones(1, 8), dim=-1), gen(6))
    reset_adam_entries(opt, sae, done.entries)
    for name, param in sae.named_parameters():
        now = opt.state[param]["exp_avg"]
        if name in done.entries:
            dim, index = done.entries[name]
            assert (now.index_select(dim, index) == 0).all(), name
            moments[name].index_fill_(dim, index, 0.0)
        assert torch.equal(now, moments[name]), name


def test_hierarchical_after_step_is_the_ema_update_of_its_child_ratios():
    sae = build("hierarchical")
    twin = copy.deepcopy(sae)
    before = sae.child_ratio_H.clone()
    out = sae.train_forward(torch.randn(40, 8, generator=gen(7)))
    sae.after_step(out)
    twin.update_child_ratios(out.vals_BK, out.child_idx_BK, out.child_vals_BK)
    assert torch.equal(sae.child_ratio_H, twin.child_ratio_H)
    assert not torch.equal(sae.child_ratio_H, before)


@pytest.mark.slow
def test_toy_trainer_state_loads_weights_only_and_resumes_exactly(tmp_path):
    from dataclasses import replace

    from sae_hacking.toy.config import ToyConfig
    from sae_hacking.toy.train import ToyTrainer

    # Twice as many latents as features, linear init and a short dead window: latents die and
    # are resampled (with their optimiser state reset) before and after the stop at step 80.
    config = ToyConfig(
        architecture="hierarchical",
        dataset_num_features=6,
        model_dim=12,
        sae_hidden_dim=12,
        dataset_k=2,
        sae_k=2,
        batch_size=32,
        init="linear",
        resample_every=20,
        dead_steps=10,
        auxk_coeff=0.03,
        eval_every=40,
        checkpoint_every=40,
        val_size=500,
        device="cpu",
        plots=False,
        max_step=160,
    )
    straight = ToyTrainer(config, tmp_path / "a", quiet=True)
    straight.train()
    ToyTrainer(replace(config, max_step=80), tmp_path / "b", quiet=True).train()
    state = torch.load(tmp_path / "b" / "checkpoint.trainer.pt", weights_only=True)
    assert state["step"] == 80 and set(state["since_fired"]) == {"parent", "child"}
    resumed = ToyTrainer(config, tmp_path / "b", quiet=True)
    resumed.load_checkpoint()
    resumed.train()
    for name, tensor in straight.sae.state_dict().items():
        assert torch.equal(resumed.sae.state_dict()[name], tensor), name
    for bank, since in straight.engine.since_fired.items():
        assert torch.equal(resumed.engine.since_fired[bank], since), bank
