"""Resampling of dead latents (after Bricken et al. 2023, simplified).

Every ``resample_every`` steps, each parent-level latent that has not fired for ``dead_steps``
steps is moved onto the direction of a poorly reconstructed input: a fresh batch is drawn,
inputs are picked with probability proportional to their squared reconstruction error, and the
SAE re-initialises the latent on that input's residual direction
(:meth:`~sae_hacking.saes.trainable.TrainableSAE.resample`: decoder row and encoder column
along it, bias zero; the hierarchical SAE also re-initialises the latent's children). The
trainer then resets the Adam moments of the entries the SAE reports, so stale statistics do not
fling the new latent away.

A latent left dead has no way back under TopK (it never wins, so it gets no gradient); this is
what brings the toy SAE's dead fraction to zero.
"""

from __future__ import annotations

import torch
from jaxtyping import Int

from sae_hacking.data.toy import ToyDataset, chunk_generator
from sae_hacking.saes.trainable import Resampled, TrainableSAE, residual_directions

RESAMPLE_BATCH = 4096


@torch.no_grad()
def resample_dead(
    sae: TrainableSAE,
    dead_D: Int[torch.Tensor, " D"],
    dataset: ToyDataset,
    seed: int,
    step: int,
) -> Resampled | None:
    """Move the parent latents ``dead_D`` onto residual directions of a batch that is a pure
    function of ``(seed, step)``; ``None`` when nothing was moved."""
    if dead_D.numel() == 0:
        return None
    gen = chunk_generator(seed, -1 - step)
    x_BM = dataset.sample(RESAMPLE_BATCH, gen).x_BM
    dirs_DM = residual_directions(sae, x_BM, dead_D.numel(), gen)
    if dirs_DM is None:
        return None
    return sae.resample(dead_D, dirs_DM, gen)
