"""``tuples.html`` of a ``four-tuples`` run: one self-contained page (no outside references, a
Content-Security-Policy that forbids every fetch) with the run's facts, what a 4-tuple means,
and a sortable, filterable table of the kept tuples with their latents' labels and Neuronpedia
links.

It reads ``result``, the dict written as ``tuples.json`` (``{"meta", "labels", "tuples"}``; see
``absorption/tools/tuples.py``). Labels are untrusted text: they travel in a JSON block (every
``<``, ``>`` and ``&`` escaped) and the script writes them with ``textContent`` only; everything
rendered here goes through :func:`html.escape`.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sae_hacking.atomic import atomic_write_text
from sae_hacking.reports.inline import (
    facts_html,
    inline_element,
    locked_policy,
    report_asset,
    script_json,
)

PAGE = "tuples.html"
# (key, label, type, tooltip): the table's columns; tuples.js reads each row's cells by these
# keys, never by position. A latent column links to its Neuronpedia page.
COLUMNS = [
    ("rank", "#", "num", "rank in tuples.json (strength, descending)"),
    ("A", "A", "latent", "ablator latent A"),
    ("A_label", "A label", "text", "label of A"),
    ("B", "B", "latent", "reader latent B"),
    ("B_label", "B label", "text", "label of B"),
    ("C", "C", "latent", "ablator latent C"),
    ("C_label", "C label", "text", "label of C"),
    ("D", "D", "latent", "reader latent D"),
    ("D_label", "D label", "text", "label of D"),
    ("AB", "AB", "num", "mean effect of ablating A on B (positive)"),
    ("AD", "AD", "num", "mean effect of ablating A on D (positive)"),
    ("CB", "CB", "num", "mean effect of ablating C on B (positive)"),
    ("CD", "CD", "num", "mean effect of ablating C on D (negative)"),
    ("strength", "Strength", "num", "min(AB, AD, CB, -CD): the weakest of the four effects"),
]
SORT_KEY = "strength"
FIELDS = ("A", "B", "C", "D", "AB", "AD", "CB", "CD", "strength")  # a tuple's array in the data
SIDE = {"A": "ablator", "B": "reader", "C": "ablator", "D": "reader"}


def write_report(run_dir: str | Path, result: Mapping) -> Path:
    """Write ``tuples.html`` into ``run_dir``; returns its path."""
    return atomic_write_text(Path(run_dir) / PAGE, render(result))


def render(result: Mapping) -> str:
    meta = result.get("meta") or {}
    css = report_asset("tuples.css")
    script = report_asset("tuples.js")
    parts = {
        "csp": locked_policy(css, script),
        "title": _e(f"4-tuples: {(meta.get('inputs') or {}).get('ablator_sae_release') or 'run'}"),
        "subtitle": _e(_subtitle(meta)),
        "threshold": _e(_number_text(meta.get("treat_as_zero"))),
        "summary": facts_html(_summary(meta)),
        "sort_key": SORT_KEY,
        "headers": "".join(_header_html(col) for col in COLUMNS),
        "provenance": facts_html(list((meta.get("provenance") or {}).items())),
        "meta_json": _e(json.dumps(meta, indent=2, sort_keys=True, default=str)),
        "data": script_json(_table_data(result)),
        "style": inline_element("style", css),
        "script": inline_element("script", script),
    }
    # One pass over the template only: text substituted in is never searched for markers.
    return re.sub(r"\{\{(\w+)\}\}", lambda m: parts[m.group(1)], report_asset("tuples.html"))


def _e(value: Any) -> str:
    return html.escape(value if isinstance(value, str) else json.dumps(value), quote=True)


def _number_text(value: Any) -> str:
    return str(value) if isinstance(value, (int, float)) else "?"


def _header_html(column: tuple) -> str:
    key, label, kind, tooltip = column
    return (
        f'<th scope="col" data-key="{key}" data-type="{kind}" title="{_e(tooltip)}" '
        f'aria-sort="none"><button type="button">{_e(label)}</button></th>'
    )


def _sae(inputs: Mapping, side: str) -> str:
    release = str(inputs.get(f"{side}_sae_release") or "?")
    sae_id = inputs.get(f"{side}_sae_id")
    return release + (f" / {sae_id}" if sae_id else "")


def _subtitle(meta: Mapping) -> str:
    inputs = meta.get("inputs") or {}
    return (
        f"{inputs.get('model') or '?'} · ablator SAE {_sae(inputs, 'ablator')} · reader SAE "
        f"{_sae(inputs, 'reader')}"
    )


def _summary(meta: Mapping) -> list[tuple[str, Any]]:
    inputs = meta.get("inputs") or {}
    labels = meta.get("labels") or {}
    return [
        ("model", inputs.get("model")),
        ("ablator SAE", _sae(inputs, "ablator")),
        ("hook", inputs.get("hook")),
        ("reader SAE", _sae(inputs, "reader")),
        ("ablations file", inputs.get("ablations")),
        ("treat as zero (t)", meta.get("treat_as_zero")),
        ("ablated latents (A, C)", meta.get("n_ablators")),
        ("reader latents (B, D)", meta.get("n_readers")),
        ("4-tuples in all (exact)", meta.get("total")),
        ("kept (in the table)", meta.get("kept")),
        ("kept tuples are stronger than", _short(meta.get("strength_threshold"))),
        ("ablator labels", "; ".join(labels.get("ablator") or []) or "none"),
        ("reader labels", "; ".join(labels.get("reader") or []) or "none"),
    ]


def _finite(value: Any) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _table_data(result: Mapping) -> dict:
    """The tuples compactly: each as an array of :data:`FIELDS`, each label once per side as
    ``[text, source, url]``."""
    labels = result.get("labels") or {}
    sides = {}
    for side in ("ablator", "reader"):
        sides[side] = {
            str(i): [
                str(label.get("text") or ""),
                str(label.get("source") or ""),
                label.get("url") if isinstance(label.get("url"), str) else None,
            ]
            for i, label in (labels.get(side) or {}).items()
        }
    return {
        "fields": list(FIELDS),
        "sides": SIDE,
        "labels": sides,
        "tuples": [[_finite(t.get(k)) for k in FIELDS] for t in result.get("tuples") or []],
        "total": str((result.get("meta") or {}).get("total", "?")),  # may pass 2^53
    }


def _short(value):
    """A float32 threshold as its shortest readable form (0.05, not 0.04999999701976776)."""
    return f"{value:.7g}" if isinstance(value, float) else value
