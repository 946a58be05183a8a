"""Resampling of dead latents (after Bricken et al. 2023, simplified).

Every ``resample_every`` steps, each parent-level latent that has not fired for ``dead_steps``
steps is moved onto the direction of a poorly reconstructed input: a fresh batch is drawn,
inputs are picked with probability proportional to their squared reconstruction error, and the
latent's decoder row becomes that input's residual direction, its encoder column the same
direction (scaled to the live latents' mean encoder norm), its bias zero. The Adam moments of the
touched entries are reset so stale statistics do not fling the new latent away. For the
hierarchical SAE the resampled parent's two children are re-initialised small and random.

A latent left dead has no way back under TopK (it never wins, so it gets no gradient); this is
what brings the toy SAE's dead fraction to zero.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from sae_hacking.data.toy import chunk_generator
from sae_hacking.saes.hierarchical import HierarchicalTopKSAE

if TYPE_CHECKING:
    from sae_hacking.toy.train import ToyTrainer

RESAMPLE_BATCH = 4096


def _reset_adam(optimizer: torch.optim.Optimizer, param: torch.Tensor, index, dim: int) -> None:
    state = optimizer.state.get(param)
    if not state:
        return
    for key in ("exp_avg", "exp_avg_sq"):
        state[key].index_fill_(dim, index, 0.0)


@torch.no_grad()
def resample_dead(trainer: ToyTrainer, step_seed: int) -> int:
    """Resample the trainer's dead parent-level latents; returns how many were moved."""
    cfg = trainer.config
    dead = (trainer.state.since_fired["parent"] >= cfg.dead_steps).nonzero().flatten()
    if dead.numel() == 0:
        return 0
    sae, opt = trainer.sae, trainer.optimizer
    gen = chunk_generator(cfg.seed, -1 - step_seed)
    x_BM = trainer.dataset.sample(RESAMPLE_BATCH, gen).x_BM
    residual_BM = x_BM - sae.decode(sae.encode(x_BM))
    weights_B = (residual_BM**2).sum(-1).cpu()
    if float(weights_B.sum()) <= 0:
        return 0
    replace = int((weights_B > 0).sum()) < dead.numel()
    picks = torch.multinomial(weights_B, dead.numel(), replacement=replace, generator=gen)
    dirs_DM = F.normalize(residual_BM[picks.to(residual_BM.device)], dim=-1)
    alive = torch.ones(sae.W_enc_ME.shape[1], dtype=torch.bool, device=dead.device)
    alive[dead] = False
    enc_norm = sae.W_enc_ME[:, alive].norm(dim=0).mean() if alive.any() else 1.0
    sae.W_dec_EM[dead] = (
        dirs_DM * sae.W_dec_EM[alive].norm(dim=-1).mean() if alive.any() else dirs_DM
    )
    sae.W_enc_ME[:, dead] = dirs_DM.T * enc_norm
    sae.b_enc_E[dead] = 0.0
    _reset_adam(opt, sae.W_dec_EM, dead, 0)
    _reset_adam(opt, sae.W_enc_ME, dead, 1)
    _reset_adam(opt, sae.b_enc_E, dead, 0)
    if isinstance(sae, HierarchicalTopKSAE):
        children = torch.stack([2 * dead, 2 * dead + 1], dim=1).flatten()
        new_HM = F.normalize(torch.randn(children.numel(), sae.d_in, generator=gen), dim=-1)
        new_HM = new_HM.to(sae.W_dec_HM.device)
        sae.W_dec_HM[children] = 0.1 * new_HM
        sae.W_enc_MH[:, children] = new_HM.T
        sae.b_enc_H[children] = 0.0
        sae.child_ratio_H[children] = 1.0
        _reset_adam(opt, sae.W_dec_HM, children, 0)
        _reset_adam(opt, sae.W_enc_MH, children, 1)
        _reset_adam(opt, sae.b_enc_H, children, 0)
        trainer.state.since_fired["child"][children] = 0
    trainer.state.since_fired["parent"][dead] = 0
    return int(dead.numel())
