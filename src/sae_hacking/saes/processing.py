"""What a pretrained SAE expects done to a hook activation before it encodes it.

SAELens records two kinds of processing, and an SAE fed activations without them gets inputs
it never saw in training:

- **Model processing** (``model_from_pretrained_kwargs``, in a release's registry
  ``config_overrides`` or a ``cfg.json``): SAELens trains on
  ``HookedTransformer.from_pretrained_no_processing(**kwargs)``, so only the flags given are
  on. ``center_writing_weights`` makes every write to the residual stream (embeddings,
  ``W_O``/``b_O``, ``W_out``/``b_out``) have zero mean over d_model, so each residual-valued
  activation of the processed model is ours minus its mean over d_model: we centre those
  reads. Splicing stays consistent although our model keeps the mean component: the model
  differs from the processed one only along the all-ones direction, every later read of the
  stream goes through a LayerNorm that subtracts the mean first, so the logits are the same
  whichever of the two carries the spliced edit (tests/saes/test_conventions_tl.py checks this
  against TransformerLens). Flags that change no hook we read are accepted (below); flags that
  change a hook in a way the activation alone cannot undo are refused.
- **Activation normalisation** (``normalize_activations``), reproduced as SAELens computes it:
  ``constant_norm_rescale`` scales each input to norm √d_in and the reconstruction back;
  ``layer_norm`` standardises each input (mean, unbiased std + 1e-5) and maps the
  reconstruction back with the same mean and std; ``expected_average_only_in`` with the
  registry's ``norm_scaling_factor`` is folded into the weights when loading, as SAELens does
  (:func:`fold_norm_scaling_factor`), so it needs nothing at run time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from jaxtyping import Float

from sae_hacking.errors import UsageError

NORMALIZATIONS = ("none", "constant_norm_rescale", "layer_norm")
# SAELens's layer_norm epsilon (added to the std, not the variance).
LAYER_NORM_EPS = 1e-5

# Hooks whose value is a sum of residual-stream writes (or is one), which
# center_writing_weights centres; attn.hook_z is read before W_O, so it is unchanged.
_RESIDUAL_VALUED = re.compile(
    r"^(hook_embed|hook_pos_embed|blocks\.\d+\.hook_(resid_pre|resid_mid|resid_post|attn_out|mlp_out))$"
)
_HOOK_Z = re.compile(r"^blocks\.\d+\.attn\.hook_z$")

# Model flags that change no activation we read, with why:
# - fold_ln folds LayerNorm scales into the next linear maps: residual writes, attention and
#   MLP outputs and hook_z keep their values (only the LayerNorm outputs change, which we do
#   not read).
# - center_unembed shifts every logit of a position equally: the softmax is unchanged and no
#   hook reads the unembedding.
# - dtype, device and sharding flags change precision or placement, not the function.
NEUTRAL_MODEL_FLAGS = frozenset(
    {"fold_ln", "center_unembed", "dtype", "torch_dtype", "device", "n_devices", "move_to_device"}
)
# Flags that only change the per-head attention values (hook_z): fold_value_biases moves b_V
# into b_O; refactor_factored_attn_matrices rewrites W_Q/W_K/W_V/W_O up to invertible maps.
HEAD_FLAGS = frozenset({"fold_value_biases", "refactor_factored_attn_matrices"})
CENTRE_FLAG = "center_writing_weights"
KNOWN_MODEL_FLAGS = NEUTRAL_MODEL_FLAGS | HEAD_FLAGS | {CENTRE_FLAG}


@dataclass(frozen=True)
class InputTransform:
    """Centring over d_model (``center``), then SAELens's run-time normalisation
    (``normalize``, one of :data:`NORMALIZATIONS`). The identity by default."""

    center: bool = False
    normalize: str = "none"

    def __post_init__(self):
        if self.normalize not in NORMALIZATIONS:
            raise UsageError(
                f"normalize_activations={self.normalize!r} is not one this loader reproduces "
                f"(supported: {', '.join(NORMALIZATIONS)}, and expected_average_only_in with a "
                "norm_scaling_factor)."
            )

    @property
    def is_identity(self) -> bool:
        return not self.center and self.normalize == "none"

    def centred(self, x_BM: Float[torch.Tensor, "*B M"]) -> Float[torch.Tensor, "*B M"]:
        return x_BM - x_BM.mean(-1, keepdim=True) if self.center else x_BM

    def apply(self, x_BM: Float[torch.Tensor, "*B M"]) -> Float[torch.Tensor, "*B M"]:
        """What the SAE encodes, given the hook activation ``x``."""
        x_BM = self.centred(x_BM)
        if self.normalize == "constant_norm_rescale":
            return x_BM * (x_BM.shape[-1] ** 0.5 / x_BM.norm(dim=-1, keepdim=True))
        if self.normalize == "layer_norm":
            mu_B1 = x_BM.mean(-1, keepdim=True)
            x_BM = x_BM - mu_B1
            return x_BM / (x_BM.std(dim=-1, keepdim=True) + LAYER_NORM_EPS)
        return x_BM

    def restore(
        self, recon_BM: Float[torch.Tensor, "*B M"], x_BM: Float[torch.Tensor, "*B M"]
    ) -> Float[torch.Tensor, "*B M"]:
        """A reconstruction in the SAE's space mapped back to the activation space of ``x``
        (SAELens's de-normalisation in ``decode``). Centring is not undone: the reconstruction
        stays in the processed model's (centred) space, which downstream LayerNorms treat
        alike."""
        x_BM = self.centred(x_BM)
        if self.normalize == "constant_norm_rescale":
            return recon_BM / (x_BM.shape[-1] ** 0.5 / x_BM.norm(dim=-1, keepdim=True))
        if self.normalize == "layer_norm":
            mu_B1 = x_BM.mean(-1, keepdim=True)
            return recon_BM * (x_BM - mu_B1).std(dim=-1, keepdim=True) + mu_B1
        return recon_BM

    def restore_delta(
        self, delta_BM: Float[torch.Tensor, "*B M"], x_BM: Float[torch.Tensor, "*B M"]
    ) -> Float[torch.Tensor, "*B M"]:
        """A change of reconstruction in the SAE's space as a change of the activation ``x``
        (the de-normalisation is affine per position, so a difference only scales)."""
        if self.normalize == "none":
            return delta_BM
        x_BM = self.centred(x_BM)
        if self.normalize == "constant_norm_rescale":
            return delta_BM / (x_BM.shape[-1] ** 0.5 / x_BM.norm(dim=-1, keepdim=True))
        return delta_BM * (x_BM - x_BM.mean(-1, keepdim=True)).std(dim=-1, keepdim=True)

    def to_json(self) -> dict:
        return {"center": self.center, "normalize": self.normalize}

    @classmethod
    def from_json(cls, data: dict | None) -> InputTransform:
        return cls(**(data or {}))


def model_processing_centres(flags: dict | None, hook_name: str | None, source: str) -> bool:
    """Whether the model processing ``flags`` (``model_from_pretrained_kwargs``) centre what
    an SAE at ``hook_name`` reads; refuses flags whose effect we cannot reproduce there."""
    on = sorted(key for key, value in (flags or {}).items() if value)
    unknown = [key for key in on if key not in KNOWN_MODEL_FLAGS]
    if unknown:
        raise UsageError(
            f"{source} was trained on a model loaded with {unknown[0]}={flags[unknown[0]]!r}, "
            "a model processing this loader does not know how to reproduce."
        )
    relevant = [key for key in on if key in HEAD_FLAGS or key == CENTRE_FLAG]
    if not relevant:
        return False
    hook = hook_name or ""
    if _HOOK_Z.match(hook):
        heads = [key for key in relevant if key in HEAD_FLAGS]
        if heads:
            raise UsageError(
                f"{source} reads {hook} of a model processed with {heads[0]}=True, which changes "
                "per-head attention values in a way this loader cannot reproduce."
            )
        return False  # center_writing_weights changes W_O, after hook_z
    if not _RESIDUAL_VALUED.match(hook):
        raise UsageError(
            f"{source} was trained on a model processed with {relevant[0]}=True, which this "
            f"loader reproduces only for residual-stream hooks and attn.hook_z, not "
            f"{hook_name or 'an unnamed hook'}."
        )
    return CENTRE_FLAG in on


def input_transform(
    flags: dict | None, normalize: str | bool | None, hook_name: str | None, source: str
) -> InputTransform:
    """The :class:`InputTransform` for an SAE's declared model processing and run-time
    normalisation (``expected_average_only_in`` must already be folded: see
    :func:`fold_norm_scaling_factor`)."""
    mode = "none" if normalize in (None, False, "none") else str(normalize)
    if mode == "expected_average_only_in":
        raise UsageError(
            f"{source}: normalize_activations='expected_average_only_in' needs the dataset-wide "
            "scaling factor that SAELens's registry gives per release SAE; load it by release "
            "name and SAE id."
        )
    if mode not in NORMALIZATIONS:
        raise UsageError(
            f"{source}: normalize_activations={normalize!r} is not one this loader reproduces "
            f"(supported: {', '.join(NORMALIZATIONS)}, expected_average_only_in)."
        )
    return InputTransform(model_processing_centres(flags, hook_name, source), mode)


def fold_input_affine_state(
    state: dict[str, torch.Tensor],
    shift: float | int | Float[torch.Tensor, ""] | Float[torch.Tensor, " M"],
    scale: float,
    subtracts_b_dec: bool = True,
) -> None:
    """Fold ``x -> (x - shift) · scale`` into an SAE's weights, on its state dict (our names),
    in place: the SAE then encodes raw ``x`` as it encoded ``(x - shift) · scale`` and decodes
    to ``decode(a) / scale + shift``.

    Every encoder ``W_enc_M*`` is multiplied by ``scale``, every decoder ``W_dec_*M`` divided,
    and ``b_dec_M`` becomes ``b_dec / scale + shift``; an SAE that subtracts ``b_dec`` from its
    input then needs nothing else, while one that does not (``subtracts_b_dec`` False) has each
    encoder bias ``b_enc_*`` lowered by ``shift @ W_enc_M*`` (the folded one). Other entries
    (thresholds, EMA buffers) are in activation units, which do not change.
    """
    b_dec_M = state["b_dec_M"]
    shift_M = torch.as_tensor(shift, dtype=b_dec_M.dtype, device=b_dec_M.device)
    shift_M = shift_M.expand(b_dec_M.shape)
    moves_b_enc = not subtracts_b_dec and bool(shift_M.any())
    for name in list(state):
        if name.startswith("W_enc_M"):
            state[name] = state[name] * scale
            if moves_b_enc:
                bias = "b_enc_" + name.removeprefix("W_enc_M")
                state[bias] = state[bias] - shift_M @ state[name]
        elif name.startswith("W_dec_") and name.endswith("M"):
            state[name] = state[name] / scale
    state["b_dec_M"] = b_dec_M / scale + shift_M


def fold_norm_scaling_factor(state: dict[str, torch.Tensor], factor: float) -> None:
    """SAELens's ``fold_activation_norm_scaling_factor`` on our state dict, in place: the SAE
    then encodes ``factor · x`` and decodes back to the scale of ``x``."""
    fold_input_affine_state(state, 0.0, factor)
