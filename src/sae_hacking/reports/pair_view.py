"""The pairs report's side-by-side view of a pair's two latents: its page parts and its data.

The data (``views``) is built by :mod:`sae_hacking.absorption.pairs.evidence`; here it is made
compact for the page (numbers to :data:`SIGNIFICANT` digits, non-finite ones ``null``) and goes
into the report's one JSON block as ``evidence``. ``assets/pair_view.js`` draws it with the one
token renderer (``serve/assets/tokens.js``), so the page's single inline script is
``tokens.js + pair_view.js + pairs.js`` and its single inline style ``tokens.css + pairs.css``
(the Content-Security-Policy allows exactly those two).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

from sae_hacking.reports.inline import report_asset, token_asset

SIGNIFICANT = 4  # digits kept of activations and effects: enough for colours and reading
NO_VIEWS = "This report was written without latent evidence, so it has no side-by-side view."


def page_css() -> str:
    return token_asset("tokens.css") + report_asset("pairs.css")


def page_script() -> str:
    return token_asset("tokens.js") + report_asset("pair_view.js") + report_asset("pairs.js")


def note_html(views: Mapping | None) -> str:
    note = NO_VIEWS if views is None else str(views.get("note") or NO_VIEWS)
    has = bool(views and views.get("n_pairs"))
    return f'<p id="evidence-note" class="note" data-has-view="{int(has)}">{html.escape(note)}</p>'


def view_data(views: Mapping | None) -> dict[str, Any]:
    """``views`` as the page reads it (the same keys, numbers shortened)."""
    if not views:
        return {"n_pairs": 0, "top_readers": 0, "latents": {}, "pairs": []}
    return {
        "n_pairs": int(views.get("n_pairs") or 0),
        "top_readers": int(views.get("top_readers") or 0),
        "latents": {str(k): _latent(v) for k, v in (views.get("latents") or {}).items()},
        "pairs": [_pair(p) for p in views.get("pairs") or []],
    }


def _num(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    if isinstance(value, int) or value == 0:
        return int(value)  # most context activations are 0: "0", not "0.0"
    return float(f"{value:.{SIGNIFICANT}g}")


def _example(ex: Mapping) -> dict[str, Any]:
    return {
        "value": _num(ex.get("value")),
        "prompt": ex.get("prompt"),
        "position": ex.get("position"),
        "tokens": [str(t) for t in ex.get("tokens") or []],
        "acts": [_num(a) for a in ex.get("acts") or []],
        "center": ex.get("center"),
    }


def _moves(moves: Any) -> list[list]:
    return [[int(entry[0]), *(_num(v) for v in entry[1:])] for entry in moves or []]


def _latent(view: Mapping) -> dict[str, Any]:
    lens = view.get("logit_lens")
    return {
        "index": view.get("index"),
        "count": view.get("count"),
        "density": _num(view.get("density")),
        "max": _num(view.get("max")),
        "top": [_example(ex) for ex in view.get("top") or []],
        "bands": [
            {
                "low": _num(band.get("low")),
                "high": _num(band.get("high")),
                "examples": [_example(ex) for ex in band.get("examples") or []],
            }
            for band in view.get("bands") or []
        ],
        "logit_lens": (
            {side: [[str(t), _num(v)] for t, v in lens.get(side) or []] for side in ("up", "down")}
            if lens
            else None
        ),
        "up": _moves(view.get("up")),
        "down": _moves(view.get("down")),
    }


def _pair(view: Mapping) -> dict[str, Any]:
    effects = view.get("effects") or {}
    return {
        "tokens": [[str(t), int(a), int(b)] for t, a, b in view.get("tokens") or []],
        "totals": [int(n) for n in view.get("totals") or [0, 0]],
        "effects": {name: _moves(effects.get(name)) for name in ("shared", "only1", "only2")},
    }
