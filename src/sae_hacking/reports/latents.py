"""The latent evidence report (``sae-hacking latents-report``): a folder of self-contained pages.

- ``index.html``: every latent of the report in one table (index, count, density, max, the
  tokens its top 3 examples fire on, explanation), searched, sorted and shown 200 rows at a time
  by its script; each row links to the latent's section on its page.
- ``page-NNNNN.html``: latents ``N·per_page .. (N+1)·per_page - 1`` (those of the report), one
  ``<section id="latent-I">`` each: the top examples as context lines, the quantile bands of the
  sample, a histogram (SVG), the logit lens, the top co-occurring latents and, for a latent an
  ``ablate`` run ablated (``--ablations``), the reader latents its ablation moves most.

Every page is like ``report.html`` (:mod:`sae_hacking.reports.pairs`): one inline style, one
inline script (the shared token renderer ``tokens.css`` / ``tokens.js`` of
``sae_hacking.serve``'s assets in front of this report's own), a Content-Security-Policy allowing
exactly those and no request, and its data as a JSON block whose untrusted text (token strings,
explanations) the script writes with ``textContent`` only. Pages link to one another by
relative file names, so the folder works opened from disk and can be moved whole.

The data are :data:`~sae_hacking.absorption.evidence.read.LATENT_SCHEMA` as the evidence reader
gives it plus ``explanation``, ``url`` (Neuronpedia), ``neighbours`` (``[[latent, observed,
expected, explanation], ...]`` or ``null``) and ``moves`` (``null`` unless ablated: ``{"ablations":
n, "up": [[reader, mean effect], ...], "down": [...], "readers": {"reader": label}}``, a label
being ``{"count", "density", "tops": [token, ...], "url"}`` from the reader's evidence or
``{"lens": [token, ...], "url"}`` from its logit lens, as the meta's ``reader_labels`` says); the
context activations are rounded to 4 significant digits (they are float16, shown as colours;
``value`` stays exact) and label tokens cut as the index cuts its top tokens.

Size at e = 65,536. Measured: on the tiny test pipeline at this project's evidence defaults (20
top examples, 10 bands x 5 sampled, ±16 tokens), a page's data is 24.6 KB per latent (contexts
there average 24 of the 33 tokens: short prompts); with full 33-token windows (a synthetic page
of 128 latents, 80% of context activations 0) 31.7 KB per latent, 4.1 MB a page. The bulk is the
70 context lines (token strings and activations). So the folder is 512 pages of about 4 MB, about
2.1 GB in all, plus an index.html of 70-110 bytes per latent (72 on the tiny pipeline, 97 with
50-character explanations): 5-7 MB. It stays usable because no file holds more than one page of evidence: in headless
Chromium on this project's 2-core CPU box, the 65,536-row index opens in 0.7 s, a search takes
0.05-0.15 s and a sort 0.3 s (plain arrays; only the 200 rows shown become elements), and a page
of 128 latents opens in about 1.1 s (off-screen sections skip layout; a quantile band's examples
are drawn when opened). Writing it takes about 10 ms a latent (decoding the contexts), some 11
minutes at e = 65,536, plus the co-occurrence pass of
:mod:`sae_hacking.absorption.evidence.neighbours` (1.5-2.5 min). With ``--ablations``, an ablated
latent's moves (20 readers, labelled) add about 2.4 KB to its page data (measured on the tiny
pipeline with reader evidence), and the effects file is read once, streamed.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sae_hacking.errors import UsageError
from sae_hacking.reports.inline import (
    facts_html,
    inline_element,
    locked_policy,
    report_asset,
    script_json,
    token_asset,
)

INDEX = "index.html"
PER_PAGE = 128
TOP_TOKENS = 3  # the index shows the tokens of a latent's first 3 top examples
TOKEN_CHARS = 24  # ... each cut to this many characters
EXPLANATION_CHARS = 200  # explanations in the index are cut (the page has them whole)
NEIGHBOUR_EXPLANATION_CHARS = 80
ACT_DIGITS = 4  # significant digits of a context activation


def page_digits(e: int, per_page: int) -> int:
    return max(5, len(str(max(0, e - 1) // per_page)))


def page_name(page: int, digits: int) -> str:
    return f"page-{page:0{digits}d}.html"


def check_output_dir(path: Path) -> None:
    """A new or empty folder (the report is built beside it and renamed into place)."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} is a file; the report is written into a new or empty folder.")
    if path.is_dir() and any(path.iterdir()):
        raise UsageError(
            f"{path} is not empty; give --output-dir a new or empty folder (or remove that one)."
        )


def write_latents_report(
    out_dir: str | Path,
    meta: Mapping[str, Any],
    pages: Iterable[tuple[int, list[dict[str, Any]]]],
) -> Path:
    """Write the report folder ``out_dir`` (new or empty) and return its ``index.html``.

    ``meta``: ``e``, ``tokens``, ``per_page``, ``pages`` (the page numbers written, ascending),
    ``listed`` (the latents of the report, or ``None`` for all), ``title``, ``facts`` (``[(name,
    value), ...]`` shown on every page) and anything else the pages carry along. ``pages``:
    ``(page number, its latents)`` in the order of ``meta["pages"]``; taken one at a time.
    Built in a temporary folder beside ``out_dir`` and renamed into place: never half written.
    """
    out = Path(out_dir)
    check_output_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's folder is private; the report is not
        digits = page_digits(int(meta["e"]), int(meta["per_page"]))
        numbers = list(meta["pages"])
        position = {page: at for at, page in enumerate(numbers)}
        rows: list[list] = []
        for page, latents in pages:
            at = position[page]
            near = {
                "prev": page_name(numbers[at - 1], digits) if at > 0 else None,
                "next": page_name(numbers[at + 1], digits) if at + 1 < len(numbers) else None,
            }
            text = render_page(meta, page, digits, near, latents)
            (tmp / page_name(page, digits)).write_text(text, encoding="utf-8")
            rows.extend(index_row(latent) for latent in latents)
        (tmp / INDEX).write_text(render_index(meta, digits, rows), encoding="utf-8")
        check_output_dir(out)
        if out.is_dir():
            out.rmdir()
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / INDEX


def index_row(latent: Mapping[str, Any]) -> list:
    """``[index, count, max, [top tokens], explanation]``, then the times it was ablated when it
    was (``--ablations``): all the index keeps of a latent."""
    tops = [_cut(ex["tokens"][ex["center"]], TOKEN_CHARS) for ex in latent["top"][:TOP_TOKENS]]
    explanation = _cut(latent.get("explanation") or "", EXPLANATION_CHARS)
    row = [latent["index"], latent["count"], latent["max"], tops, explanation]
    if latent.get("moves"):
        row.append(latent["moves"]["ablations"])
    return row


def page_latent(latent: Mapping[str, Any]) -> dict[str, Any]:
    """A latent as its page carries it: context activations rounded (display only)."""

    def rounded(example: Mapping[str, Any]) -> dict[str, Any]:
        # Most of a context is inactive: 0 is written "0", not "0.0".
        acts = [float(f"{a:.{ACT_DIGITS}g}") or 0 for a in example["acts"]]
        return {**example, "acts": acts}

    out = dict(latent)
    out["top"] = [rounded(ex) for ex in latent["top"]]
    out["bands"] = [
        {**band, "examples": [rounded(ex) for ex in band["examples"]]} for band in latent["bands"]
    ]
    if out.get("neighbours"):
        out["neighbours"] = [
            [j, obs, exp, _cut(text, NEIGHBOUR_EXPLANATION_CHARS) if text else None]
            for j, obs, exp, text in out["neighbours"]
        ]
    if out.get("moves"):
        out["moves"] = {
            **out["moves"],
            "readers": {r: _cut_label(label) for r, label in out["moves"]["readers"].items()},
        }
    return out


def _cut_label(label: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(label)
    for key in ("tops", "lens"):
        if key in out:
            out[key] = [_cut(text, TOKEN_CHARS) for text in out[key]]
    return out


def _cut(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "\u2026"


# -- pages --------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fill(template: str, parts: Mapping[str, str]) -> str:
    # One pass: text substituted in is never searched for markers.
    return re.sub(r"\{\{(\w+)\}\}", lambda m: parts[m.group(1)], report_asset(template))


def _page_parts(meta: Mapping[str, Any], script_name: str, data: Any) -> dict[str, str]:
    css = token_asset("tokens.css") + report_asset("latents.css")
    script = token_asset("tokens.js") + report_asset("latents.js") + report_asset(script_name)
    return {
        "csp": locked_policy(css, script),
        "style": inline_element("style", css),
        "script": inline_element("script", script),
        "data": script_json(data),
        "facts": facts_html(meta.get("facts") or []),
        "subtitle": _e(meta.get("title") or ""),
    }


def _common(meta: Mapping[str, Any], digits: int) -> dict[str, Any]:
    shown = (
        "e", "tokens", "per_page", "listed", "neuronpedia_id", "has_neighbours", "has_moves",
        "reader_labels",
    )  # fmt: skip
    return {**{k: meta.get(k) for k in shown}, "digits": digits}


def render_page(
    meta: Mapping[str, Any],
    page: int,
    digits: int,
    near: Mapping[str, str | None],
    latents: list[dict[str, Any]],
) -> str:
    first, last = page * int(meta["per_page"]), (page + 1) * int(meta["per_page"]) - 1
    last = min(last, int(meta["e"]) - 1)
    data = {
        "meta": {**_common(meta, digits), "page": page, **near},
        "latents": [page_latent(latent) for latent in latents],
    }
    parts = _page_parts(meta, "latents-page.js", data)
    links = [f'<a href="{INDEX}">index</a>']
    for key, label in (("prev", "\u2190 previous page"), ("next", "next page \u2192")):
        target = near.get(key)
        links.append(f'<a href="{_e(target)}" rel="{key}">{label}</a>' if target else "")
    parts.update(
        title=_e(f"latents {first}\u2013{last}"),
        heading=_e(f"Latents {first}\u2013{last}"),
        nav=" ".join(link for link in links if link),
    )
    return _fill("latents-page.html", parts)


def render_index(meta: Mapping[str, Any], digits: int, rows: list[list]) -> str:
    data = {"meta": _common(meta, digits), "rows": rows}
    parts = _page_parts(meta, "latents-index.js", data)
    parts.update(title=_e("latents: index"), count=_e(f"{len(rows):,}"))
    return _fill("latents-index.html", parts)
