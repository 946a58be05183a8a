"""Our SAEs scored by SAELens's ground-truth evaluation on its synthetic data: every trainable
architecture exports to a SAELens SAE whose decode(encode(x)) is our reconstruction, one latent
per effective decoder row; a hand-set perfect SAE scores MCC 1 and absorbs nothing, a random one
clearly worse; SAELens's numbers and ours come from the same samples. All import sae-lens."""

import pytest
import torch

from sae_hacking.data.synthetic_config import SyntheticDataConfig
from sae_hacking.saes.registry import TRAINABLE, architecture_class

pytestmark = pytest.mark.slow  # imports sae-lens (seconds)

M = 32
# Constructor arguments per architecture (12 latents or 4 parents); a new one must be added.
OPTIONS = {
    "topk": {"d_sae": 12, "k": 3},
    "hierarchical": {"n_parents": 4, "k": 2},
    "matryoshka": {"group_sizes": [4, 8], "k": 3},
    "batchtopk": {"d_sae": 12, "k": 3},
    "jumprelu": {"d_sae": 12},
    "relu": {"d_sae": 12},
    "tiered": {"n_parents": 4, "k": 2},
}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def data():
    from sae_hacking.data.synthetic import SyntheticData

    cfg = SyntheticDataConfig(
        n_roots=4, model_dim=M, root_firing_prob=0.3, orthogonalization_steps=100
    )
    return SyntheticData.generate(cfg, seed=0)


def random_sae(name, threshold=None):
    """Random weights (decoder bias included); ``threshold`` sets the inference threshold of
    the architectures that learn one."""
    sae = architecture_class(name)(M, gen=gen(1), **OPTIONS[name])
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen(2)))
        if name == "hierarchical":
            sae.child_ratio_H.uniform_(0.3, 2.0, generator=gen(3))
        if threshold is not None and hasattr(sae, "threshold"):
            sae.threshold.fill_(threshold)
        if threshold is not None and hasattr(sae, "child_threshold"):
            sae.child_threshold.fill_(threshold)
        if name == "jumprelu":
            sae.threshold_E.uniform_(0.0, 0.2, generator=gen(3))
    return sae


def test_every_trainable_architecture_is_covered():
    assert set(OPTIONS) == set(TRAINABLE)


@pytest.mark.parametrize("threshold", [None, 0.1])
@pytest.mark.parametrize("name", TRAINABLE)
def test_export_decodes_its_codes_into_our_reconstruction(data, name, threshold):
    from sae_hacking.toy.synthetic_eval import to_saelens_sae

    sae = random_sae(name, threshold)
    x_BM = data.sample(64, gen(4))
    exported = to_saelens_sae(sae)
    with torch.no_grad():
        codes_BD = exported.encode(x_BM)
        recon_BM = exported.decode(codes_BD)
        ours_BM = sae(x_BM)
    rows_DM = sae.feature_vectors()
    assert codes_BD.shape == (64, rows_DM.shape[0]) and exported.cfg.d_sae == rows_DM.shape[0]
    assert torch.equal(exported.W_dec, rows_DM) and torch.equal(exported.b_dec, sae.b_dec_M)
    assert codes_BD.ne(0).any() and ours_BM.norm() > 0
    torch.testing.assert_close(recon_BM, ours_BM, atol=1e-5, rtol=1e-5)


def test_hierarchical_codes_are_whole_children_and_what_remains_of_the_parent(data):
    from sae_hacking.toy.synthetic_eval import effective_codes, to_saelens_sae

    sae = random_sae("hierarchical")
    x_BM = data.sample(256, gen(5))
    with torch.no_grad():
        ours_BD = sae.encode(x_BM)
        codes_BD = effective_codes(sae, x_BM)
    E = sae.n_parents
    child_BH, parent_BE = ours_BD[:, E:], ours_BD[:, :E]
    assert child_BH.ne(0).any()
    assert torch.equal(codes_BD[:, E:] != 0, child_BH != 0)
    torch.testing.assert_close(codes_BD[:, E:], child_BH / sae.child_ratio_H)
    whole_BE = codes_BD[:, E:].unflatten(-1, (E, 2)).sum(-1)
    torch.testing.assert_close(codes_BD[:, :E], parent_BE - whole_BE)
    # rows="decoder": the flat view, unchanged
    flat = to_saelens_sae(sae, rows="decoder")
    assert torch.equal(flat.W_dec, sae.W_dec) and not torch.equal(flat.W_dec, sae.feature_vectors())
    with torch.no_grad():
        assert torch.equal(flat.encode(x_BM), ours_BD)


def test_a_child_ratio_of_zero_is_refused():
    from sae_hacking.toy.synthetic_eval import to_saelens_sae

    sae = random_sae("hierarchical")
    with torch.no_grad():
        sae.child_ratio_H[3] = 0.0
    with pytest.raises(ValueError, match="ratio is 0"):
        to_saelens_sae(sae)
    to_saelens_sae(sae, rows="decoder")


def perfect_sae(data):
    """A JumpReLU SAE that reads each true feature's activation exactly: decoder rows the true
    features, encoder their pseudo-inverse, threshold 0.5 (activations are 0 or 1)."""
    from sae_hacking.saes.jumprelu import JumpReLUSAE

    n_features = data.num_features
    sae = JumpReLUSAE(M, n_features, apply_b_dec_to_input=False, gen=gen(0))
    with torch.no_grad():
        sae.W_dec_EM.copy_(data.features_FM)
        sae.W_enc_ME.copy_(torch.linalg.pinv(data.features_FM))
        sae.b_enc_E.zero_()
        sae.threshold_E.fill_(0.5)
    return sae


def test_a_perfect_sae_scores_one_and_absorbs_nothing_a_random_one_clearly_worse(data):
    from sae_hacking.toy.synthetic_eval import evaluate_synthetic

    perfect = evaluate_synthetic(perfect_sae(data), data, 2000, gen(6))
    assert perfect["saelens_mcc"] == pytest.approx(1.0, abs=1e-4)
    assert perfect["saelens_uniqueness"] == 1.0
    for key in ("saelens_precision", "saelens_recall", "saelens_f1_score"):
        assert perfect[key] == pytest.approx(1.0), key
    assert perfect["saelens_explained_variance"] == pytest.approx(1.0, abs=1e-5)
    assert perfect["absorption_rate"] == 0.0 and perfect["dead_eval_frac"] == 0.0
    assert perfect["saelens_sae_l0"] == pytest.approx(perfect["saelens_true_l0"])
    random = evaluate_synthetic(random_sae("topk"), data, 2000, gen(6))
    assert random["saelens_mcc"] < 0.6 and random["saelens_f1_score"] < 0.5
    assert random["absorption_rate"] > 0.3 and random["explained_variance"] < 0.5


@pytest.mark.parametrize("name", ["topk", "hierarchical"])
def test_sae_lens_and_our_metrics_see_the_same_samples(data, name):
    from sae_hacking.toy.synthetic_eval import evaluate_synthetic

    sae = random_sae(name)
    g, same = gen(7), gen(7)
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    out = evaluate_synthetic(sae, data, 1500, g)
    assert torch.equal(torch.rand(3), expected)  # the global RNG is untouched
    assert sae.training  # SAELens evaluated a copy
    _, acts_BF = data.sample_with_features(1500, same)
    assert torch.equal(g.get_state(), same.get_state())  # one draw, as sampling takes
    assert out["saelens_true_l0"] == pytest.approx(float((acts_BF > 0).sum(-1).float().mean()))
    assert out["saelens_explained_variance"] == pytest.approx(out["explained_variance"], abs=1e-4)
    assert out["saelens_sae_l0"] == pytest.approx(out["l0"])
    assert all(isinstance(v, float) for v in out.values())
    assert {"saelens_mcc", "saelens_uniqueness", "saelens_dead_latents"} <= set(out)
    assert 0 <= out["absorption_rate"] <= 1 and 0 < out["feature_recovery_mean"] <= 1
