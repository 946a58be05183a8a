"""The TopK SAE's training forward with gradients only at the used latents equals the plain
autograd version (:meth:`TopKSAE.train_forward_dense`), auxiliary-k loss included."""

from __future__ import annotations

import pytest
import torch

from sae_hacking.saes.topk import TopKSAE


def sae_and_batch(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    sae = TopKSAE(24, 96, 6, gen=gen)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return sae, torch.randn(64, 24, generator=gen) * 2


def grads(sae, method, x, dead=None, k_aux=0):
    sae.zero_grad()
    out = getattr(sae, method)(x, dead, k_aux)
    loss = out.loss if out.aux_loss is None else out.loss + 0.5 * out.aux_loss
    loss.backward()
    return out, {name: p.grad.clone() for name, p in sae.named_parameters()}


@pytest.mark.parametrize("n_dead", [0, 5, 96])
def test_sparse_backward_equals_dense_autograd(n_dead):
    sae, x = sae_and_batch()
    dead = torch.zeros(96, dtype=torch.bool)
    dead[torch.randperm(96, generator=torch.Generator().manual_seed(1))[:n_dead]] = True
    fast, g_fast = grads(sae, "train_forward", x, dead, k_aux=12)
    dense, g_dense = grads(sae, "train_forward_dense", x, dead, k_aux=12)
    torch.testing.assert_close(fast.loss, dense.loss)
    torch.testing.assert_close(fast.aux_loss, dense.aux_loss)
    assert torch.equal(fast.fired["parent"], dense.fired["parent"])
    assert (n_dead > 0) == bool(fast.aux_loss > 0)
    for name in g_dense:
        torch.testing.assert_close(g_fast[name], g_dense[name], atol=1e-6, rtol=1e-5)
    assert all(g.abs().sum() > 0 for g in g_fast.values())


def test_without_aux_loss_and_for_inputs_that_need_gradients():
    sae, x = sae_and_batch(3)
    _, g_fast = grads(sae, "train_forward", x)
    _, g_dense = grads(sae, "train_forward_dense", x)
    for name in g_dense:
        torch.testing.assert_close(g_fast[name], g_dense[name], atol=1e-6, rtol=1e-5)
    x_fast, x_dense = x.clone().requires_grad_(), x.clone().requires_grad_()
    sae.train_forward(x_fast).loss.backward()
    sae.train_forward_dense(x_dense).loss.backward()
    torch.testing.assert_close(x_fast.grad, x_dense.grad, atol=1e-6, rtol=1e-5)
