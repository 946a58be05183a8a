"""The training interface every trainable SAE implements, and the helpers trainers share.

A trainer sees only :class:`TrainableSAE`: it calls :meth:`~TrainableSAE.train_forward` on a
batch, adds ``aux_loss`` (weighted) to ``loss``, steps its optimiser, counts per latent bank how
long each latent has gone without firing (``TrainOutput.fired``), calls
:meth:`~TrainableSAE.after_step`, and from time to time hands the SAE dead latents and new
directions (:meth:`~TrainableSAE.resample`), then resets the optimiser state of the entries the
SAE reports. What is particular to an architecture (the hierarchical SAE's children and their
EMA ratios, Matryoshka's inference threshold, an extra loss term) stays inside its class.

For analyses of what an SAE learnt the interface also says which latents are coarse ("parent"
level) and which refine them (:meth:`~TrainableSAE.levels`), and each latent's estimate of its
whole feature (:meth:`~TrainableSAE.feature_vectors`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int

from sae_hacking.saes.base import SAE

# The bank that ``train_forward``'s ``dead_E`` and ``resample``'s indices refer to: the E
# latents a flat SAE has, or the parents of a hierarchical one.
PARENT = "parent"


@dataclass
class TrainOutput:
    """What one training forward produces.

    ``fired`` maps each latent bank (:meth:`TrainableSAE.latent_banks`) to which of its latents
    fired somewhere in the batch. ``aux_loss`` is the auxiliary-k loss, left to the trainer to
    weight; ``loss`` already holds every other term the architecture trains with.
    """

    recon_BM: Float[torch.Tensor, "B M"]
    loss: Float[torch.Tensor, ""]
    mse: Float[torch.Tensor, ""]
    fired: dict[str, Bool[torch.Tensor, " _"]]
    aux_loss: Float[torch.Tensor, ""] | None = None


@dataclass
class Resampled:
    """What :meth:`TrainableSAE.resample` re-initialised.

    ``latents``: per bank, the latents that start afresh (their firing counters restart).
    ``entries``: per parameter name (as in ``named_parameters``), the dimension and the indices
    along it that were overwritten; a trainer resets its optimiser state there.
    """

    latents: dict[str, Int[torch.Tensor, " _"]]
    entries: dict[str, tuple[int, Int[torch.Tensor, " _"]]] = field(default_factory=dict)


class TrainableSAE(SAE):
    """An SAE a trainer can train without knowing its architecture."""

    # C: how many latents of the "child" level belong to each parent latent, laid out
    # parent-major after the parents (0: the SAE has no such pairing).
    children_per_parent: int = 0

    @abc.abstractmethod
    def latent_banks(self) -> dict[str, int]:
        """Name and size of each separately indexed group of latents, ``"parent"`` first."""

    @abc.abstractmethod
    def train_forward(
        self,
        x_BM: Float[torch.Tensor, "B M"],
        dead_E: Bool[torch.Tensor, " E"] | None = None,
        k_aux: int = 0,
    ) -> TrainOutput:
        """Reconstruction and losses of a batch; with ``dead_E`` (the parent bank's dead
        latents) and ``k_aux > 0`` also the auxiliary-k loss."""

    def after_step(self, out: TrainOutput) -> None:  # noqa: B027 (most SAEs need nothing here)
        """Update state that is not learnt by gradient, once the optimiser has stepped."""

    @torch.no_grad()
    def resample(
        self,
        dead_Z: Int[torch.Tensor, " Z"],
        dirs_ZM: Float[torch.Tensor, "Z M"],
        gen: torch.Generator,
    ) -> Resampled:
        """Move parent latents ``dead_Z`` onto the unit directions ``dirs_ZM`` (one each);
        ``gen`` draws whatever else the architecture re-initialises. The default suits SAEs
        whose parent bank is one affine encoder/decoder pair (``W_enc_ME``, ``b_enc_E``,
        ``W_dec_EM``)."""
        return Resampled({PARENT: dead_Z}, resample_encoder_decoder(self, dead_Z, dirs_ZM))

    def levels(self) -> dict[str, int]:
        """Sizes of the consecutive ranges of :meth:`encode`'s latents, coarsest first:
        ``"parent"`` (the latents that stand for whole features), then ``"child"`` when the
        architecture has finer latents."""
        return {PARENT: self.d_sae}

    def feature_vectors(self) -> Float[torch.Tensor, "L M"]:
        """Row ``i``: latent ``i``'s estimate of the whole feature it stands for (its decoder
        row, unless the architecture knows better), in :meth:`encode`'s order."""
        return self.W_dec


def train_step(
    sae: TrainableSAE,
    optimizer: torch.optim.Optimizer,
    x_BM: Float[torch.Tensor, "B M"],
    since_fired: dict[str, Int[torch.Tensor, " _"]],
    dead_steps: int,
    k_aux: int = 0,
    aux_coeff: float = 0.0,
    forward: Callable[..., TrainOutput] | None = None,
    sync_fired: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> TrainOutput:
    """One optimiser step on ``x_BM``: the loss (plus ``aux_coeff`` times the auxiliary-k loss of
    the parent latents that have not fired for ``dead_steps`` steps, when ``k_aux``), then the
    per-bank firing counters ``since_fired`` (steps since each latent last fired, updated in
    place) and :meth:`TrainableSAE.after_step`. Every trainer of this package steps this way.

    Data-parallel training passes ``forward`` (the SAE's ``train_forward`` behind
    ``DistributedDataParallel``, which averages the gradients) and ``sync_fired`` (a latent
    fired if it fired on any rank), so every rank takes the same step."""
    # Only the auxiliary-k loss reads the dead mask; skip the op when it is off.
    dead_E = since_fired[PARENT] >= dead_steps if k_aux else None
    out = (forward or sae.train_forward)(x_BM, dead_E, k_aux)
    loss = out.loss if out.aux_loss is None else out.loss + aux_coeff * out.aux_loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    for bank, fired in out.fired.items():
        if sync_fired is not None:
            fired = sync_fired(fired)
        since_fired[bank] = torch.where(fired, 0, since_fired[bank] + 1)
    sae.after_step(out)
    return out


@torch.no_grad()
def resample_encoder_decoder(
    sae: torch.nn.Module, dead_Z: Int[torch.Tensor, " Z"], dirs_ZM: Float[torch.Tensor, "Z M"]
) -> dict[str, tuple[int, Int[torch.Tensor, " Z"]]]:
    """Point the latents ``dead_Z`` of ``W_enc_ME``, ``b_enc_E``, ``W_dec_EM`` at ``dirs_ZM``.

    Decoder rows get the live rows' mean norm and encoder columns the live columns' mean norm
    (so a new latent is neither drowned nor dominant), biases zero. Returns the entries changed.
    """
    W_enc_ME, b_enc_E, W_dec_EM = sae.W_enc_ME, sae.b_enc_E, sae.W_dec_EM
    alive_E = torch.ones(W_enc_ME.shape[1], dtype=torch.bool, device=dead_Z.device)
    alive_E[dead_Z] = False
    enc_norm = W_enc_ME[:, alive_E].norm(dim=0).mean() if alive_E.any() else 1.0
    W_dec_EM[dead_Z] = dirs_ZM * W_dec_EM[alive_E].norm(dim=-1).mean() if alive_E.any() else dirs_ZM
    W_enc_ME[:, dead_Z] = dirs_ZM.T * enc_norm
    b_enc_E[dead_Z] = 0.0
    return {"W_dec_EM": (0, dead_Z), "W_enc_ME": (1, dead_Z), "b_enc_E": (0, dead_Z)}


@torch.no_grad()
def restart_children(
    sae: TrainableSAE, dead_Z: Int[torch.Tensor, " Z"], gen: torch.Generator, norm: float
) -> tuple[Int[torch.Tensor, " N"], dict[str, tuple[int, Int[torch.Tensor, " N"]]]]:
    """The children of parents ``dead_Z`` (``children_per_parent`` each, parent-major in
    ``W_dec_HM``/``W_enc_MH``/``b_enc_H``) restart on random unit directions drawn from ``gen``:
    decoder rows of norm ``norm``, encoder = the unit direction, bias 0. Returns the children
    and the entries changed."""
    C = sae.children_per_parent
    children_N = (C * dead_Z[:, None] + torch.arange(C, device=dead_Z.device)).flatten()
    new_NM = F.normalize(torch.randn(children_N.numel(), sae.d_in, generator=gen), dim=-1)
    new_NM = new_NM.to(sae.W_dec_HM.device)
    sae.W_dec_HM[children_N] = norm * new_NM
    sae.W_enc_MH[:, children_N] = new_NM.T
    sae.b_enc_H[children_N] = 0.0
    return children_N, {
        "W_dec_HM": (0, children_N),
        "W_enc_MH": (1, children_N),
        "b_enc_H": (0, children_N),
    }


@torch.no_grad()
def residual_directions(
    sae: SAE, x_BM: Float[torch.Tensor, "B M"], n: int, gen: torch.Generator
) -> Float[torch.Tensor, "Z M"] | None:
    """``n`` unit residual directions of inputs picked with probability proportional to their
    squared reconstruction error (Bricken et al. 2023); ``None`` when all are reconstructed."""
    residual_BM = x_BM - sae.decode(sae.encode(x_BM))
    weights_B = (residual_BM**2).sum(-1).cpu()
    if float(weights_B.sum()) <= 0:
        return None
    replace = int((weights_B > 0).sum()) < n
    picks = torch.multinomial(weights_B, n, replacement=replace, generator=gen)
    return F.normalize(residual_BM[picks.to(residual_BM.device)], dim=-1)


def reset_adam_entries(
    optimizer: torch.optim.Optimizer,
    sae: torch.nn.Module,
    entries: dict[str, tuple[int, Int[torch.Tensor, " _"]]],
) -> None:
    """Zero Adam's moments at re-initialised entries, so stale statistics do not fling a new
    latent away (parameters the optimiser has not stepped yet have none)."""
    params = dict(sae.named_parameters())
    for name, (dim, index) in entries.items():
        state = optimizer.state.get(params[name])
        if not state:
            continue
        for key in ("exp_avg", "exp_avg_sq"):
            state[key].index_fill_(dim, index, 0.0)
