"""``bench.html``: the absorption bench's tables and plots as one self-contained page.

Reads ``bench``, the dict written as ``bench.json`` (``settings``, ``table``: per architecture ×
width the ``[mean, std]`` over seeds; ``runs``: per seed × architecture × width, each ranking's
precision and recall at ``ks``; see ``absorption/bench/run.py``), and the per-group absorption
rates of each run (:func:`read_group_rates` reads them from the run folders' ``labels.json``
and ``world.json``). Writes into the bench's folder:

- ``curves-NN-ARCH-wW.png``: per architecture × width, precision@k and recall@k of every
  ranking, mean over seeds at the ``k`` every seed scored (``n_truth`` differs per seed);
- ``absorption_by_group.png``: per architecture × width, each group letter's absorption rate,
  mean over seeds (bars) and standard deviation (whiskers);
- ``bench.html``: the tables of ``bench.md``, what each ranking is, the plots inline as ``data:``
  PNGs (as ``report.html`` of ``pairs`` does), the settings, and ``bench.json`` as a JSON block.
  No script runs: the Content-Security-Policy allows the page's own style and ``data:`` images
  only. Every text from the data goes through :func:`html.escape` (and in plots, ``$`` is kept
  literal so matplotlib never parses it as math).
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sae_hacking.atomic import atomic_write, atomic_write_text
from sae_hacking.reports.figures import figure, png_bytes
from sae_hacking.reports.inline import script_json, sha256_source

REPORT = "bench.html"
GROUPS_PLOT = "absorption_by_group.png"
DPI = 110

# What each ranking orders the candidate pairs by (absorption/bench/ranking.py); a ranking the
# page does not know is still plotted and tabled, described as such.
RANKINGS = {
    "effect_sign": "the cosine of the signs of the two latents' mean ablation effects on the "
    "reader SAE (the legacy look_for_pairs.py's default)",
    "effect_raw": "the cosine of the two latents' raw mean ablation effects on the reader SAE "
    "(the pairs command's default)",
    "decoder": "the cosine of the two latents' decoder rows",
    "cooccurrence": "how surely the two never fire together by more than chance: the "
    "co-occurrences expected if they were independent, N·f1·f2",
    "combined": "the mean of the raw effect cosine's and the decoder cosine's percentile "
    "ranks among the candidates",
}
# (bench.json key, column header) of the first table, as in bench.md.
SAE_COLUMNS = (
    ("absorption_rate", "absorption rate"),
    ("n_absorbing", "absorbing latents"),
    ("truth_kept.never", "absorption pairs kept: never together"),
    ("truth_kept.rare", "kept: rarely together"),
    ("returned.pairs", "pairs `pairs` returns"),
    ("returned.precision", "their precision"),
    ("fvu", "FVU"),
    ("l0", "L0"),
    ("dead_frac", "dead"),
)
COLORS = ("#2459a6", "#d9822b", "#3a9e4f", "#c23b3b", "#7d55b5", "#8c6d31", "#e377c2")

CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
h1{margin-bottom:.2em}.sub{color:#555;margin-top:0}
table{border-collapse:collapse;margin:.6em 0 1.2em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right;font-variant-numeric:tabular-nums}
th:first-child,td:first-child{text-align:left}thead th{background:#f2f4f7}
dt{font-weight:600;font-family:monospace}dd{margin:0 0 .5em 1.5em}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}pre{background:#f6f6f6;padding:.8em;overflow:auto}
""".strip()
# No script at all; the JSON block is data (never run), so script-src can be 'none'.
POLICY = (
    "default-src 'none'; img-src data:; base-uri 'none'; form-action 'none'; "
    f"style-src '{sha256_source(CSS)}'; script-src 'none'"
)


def read_group_rates(folder: str | Path, runs: Sequence[Mapping]) -> list[dict]:
    """Each run's absorption rate per group letter, from ``seedS/ARCH-wW/labels.json``
    (``groups``) and ``seedS/world/world.json`` (``letters``) under ``folder``: a list of
    ``{"seed", "architecture", "width", "rates": {letter: rate or None}}``. A run whose files
    are missing is left out (the plot says so)."""
    folder = Path(folder)
    found = []
    for run in runs:
        seed, architecture, width = run.get("seed"), run.get("architecture"), run.get("width")
        where = folder / f"seed{seed}"
        try:
            letters = json.loads((where / "world" / "world.json").read_text("utf-8"))["letters"]
            labels = json.loads(
                (where / f"{architecture}-w{width}" / "labels.json").read_text("utf-8")
            )
        except (OSError, ValueError, KeyError):
            continue
        rates = {}
        for group in labels.get("groups") or []:
            index = group.get("group")
            ok = isinstance(index, int) and 0 <= index < len(letters)
            rates[str(letters[index]) if ok else str(index)] = _number(group.get("rate"))
        found.append({"seed": seed, "architecture": architecture, "width": width, "rates": rates})
    return found


def write_bench_report(
    folder: str | Path, bench: Mapping, group_rates: Sequence[Mapping] = ()
) -> Path:
    """Write the PNGs and ``bench.html`` into ``folder``; return the page's path."""
    folder = Path(folder)
    entries = [e for e in bench.get("table") or [] if isinstance(e, Mapping)]
    runs = [r for r in bench.get("runs") or [] if isinstance(r, Mapping)]
    names = _ranking_names(entries, runs)
    figures = []
    for index, entry in enumerate(entries):
        cell = [r for r in runs if _same_cell(r, entry)]
        name = f"curves-{index:02d}-{_slug(entry.get('architecture'))}-w{_slug(entry.get('width'))}.png"
        png = png_bytes(_curves_figure(entry, cell, names))
        caption = f"{_label(entry)}: precision@k and recall@k per ranking, mean over seeds."
        figures.append((name, png, caption))
    groups_png = png_bytes(_groups_figure(entries, group_rates))
    group_caption = "Absorption rate per group (first letter), mean over seeds; whiskers: std."
    for name, png, _ in [*figures, (GROUPS_PLOT, groups_png, "")]:
        atomic_write(folder / name, lambda tmp, png=png: tmp.write_bytes(png))
    page = render_page(bench, entries, names, figures, (GROUPS_PLOT, groups_png, group_caption))
    return atomic_write_text(folder / REPORT, page)


def render_page(bench, entries, names, figures, groups_figure) -> str:
    settings = bench.get("settings") if isinstance(bench.get("settings"), Mapping) else {}
    seeds = settings.get("seeds") or []
    subtitle = (
        f"seeds {' '.join(map(str, seeds)) or '—'} · {settings.get('groups', '—')} groups · "
        f"{settings.get('prompts', '—')} prompts · {settings.get('steps', '—')} steps · "
        f"k {settings.get('k', '—')}" + (" · quick" if settings.get("quick") else "")
    )
    sae_head = ["SAE", "width", "seeds", *(label for _, label in SAE_COLUMNS)]
    sae_rows = [
        [*_key(e), len(e.get("seeds") or []), *(_cell(_get(e, k)) for k, _ in SAE_COLUMNS)]
        for e in entries
    ]
    ap_rows = [
        [*_key(e), *(_cell(_ranking(e, n).get("average_precision")) for n in names)]
        for e in entries
    ]
    at_truth = [[*_key(e), *(_at_truth(_ranking(e, n)) for n in names)] for e in entries]
    rule_names = [(n, r) for n in ("effect_raw", "decoder") for r in ("never", "rare", "all")]
    rule_rows = [[*_key(e), *(_rule_ap(e, n, r) for n, r in rule_names)] for e in entries]
    described = "".join(
        f"<dt>{_e(n)}</dt><dd>{_e(RANKINGS.get(n, 'a ranking this page does not describe'))}</dd>"
        for n in names
    )
    body = [
        "<header><h1>Absorption bench</h1>",
        f'<p class="sub">{_e(subtitle)}</p></header>',
        "<section><h2>SAEs</h2><p>Mean ± standard deviation over seeds. Absorption rate: the "
        "mean over groups of the share of a group's occurrences on which its parent latent is "
        "silent while an absorbing latent fires; dead: share of latents that had not fired for a while at the end of training.</p>",
        _table(sae_head, sae_rows),
        "</section><section><h2>Rankings</h2><p>Candidates: the pairs of latents that fire "
        "together on at most half the rarer one's tokens (what pairs keeps by default); truth: "
        "the absorption pairs (a group's parent latent and each of its absorbing latents). Each "
        "ranking orders the candidates by:</p>",
        f"<dl>{described}</dl>",
        "<h3>Average precision against the absorption pairs</h3>",
        _table(["SAE", "width", *names], ap_rows),
        "<h3>Precision at k = number of truth pairs (sibling pairs among those k)</h3>",
        _table(["SAE", "width", *names], at_truth),
        "<h3>Average precision by candidate rule</h3><p>never: pairs that never fire together "
        "(the legacy search); rare: at most half the rarer one's tokens together (pairs' "
        "default); all: every pair.</p>",
        _table(["SAE", "width", *(f"{n} {r}" for n, r in rule_names)], rule_rows),
        "</section><section><h2>Precision and recall at k</h2>",
        *(_figure_html(*f) for f in figures),
        "</section><section><h2>Absorption per group</h2>",
        _figure_html(*groups_figure),
        "</section><section><h2>Settings</h2>",
        f"<pre>{_e(json.dumps(settings, indent=2, sort_keys=True, default=str))}</pre></section>",
        f'<script type="application/json" id="bench-data">{script_json(_finite(bench))}</script>',
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(POLICY)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>{_e('absorption bench: ' + subtitle)}</title>\n<style>{CSS}</style>\n"
        "</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def _ranking_names(entries: Sequence[Mapping], runs: Sequence[Mapping]) -> list[str]:
    """The known rankings in their usual order, then any other the runs scored."""
    seen: list[str] = []
    for run in runs:
        for name in run.get("rankings") or {}:
            if name not in seen:
                seen.append(str(name))
    for entry in entries:  # a table without runs still names its rankings
        for name, value in entry.items():
            if isinstance(value, Mapping) and "average_precision" in value and name not in seen:
                seen.append(str(name))
    return [n for n in RANKINGS if n in seen] + [n for n in seen if n not in RANKINGS]


def _same_cell(run: Mapping, entry: Mapping) -> bool:
    return (run.get("architecture"), run.get("width")) == (
        entry.get("architecture"),
        entry.get("width"),
    )


def _get(entry: Mapping, dotted: str) -> Any:
    """``entry["a"]["b"]`` for ``"a.b"``; None where a level is missing."""
    value: Any = entry
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _rule_ap(entry: Mapping, name: str, rule: str) -> str:
    """Mean ± std over seeds of a ranking's AP under a candidate rule (``entry["rules"]``)."""
    values = _get(entry, f"rules.{rule}.{name}")
    if not isinstance(values, (list, tuple)):
        return "—"
    values = [v for v in map(_number, values) if v is not None]
    if not values:
        return "—"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return _cell([statistics.fmean(values), std])


def _ranking(entry: Mapping, name: str) -> Mapping:
    value = entry.get(name)
    return value if isinstance(value, Mapping) else {}


def _key(entry: Mapping) -> list:
    return [str(entry.get("architecture", "?")), str(entry.get("width", "?"))]


def _label(entry: Mapping) -> str:
    return f"{entry.get('architecture', '?')} width {entry.get('width', '?')}"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _finite(obj: Any) -> Any:
    """``obj`` as JSON can hold it: NaN and infinities as ``None``, other objects as text."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj if isinstance(obj, (str, int, float, bool, type(None))) else str(obj)  # a Path


def _cell(value: Any) -> str:
    """``mean ± std`` as in bench.md; a dash for a missing or malformed pair."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return "—"
    mean, std = _number(value[0]), _number(value[1])
    return "—" if mean is None or std is None else f"{mean:.3f} ± {std:.3f}"


def _at_truth(ranking: Mapping) -> str:
    precision, siblings = _cell(ranking.get("precision_at_truth")), ranking.get("siblings_at_truth")
    if precision == "—" or _cell(siblings) == "—":
        return precision
    return f"{precision} ({_number(siblings[0]):.1f})"


def _slug(value: Any) -> str:
    """A file-name part: only ASCII letters, digits, ``_`` and ``-`` (data never picks a path)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", str(value))[:40] or "_"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _plain(text: Any) -> str:
    """Text for a matplotlib label: ``$`` shown as itself, never opening math mode."""
    return str(text).replace("$", r"\$")


def _table(head: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    header = "".join(f'<th scope="col">{_e(h)}</th>' for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    if not rows:
        body = f'<tr><td colspan="{len(head)}">no runs</td></tr>'
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def _figure_html(name: str, png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img alt="{_e(name)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_e(name)}: {_e(caption)}</figcaption></figure>"
    )


def _figure(width: float, height: float):
    return figure(width, height, DPI)


def _mean_curve(cell: Sequence[Mapping], name: str, key: str) -> tuple[list[int], list[float]]:
    """``key`` (precision or recall) of ranking ``name`` at each ``k`` that every seed scored,
    mean over the seeds that have a number there."""
    per_seed = []
    for run in cell:
        scores = (run.get("rankings") or {}).get(name)
        if not isinstance(scores, Mapping):
            continue
        ks, values = scores.get("ks") or [], scores.get(key) or []
        per_seed.append(dict(zip(ks, (_number(v) for v in values), strict=False)))
    if not per_seed:
        return [], []
    common = set.intersection(*(set(d) for d in per_seed))
    ks, means = [], []
    for k in sorted(k for k in common if _number(k) is not None):
        values = [d[k] for d in per_seed if d[k] is not None]
        if values:
            ks.append(k)
            means.append(statistics.fmean(values))
    return ks, means


def _curves_figure(entry: Mapping, cell: Sequence[Mapping], names: Sequence[str]):
    fig = _figure(9.0, 3.4)
    axes = fig.subplots(1, 2)
    drawn = False
    for i, name in enumerate(names):
        for ax, key in zip(axes, ("precision", "recall"), strict=True):
            ks, means = _mean_curve(cell, name, key)
            if ks:
                drawn = True
                ax.plot(ks, means, marker="o", color=COLORS[i % len(COLORS)], label=_plain(name))
    for ax, key in zip(axes, ("precision", "recall"), strict=True):
        ax.set_xlabel("k (first k candidates)")
        ax.set_ylabel(f"{key}@k")
        ax.set_ylim(-0.02, 1.02)
        if not drawn:
            ax.text(0.5, 0.5, "no rankings scored", ha="center", va="center",
                    transform=ax.transAxes)  # fmt: skip
    if drawn:
        axes[1].legend(fontsize="small", loc="best")
    fig.suptitle(_plain(f"{_label(entry)}: mean over {len(cell)} seed(s)"))
    return fig


def _groups_figure(entries: Sequence[Mapping], group_rates: Sequence[Mapping]):
    n = max(1, len(entries))
    fig = _figure(9.0, 0.6 + 2.3 * n)
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    if not entries:
        axes[0].text(0.5, 0.5, "no runs", ha="center", va="center", transform=axes[0].transAxes)
    for ax, entry in zip(axes, entries, strict=False):
        per_letter: dict[str, list[float]] = {}
        runs = [r for r in group_rates if _same_cell(r, entry)]
        for run in runs:
            for letter, rate in (run.get("rates") or {}).items():
                per_letter.setdefault(str(letter), [])
                if _number(rate) is not None:
                    per_letter[str(letter)].append(float(rate))
        letters = sorted(per_letter)
        means = [statistics.fmean(per_letter[k]) if per_letter[k] else math.nan for k in letters]
        stds = [statistics.stdev(per_letter[k]) if len(per_letter[k]) > 1 else 0.0 for k in letters]
        if letters:
            spread = any(len(per_letter[k]) > 1 for k in letters)  # one seed: no whiskers
            bars = [_plain(k) for k in letters]
            ax.bar(bars, means, yerr=stds if spread else None, color="#2459a6", capsize=2)
        else:
            ax.text(0.5, 0.5, "no per-group labels", ha="center", va="center",
                    transform=ax.transAxes)  # fmt: skip
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("absorption rate")
        ax.set_title(_plain(f"{_label(entry)} ({len(runs)} seed(s))"), fontsize="medium")
    return fig
