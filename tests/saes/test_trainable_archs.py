"""Training the ReLU, JumpReLU and BatchTopK SAEs through the TrainableSAE interface: the loss
falls on synthetic sparse data, the sparsity settings do what they say, and the losses and
straight-through gradients are SAELens's."""

import pytest
import torch
import torch.nn.functional as F

from sae_hacking.errors import FieldError
from sae_hacking.saes.batchtopk import BatchTopKSAE
from sae_hacking.saes.jumprelu import JumpReLUSAE, jumprelu_ste, step_ste
from sae_hacking.saes.relu import ReLUSAE
from sae_hacking.saes.trainable import PARENT

M, N_FEATURES, E, B = 16, 32, 48, 128


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def sparse_data(n, seed):
    """Each row: about 3 of 32 fixed random unit directions with magnitudes in [0.5, 1.5]."""
    dirs = F.normalize(torch.randn(N_FEATURES, M, generator=gen(0)), dim=-1)
    g = gen(seed)
    active = torch.rand(n, N_FEATURES, generator=g) < 3 / N_FEATURES
    return (active * (0.5 + torch.rand(n, N_FEATURES, generator=g))) @ dirs


TRAIN = sparse_data(40 * B, 1)
VAL = sparse_data(1024, 2)


def train(sae, steps=300, lr=1e-2):
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    for step in range(steps):
        start = (step % 40) * B
        out = sae.train_forward(TRAIN[start : start + B])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        sae.after_step(out)
    return sae


def val_loss(sae):
    with torch.no_grad():
        return float(sae.train_forward(VAL).loss)


def mean_l0(sae):
    with torch.no_grad():
        return float((sae.encode(VAL) != 0).float().sum(-1).mean())


BUILDERS = {
    "relu": lambda: ReLUSAE(M, E, gen=gen(1), l1_coefficient=0.03),
    "jumprelu": lambda: JumpReLUSAE(M, E, gen=gen(1), l0_coefficient=0.01),
    "batchtopk": lambda: BatchTopKSAE(M, E, k=3, gen=gen(1)),
}


@pytest.mark.parametrize("name", BUILDERS)
def test_a_few_hundred_adam_steps_reduce_the_loss(name):
    sae = BUILDERS[name]()
    before = val_loss(sae)
    train(sae)
    assert val_loss(sae) < 0.2 * before
    out = sae.train_forward(VAL)
    assert set(out.fired) == {PARENT} and out.fired[PARENT].shape == (E,)
    torch.testing.assert_close(out.mse, ((out.recon_BM - VAL) ** 2).mean())


def test_relu_loss_is_summed_squared_error_plus_decoder_weighted_l1():
    sae = ReLUSAE(M, E, gen=gen(1), l1_coefficient=0.7)
    with torch.no_grad():
        sae.W_dec_EM.mul_(torch.rand(E, 1, generator=gen(2)) + 0.5)
    x = VAL[:64]
    acts = sae.encode(x)
    recon = sae.decode(acts)
    want = ((recon - x) ** 2).sum(-1).mean() + 0.7 * (acts * sae.W_dec_EM.norm(dim=-1)).sum(
        -1
    ).mean()
    out = sae.train_forward(x)
    torch.testing.assert_close(out.loss, want)
    assert torch.equal(out.fired[PARENT], (acts > 0).any(0))
    assert "l1_coefficient" not in sae.config()


def test_relu_larger_l1_coefficient_gives_lower_l0():
    l0 = [mean_l0(train(ReLUSAE(M, E, gen=gen(1), l1_coefficient=c))) for c in (0.0, 0.3)]
    assert l0[1] < 0.6 * l0[0]


def test_jumprelu_larger_l0_coefficient_gives_lower_l0_and_moves_the_thresholds():
    free = train(JumpReLUSAE(M, E, gen=gen(1), l0_coefficient=0.0))
    sparse = JumpReLUSAE(M, E, gen=gen(1), l0_coefficient=0.1)
    out = sparse.train_forward(TRAIN[:B])
    out.loss.backward()
    assert sparse.threshold_E.grad.abs().sum() > 0  # the estimator reaches the threshold
    train(sparse)
    assert mean_l0(sparse) < 0.5 * mean_l0(free)
    assert (sparse.threshold_E > 10 * sparse.init_threshold).float().mean() > 0.5
    assert (sparse.threshold_E >= 0).all()
    assert set(sparse.state_dict()) == {"W_enc_ME", "b_enc_E", "W_dec_EM", "b_dec_M", "threshold_E"}
    assert "l0_coefficient" not in sparse.config()


def test_jumprelu_thresholds_are_clamped_at_zero_after_each_step():
    sae = JumpReLUSAE(M, E, gen=gen(1), init_threshold=0.0)
    with torch.no_grad():
        sae.threshold_E.sub_(torch.rand(E, generator=gen(3)))
    sae.after_step(sae.train_forward(VAL[:8]))
    assert torch.equal(sae.threshold_E.detach(), torch.zeros(E))


def test_jumprelu_settings_are_checked():
    with pytest.raises(FieldError, match="bandwidth"):
        JumpReLUSAE(M, E, bandwidth=0.0)
    with pytest.raises(FieldError, match="init_threshold"):
        JumpReLUSAE(M, E, init_threshold=-0.1)
    assert JumpReLUSAE(M, E).apply_b_dec_to_input is False  # Gemma Scope's convention


def test_jumprelu_resample_resets_the_threshold_and_reports_it():
    sae = JumpReLUSAE(M, E, gen=gen(1))
    with torch.no_grad():
        sae.threshold_E.fill_(5.0)
    dead = torch.tensor([3, 7])
    done = sae.resample(dead, F.normalize(torch.randn(2, M, generator=gen(4)), dim=-1), gen(5))
    assert torch.equal(sae.threshold_E[dead].detach(), torch.full((2,), sae.init_threshold))
    dim, index = done.entries["threshold_E"]
    assert dim == 0 and torch.equal(index, dead)


def smoothed_step(z, bandwidth):
    """The step function smoothed by the unit rectangle kernel of width ``bandwidth``."""
    return (z / bandwidth + 0.5).clamp(0, 1)


def test_jumprelu_straight_through_gradients_are_the_kernel_smoothed_derivatives():
    # The threshold gradients are those of the step smoothed by the rectangle kernel (and, for
    # the JumpReLU output, scaled by theta: the jump's height), checked by central differences.
    bandwidth, h = 0.1, 1e-6
    pre = torch.randn(256, 6, generator=gen(6), dtype=torch.float64)
    theta = 0.2 + 0.3 * torch.rand(6, generator=gen(7), dtype=torch.float64)
    g = torch.randn(256, 6, generator=gen(8), dtype=torch.float64)
    pre.requires_grad_(True)
    theta.requires_grad_(True)
    (jumprelu_ste(pre, theta, bandwidth) * g).sum().backward()
    torch.testing.assert_close(pre.grad, g * (pre > theta))
    eye = torch.eye(6, dtype=torch.float64)
    th = theta.detach()
    out_fd = [
        (
            (g * th * smoothed_step(pre.detach() - (th + h * eye[i]), bandwidth)).sum()
            - (g * th * smoothed_step(pre.detach() - (th - h * eye[i]), bandwidth)).sum()
        )
        / (2 * h)
        for i in range(6)
    ]
    torch.testing.assert_close(theta.grad, torch.stack(out_fd))
    assert (theta.grad != 0).all()

    theta.grad = None
    pre.grad = None
    l0 = step_ste(pre, theta, bandwidth)
    assert torch.equal(l0, (pre > theta).double())
    (l0 * g).sum().backward()
    assert pre.grad is None  # DeepMind's estimator: the L0 term does not train the encoder
    step_fd = [
        (
            (g * smoothed_step(pre.detach() - (th + h * eye[i]), bandwidth)).sum()
            - (g * smoothed_step(pre.detach() - (th - h * eye[i]), bandwidth)).sum()
        )
        / (2 * h)
        for i in range(6)
    ]
    torch.testing.assert_close(theta.grad, torch.stack(step_fd))


def test_batchtopk_keeps_k_per_input_on_average_then_encodes_with_its_threshold():
    sae = BatchTopKSAE(M, E, k=3, gen=gen(1))
    assert sae.config() == {"architecture": "batchtopk", "d_in": M, "d_sae": E, "k": 3}
    assert sae.levels() == {PARENT: E} and sae.latent_banks() == {PARENT: E}
    x = TRAIN[:B]
    with torch.no_grad():
        acts = sae.batch_topk(sae.pre_acts(x))
    assert int((acts > 0).sum()) == 3 * B
    assert sae.threshold < 0  # unset before training
    train(sae, steps=100)
    assert sae.threshold > 0
    with torch.no_grad():
        pre = sae.pre_acts(VAL)
        acts = sae.encode(VAL)
        torch.testing.assert_close(acts, pre * (pre > sae.threshold))
        # An input's code no longer depends on its batch-mates.
        torch.testing.assert_close(sae.encode(VAL[:1]), acts[:1])
        assert 1 < float((acts > 0).float().sum(-1).mean()) < 6


# -- SAELens's own training SAEs on the same weights --------------------------------------------


def _copy_into_saelens(ours, theirs):
    with torch.no_grad():
        theirs.W_enc.copy_(ours.W_enc_ME)
        theirs.W_dec.copy_(ours.W_dec_EM)
        theirs.b_enc.copy_(ours.b_enc_E)
        theirs.b_dec.copy_(ours.b_dec_M)
        if hasattr(ours, "threshold_E"):
            theirs.threshold.copy_(ours.threshold_E)


def _saelens_step(theirs, x, coefficients):
    from sae_lens.saes.sae import TrainStepInput

    step = TrainStepInput(
        sae_in=x,
        coefficients=coefficients,
        dead_neuron_mask=None,
        n_training_steps=0,
        is_logging_step=False,
    )
    return theirs.training_forward_pass(step).loss


def _assert_same_loss_and_gradients(ours, theirs, x, coefficients):
    ours_loss = ours.train_forward(x).loss
    ours_loss.backward()
    theirs_loss = _saelens_step(theirs, x, coefficients)
    theirs_loss.backward()
    torch.testing.assert_close(ours_loss, theirs_loss)
    pairs = {"W_enc_ME": "W_enc", "W_dec_EM": "W_dec", "b_enc_E": "b_enc", "b_dec_M": "b_dec"}
    if hasattr(ours, "threshold_E"):
        pairs["threshold_E"] = "threshold"
    for mine, name in pairs.items():
        torch.testing.assert_close(
            getattr(ours, mine).grad, getattr(theirs, name).grad, msg=f"{mine} gradient"
        )


@pytest.mark.slow  # imports sae-lens (seconds)
@pytest.mark.parametrize("apply_b_dec_to_input", [False, True])
def test_jumprelu_loss_and_gradients_equal_saelens_jumprelu_training_sae(apply_b_dec_to_input):
    pytest.importorskip("sae_lens")
    from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig

    # A wide kernel and spread thresholds, so many pre-activations fall inside it.
    bandwidth = 0.2
    ours = JumpReLUSAE(
        M,
        E,
        apply_b_dec_to_input=apply_b_dec_to_input,
        gen=gen(1),
        l0_coefficient=0.3,
        bandwidth=bandwidth,
    )
    with torch.no_grad():
        ours.b_dec_M.copy_(0.1 * torch.randn(M, generator=gen(2)))
        ours.b_enc_E.copy_(0.1 * torch.randn(E, generator=gen(3)))
        ours.threshold_E.copy_(0.3 * torch.rand(E, generator=gen(4)))
    cfg = JumpReLUTrainingSAEConfig(
        d_in=M,
        d_sae=E,
        dtype="float32",
        device="cpu",
        apply_b_dec_to_input=apply_b_dec_to_input,
        jumprelu_bandwidth=bandwidth,
        l0_coefficient=0.3,
    )
    theirs = JumpReLUTrainingSAE(cfg)
    _copy_into_saelens(ours, theirs)
    _assert_same_loss_and_gradients(ours, theirs, VAL[:256], {"l0": 0.3})
    assert ours.threshold_E.grad.abs().sum() > 0


@pytest.mark.slow  # imports sae-lens (seconds)
def test_relu_loss_and_gradients_equal_saelens_standard_training_sae():
    pytest.importorskip("sae_lens")
    from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig

    ours = ReLUSAE(M, E, gen=gen(1), l1_coefficient=2.5)
    with torch.no_grad():
        ours.W_dec_EM.mul_(torch.rand(E, 1, generator=gen(2)) + 0.5)
        ours.b_dec_M.copy_(0.1 * torch.randn(M, generator=gen(3)))
    cfg = StandardTrainingSAEConfig(
        d_in=M, d_sae=E, dtype="float32", device="cpu", l1_coefficient=2.5
    )
    theirs = StandardTrainingSAE(cfg)
    _copy_into_saelens(ours, theirs)
    _assert_same_loss_and_gradients(ours, theirs, VAL[:256], {"l1": 2.5})
