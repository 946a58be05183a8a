"""``cluster.html``: the dendrogram of a ``cluster`` run as one self-contained page.

It reads ``result``, the dict written as ``cluster.json`` (see
:mod:`sae_hacking.absorption.tools.cluster`). The tree is drawn by ``assets/cluster.js`` as a
collapsible outline: an internal node shows how many latents it holds and the cosine distance
at which its two halves merged; a leaf shows ``index: label``. Rows are built only when their
parent is expanded, so a 20,000-leaf tree opens at once. Labels are untrusted text: they travel
in a JSON block (``<``, ``>``, ``&`` escaped) and the script writes them with ``textContent``
only; a Content-Security-Policy allows the page's one style and one script and no request.
"""

from __future__ import annotations

import html
import json
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

LABEL_SOURCES = ("explanation", "evidence", "logit lens", "none")
MAX_LEFT_OUT = 500  # left-out latents listed on the page
MODE_WORDS = {
    "effect": "mean ablation effects",
    "decoder": "decoder directions (W_dec rows)",
}


def write_page(path: str | Path, result: Mapping) -> Path:
    """Write the page of ``result`` to ``path`` atomically; returns the path."""
    return atomic_write_text(path, render_page(result))


def render_page(result: Mapping) -> str:
    meta = result.get("meta") or {}
    css = report_asset("cluster.css")
    script = report_asset("cluster.js")
    parts = {
        "csp": locked_policy(css, script),
        "title": _e(f"cluster: {_sae_name(meta)}"),
        "subtitle": _e(_subtitle(meta)),
        "summary": facts_html(_summary(meta)),
        "labels_how": _how_html(meta),
        "left_out": _left_out_html(result),
        "provenance": facts_html(list((meta.get("provenance") or {}).items())),
        "meta_json": _e(json.dumps(meta, indent=2, sort_keys=True, default=str)),
        "data": script_json(page_data(result)),
        "style": inline_element("style", css),
        "script": inline_element("script", script),
    }
    # One pass over the template only: text substituted in is never searched for markers.
    return re.sub(r"\{\{(\w+)\}\}", lambda m: parts[m.group(1)], report_asset("cluster.html"))


def page_data(result: Mapping) -> dict[str, Any]:
    """What cluster.js reads, compactly: each leaf's label as ``[text, source, url]`` (source
    an index into ``sources``), merges as ``[left, right, height]``."""
    labels = result.get("labels") or {}
    latents = [int(i) for i in result.get("latents") or []]

    def label(i: int) -> list:
        got = labels.get(str(i)) or {}
        source = got.get("source")
        url = got.get("url")
        return [
            str(got.get("text") or ""),
            LABEL_SOURCES.index(source) if source in LABEL_SOURCES else len(LABEL_SOURCES) - 1,
            url if isinstance(url, str) and url.startswith("https://") else None,
        ]

    return {
        "latents": latents,
        "merges": [[int(a), int(b), float(h)] for a, b, h, *_ in result.get("linkage") or []],
        "labels": [label(i) for i in latents],
        "sources": list(LABEL_SOURCES),
        "clusters": [int(c) for c in result.get("clusters") or []],
        "counts": result.get("ablation_counts"),
    }


def _e(value: Any) -> str:
    return html.escape(value if isinstance(value, str) else json.dumps(value), quote=True)


def _sae_name(meta: Mapping) -> str:
    inputs = meta.get("inputs") or {}
    sae = str(inputs.get("sae_release") or "?")
    return sae + (f" / {inputs['sae_id']}" if inputs.get("sae_id") else "")


def _subtitle(meta: Mapping) -> str:
    inputs = meta.get("inputs") or {}
    what = MODE_WORDS.get(str(meta.get("mode")), str(meta.get("mode")))
    return (
        f"{inputs.get('model') or '?'} · SAE {_sae_name(meta)} · {inputs.get('hook') or '?'} · "
        f"{meta.get('linkage', '?')} linkage on cosine distances of {what}"
    )


def _summary(meta: Mapping) -> list[tuple[str, Any]]:
    inputs = meta.get("inputs") or {}
    left = meta.get("left_out") or {}
    sources = (meta.get("labels") or {}).get("sources") or {}
    return [
        ("compared", MODE_WORDS.get(str(meta.get("mode")), meta.get("mode"))),
        ("model", inputs.get("model")),
        ("SAE", _sae_name(meta)),
        ("hook", inputs.get("hook")),
        ("Neuronpedia id", inputs.get("neuronpedia_id")),
        ("ablations file", inputs.get("ablations")),
        ("dimensions compared", inputs.get("dimensions")),
        ("linkage", f"{meta.get('linkage')} (heights are cosine distances, 1 - cosine)"),
        ("latents clustered", meta.get("n_latents")),
        ("flat clusters (clusters.csv)", meta.get("n_clusters")),
        ("left out", sum(len(v) for v in left.values()) or "none"),
        ("labels", ", ".join(f"{n:,} {s}" for s, n in sources.items()) or None),
    ]


def _how_html(meta: Mapping) -> str:
    how = (meta.get("labels") or {}).get("how") or []
    if not how:
        return '<p class="note">No latent has a label (no explanation, evidence or logit lens).</p>'
    return '<ul class="how">' + "".join(f"<li>{_e(str(h))}</li>" for h in how) + "</ul>"


def _left_out_html(result: Mapping) -> str:
    left = (result.get("meta") or {}).get("left_out") or {}
    labels = result.get("labels") or {}
    why = {
        "zero_norm": "have a zero vector (an ablation that moved nothing, or an empty decoder "
        "row), so no cosine with anything",
        "non_finite": "hold a non-finite value",
    }
    parts = []
    for key, latents in left.items():
        if not latents:
            continue
        items = "".join(
            f"<li>{int(i)}: {_e(str((labels.get(str(i)) or {}).get('text') or '(no label)'))}</li>"
            for i in latents[:MAX_LEFT_OUT]
        )
        more = len(latents) - MAX_LEFT_OUT
        if more > 0:
            items += f"<li>… and {more:,} more (cluster.json lists them all)</li>"
        parts.append(
            f"<details><summary>{len(latents):,} latent(s) {_e(why.get(key, key))}; they are "
            f'not in the tree.</summary><ul class="left-out">{items}</ul></details>'
        )
    if not parts:
        return ""
    return '<section id="left-out"><h2>Left out</h2>' + "".join(parts) + "</section>"
