"""SAELens's synthetic feature models as a data source: settings checked by name, batches a pure
function of the caller's generator (resume sees the same data), the hierarchy SAELens built, and
a saved dataset that comes back identical. Everything that builds data imports SAELens (seconds),
hence slow; the settings checks are torch-free and quick."""

import json
import math
import subprocess
import sys

import pytest

from sae_hacking.data.synthetic_config import SyntheticDataConfig
from sae_hacking.errors import FieldError

slow = pytest.mark.slow  # imports sae-lens (seconds)


def test_defaults_are_the_setup_of_issue_20():
    cfg = SyntheticDataConfig()
    assert (cfg.n_roots, cfg.branching_factor, cfg.depth, cfg.mutually_exclusive) == (
        40,
        2,
        1,
        True,
    )
    assert cfg.max_tree_features() == 120
    # an active root has a child 80 % of the time
    assert 1 - (1 - cfg.child_firing_prob) ** 2 == pytest.approx(0.8)
    assert SyntheticDataConfig(depth=2, branching_factor=3).max_tree_features() == 40 * 13


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"n_roots": 0}, "n_roots"),
        ({"branching_factor": 1}, "branching_factor"),
        ({"max_branching_factor": 1}, "max_branching_factor"),
        ({"branching_factor": 3, "max_branching_factor": 2}, "max_branching_factor"),
        ({"depth": 0}, "depth"),
        ({"model_dim": 0}, "model_dim"),
        ({"root_firing_prob": 0.0}, "root_firing_prob"),
        ({"root_firing_prob": math.nan}, "root_firing_prob"),
        ({"child_firing_prob": 1.5}, "child_firing_prob"),
        ({"extra_firing_prob": 0.0}, "extra_firing_prob"),
        ({"extra_features": -1}, "extra_features"),
        ({"child_magnitude": 0.0}, "child_magnitude"),
        ({"magnitude_std": -0.1}, "magnitude_std"),
        ({"orthogonalization_steps": -1}, "orthogonalization_steps"),
        ({"child_parent_cosine": 1.0}, "child_parent_cosine"),
        ({"child_parent_cosine": -0.5}, "child_parent_cosine"),
        ({"correlation_rank": -1}, "correlation_rank"),
        ({"correlation_rank": 100, "correlation_scale": 0.2}, "correlation_scale"),
        ({"bias_norm": -1.0}, "bias_norm"),
    ],
)
def test_impossible_settings_are_refused_naming_the_field(changes, field):
    with pytest.raises(FieldError) as err:
        SyntheticDataConfig(**changes)
    assert err.value.field == field


def test_validate_checks_again_what_construction_checked():
    cfg = SyntheticDataConfig()
    cfg.validate()
    object.__setattr__(cfg, "depth", 0)  # what a hand-edited copy could hold
    with pytest.raises(FieldError, match="depth"):
        cfg.validate()
    object.__setattr__(cfg, "depth", 1)
    object.__setattr__(cfg, "max_branching_factor", 1)
    with pytest.raises(FieldError, match="max_branching_factor"):
        cfg.validate()


@slow
def test_the_config_imports_no_torch_and_the_other_modules_no_sae_lens():
    code = (
        "import sys\n"
        "import sae_hacking.data.synthetic_config\n"
        "assert 'torch' not in sys.modules\n"
        "import sae_hacking.data.synthetic\n"
        "assert 'torch' in sys.modules and 'sae_lens' not in sys.modules\n"
        "import sae_hacking.toy.synthetic_eval\n"
        "assert 'sae_lens' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- building and sampling (SAELens) -----------------------------------------------------------


def small(**changes) -> SyntheticDataConfig:
    base = {"n_roots": 6, "model_dim": 24, "orthogonalization_steps": 20, "root_firing_prob": 0.3}
    return SyntheticDataConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def data():
    from sae_hacking.data.synthetic import SyntheticData

    return SyntheticData.generate(small(), seed=0)


def gen(seed):
    import torch

    return torch.Generator().manual_seed(seed)


@slow
def test_a_batch_is_a_pure_function_of_the_generator_and_leaves_the_global_rng_alone(data):
    import torch

    from sae_hacking.data.toy import chunk_generator

    torch.manual_seed(123)
    expected = torch.rand(5)
    torch.manual_seed(123)
    first = data.sample(256, chunk_generator(0, 3))
    assert torch.equal(torch.rand(5), expected)
    assert torch.equal(data.sample(256, chunk_generator(0, 3)), first)
    assert not torch.equal(data.sample(256, chunk_generator(0, 4)), first)
    g = chunk_generator(0, 3)
    x_BM, acts_BF = data.sample_with_features(256, g)
    assert torch.equal(x_BM, first)
    assert not torch.equal(data.sample(256, g), first)  # the generator moved on
    torch.testing.assert_close(x_BM, acts_BF @ data.features_FM + data.bias_M)
    assert x_BM.shape == (256, 24) and acts_BF.shape == (256, data.num_features)


@slow
def test_the_same_seed_builds_the_same_model_and_another_seed_another():
    import torch

    from sae_hacking.data.synthetic import SyntheticData

    a, b = (SyntheticData.generate(small(), seed=5) for _ in range(2))
    c = SyntheticData.generate(small(), seed=6)
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, b.state_dict()[name])
    assert not torch.equal(a.features_FM, c.features_FM)
    assert torch.equal(a.sample(64, gen(1)), b.sample(64, gen(1)))


@slow
def test_the_tree_is_the_one_sae_lens_generates_and_its_rules_hold():
    import torch
    from sae_lens.synthetic import HierarchyConfig, generate_hierarchy

    from sae_hacking.data.synthetic import HIERARCHY_SEED_OFFSET, SyntheticData

    cfg = small(depth=2, max_branching_factor=4, orthogonalization_steps=0)
    data = SyntheticData.generate(cfg, seed=2)
    theirs = generate_hierarchy(
        cfg.max_tree_features(),
        HierarchyConfig(6, (2, 4), 2, mutually_exclusive_portion=1.0),
        seed=2 + HIERARCHY_SEED_OFFSET,
    )
    assert data.hierarchy == theirs
    n_children = torch.bincount(data.parents_F[data.parents_F >= 0], minlength=data.num_features)
    parents = data.parent_features
    assert set(n_children[parents].tolist()) <= {2, 3, 4} and len(set(n_children.tolist())) > 2
    assert data.depth_F.max() == 2 and torch.equal(data.depth_F[:6], torch.zeros(6).long())
    assert torch.equal(parents, (data.depth_F < 2).nonzero().flatten())
    _, acts_BF = data.sample_with_features(4000, gen(0))
    active_BF = acts_BF > 0
    children = (data.parents_F >= 0).nonzero().flatten()
    assert not (active_BF[:, children] & ~active_BF[:, data.parents_F[children]]).any()
    for p in parents.tolist():
        kids = (data.parents_F == p).nonzero().flatten()
        assert active_BF[:, kids].sum(-1).max() == 1  # mutually exclusive


@slow
def test_default_firing_rates_roots_10_percent_child_given_root_80_percent():
    import torch

    from sae_hacking.data.synthetic import SyntheticData

    data = SyntheticData.generate(SyntheticDataConfig(orthogonalization_steps=0), seed=0)
    _, acts_BF = data.sample_with_features(20_000, gen(0))
    active_BF = acts_BF > 0
    roots_BR = active_BF[:, :40]
    has_child_BR = active_BF[:, 40:].unflatten(-1, (40, 2)).any(-1)
    assert float(roots_BR.float().mean()) == pytest.approx(0.1, abs=0.005)
    assert float(has_child_BR.sum() / roots_BR.sum()) == pytest.approx(0.8, abs=0.015)
    assert torch.equal(data.parents_F[40:], torch.arange(40).repeat_interleave(2))
    # the number of active roots varies from sample to sample
    assert len(set(roots_BR.sum(-1).tolist())) >= 6


@slow
def test_without_mutual_exclusion_siblings_fire_together():
    from sae_hacking.data.synthetic import SyntheticData

    data = SyntheticData.generate(small(mutually_exclusive=False), seed=0)
    _, acts_BF = data.sample_with_features(2000, gen(0))
    assert not data.exclusive_F.any()
    assert ((acts_BF[:, 6:] > 0).unflatten(-1, (6, 2)).sum(-1) == 2).any()


@slow
def test_sae_lens_orthogonalisation_and_our_child_parent_cosine():
    import torch
    import torch.nn.functional as F

    from sae_hacking.data.synthetic import SyntheticData

    plain = SyntheticData.generate(small(orthogonalization_steps=0), seed=0)
    ortho = SyntheticData.generate(small(orthogonalization_steps=200), seed=0)

    def max_offdiag(d):
        cos = F.normalize(d.features_FM, dim=-1) @ F.normalize(d.features_FM, dim=-1).T
        return float((cos - torch.eye(d.num_features)).abs().max())

    assert max_offdiag(ortho) < 0.05 < max_offdiag(plain)
    rotated = SyntheticData.generate(small(depth=2, child_parent_cosine=0.6), seed=0)
    children = (rotated.parents_F >= 0).nonzero().flatten()
    child_CM = rotated.features_FM[children]
    parent_CM = rotated.features_FM[rotated.parents_F[children]]
    torch.testing.assert_close(child_CM.norm(dim=-1), torch.ones(len(children)))
    torch.testing.assert_close((child_CM * parent_CM).sum(-1), torch.full((len(children),), 0.6))


@slow
def test_extra_features_are_outside_the_trees():
    from sae_hacking.data.synthetic import SyntheticData

    data = SyntheticData.generate(small(extra_features=5, extra_firing_prob=0.5), seed=0)
    assert data.num_features == 18 + 5 and data.n_tree == 18
    assert (data.parents_F[18:] == -1).all() and 20 not in data.hierarchy.feature_indices_used
    _, acts_BF = data.sample_with_features(4000, gen(0))
    assert float((acts_BF[:, 18:] > 0).float().mean()) == pytest.approx(0.5, abs=0.03)


@slow
def test_a_saved_dataset_comes_back_identical(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from sae_hacking.data.synthetic import SyntheticData

    cfg = small(correlation_rank=3, bias_norm=0.5, magnitude_std=0.2, child_magnitude=1.5)
    data = SyntheticData.generate(cfg, seed=4)
    save_file(data.state_dict(), tmp_path / "dataset.safetensors")
    (tmp_path / "dataset.json").write_text(json.dumps(data.config_dict()))
    back = SyntheticData.from_saved(
        json.loads((tmp_path / "dataset.json").read_text()),
        load_file(tmp_path / "dataset.safetensors"),
    )
    assert back.config == cfg and back.hierarchy == data.hierarchy
    for name, tensor in data.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name
    x_BM, acts_BF = data.sample_with_features(500, gen(9))
    x2_BM, acts2_BF = back.sample_with_features(500, gen(9))
    assert torch.equal(x_BM, x2_BM) and torch.equal(acts_BF, acts2_BF)
    assert float(data.bias_M.norm()) == pytest.approx(0.5)
    # magnitudes vary around their role's mean
    child_acts = acts_BF[:, 6:][acts_BF[:, 6:] > 0]
    assert float(child_acts.mean()) == pytest.approx(1.5, abs=0.05) and child_acts.std() > 0.1
