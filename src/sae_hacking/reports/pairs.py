"""The pair finder's figures and its ``report.html``.

Both read ``result``, the dict written as ``pairs.json`` (``{"meta": ..., "pairs": [...]}``; see
``absorption/pairs/run.py``):

- ``histogram.png``: effect cosines of all pairs that passed the filters (the bin counts in
  ``meta.histogram``), log y unless ``log_scale`` is off;
- ``effect_vs_decoder.png``: the kept pairs, decoder cosine against effect cosine, coloured by
  co-occurrence count. Pairs near the diagonal may only mirror their decoders' similarity;
- ``report.html``: one file with no outside references (the plots inline as base64 PNG, a
  Content-Security-Policy that forbids every fetch) holding the run's provenance and a sortable,
  filterable table of the pairs. Explanations are untrusted text: the page carries the pairs as
  a JSON block (every ``<``, ``>`` and ``&`` escaped as ``\\u003c`` etc.) and its script writes
  them with ``textContent`` only; everything rendered here goes through :func:`html.escape`.
  The report's first pairs open a side-by-side view of their two latents when the run had latent
  evidence (``views``; its page parts and data in :mod:`sae_hacking.reports.pair_view`).

``decoder-pairs`` (``meta.compare == "decoder"``) writes the same shape with the decoder cosine
as ``cosine_similarity``; its page (:func:`_decoder_mode`) names that cosine, drops the effect
and ablation columns and the effect-vs-decoder plot, and shows labels instead of explanations.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from sae_hacking.atomic import atomic_write, atomic_write_text
from sae_hacking.errors import SETTING_REFERENCE
from sae_hacking.reports import pair_view
from sae_hacking.reports.figures import figure, png_bytes
from sae_hacking.reports.inline import facts_html, locked_policy, script_json

HISTOGRAM = "histogram.png"
SCATTER = "effect_vs_decoder.png"
REPORT = "report.html"
DPI = 120

# (key, label, type, format, tooltip, link): the table's columns; pairs.js reads each row's
# cells by these keys (a row object built from the fields below), never by position.
COLUMNS = [
    ("rank", "#", "num", "int", "rank in pairs.json (effect cosine, descending)", False),
    ("latent1", "Latent 1", "num", "int", "ablator latent index (link: Neuronpedia)", True),
    ("explanation1", "Explanation 1", "text", "", "Neuronpedia explanation of latent 1", False),
    ("fires1", "Fires 1", "num", "int", "tokens on which latent 1 fired (activation count)", False),
    ("ablated1", "Ablated 1", "num", "int", "times latent 1 was ablated", False),
    ("latent2", "Latent 2", "num", "int", "ablator latent index (link: Neuronpedia)", True),
    ("explanation2", "Explanation 2", "text", "", "Neuronpedia explanation of latent 2", False),
    ("fires2", "Fires 2", "num", "int", "tokens on which latent 2 fired (activation count)", False),
    ("ablated2", "Ablated 2", "num", "int", "times latent 2 was ablated", False),
    ("effect_cosine", "Effect cos", "num", "cos", "cosine of the two latents' mean ablation effects", False),
    ("decoder_cosine", "Decoder cos", "num", "cos", "cosine of the two latents' decoder rows", False),
    ("cooccurrence", "Co-occ.", "num", "int", "tokens on which both fired", False),
    ("expected", "Expected", "num", "sci", "co-occurrences expected if independent: N f1 f2", False),
    ("p_zero", "P(0)", "num", "sci", "chance of no co-occurrence if independent: exp(-expected)", False),
]  # fmt: skip
SORT_KEY = "effect_cosine"
# decoder-pairs: no effects and no ablations; its latents carry labels of several sources.
DECODER_DROPPED = ("effect_cosine", "ablated1", "ablated2")
LABEL_TIP = "label of latent {}: Neuronpedia explanation, local evidence or logit lens"
DECODER_TOOLTIPS = {"rank": "rank in pairs.json (decoder cosine, descending)",
                    "latent1": "latent index (link: Neuronpedia)", "latent2": "latent index "
                    "(link: Neuronpedia)", "explanation1": LABEL_TIP.format(1),
                    "explanation2": LABEL_TIP.format(2)}  # fmt: skip
DECODER_LABELS = {"explanation1": "Label 1", "explanation2": "Label 2"}
KIND_NAMES = {False: "pairs", True: "decoder pairs"}  # by decoder mode
HEADINGS = {
    False: "Absorption pair candidates",
    True: "Latent pairs with similar decoder directions",
}
DECODER_SUMMARY = {"ablator SAE": "SAE", "effects compared": "compared", "explanations": "labels"}
# The compact table data: a pair is an array of PAIR_FIELDS (pairs.json key in brackets), a
# latent's text and counts are stored once, as an array of LATENT_FIELDS.
PAIR_FIELDS = {
    "latent1": None,
    "latent2": None,
    "effect_cosine": "cosine_similarity",
    "decoder_cosine": "decoder_cosine",
    "cooccurrence": "cooccurrence_count",
    "expected": "expected_cooccurrence",
    "p_zero": "p_no_cooccurrence",
}
LATENT_FIELDS = ("explanation", "url", "fires", "ablated")


def as_flags(text: str) -> str:
    """``text`` with every `` `key` `` shown as the ``pairs`` flag ``--key`` (a page or a file
    for the user names flags, never config keys)."""
    return SETTING_REFERENCE.sub(lambda m: "--" + m.group(1).replace("_", "-"), text)


def write_pair_plots(run_dir: str | Path, result: Mapping, log_scale: bool = True) -> list[Path]:
    """Write ``histogram.png`` and ``effect_vs_decoder.png`` into ``run_dir``."""
    run_dir = Path(run_dir)
    written = []
    for name, png in (
        (HISTOGRAM, histogram_png(result, log_scale)),
        (SCATTER, scatter_png(result)),
    ):
        written.append(atomic_write(run_dir / name, lambda tmp, png=png: tmp.write_bytes(png)))
    return written


def _figure(width: float, height: float):
    return figure(width, height, DPI)


def histogram_png(result: Mapping, log_scale: bool = True) -> bytes:
    return png_bytes(histogram_figure(result, log_scale))


def histogram_figure(result: Mapping, log_scale: bool = True):
    """The histogram's matplotlib figure (:func:`histogram_png` draws it)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    meta = result.get("meta", {})
    histogram = meta.get("histogram") or {}
    edges, counts = list(histogram.get("edges") or []), list(histogram.get("counts") or [])
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    if len(edges) == len(counts) + 1 and counts and not any(c > 0 for c in counts):
        # Nothing to draw: a plain 0..1 frame and why, not an autoscaled axis around zero.
        ax.set_xlim(edges[0], edges[-1])
        ax.set_ylim(0, 1)
        ax.set_yticks([0, 1])
        ax.text(0.5, 0.5, "no pairs pass the filters", ha="center", va="center",
                transform=ax.transAxes)  # fmt: skip
    elif len(edges) == len(counts) + 1 and counts:
        widths = [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]
        ax.bar(edges[:-1], counts, width=widths, align="edge", color="#2459a6", linewidth=0)
        ax.set_xlim(edges[0], edges[-1])
        ax.set_ylim(bottom=0)
        if log_scale:
            # Bars start at 0; "clip" draws them from the axis bottom instead of dropping them.
            ax.set_yscale("log", nonpositive="clip")
            ax.set_ylim(bottom=0.5)
            # Plain counts (1, 10, 100), not 10^k, and no labels on the minor ticks.
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.text(0.5, 0.5, "no histogram in this result", ha="center", va="center")
    total = sum(counts)
    name = "Decoder cosine" if _decoder_mode(meta) else "Effect cosine"
    ax.set_title(
        f"{name} of all {total:,} pairs passing the filters"
        if total
        else f"{name} of the pairs passing the filters: none"
    )
    ax.set_xlabel(
        name.lower() if _decoder_mode(meta) else f"{name.lower()} ({_compare_words(meta)})"
    )
    ax.set_ylabel("pairs" + (" (log scale)" if log_scale and total else ""))
    return fig


def _compare_words(meta: Mapping) -> str:
    if _decoder_mode(meta):
        return "decoder directions (cosine of W_dec rows)"
    return "raw mean effects" if meta.get("compare") == "raw" else "signs of mean effects"


def _decoder_mode(meta: Mapping) -> bool:
    """A ``decoder-pairs`` result: its cosine is the decoder cosine, it has no effects."""
    return meta.get("compare") == "decoder"


def _columns(meta: Mapping) -> list[tuple]:
    if not _decoder_mode(meta):
        return COLUMNS
    return [
        (key, DECODER_LABELS.get(key, label), kind, fmt, DECODER_TOOLTIPS.get(key, tip), link)
        for key, label, kind, fmt, tip, link in COLUMNS
        if key not in DECODER_DROPPED
    ]


def scatter_png(result: Mapping) -> bytes:
    from matplotlib.colors import Normalize
    from matplotlib.ticker import MaxNLocator

    pairs = result.get("pairs") or []
    fig = _figure(6.4, 4.8)
    ax = fig.add_subplot()
    x = [_number(p.get("decoder_cosine")) for p in pairs]
    y = [_number(p.get("cosine_similarity")) for p in pairs]
    c = [_number(p.get("cooccurrence_count")) or 0.0 for p in pairs]
    points = [(a, b, k) for a, b, k in zip(x, y, c, strict=True) if a is not None and b is not None]
    ax.plot([-1, 1], [-1, 1], color="#999999", linewidth=0.8, linestyle="--", zorder=0)
    if points:
        xs, ys, cs = zip(*points, strict=True)
        # Kept pairs are the best by effect cosine: draw the co-occurring ones on top.
        order = sorted(range(len(cs)), key=cs.__getitem__)
        norm = Normalize(vmin=0, vmax=max(1.0, max(cs)))
        image = ax.scatter(
            [xs[i] for i in order],
            [ys[i] for i in order],
            c=[cs[i] for i in order],
            cmap="viridis",
            norm=norm,
            s=14 if len(points) < 2000 else 4,
            linewidths=0,
            rasterized=True,
        )
        bar = fig.colorbar(image, ax=ax, label="co-occurrence count")
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
    else:
        ax.text(0.5, 0.5, "no pairs kept", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(-1.02, 1.02)
    ax.set_ylim(-1.02, 1.02)
    ax.set_xlabel("decoder cosine")
    ax.set_ylabel("effect cosine")
    ax.set_title(f"{len(points):,} kept pairs: effect vs decoder similarity")
    return png_bytes(fig)


def _number(value: Any) -> int | float | None:
    """A finite number as it is (ints stay ints); anything else ``None`` (shown as a dash)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def write_report(run_dir: str | Path, result: Mapping, views: Mapping | None = None) -> Path:
    """Write ``report.html`` into ``run_dir`` (plots from ``run_dir`` when present, else drawn
    now; the side-by-side view of each pair in ``views``, see :mod:`.pair_view`) and return its
    path."""
    run_dir = Path(run_dir)
    return atomic_write_text(run_dir / REPORT, render_report(result, run_dir, views))


def render_report(
    result: Mapping, run_dir: str | Path | None = None, views: Mapping | None = None
) -> str:
    meta = result.get("meta") or {}
    settings = meta.get("settings") or {}
    log_scale = not settings.get("no_log_scale", False)
    decoder = _decoder_mode(meta)
    plots = []
    for name, caption, draw in (
        (
            HISTOGRAM,
            f"{'Decoder' if decoder else 'Effect'} cosines of every pair that passed the filters.",
            histogram_png,
        ),
        (
            SCATTER,
            "Kept pairs: points near the dashed diagonal may only mirror their decoders.",
            None,
        ),
    )[: 1 if decoder else 2]:  # effect vs decoder says nothing when the cosine is the decoder's
        path = Path(run_dir) / name if run_dir is not None else None
        if path is not None and path.is_file():
            png = path.read_bytes()
        else:
            png = draw(result, log_scale) if draw else scatter_png(result)
        plots.append(_figure_html(png, name, caption))
    css = pair_view.page_css()
    script = pair_view.page_script()
    inputs = meta.get("inputs") or {}
    parts = {
        "csp": locked_policy(css, script),
        "title": _e(f"{KIND_NAMES[decoder]}: {inputs.get('ablator_sae_release') or 'run'}"),
        "heading": HEADINGS[decoder],
        "effect_filter": " hidden" if decoder else "",
        "subtitle": _e(_subtitle(meta)),
        "warnings": _warnings_html(meta),
        "summary": facts_html(_summary(meta)),
        "plots": "\n".join(plots),
        "sort_key": "decoder_cosine" if decoder else SORT_KEY,
        "headers": "".join(_header_html(i, col) for i, col in enumerate(_columns(meta))),
        # decoder-pairs has no side-by-side views to speak of (its evidence labels latents).
        "evidence_note": "" if decoder else pair_view.note_html(views),
        "provenance": facts_html(list((meta.get("provenance") or {}).items())),
        "meta_json": _e(_meta_dump(meta)),
        "data": script_json(_table_data(result) | {"evidence": pair_view.view_data(views)}),
        "css": css,
        "script": script,
    }
    # One pass over the template only: text substituted in is never searched for markers.
    return re.sub(r"\{\{(\w+)\}\}", lambda m: parts[m.group(1)], _asset("pairs.html"))


def _asset(name: str) -> str:
    return (
        resources.files("sae_hacking.reports").joinpath("assets").joinpath(name).read_text("utf-8")
    )


def _e(value: Any) -> str:
    return html.escape(value if isinstance(value, str) else json.dumps(value), quote=True)


def _figure_html(png: bytes, name: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img alt="{_e(name)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_e(name)}: {_e(caption)}</figcaption></figure>"
    )


def _header_html(index: int, column: tuple) -> str:
    key, label, kind, fmt, tooltip, link = column
    link_attr = ' data-link="1"' if link else ""
    return (
        f'<th scope="col" data-col="{index}" data-key="{key}" data-type="{kind}" '
        f'data-format="{fmt}"{link_attr}'
        f' title="{_e(tooltip)}" aria-sort="none">'
        f'<button type="button">{_e(label)}</button></th>'
    )


def _sae_name(meta: Mapping) -> str:
    inputs = meta.get("inputs") or {}
    sae = str(inputs.get("ablator_sae_release") or "?")
    return sae + (f" / {inputs['ablator_sae_id']}" if inputs.get("ablator_sae_id") else "")


def _subtitle(meta: Mapping) -> str:
    inputs = meta.get("inputs") or {}
    model, hook = inputs.get("model") or "?", inputs.get("hook") or "?"
    return f"{model} · {'SAE' if _decoder_mode(meta) else 'ablator SAE'} {_sae_name(meta)} · {hook}"


def _summary(meta: Mapping) -> list[tuple[str, Any]]:
    inputs = meta.get("inputs") or {}
    explanations = meta.get("explanations") or {}
    rows = [
        ("model", inputs.get("model")),
        ("ablator SAE", _sae_name(meta)),
        ("hook", inputs.get("hook")),
        ("Neuronpedia id", inputs.get("neuronpedia_id")),
        ("ablations file", inputs.get("ablations")),
        ("co-occurrence file", inputs.get("cooccurrences")),
        ("tokens counted (N)", inputs.get("tokens")),
        ("effects compared", _compare_words(meta)),
        ("latents compared", meta.get("n_compared")),
        ("pairs passing the filters", meta.get("n_pairs_passing")),
        ("pairs kept (in the table)", meta.get("n_pairs_kept")),
        ("explanations", explanations.get("source")),
    ]
    if _decoder_mode(meta):  # one SAE, no ablations; its latents are labelled
        rows = [(DECODER_SUMMARY.get(k, k), v) for k, v in rows if k != "ablations file"]
    return rows


def _warnings_html(meta: Mapping) -> str:
    warning = (meta.get("explanations") or {}).get("warning")
    return f'<p class="warning" role="note">{_e(as_flags(str(warning)))}</p>' if warning else ""


def _meta_dump(meta: Mapping) -> str:
    shown = {k: v for k, v in meta.items() if k != "histogram"}  # the plot shows it
    return json.dumps(shown, indent=2, sort_keys=True, default=str)


def _table_data(result: Mapping) -> dict:
    """The pairs compactly: each latent's text once (``latents``), pairs as number arrays."""
    latents: dict[str, list] = {}
    pairs = []
    for pair in result.get("pairs") or []:
        ids = []
        for key in ("ablator1", "ablator2"):
            latent = pair.get(key) or {}
            ids.append(int(latent.get("id", -1)))
            latents.setdefault(
                str(ids[-1]),
                [
                    str(latent.get("explanation") or ""),
                    latent.get("url") if isinstance(latent.get("url"), str) else None,
                    _number(latent.get("activation_count")),
                    _number(latent.get("ablation_count")),
                ],
            )
        pairs.append(ids + [_number(pair.get(name)) for name in PAIR_FIELDS.values() if name])
    return {
        "pair_fields": list(PAIR_FIELDS),
        "latent_fields": list(LATENT_FIELDS),
        "latents": latents,
        "pairs": pairs,
    }
