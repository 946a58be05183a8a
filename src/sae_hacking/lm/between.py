"""Running a :class:`~sae_hacking.lm.hooked.HookedLM` from one hook point to a later one.

:func:`run_between` starts from an activation at one hook point and runs only the layers up to
a later point (or the logits), using the model's own embedding, attention, MLP, mask and rotary
modules (:mod:`sae_hacking.lm.arch`). Its batch may hold several variants of one prompt (the
context broadcasts).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int

from sae_hacking.errors import UsageError
from sae_hacking.lm.arch import (
    HOOK_KINDS,
    RESID_PRE_SITE,
    HookPoint,
    attn_block,
    attn_out_from_z,
    mlp_block,
    resid_from_embed,
    z_block,
)

LOGITS = "logits"


@dataclass
class RunContext:
    """What :func:`run_between` needs besides the start activation.

    ``residuals`` holds the streams the start point is added into (``blocks.L.hook_resid_pre``
    for an ``attn.hook_z`` or ``attn_out`` start; ``hook_resid_mid`` for an ``mlp_out`` start,
    or ``resid_pre`` and ``attn_out`` when attention and MLP are parallel). Masks and rotary
    embeddings are rebuilt from ``attention_mask_BS`` by the model's own code on each run.
    """

    attention_mask_BS: Int[torch.Tensor, "B S"]
    residuals: dict[str, Float[torch.Tensor, "B S M"]] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return self.attention_mask_BS.shape[0]

    def repeat_interleave(self, k: int) -> RunContext:
        """Context for a batch where each prompt is followed by its ``k`` variants' copies."""
        return RunContext(
            self.attention_mask_BS.repeat_interleave(k, dim=0),
            {name: t.repeat_interleave(k, dim=0) for name, t in self.residuals.items()},
        )

    def for_batch(self, batch_size: int) -> RunContext:
        """This context for ``batch_size`` rows: itself, or a single prompt broadcast."""
        if batch_size == self.batch_size:
            return self
        if self.batch_size != 1:
            raise ValueError(
                f"run_between got {batch_size} rows but the context holds {self.batch_size} "
                "prompts; use context.repeat_interleave(k) for k variants per prompt"
            )
        return RunContext(
            self.attention_mask_BS.expand(batch_size, -1),
            {name: t.expand(batch_size, -1, -1) for name, t in self.residuals.items()},
        )


def context_hooks(lm, start: HookPoint) -> tuple[str, ...]:
    """Hook points whose activations :func:`run_between` needs to start at ``start``."""
    pre = f"blocks.{start.layer}.hook_resid_pre"
    if start.kind in ("z", "attn_out"):
        return (pre,)
    if start.kind == "mlp_out":
        return (
            (pre, f"blocks.{start.layer}.hook_attn_out")
            if lm.parallel
            else (f"blocks.{start.layer}.hook_resid_mid",)
        )
    return ()


def run_between(
    lm,
    start_hook: str,
    acts_BSM: Float[torch.Tensor, "B S M"],
    end_hook: str,
    context: RunContext,
) -> Float[torch.Tensor, "B S _"]:
    """:meth:`sae_hacking.lm.hooked.HookedLM.run_between`."""
    start = lm.hook_point(start_hook)
    end = None if end_hook == LOGITS else lm.hook_point(end_hook)
    if end is not None and end.stream_position() < start.stream_position():
        raise UsageError(f"run_between goes forward only: {end_hook} comes before {start_hook}.")
    missing = [name for name in context_hooks(lm, start) if name not in context.residuals]
    if missing:
        raise ValueError(
            f"the context lacks {', '.join(missing)}; read it with context_for={start_hook!r}"
        )
    width = lm.hook_width(start_hook)
    if acts_BSM.ndim != 3 or acts_BSM.shape[-1] != width:
        raise ValueError(
            f"acts at {start_hook} must be [batch, seq, {width}], got shape {tuple(acts_BSM.shape)}"
        )
    acts_BSM = acts_BSM.to(device=lm.device, dtype=lm.dtype)
    context = context.for_batch(acts_BSM.shape[0])
    with torch.inference_mode():
        return _run_layers(lm, start, acts_BSM, end, context)


def _run_layers(lm, start: HookPoint, acts, end: HookPoint | None, context: RunContext):
    if end is not None and end.stream_position() == start.stream_position():
        return acts
    masks, position_ids, rotary = _attention_inputs(lm, context.attention_mask_BS, acts)
    layer, first_site = start.layer, start.site + 1
    state = {start.kind: acts}
    for name, tensor in context.residuals.items():
        state[lm.hook_point(name).kind] = tensor.to(acts.dtype)
    if start.kind == "embed":
        state = {"resid_pre": resid_from_embed(lm.spec, lm.base, acts, position_ids)}
        first_site = RESID_PRE_SITE + 1
        if end is not None and end.stream_position() == (0, RESID_PRE_SITE):
            return state["resid_pre"]
    if start.kind == "resid_post":
        layer, first_site, state = layer + 1, RESID_PRE_SITE + 1, {"resid_pre": acts}
    while layer < lm.n_layers:
        module = lm.layers[layer]
        for site in range(first_site, len(HOOK_KINDS)):
            kind = HOOK_KINDS[site]
            if kind == "resid_mid" and lm.parallel:
                continue
            if kind == "z" and not _ends_at_z(end, layer):
                continue
            state[kind] = _compute(lm, kind, module, state, masks[layer], position_ids, rotary)
            if end is not None and (end.layer, end.site) == (layer, site):
                return state[kind]
        layer, first_site = layer + 1, RESID_PRE_SITE + 1
        state = {"resid_pre": state["resid_post"]}
        if end is not None and end.stream_position() == (layer, RESID_PRE_SITE):
            return state["resid_pre"]
    return _unembed(lm, state["resid_pre"])


def _ends_at_z(end: HookPoint | None, layer: int) -> bool:
    """Whether the run ends at ``z`` of ``layer``; otherwise the layer's whole attention module
    runs, as in the full forward (a ``z`` start skips this site: it is ``start.site``)."""
    return end is not None and end.kind == "z" and end.layer == layer


def _compute(lm, kind, module, state, mask, position_ids, rotary) -> torch.Tensor:
    spec = lm.spec
    if kind == "z":
        return z_block(spec, module, state["resid_pre"], mask, position_ids, rotary)
    if kind == "attn_out":
        if "z" in state:
            return attn_out_from_z(spec, module, state["z"])
        return attn_block(spec, module, state["resid_pre"], mask, position_ids, rotary)
    if kind == "resid_mid":
        return state["resid_pre"] + state["attn_out"]
    if kind == "mlp_out":
        mlp_in = state["resid_pre"] if lm.parallel else state["resid_mid"]
        return mlp_block(spec, module, mlp_in)
    if lm.parallel:
        return state["mlp_out"] + state["attn_out"] + state["resid_pre"]
    return state["resid_mid"] + state["mlp_out"]


def _attention_inputs(lm, attention_mask_BS, acts_BSM):
    """Per-layer masks, position ids and rotary (cos, sin), built as the model's forward
    builds them (no KV cache, positions 0..S-1)."""
    from transformers.masking_utils import (
        create_causal_mask,
        create_sliding_window_causal_mask,
    )

    config = lm.model.config
    position_ids = torch.arange(acts_BSM.shape[1], device=acts_BSM.device).unsqueeze(0)
    # The mask builders read only the shape, dtype and device of ``inputs_embeds``.
    like_BSM = acts_BSM.new_empty((*acts_BSM.shape[:2], lm.d_model))
    kwargs = dict(
        config=config,
        inputs_embeds=like_BSM,
        attention_mask=attention_mask_BS,
        cache=None,
        position_ids=position_ids,
    )
    # GPT-Neo names no layer types: its forward gives every layer this causal mask and each local
    # layer applies its window itself (lm.arch), as it does when run_between calls it.
    layer_types = getattr(config, "layer_types", None) or ["full_attention"] * lm.n_layers
    builders = {
        "full_attention": create_causal_mask,
        "sliding_attention": create_sliding_window_causal_mask,
    }
    unknown = set(layer_types) - set(builders)
    if unknown:
        raise UsageError(
            f"attention layer types {sorted(unknown)} of this model are not supported by "
            f"run_between; supported: {', '.join(builders)}."
        )
    built = {kind: builders[kind](**kwargs) for kind in set(layer_types)}
    rotary = lm.base.rotary_emb(like_BSM, position_ids) if lm.spec.rotary else None
    return [built[kind] for kind in layer_types], position_ids, rotary


def _unembed(lm, resid_BSM: torch.Tensor) -> torch.Tensor:
    hidden = lm.base.get_submodule(lm.spec.final_norm)(resid_BSM)
    logits = lm.model.lm_head(hidden)
    cap = getattr(lm.model.config, "final_logit_softcapping", None)
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits
