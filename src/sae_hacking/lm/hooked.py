"""A Hugging Face causal LM with SAELens-named hook points: read, patch, run between points.

- :meth:`HookedLM.read` runs the real forward with hooks on the HF modules, keeps only the
  activations asked for, and stops the forward right after the last one (a private exception
  raised from that hook), so reading layer 5 of 26 costs six layers.
- ``patches`` replace an activation on its way through the forward (reads see the patched value).
- :meth:`HookedLM.run_between` starts from an activation at one hook point and runs only the
  layers up to a later point (or the logits), using the model's own modules
  (:mod:`sae_hacking.lm.between`). Its batch may hold several variants of one prompt.
- Hook points: ``hook_embed``, and per layer ``hook_resid_pre``, ``attn.hook_z`` (the heads'
  outputs concatenated, [B, S, n_heads * d_head]), ``hook_attn_out``, ``hook_resid_mid``,
  ``hook_mlp_out``, ``hook_resid_post``, read where TransformerLens's bridge reads them.

Everything runs under ``torch.inference_mode()``: returned tensors are inference tensors; clone
them outside inference mode before using them in autograd.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int

from sae_hacking.lm.arch import (
    HookPoint,
    first_output,
    is_parallel,
    parse_hook,
    spec_for,
    supported_templates,
)
from sae_hacking.lm.between import (  # noqa: F401 (LOGITS re-exported)
    LOGITS,
    RunContext,
    context_hooks,
    run_between,
)

Patch = Callable[[Float[torch.Tensor, "B S M"]], Float[torch.Tensor, "B S M"]]


class _StopForward(Exception):
    """Raised by the hook of the last activation a read needs; caught by :meth:`read`."""


@dataclass
class ActivationCache:
    """Activations read at hook points, and the context to resume from one (if asked for)."""

    acts: dict[str, Float[torch.Tensor, "B S _"]]
    context: RunContext | None = None

    def __getitem__(self, hook_name: str) -> Float[torch.Tensor, "B S _"]:
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
    def from_pretrained(
        cls, name: str, device: str = "auto", dtype: str = "auto", threads: int = 0
    ) -> HookedLM:
        """Load ``name`` (hub id or local folder); ``device``/``dtype`` as the CLI flags take;
        on the CPU, ``threads`` intra-op threads (0: :func:`sae_hacking.threads.use_cpu_threads`
        chooses)."""
        from sae_hacking.device import resolve_device
        from sae_hacking.lm.loading import load_model_and_tokenizer, resolve_dtype
        from sae_hacking.threads import use_cpu_threads

        torch_device = resolve_device(device)
        if torch_device.type == "cpu":
            use_cpu_threads(threads)
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
    def heads(self) -> bool:
        """Whether attention has separate heads whose outputs ``attn.hook_z`` reads."""
        return self.spec.attn_o is not None

    @property
    def n_heads(self) -> int:
        return int(self.model.config.num_attention_heads)

    @property
    def d_head(self) -> int:
        config = self.model.config
        return int(getattr(config, "head_dim", None) or self.d_model // self.n_heads)

    @property
    def hook_names(self) -> list[str]:
        """Every hook point of this model, in forward order."""
        templates = supported_templates(self.parallel, self.heads)
        names = [t for t in templates if "{L}" not in t]
        for layer in range(self.n_layers):
            names += [t.format(L=layer) for t in templates if "{L}" in t]
        return names

    def hook_point(self, name: str) -> HookPoint:
        return parse_hook(name, self.n_layers, self.parallel, self.heads)

    def hook_width(self, name: str) -> int:
        """Width of the activation at hook ``name``: d_model, or n_heads * d_head for
        ``attn.hook_z`` (its heads concatenated, as SAELens flattens hook_z)."""
        if self.hook_point(name).kind == "z":
            return self.n_heads * self.d_head
        return self.d_model

    def context_hooks(self, start_hook: str) -> tuple[str, ...]:
        """Hook points whose activations :meth:`run_between` needs to start at ``start_hook``."""
        return context_hooks(self, self.hook_point(start_hook))

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
        if point.kind == "z":

            def pre_projection(module, args):
                new = apply(args[0])
                return None if new is args[0] else (new, *args[1:])

            return layer.get_submodule(spec.attn_o).register_forward_pre_hook(pre_projection)
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
        if point.kind == "embed":
            module = self.base.get_submodule(spec.embed)
        elif point.kind == "resid_post":
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
    ) -> Float[torch.Tensor, "B S _"]:
        """The activation at ``end_hook`` (or the logits for ``end_hook="logits"``) when the
        activation at ``start_hook`` is ``acts_BSM``; only the layers in between run.

        ``context`` comes from ``read(..., context_for=start_hook)``; a context of one prompt
        broadcasts over a batch of its variants.
        """
        return run_between(self, start_hook, acts_BSM, end_hook, context)
