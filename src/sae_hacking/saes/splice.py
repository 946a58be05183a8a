"""Splicing an SAE into a model at its hook point, and editing its latents.

With the error term kept, the activation passed on is ``decode(edit(acts)) + (x - decode(acts))``
where ``acts = encode(x)``. Decoders are affine, so that equals
``x + (edit(acts) - acts) @ W_dec``: computed that way the model's output is *exactly* unchanged
until a latent is edited (no rounding noise from a full decode), and zeroing a few latents costs
a few decoder rows instead of a full decode.

An SAE with an :class:`~sae_hacking.saes.processing.InputTransform` encodes the transformed
activation and decodes in that space, so its edit is mapped back to the activation's space
(per-position scaling under SAELens's normalisations). A centring SAE's edit is added to the
uncentred activation: every later read of the stream is a LayerNorm, which removes the mean
component by which our model differs from the centred (processed) one, so this is the splice
into the processed model (see :mod:`sae_hacking.saes.processing`). Each patch applies its own
SAE's transform, so SAEs with different conventions spliced into one model each see their own.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import torch
from jaxtyping import Float, Int

from sae_hacking.errors import UsageError
from sae_hacking.saes.base import SAE


class LatentEdit(abc.ABC):
    """A change to latent activations; :meth:`delta` is its effect on the reconstruction."""

    @abc.abstractmethod
    def apply(self, acts_BSE: Float[torch.Tensor, "B S E"]) -> Float[torch.Tensor, "B S E"]:
        """The edited activations (a new tensor)."""

    def delta(
        self, acts_BSE: Float[torch.Tensor, "B S E"], W_dec_EM: Float[torch.Tensor, "E M"]
    ) -> Float[torch.Tensor, "B S M"]:
        """``decode(apply(acts)) - decode(acts)``; subclasses may compute it sparsely."""
        return (self.apply(acts_BSE) - acts_BSE) @ W_dec_EM


def check_latent_ids(latents: torch.Tensor, d_sae: int, allow_negative: bool = False) -> None:
    low = -1 if allow_negative else 0
    if latents.numel() and (int(latents.min()) < low or int(latents.max()) >= d_sae):
        raise UsageError(
            f"latent ids must lie in 0..{d_sae - 1} for this SAE; got "
            f"{int(latents.min())}..{int(latents.max())}."
        )


class ZeroLatents(LatentEdit):
    """Zero the same latents at every position of every row."""

    def __init__(self, latents: Sequence[int] | Int[torch.Tensor, " D"]):
        self.latents_D = torch.as_tensor(latents, dtype=torch.long).flatten().unique()

    def _idx(self, acts_BSE):
        check_latent_ids(self.latents_D, acts_BSE.shape[-1])
        return self.latents_D.to(acts_BSE.device)

    def apply(self, acts_BSE):
        edited = acts_BSE.clone()
        edited[..., self._idx(acts_BSE)] = 0
        return edited

    def delta(self, acts_BSE, W_dec_EM):
        idx_D = self._idx(acts_BSE)
        return -(acts_BSE[..., idx_D] @ W_dec_EM[idx_D])


def splice_patch(sae: SAE, edit: LatentEdit | None = None, keep_error: bool = True):
    """A patch for :class:`sae_hacking.lm.hooked.HookedLM` that passes the activation through
    ``sae``: with the error term (default) and no edit it is the identity; without the error
    term it is the SAE's (edited) reconstruction."""
    W_dec_EM = sae.W_dec
    transform = sae.input_transform

    def patch(x_BSM: Float[torch.Tensor, "B S M"]) -> Float[torch.Tensor, "B S M"]:
        if keep_error and edit is None:
            return x_BSM
        x_sae_BSM = x_BSM.to(W_dec_EM.dtype)  # a float32 SAE on a bfloat16 model
        acts_BSE = sae.encode(x_sae_BSM)
        if not keep_error:
            recon_BSM = sae.decode(acts_BSE if edit is None else edit.apply(acts_BSE))
            return transform.restore(recon_BSM, x_sae_BSM).to(x_BSM.dtype)
        delta_BSM = transform.restore_delta(edit.delta(acts_BSE, W_dec_EM), x_sae_BSM)
        return x_BSM + delta_BSM.to(x_BSM.dtype)

    return patch


def check_sae_fits(lm, sae: SAE, hook_name: str | None = None) -> str:
    """The hook ``sae`` splices into (``hook_name`` or its own), after checking the widths."""
    hook = hook_name or sae.hook_name
    if hook is None:
        named = " ".join(filter(None, ("SAE", sae.info.release, sae.info.sae_id)))
        raise UsageError(f"{named} does not say which hook it reads; give the hook explicitly.")
    width = lm.hook_width(hook)
    if sae.d_in != width:
        raise UsageError(
            f"the SAE reads {sae.d_in}-dimensional activations but hook {hook} of model "
            f"{lm.name} is {width}-dimensional; the SAE does not belong to this model."
        )
    return hook


def splice(
    lm,
    sae: SAE,
    edit: LatentEdit | None = None,
    hook_name: str | None = None,
    keep_error: bool = True,
) -> dict:
    """``{hook: patch}`` for ``lm.logits`` / ``lm.read``: ``sae`` spliced at its hook point."""
    return {check_sae_fits(lm, sae, hook_name): splice_patch(sae, edit, keep_error)}
