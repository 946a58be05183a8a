"""Hook-point names as SAELens, TransformerLens and Gemma Scope write them (torch-free):
``hook_embed``, ``blocks.{L}.attn.hook_z`` and
``blocks.{L}.hook_{resid_pre|attn_out|resid_mid|mlp_out|resid_post}``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sae_hacking.errors import UsageError

# In the order the forward pass reaches them; "embed" exists in layer 0 only.
HOOK_KINDS = ("embed", "resid_pre", "z", "attn_out", "resid_mid", "mlp_out", "resid_post")
RESID_PRE_SITE = HOOK_KINDS.index("resid_pre")
EMBED = "hook_embed"
_LAYER_RE = re.compile(
    r"^blocks\.(\d+)\.(hook_(resid_pre|attn_out|resid_mid|mlp_out|resid_post)|attn\.hook_z)$"
)


def _template(kind: str, layer: int | str = "{L}") -> str:
    if kind == "embed":
        return EMBED
    if kind == "z":
        return f"blocks.{layer}.attn.hook_z"
    return f"blocks.{layer}.hook_{kind}"


HOOK_TEMPLATES = tuple(_template(kind) for kind in HOOK_KINDS)


@dataclass(frozen=True, order=True)
class HookPoint:
    """A parsed hook name; ordering is the order the forward pass reaches the points."""

    layer: int
    site: int  # index into HOOK_KINDS

    @property
    def kind(self) -> str:
        return HOOK_KINDS[self.site]

    @property
    def name(self) -> str:
        return _template(self.kind, self.layer)

    def stream_position(self) -> tuple[int, int]:
        """Position in the forward pass: ``resid_post`` of L is ``resid_pre`` of L + 1."""
        if self.kind == "resid_post":
            return (self.layer + 1, RESID_PRE_SITE)
        return (self.layer, self.site)


def supported_templates(parallel: bool = False, heads: bool = True) -> tuple[str, ...]:
    """The hook names of a model: no ``resid_mid`` when attention and MLP run in parallel, no
    ``attn.hook_z`` without separate attention heads."""
    skip = {"resid_mid"} if parallel else set()
    if not heads:
        skip.add("z")
    return tuple(_template(kind) for kind in HOOK_KINDS if kind not in skip)


def parse_hook(name: str, n_layers: int, parallel: bool = False, heads: bool = True) -> HookPoint:
    """Parse a hook name; unknown names and layers are a :class:`UsageError`."""
    supported = ", ".join(supported_templates(parallel, heads))
    if name == EMBED:
        return HookPoint(0, HOOK_KINDS.index("embed"))
    match = _LAYER_RE.match(name)
    if match is None:
        raise UsageError(
            f"unknown hook point {name!r}; supported: {supported} with L in 0..{n_layers - 1}."
        )
    layer, kind = int(match.group(1)), match.group(3) or "z"
    if layer >= n_layers:
        raise UsageError(
            f"hook point {name!r} names layer {layer} but the model has {n_layers} layers "
            f"(0..{n_layers - 1})."
        )
    if parallel and kind == "resid_mid":
        raise UsageError(
            f"hook point {name!r} does not exist in this model: attention and MLP run in "
            f"parallel, so there is no residual stream between them; supported: {supported}."
        )
    if not heads and kind == "z":
        raise UsageError(
            f"hook point {name!r} does not exist in this model: its attention has no separate "
            f"heads whose outputs could be read before the output projection; supported: "
            f"{supported}."
        )
    return HookPoint(layer, HOOK_KINDS.index(kind))
