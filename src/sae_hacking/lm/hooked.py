"""A Hugging Face causal LM with SAELens-named hook points: read, patch, run between points.

- :meth:`HookedLM.read` runs the real forward with hooks on the HF modules, keeps only the
  activations asked for, and stops the forward right after the last one (a private exception
  raised from that hook), so reading layer 5 of 26 costs six layers.
- ``patches`` replace an activation on its way through the forward (reads see the patched value).
- :meth:`HookedLM.run_between` starts from an activation at one hook point and runs only the
  layers up to a later point (or the logits), using the model's own attention, MLP, mask and
  rotary modules. Its batch may hold several variants of one prompt (the context broadcasts).

Everything runs under ``torch.inference_mode()``: returned tensors are inference tensors; clone
them outside inference mode before using them in autograd.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int

from sae_hacking.errors import UsageError
from sae_hacking.lm.arch import (
    HOOK_KINDS,
    HookPoint,
    attn_block,
    first_output,
    is_parallel,
    mlp_block,
    parse_hook,
    spec_for,
)

LOGITS = "logits"

Patch = Callable[[Float[torch.Tensor, "B S M"]], Float[torch.Tensor, "B S M"]]


class _StopForward(Exception):
    """Raised by the hook of the last activation a read needs; caught by :meth:`read`."""


@dataclass
class RunContext:
    """What :meth:`HookedLM.run_between` needs besides the start activation.

    ``residuals`` holds the streams the start point is added into (``blocks.L.hook_resid_pre``
    for an ``attn_out`` start; ``hook_resid_mid`` for an ``mlp_out`` start, or ``resid_pre`` and
    ``attn_out`` when attention and MLP are parallel). Masks and rotary embeddings are rebuilt
    from ``attention_mask_BS`` by the model's own code on each run.
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


@dataclass
class ActivationCache:
    """Activations read at hook points, and the context to resume from one (if asked for)."""

    acts: dict[str, Float[torch.Tensor, "B S M"]]
    context: RunContext | None = None

    def __getitem__(self, hook_name: str) -> Float[torch.Tensor, "B S M"]:
        return self.acts[hook_name]


class HookedLM:
    """A causal LM, its tokenizer, and hook points named as in SAELens and Gemma Scope."""

    def __init__(self, model: torch.nn.Module, tokenizer=None, name: str = ""):
        # Inference only: eval mode (no dropout) and no parameter gradients.
        model.eval()
        model.requires_grad_(False)
        self.model = model
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "_name_or_path", "")
        self.spec = spec_for(model.config)
        self.parallel = is_parallel(self.spec, model.config)
        self.base = model.get_submodule(self.spec.base)
        self.layers = self.base.get_submodule(self.spec.layers)
        self.n_layers = len(self.layers)
        self.d_model = int(model.config.hidden_size)
        # Hooks live on the shared modules: one hooked forward at a time per model.
        self._forward_lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, name: str, device: str = "auto", dtype: str = "auto") -> HookedLM:
        """Load ``name`` (hub id or local folder); ``device``/``dtype`` as the CLI flags take."""
        from sae_hacking.device import resolve_device
        from sae_hacking.lm.loading import load_model_and_tokenizer, resolve_dtype

        torch_device = resolve_device(device)
        model, tokenizer = load_model_and_tokenizer(
            name, torch_device, resolve_dtype(dtype, torch_device)
        )
        return cls(model, tokenizer, name)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def hook_names(self) -> list[str]:
        kinds = [k for k in HOOK_KINDS if not (self.parallel and k == "resid_mid")]
        return [f"blocks.{layer}.hook_{kind}" for layer in range(self.n_layers) for kind in kinds]

    def hook_point(self, name: str) -> HookPoint:
        return parse_hook(name, self.n_layers, self.parallel)

    def hook_width(self, name: str) -> int:
        """Width of the activation at hook ``name`` (every supported point is d_model wide)."""
        self.hook_point(name)
        return self.d_model

    def context_hooks(self, start_hook: str) -> tuple[str, ...]:
        """Hook points whose activations :meth:`run_between` needs to start at ``start_hook``."""
        point = self.hook_point(start_hook)
        pre = f"blocks.{point.layer}.hook_resid_pre"
        if point.kind == "attn_out":
            return (pre,)
        if point.kind == "mlp_out":
            return (
                (pre, f"blocks.{point.layer}.hook_attn_out")
                if self.parallel
                else (f"blocks.{point.layer}.hook_resid_mid",)
            )
        return ()

    def tokenize(self, texts: Sequence[str], max_tokens: int, prepend_bos: bool = True):
        """:func:`sae_hacking.data.text.tokenize_prompts` with this model's tokenizer, on its device."""
        from sae_hacking.data.text import tokenize_prompts

        return tokenize_prompts(self.tokenizer, texts, max_tokens, prepend_bos).to(self.device)

    # -- the real forward, with hooks ---------------------------------------------------------

    def read(
        self,
        input_ids_BS: Int[torch.Tensor, "B S"],
        attention_mask_BS: Int[torch.Tensor, "B S"] | None = None,
        hooks: Sequence[str] = (),
        *,
        patches: Mapping[str, Patch] | None = None,
        context_for: str | None = None,
    ) -> ActivationCache:
        """Activations at ``hooks``; the forward stops after the last one needed.

        ``context_for`` also captures what :meth:`run_between` needs to start at that hook.
        Patches at points after the last read never run.
        """
        input_ids_BS, attention_mask_BS = self._inputs(input_ids_BS, attention_mask_BS)
        wanted = {self.hook_point(name): name for name in hooks}
        context_names = self.context_hooks(context_for) if context_for is not None else ()
        record = {*wanted, *(self.hook_point(name) for name in context_names)}
        if not record:
            raise ValueError("read needs at least one hook or context_for")
        store: dict[HookPoint, torch.Tensor] = {}
        with torch.inference_mode():
            self._forward(input_ids_BS, attention_mask_BS, patches, record, store, max(record))
        acts = {name: store[point] for point, name in wanted.items()}
        context = None
        if context_for is not None:
            residuals = {name: store[self.hook_point(name)] for name in context_names}
            context = RunContext(attention_mask_BS, residuals)
        return ActivationCache(acts, context)

    def logits(
        self,
        input_ids_BS: Int[torch.Tensor, "B S"],
        attention_mask_BS: Int[torch.Tensor, "B S"] | None = None,
        *,
        patches: Mapping[str, Patch] | None = None,
    ) -> Float[torch.Tensor, "B S V"]:
        """The full forward's logits, with ``patches`` applied on the way."""
        input_ids_BS, attention_mask_BS = self._inputs(input_ids_BS, attention_mask_BS)
        with torch.inference_mode():
            return self._forward(input_ids_BS, attention_mask_BS, patches, set(), {}, None)

    def _inputs(self, input_ids_BS, attention_mask_BS):
        if input_ids_BS.ndim != 2:
            raise ValueError(
                f"input_ids must be [batch, seq], got shape {tuple(input_ids_BS.shape)}"
            )
        input_ids_BS = input_ids_BS.to(self.device)
        if attention_mask_BS is None:
            attention_mask_BS = torch.ones_like(input_ids_BS)
        return input_ids_BS, attention_mask_BS.to(self.device)

    def _forward(self, input_ids_BS, attention_mask_BS, patches, record, store, stop_at):
        by_point = {self.hook_point(name): fn for name, fn in (patches or {}).items()}
        points = [p for p in sorted({*by_point, *record}) if stop_at is None or p <= stop_at]
        with self._forward_lock:
            handles = []
            try:
                # Installed inside the try: a failure halfway must not leave hooks behind.
                for p in points:
                    handles.append(
                        self._install(p, by_point.get(p), p in record, p == stop_at, store)
                    )
                out = self.model(
                    input_ids=input_ids_BS, attention_mask=attention_mask_BS, use_cache=False
                )
            except _StopForward:
                return None
            finally:
                for handle in handles:
                    handle.remove()
        return out.logits

    def _install(self, point: HookPoint, patch, record: bool, stop: bool, store: dict):
        def apply(x: torch.Tensor) -> torch.Tensor:
            new = x if patch is None else patch(x)
            if new.shape != x.shape:
                raise ValueError(
                    f"patch at {point.name} changed the shape {tuple(x.shape)} -> {tuple(new.shape)}"
                )
            new = new.to(x.dtype)
            if record:
                store[point] = new
            if stop:
                raise _StopForward
            return new

        layer = self.layers[point.layer]
        spec = self.spec
        if point.kind == "resid_pre":

            def pre_layer(module, args, kwargs):
                if args:
                    new = apply(args[0])
                    return (new, *args[1:]), kwargs
                kwargs["hidden_states"] = apply(kwargs["hidden_states"])
                return args, kwargs

            return layer.register_forward_pre_hook(pre_layer, with_kwargs=True)
        if point.kind == "resid_mid":

            def pre_mlp_norm(module, args):
                x = args[0]
                new = apply(x)
                if new is not x:
                    # The layer keeps its own reference to this tensor as the MLP's residual
                    # (``residual = hidden_states``); writing in place patches both uses.
                    x.copy_(new)

            return layer.get_submodule(spec.mlp_norm).register_forward_pre_hook(pre_mlp_norm)
        if point.kind == "resid_post":
            module = layer
        elif point.kind == "attn_out":
            module = layer.get_submodule(spec.attn_post or spec.attn)
        else:
            module = layer.get_submodule(spec.mlp_post or spec.mlp)

        def post(module, args, output):
            x = first_output(output)
            new = apply(x)
            if new is x:
                return None
            return (new, *output[1:]) if isinstance(output, tuple) else new

        return module.register_forward_hook(post)

    # -- running from one hook point to a later one -----------------------------------------

    def run_between(
        self,
        start_hook: str,
        acts_BSM: Float[torch.Tensor, "B S M"],
        end_hook: str,
        context: RunContext,
    ) -> Float[torch.Tensor, "B S D"]:
        """The activation at ``end_hook`` (or the logits for ``end_hook="logits"``) when the
        activation at ``start_hook`` is ``acts_BSM``; only the layers in between run.

        ``context`` comes from ``read(..., context_for=start_hook)``; a context of one prompt
        broadcasts over a batch of its variants.
        """
        start = self.hook_point(start_hook)
        end = None if end_hook == LOGITS else self.hook_point(end_hook)
        if end is not None and end.stream_position() < start.stream_position():
            raise UsageError(
                f"run_between goes forward only: {end_hook} comes before {start_hook}."
            )
        missing = [name for name in self.context_hooks(start_hook) if name not in context.residuals]
        if missing:
            raise ValueError(
                f"the context lacks {', '.join(missing)}; read it with context_for={start_hook!r}"
            )
        if acts_BSM.ndim != 3 or acts_BSM.shape[-1] != self.d_model:
            raise ValueError(
                f"acts must be [batch, seq, {self.d_model}], got shape {tuple(acts_BSM.shape)}"
            )
        acts_BSM = acts_BSM.to(device=self.device, dtype=self.dtype)
        context = context.for_batch(acts_BSM.shape[0])
        with torch.inference_mode():
            return self._run_layers(start, acts_BSM, end, context)

    def _run_layers(self, start: HookPoint, acts, end: HookPoint | None, context: RunContext):
        layer, first_site = start.layer, start.site + 1
        state = {start.kind: acts}
        for name, tensor in context.residuals.items():
            state[self.hook_point(name).kind] = tensor.to(acts.dtype)
        if end is not None and end.stream_position() == start.stream_position():
            return acts
        if start.kind == "resid_post":
            layer, first_site, state = layer + 1, 1, {"resid_pre": acts}
        masks, position_ids, rotary = self._attention_inputs(context.attention_mask_BS, acts)
        while layer < self.n_layers:
            module = self.layers[layer]
            for site in range(first_site, len(HOOK_KINDS)):
                kind = HOOK_KINDS[site]
                if kind == "resid_mid" and self.parallel:
                    continue
                state[kind] = self._compute(kind, module, state, masks[layer], position_ids, rotary)
                if end is not None and (end.layer, end.site) == (layer, site):
                    return state[kind]
            layer, first_site, state = layer + 1, 1, {"resid_pre": state["resid_post"]}
            if end is not None and (end.layer, end.site) == (layer, 0):
                return state["resid_pre"]
        return self._unembed(state["resid_pre"])

    def _compute(self, kind, module, state, mask, position_ids, rotary) -> torch.Tensor:
        if kind == "attn_out":
            return attn_block(self.spec, module, state["resid_pre"], mask, position_ids, rotary)
        if kind == "resid_mid":
            return state["resid_pre"] + state["attn_out"]
        if kind == "mlp_out":
            mlp_in = state["resid_pre"] if self.parallel else state["resid_mid"]
            return mlp_block(self.spec, module, mlp_in)
        if self.parallel:
            return state["mlp_out"] + state["attn_out"] + state["resid_pre"]
        return state["resid_mid"] + state["mlp_out"]

    def _attention_inputs(self, attention_mask_BS, like_BSM):
        """Per-layer masks, position ids and rotary (cos, sin), built as the model's forward
        builds them (no KV cache, positions 0..S-1)."""
        from transformers.masking_utils import (
            create_causal_mask,
            create_sliding_window_causal_mask,
        )

        config = self.model.config
        position_ids = torch.arange(like_BSM.shape[1], device=like_BSM.device).unsqueeze(0)
        kwargs = dict(
            config=config,
            inputs_embeds=like_BSM,
            attention_mask=attention_mask_BS,
            cache=None,
            position_ids=position_ids,
        )
        layer_types = getattr(config, "layer_types", None) or ["full_attention"] * self.n_layers
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
        rotary = self.base.rotary_emb(like_BSM, position_ids) if self.spec.rotary else None
        return [built[kind] for kind in layer_types], position_ids, rotary

    def _unembed(self, resid_BSM: torch.Tensor) -> torch.Tensor:
        hidden = self.base.get_submodule(self.spec.final_norm)(resid_BSM)
        logits = self.model.lm_head(hidden)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits
