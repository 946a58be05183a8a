import pytest
import torch

from sae_hacking.data.toy import (
    ALONE,
    ToyDataset,
    ToyDatasetConfig,
    chunk_generator,
    compose_reference,
)
from sae_hacking.errors import FieldError


def make(**kw) -> ToyDataset:
    cfg = ToyDatasetConfig(
        num_features=kw.pop("A", 12),
        model_dim=kw.pop("M", 20),
        perturbation_size=0.4,
        k=kw.pop("k", 3),
        **kw,
    )
    return ToyDataset.generate(cfg, seed=0)


def test_geometry_parents_unit_and_perturbations_of_norm_rho():
    ds = make()
    assert torch.allclose(ds.parents_AM.norm(dim=-1), torch.ones(12), atol=1e-6)
    assert torch.allclose(ds.perturbations_ACM.norm(dim=-1), torch.full((12, 2), 0.4), atol=1e-6)
    assert torch.allclose(ds.all_children_DM[5], ds.parents_AM[2] + ds.perturbations_ACM[2, 1])


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"parent_alone_prob": 0.3},
        {"magnitude_range": (0.5, 2.0)},
        {"parent_alone_prob": 0.5, "magnitude_range": (0.1, 1.0)},
    ],
)
def test_vectorised_composition_equals_loop(kw):
    ds = make(**kw)
    batch = ds.sample(64, torch.Generator().manual_seed(3))
    assert torch.allclose(batch.x_BM, compose_reference(ds, batch), atol=1e-6)


def test_default_semantics_k_distinct_parents_one_child_each():
    ds = make(k=4)
    batch = ds.sample(2000, torch.Generator().manual_seed(1))
    sorted_BK = batch.parents_BK.sort(dim=1).values
    assert (sorted_BK[:, 1:] != sorted_BK[:, :-1]).all()
    assert batch.magnitudes_BK is None
    assert ((batch.which_BK == 0) | (batch.which_BK == 1)).all()
    # Both children and all parents are drawn, roughly uniformly.
    assert abs(batch.which_BK.float().mean().item() - 0.5) < 0.03
    counts_A = torch.bincount(batch.parents_BK.flatten(), minlength=12).float()
    assert counts_A.min() > 0.8 * counts_A.mean()


def test_alone_probability_and_magnitudes_are_respected():
    ds = make(parent_alone_prob=0.25, magnitude_range=(0.5, 1.5))
    batch = ds.sample(4000, torch.Generator().manual_seed(2))
    alone = (batch.which_BK == ALONE).float().mean().item()
    assert abs(alone - 0.25) < 0.02
    assert batch.magnitudes_BK.min() >= 0.5 and batch.magnitudes_BK.max() <= 1.5


def test_chunks_are_reproducible_and_distinct():
    ds = make()
    a = ds.sample(10, chunk_generator(1, 5)).x_BM
    b = ds.sample(10, chunk_generator(1, 5)).x_BM
    c = ds.sample(10, chunk_generator(1, 6)).x_BM
    d = ds.sample(10, chunk_generator(2, 5)).x_BM
    assert torch.equal(a, b)
    assert not torch.equal(a, c) and not torch.equal(a, d)


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"A": 0}, "num_features"),
        ({"M": -1}, "model_dim"),
        ({"k": 13}, "k"),
        ({"k": 0}, "k"),
        ({"parent_alone_prob": 1.5}, "parent_alone_prob"),
        ({"magnitude_range": (2.0, 1.0)}, "magnitude_range"),
    ],
)
def test_bad_configs_name_the_field(kw, field):
    with pytest.raises(FieldError) as err:
        make(**kw)
    assert err.value.field == field
