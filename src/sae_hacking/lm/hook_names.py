"""Hook-point names as SAELens and Gemma Scope write them (torch-free):
``blocks.{L}.hook_{resid_pre|attn_out|resid_mid|mlp_out|resid_post}``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sae_hacking.errors import UsageError

HOOK_KINDS = ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post")
_HOOK_RE = re.compile(r"^blocks\.(\d+)\.hook_(resid_pre|attn_out|resid_mid|mlp_out|resid_post)$")
HOOK_TEMPLATES = tuple(f"blocks.{{L}}.hook_{kind}" for kind in HOOK_KINDS)


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
        return f"blocks.{self.layer}.hook_{self.kind}"

    def stream_position(self) -> tuple[int, int]:
        """Position in the residual stream: ``resid_post`` of L is ``resid_pre`` of L + 1."""
        if self.kind == "resid_post":
            return (self.layer + 1, 0)
        return (self.layer, self.site)


def parse_hook(name: str, n_layers: int, parallel: bool = False) -> HookPoint:
    """Parse ``blocks.{L}.hook_{kind}``; unknown names and layers are a :class:`UsageError`."""
    match = _HOOK_RE.match(name)
    supported = ", ".join(t for t in HOOK_TEMPLATES if not (parallel and "resid_mid" in t))
    if match is None:
        raise UsageError(
            f"unknown hook point {name!r}; supported: {supported} with L in 0..{n_layers - 1}."
        )
    layer, kind = int(match.group(1)), match.group(2)
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
    return HookPoint(layer, HOOK_KINDS.index(kind))
