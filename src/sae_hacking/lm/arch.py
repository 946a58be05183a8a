"""Where each hook point lives in each supported Hugging Face architecture.

A decoder layer of every supported family is two residual blocks, described by module names:

    embed     = embed(tokens)                            # with Gemma's sqrt(d_model) scale
    resid_pre = embed + pos_embed(positions)             # layer 0; just embed if no pos_embed
    z         = attn_o's input in attn(attn_norm(resid_pre), mask, positions)
    attn_out  = attn_post(attn_o(z))                     # = attn_post(attn(...)[0])
    resid_mid = resid_pre + attn_out
    mlp_out   = mlp_post(mlp(mlp_norm(resid_mid)))       # mlp_norm(resid_pre) if parallel
    resid_post = resid_mid + mlp_out                     # mlp_out + attn_out + resid_pre if parallel

``attn_post`` / ``mlp_post`` are Gemma-2's post-layernorms, GPT-NeoX's dropouts (identity in
eval) or absent. ``z`` is the per-head attention outputs, heads concatenated
([B, S, n_heads * d_head], head-major, as SAELens flattens ``hook_z``); GPT-2's dropout after
``c_proj`` and GPT-Neo's after ``out_proj`` are the identity in eval mode. GPT-Neo's local
(sliding-window) layers keep their window inside the attention module (a causal-mask buffer it
applies itself), so calling that module with the model's one causal mask reproduces them. The
table below is all that differs between families; hooks and :func:`attn_block` /
:func:`mlp_block` (used to run the model between hook points) read it.
The block functions call the model's own attention and MLP modules and mirror the order of the
additions in the Hugging Face layer code, so their results match the full forward bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sae_hacking.errors import UsageError
from sae_hacking.lm.hook_names import (  # noqa: F401 (re-exported)
    HOOK_KINDS,
    HOOK_TEMPLATES,
    RESID_PRE_SITE,
    HookPoint,
    parse_hook,
    supported_templates,
)


@dataclass(frozen=True)
class ArchSpec:
    """Module names of one architecture family (attribute paths, dotted)."""

    family: str
    base: str  # the decoder stack inside the *ForCausalLM
    layers: str
    final_norm: str
    attn_norm: str
    attn: str
    attn_post: str | None
    mlp_norm: str
    mlp: str
    mlp_post: str | None
    rotary: bool  # positions enter as rotary (cos, sin) computed by ``base.rotary_emb``
    embed: str  # the token embedding inside ``base`` (its output is ``hook_embed``)
    pos_embed: str | None  # learned positions added to ``hook_embed`` to make ``resid_pre`` 0
    # The attention's output projection inside a layer; its input is ``attn.hook_z``. None
    # would be a family without separate heads (none of the supported ones).
    attn_o: str | None
    parallel_attr: str | None = None  # config flag that makes attention and MLP parallel
    # Whether the attention module's forward takes ``position_ids``; GPT-Neo's takes only the
    # hidden states, the mask and cache flags.
    attn_position_ids: bool = True


_GEMMA2 = ArchSpec(
    family="gemma2",
    base="model",
    layers="layers",
    final_norm="norm",
    attn_norm="input_layernorm",
    attn="self_attn",
    attn_post="post_attention_layernorm",
    mlp_norm="pre_feedforward_layernorm",
    mlp="mlp",
    mlp_post="post_feedforward_layernorm",
    rotary=True,
    embed="embed_tokens",
    pos_embed=None,
    attn_o="self_attn.o_proj",
)
_LLAMA = ArchSpec(
    family="llama",
    base="model",
    layers="layers",
    final_norm="norm",
    attn_norm="input_layernorm",
    attn="self_attn",
    attn_post=None,
    mlp_norm="post_attention_layernorm",
    mlp="mlp",
    mlp_post=None,
    rotary=True,
    embed="embed_tokens",
    pos_embed=None,
    attn_o="self_attn.o_proj",
)
_GPT2 = ArchSpec(
    family="gpt2",
    base="transformer",
    layers="h",
    final_norm="ln_f",
    attn_norm="ln_1",
    attn="attn",
    attn_post=None,
    mlp_norm="ln_2",
    mlp="mlp",
    mlp_post=None,
    rotary=False,
    embed="wte",
    pos_embed="wpe",
    attn_o="attn.c_proj",
)
_NEOX = ArchSpec(
    family="gpt_neox",
    base="gpt_neox",
    layers="layers",
    final_norm="final_layer_norm",
    attn_norm="input_layernorm",
    attn="attention",
    attn_post="post_attention_dropout",
    mlp_norm="post_attention_layernorm",
    mlp="mlp",
    mlp_post="post_mlp_dropout",
    rotary=True,
    embed="embed_in",
    pos_embed=None,
    attn_o="attention.dense",
    parallel_attr="use_parallel_residual",
)
_GPT_NEO = ArchSpec(
    family="gpt_neo",
    base="transformer",
    layers="h",
    final_norm="ln_f",
    attn_norm="ln_1",
    attn="attn",
    attn_post=None,
    mlp_norm="ln_2",
    mlp="mlp",
    mlp_post=None,
    rotary=False,
    embed="wte",
    pos_embed="wpe",
    attn_o="attn.attention.out_proj",
    attn_position_ids=False,
)

# config.model_type -> spec
ARCH_SPECS = {
    "gemma2": _GEMMA2,
    "llama": _LLAMA,
    "qwen2": _LLAMA,
    "gpt2": _GPT2,
    "gpt_neo": _GPT_NEO,
    "gpt_neox": _NEOX,
}


def spec_for(config) -> ArchSpec:
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCH_SPECS:
        raise UsageError(
            f"model type {model_type!r} is not supported for hook points; supported: "
            f"{', '.join(sorted(ARCH_SPECS))}."
        )
    return ARCH_SPECS[model_type]


def is_parallel(spec: ArchSpec, config) -> bool:
    return bool(spec.parallel_attr and getattr(config, spec.parallel_attr, False))


def submodule(root: torch.nn.Module, dotted: str) -> torch.nn.Module:
    return root.get_submodule(dotted)


def first_output(output):
    """Attention modules return ``(output, weights)``; the others return a tensor."""
    return output[0] if isinstance(output, tuple) else output


def _then(layer: torch.nn.Module, name: str | None, out: torch.Tensor) -> torch.Tensor:
    """``out`` through the optional module ``name`` of ``layer`` (Gemma-2's post-norms)."""
    return submodule(layer, name)(out) if name else out


def attn_block(
    spec: ArchSpec,
    layer: torch.nn.Module,
    resid_pre: torch.Tensor,
    attention_mask,
    position_ids: torch.Tensor,
    position_embeddings,
) -> torch.Tensor:
    """``hook_attn_out`` of ``layer`` given its ``hook_resid_pre``."""
    kwargs = {"attention_mask": attention_mask}
    if spec.attn_position_ids:
        kwargs["position_ids"] = position_ids
    if spec.rotary:
        kwargs["position_embeddings"] = position_embeddings
    normed = submodule(layer, spec.attn_norm)(resid_pre)
    return _then(layer, spec.attn_post, first_output(submodule(layer, spec.attn)(normed, **kwargs)))


def mlp_block(spec: ArchSpec, layer: torch.nn.Module, mlp_in: torch.Tensor) -> torch.Tensor:
    """``hook_mlp_out`` of ``layer`` given the stream its MLP reads (resid_mid, or resid_pre
    when attention and MLP are parallel)."""
    return _then(
        layer, spec.mlp_post, submodule(layer, spec.mlp)(submodule(layer, spec.mlp_norm)(mlp_in))
    )


class _HaveZ(Exception):
    """Raised from the output projection's pre-hook once its input (``hook_z``) is known."""


def z_block(
    spec: ArchSpec,
    layer: torch.nn.Module,
    resid_pre: torch.Tensor,
    attention_mask,
    position_ids: torch.Tensor,
    position_embeddings,
) -> torch.Tensor:
    """``attn.hook_z`` of ``layer`` given its ``hook_resid_pre``: the model's own attention,
    stopped at the input of its output projection."""
    seen = []

    def capture(module, args):
        seen.append(args[0])
        raise _HaveZ

    handle = submodule(layer, spec.attn_o).register_forward_pre_hook(capture)
    try:
        attn_block(spec, layer, resid_pre, attention_mask, position_ids, position_embeddings)
    except _HaveZ:
        return seen[0]
    finally:
        handle.remove()
    raise RuntimeError(f"the attention of {spec.family} never called {spec.attn_o}")


def attn_out_from_z(spec: ArchSpec, layer: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    """``hook_attn_out`` of ``layer`` given its ``attn.hook_z``."""
    return _then(layer, spec.attn_post, submodule(layer, spec.attn_o)(z))


def resid_from_embed(
    spec: ArchSpec, base: torch.nn.Module, embed: torch.Tensor, position_ids: torch.Tensor
) -> torch.Tensor:
    """``blocks.0.hook_resid_pre`` given ``hook_embed`` (the embedding dropout is the identity
    in eval mode)."""
    if spec.pos_embed is None:
        return embed
    return embed + submodule(base, spec.pos_embed)(position_ids)
