"""Folding an input transform into an SAE's weights, so an SAE trained on transformed
activations ``x' = (x - shift) · scale`` (a trainer's normalisation) takes raw ``x``.

Works for every architecture here whose parameters follow the naming convention (encoders
``W_enc_M*`` with biases ``b_enc_*``, decoders ``W_dec_*M``, one ``b_dec_M``): see
:func:`~sae_hacking.saes.processing.fold_input_affine_state` for the algebra. Activations are
unchanged by the fold, so thresholds and EMA buffers stay as they are.
"""

from __future__ import annotations

import re

import torch
from jaxtyping import Float

from sae_hacking.errors import UsageError
from sae_hacking.saes.base import SAE
from sae_hacking.saes.processing import fold_input_affine_state

# Parameters the fold rewrites, and those in activation units that it leaves.
_FOLDED = re.compile(r"^(W_enc_M[A-Za-z]|W_dec_[A-Za-z]M|b_enc_[A-Za-z]|b_dec_M)$")
_UNCHANGED = frozenset({"threshold_E"})


@torch.no_grad()
def fold_input_affine(
    sae: SAE,
    shift: float | int | Float[torch.Tensor, ""] | Float[torch.Tensor, " M"],
    scale: float | int | Float[torch.Tensor, ""],
) -> SAE:
    """Change ``sae`` **in place** (parameters keep their identity, so an optimiser holding them
    stays valid) so that ``encode(x)`` equals the old ``encode((x - shift) · scale)`` and
    ``decode(a)`` the old ``decode(a) / scale + shift``; returns ``sae``.

    ``shift``: a scalar or an M-vector; ``scale``: positive. Whether the SAE subtracts ``b_dec``
    from its input (``apply_b_dec_to_input``; hierarchical SAEs always do) is taken into account.
    """
    scale = float(scale)
    if not scale > 0:
        raise UsageError(f"folding an input scale into an SAE needs a positive scale, got {scale}.")
    if not sae.input_transform.is_identity:
        raise UsageError(
            "folding an input transform into an SAE that already transforms its input "
            f"({sae.input_transform}) is not supported."
        )
    params = dict(sae.named_parameters())
    unknown = sorted(n for n in params if not _FOLDED.match(n) and n not in _UNCHANGED)
    if unknown:
        raise UsageError(
            f"a {sae.architecture} SAE has parameters {', '.join(unknown)} that the input fold "
            "does not know how to rewrite."
        )
    state = {name: p.detach() for name, p in params.items() if _FOLDED.match(name)}
    fold_input_affine_state(
        state, shift, scale, subtracts_b_dec=getattr(sae, "apply_b_dec_to_input", True)
    )
    for name, tensor in state.items():
        params[name].copy_(tensor)
    return sae
