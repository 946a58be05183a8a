"""``network.html`` of an ``effect-network`` run: one self-contained page (no outside reference,
a Content-Security-Policy that allows only its one inline style and one inline script and
forbids every fetch) drawing the graph as SVG with pan, zoom, hover and search
(``assets/network.js``).

It reads ``doc``, the dict written as ``network.json`` (``{"meta", "nodes", "edges"}``; see
:mod:`sae_hacking.absorption.tools.network`). Labels are untrusted text: the page carries them
in a JSON block (``<``, ``>`` and ``&`` escaped) and its script writes them with
``textContent`` only; a node links to its Neuronpedia page only when it has an http(s) url.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sae_hacking.atomic import atomic_write_text
from sae_hacking.reports.inline import facts_html, locked_policy, report_asset, script_json

PAGE = "network.html"
KINDS = ("ablator", "reader")  # a node's kind in the page data: its position here


def page_css() -> str:
    return report_asset("network.css")


def page_script() -> str:
    return report_asset("network.js")


def write_page(run_dir: str | Path, doc: Mapping) -> Path:
    """Write ``network.html`` into ``run_dir``; returns its path."""
    return atomic_write_text(Path(run_dir) / PAGE, render_page(doc))


def render_page(doc: Mapping) -> str:
    meta = doc.get("meta") or {}
    css, script = page_css(), page_script()
    data = page_data(doc)
    parts = {
        "csp": locked_policy(css, script),
        "title": _e(f"effect network: {_sae(meta, 'ablator')}"),
        "subtitle": _e(_subtitle(meta)),
        "summary": _e(_summary(meta)),
        "facts": facts_html(_facts(doc)),
        "max_weight": _e(f"{data['max_abs']:.4g}"),
        "provenance": facts_html(list((meta.get("provenance") or {}).items())),
        "meta_json": _e(json.dumps(meta, indent=2, sort_keys=True, default=str)),
        "data": script_json(data),
        "css": css,
        "script": script,
    }
    # One pass over the template only: text substituted in is never searched for markers.
    return re.sub(r"\{\{(\w+)\}\}", lambda m: parts[m.group(1)], report_asset("network.html"))


def page_data(doc: Mapping) -> dict[str, Any]:
    """The graph compactly: a node is ``[kind, index, x, y, degree, label, source, url]``
    (kind: its position in :data:`KINDS`), an edge ``[source node, target node, weight]`` with
    nodes by their position in ``nodes``."""
    nodes, position = [], {}
    for n in doc.get("nodes") or []:
        position[n["id"]] = len(nodes)
        url = n.get("url")
        nodes.append([
            KINDS.index(n["kind"]), int(n["index"]), _num(n.get("x")), _num(n.get("y")),
            int(n.get("degree") or 0), str(n.get("label") or ""), str(n.get("source") or ""),
            url if isinstance(url, str) and url.startswith(("https://", "http://")) else None,
        ])  # fmt: skip
    edges = [
        [position[e["source"]], position[e["target"]], _num(e.get("weight"))]
        for e in doc.get("edges") or []
    ]
    weights = [abs(w) for _, _, w in edges if w is not None]
    return {"nodes": nodes, "edges": edges, "max_abs": max(weights, default=0.0)}


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _e(value: Any) -> str:
    return html.escape(value if isinstance(value, str) else str(value), quote=True)


def _sae(meta: Mapping, side: str) -> str:
    inputs = meta.get("inputs") or {}
    name = str(inputs.get(f"{side}_sae_release") or "?")
    return name + (f" / {inputs[f'{side}_sae_id']}" if inputs.get(f"{side}_sae_id") else "")


def _subtitle(meta: Mapping) -> str:
    inputs = meta.get("inputs") or {}
    return (
        f"{inputs.get('model') or '?'} · ablator {_sae(meta, 'ablator')} "
        f"({inputs.get('ablator_sae_hook') or '?'}) → reader {_sae(meta, 'reader')} "
        f"({inputs.get('reader_sae_hook') or '?'})"
    )


def _summary(meta: Mapping) -> str:
    n = meta.get("n_edges", 0)
    if not n:
        return "No edges: every mean effect read was zero."
    return (
        f"{n:,} edges ({meta.get('n_positive_edges', 0):,} positive, "
        f"{meta.get('n_negative_edges', 0):,} negative) between "
        f"{meta.get('n_ablator_nodes', 0):,} ablator and {meta.get('n_reader_nodes', 0):,} "
        "reader latents."
    )


def _sources(doc: Mapping, kind: str) -> str:
    counts = Counter(n.get("source") for n in doc.get("nodes") or [] if n.get("kind") == kind)
    return ", ".join(f"{c:,} {s}" for s, c in sorted(counts.items(), key=lambda x: -x[1])) or "—"


def _facts(doc: Mapping) -> list[tuple[str, Any]]:
    meta = doc.get("meta") or {}
    inputs = meta.get("inputs") or {}
    settings = meta.get("settings") or {}
    labels = meta.get("labels") or {}
    return [
        ("ablations file", inputs.get("ablations")),
        ("model", inputs.get("model")),
        ("ablator SAE", f"{_sae(meta, 'ablator')} at {inputs.get('ablator_sae_hook') or '?'}"),
        ("reader SAE", f"{_sae(meta, 'reader')} at {inputs.get('reader_sae_hook') or '?'}"),
        ("ablator Neuronpedia id", inputs.get("ablator_neuronpedia_id")),
        ("reader Neuronpedia id", inputs.get("reader_neuronpedia_id")),
        ("ablated latents read", meta.get("n_ablators_read")),
        ("reader latents", meta.get("d_reader")),
        ("min ablations", settings.get("min_ablations")),
        ("positive / negative mean effects", f"{meta.get('n_positive_effects', 0):,} / "
         f"{meta.get('n_negative_effects', 0):,}"),
        ("edges asked for", settings.get("n_edges")),
        ("edges kept (positive / negative)", f"{meta.get('n_edges', 0):,} "
         f"({meta.get('n_positive_edges', 0):,} / {meta.get('n_negative_edges', 0):,})"),
        ("equal effects", meta.get("tie_break")),
        ("ablator labels", _sources(doc, "ablator")),
        ("reader labels", _sources(doc, "reader")),
        ("ablator label sources", "; ".join(labels.get("ablator") or []) or "none"),
        ("reader label sources", "; ".join(labels.get("reader") or []) or "none"),
        ("layout", meta.get("layout")),
    ]  # fmt: skip
