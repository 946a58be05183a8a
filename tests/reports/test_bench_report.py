"""bench.html of ``absorption-bench``: written from a bench.json dict (shape of a real quick run,
two seeds, one architecture named as markup) and the runs' per-group rates."""

import base64
import html
import json
import re

import pytest

from sae_hacking.reports import bench as report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HOSTILE = "<script>window.pwned=1</script>"
HOSTILE_RANKING = "<img src=x onerror=alert(1)>$x^2$"


def _ranking(ap, ks, precision, recall, n_truth):
    return {
        "average_precision": ap,
        "ks": ks,
        "precision": precision,
        "recall": recall,
        "siblings": [0] * len(ks),
        "n_candidates": 300,
        "n_latents": 30,
        "n_truth": n_truth,
        "n_truth_candidates": 3,
    }


def _run(seed, architecture, rate, rankings):
    return {
        "seed": seed,
        "architecture": architecture,
        "width": 30,
        "absorption_rate": rate,
        "absorption_rate_weighted": rate,
        "n_absorbing": 10,
        "n_absorption_pairs": 10,
        "n_sibling_pairs": 7,
        "probe_accuracy": 1.0,
        "fvu": 0.3,
        "l0": 2.0,
        "dead_frac": 0.0,
        "rankings": rankings,
    }


def _entry(architecture, rate, ap):
    return {
        "architecture": architecture,
        "width": 30,
        "seeds": [0, 1],
        "absorption_rate": rate,
        "n_absorbing": [10.0, 0.0],
        "n_absorption_pairs": [10.0, 0.0],
        "fvu": None,  # e.g. every seed's FVU was NaN
        "l0": [2.0, 0.0],
        "dead_frac": [0.0, 0.0],
        "probe_accuracy": [1.0, 0.0],
        "truth_kept": {"never": [0.2, 0.1], "rare": [0.9, 0.05]},
        "returned": {"pairs": [1500.0, 10.0], "precision": [0.0125, 0.0025]},
        "rules": {"never": {"decoder": [0.05, 0.15]}, "rare": {"decoder": [0.5, 0.7]}},
        "decoder": {
            "average_precision": ap,
            "precision_at_truth": [0.125, 0.025],
            "siblings_at_truth": [1.5, 0.5],
            "per_seed_average_precision": [ap[0], ap[0]],
        },
        HOSTILE_RANKING: {
            "average_precision": [0.0123, 0.0],
            "precision_at_truth": [0.0, 0.0],
            "siblings_at_truth": [0.0, 0.0],
            "per_seed_average_precision": [0.0123, 0.0123],
        },
    }


def _bench():
    # Seed 0 has 10 truth pairs, seed 1 has 8: k=10 and k=8 are each scored by one seed only.
    def rankings(p5, ks_extra):
        return {
            "decoder": _ranking(0.2, [5, 10, 20], [p5, 0.3, 0.1], [0.25, 0.5, 0.75], 10),
            HOSTILE_RANKING: _ranking(0.01, [5, ks_extra, 20], [0.0, 0.0, 0.0], [0, 0, 0], 8),
        }

    return {
        "settings": {
            "seeds": [0, 1],
            "groups": 4,
            "prompts": 300,
            "steps": 300,
            "k": 2,
            "output_dir": f"/runs/{HOSTILE}",
            "quick": True,
        },  # fmt: skip
        "table": [
            _entry("topk", [0.25, 0.05], [0.4567, 0.0123]),
            _entry(HOSTILE, [0.75, 0.125], [0.1, 0.0]),
        ],
        "runs": [
            _run(0, "topk", 0.2, rankings(0.4, 8)),
            _run(1, "topk", 0.3, rankings(0.6, 8)),
            _run(0, HOSTILE, 0.7, rankings(0.2, 8)),
            _run(1, HOSTILE, 0.8, rankings(0.2, 8)),
        ],
    }


def _groups():
    return [
        {"seed": s, "architecture": a, "width": 30, "rates": {"b": 0.1 * s, "d": None, "$": 0.5}}
        for s in (0, 1)
        for a in ("topk", HOSTILE)
    ]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    path = report.write_bench_report(folder, _bench(), _groups())
    return folder, path, path.read_text(encoding="utf-8")


def _data_block(page: str) -> dict:
    match = re.search(r'<script type="application/json" id="bench-data">(.*?)</script>', page, re.S)
    return json.loads(match.group(1))


def test_page_tables_and_pngs(written):
    folder, path, page = written
    assert path == folder / "bench.html"
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "absorption_by_group.png",
        "bench.html",
        "curves-00-topk-w30.png",
        "curves-01-_script_window_pwned_1_script_-w30.png",
    ]  # data picks no path: the hostile architecture is slugged; no temporary file is left
    images = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]*)">', page)
    assert [alt for alt, _ in images] == [n for n in names if n.endswith(".png")][1:] + [
        "absorption_by_group.png"
    ]
    for alt, data in images:
        png = (folder / html.unescape(alt)).read_bytes()
        assert png.startswith(PNG_MAGIC)
        assert base64.b64decode(data) == png  # the page inlines the files
    policy = html.unescape(
        re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page)[1]
    )
    assert "default-src 'none'" in policy and "script-src 'none'" in policy
    assert "img-src data:" in policy
    # The tables of bench.md: mean ± std with three decimals, a dash where there is no number.
    assert (
        "<td>topk</td><td>30</td><td>2</td><td>0.250 ± 0.050</td><td>10.000 ± 0.000</td>"
        "<td>0.200 ± 0.100</td><td>0.900 ± 0.050</td><td>1500.000 ± 10.000</td>"
        "<td>0.013 ± 0.003</td><td>—</td>" in page
    )
    # AP by candidate rule: mean ± std over the seeds' values; a rule not scored is a dash.
    assert "<td>0.100 ± 0.071</td><td>0.600 ± 0.141</td><td>—</td></tr>" in page
    assert "<td>0.457 ± 0.012</td>" in page
    assert "<td>0.125 ± 0.025 (1.5)</td>" in page  # precision at n_truth (siblings)
    assert "the cosine of the two latents&#x27; decoder rows" in page
    assert "seeds 0 1 · 4 groups · 300 prompts · 300 steps · k 2 · quick" in page


def test_hostile_text_is_escaped(written):
    _, _, page = written
    assert HOSTILE not in page and "<img src=x" not in page
    assert page.count("<script") == 1  # the JSON data block, never run (script-src 'none')
    assert f"<td>{html.escape(HOSTILE)}</td><td>30</td>" in page
    assert f'<th scope="col">{html.escape(HOSTILE_RANKING)}</th>' in page
    assert html.escape(f"/runs/{HOSTILE}") in page
    data = _data_block(page)  # gives the dict back exactly
    assert data["table"][1]["architecture"] == HOSTILE
    assert data["settings"]["output_dir"] == f"/runs/{HOSTILE}"


def test_curves_average_seeds_at_the_ks_every_seed_scored():
    runs = _bench()["runs"][:2]
    assert report._mean_curve(runs, "decoder", "precision") == ([5, 10, 20], [0.5, 0.3, 0.1])
    runs[1]["rankings"]["decoder"]["ks"] = [5, 8, 20]
    runs[1]["rankings"]["decoder"]["precision"] = [None, None, 0.3]  # None: mean of the others
    assert report._mean_curve(runs, "decoder", "precision") == ([5, 20], [0.4, 0.2])
    assert report._mean_curve(runs, "missing", "recall") == ([], [])


def test_read_group_rates(tmp_path):
    runs = [{"seed": 0, "architecture": "topk", "width": 30},
            {"seed": 1, "architecture": "topk", "width": 30}]  # fmt: skip
    (tmp_path / "seed0" / "world").mkdir(parents=True)
    (tmp_path / "seed0" / "world" / "world.json").write_text(json.dumps({"letters": ["s", "t"]}))
    (tmp_path / "seed0" / "topk-w30").mkdir()
    groups = [{"group": 0, "rate": 0.25, "occurrences": 4}, {"group": 1, "rate": None}]
    (tmp_path / "seed0" / "topk-w30" / "labels.json").write_text(json.dumps({"groups": groups}))
    # Seed 1 has no files: left out, not a crash.
    assert report.read_group_rates(tmp_path, runs) == [
        {"seed": 0, "architecture": "topk", "width": 30, "rates": {"s": 0.25, "t": None}}
    ]


def test_empty_bench_still_writes_a_page(tmp_path):
    page = report.write_bench_report(tmp_path, {"settings": {}, "table": [], "runs": []})
    assert "no runs" in page.read_text(encoding="utf-8")
    assert (tmp_path / "absorption_by_group.png").read_bytes().startswith(PNG_MAGIC)


@pytest.mark.slow
def test_bench_page_in_chromium(chromium, written):
    from tests.browser import guard

    _, path, _ = written
    page = chromium.new_page()
    try:
        url = path.resolve().as_uri()
        refused, errors = guard(page, lambda u: u == url)
        page.goto(url)
        widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)")
        assert len(widths) == 3 and all(w > 0 for w in widths)
        assert errors == [] and refused == []
        assert page.evaluate("typeof window.pwned") == "undefined"
        # The hostile architecture is shown as the literal text it is, in each of the 4 tables.
        cells = page.locator("td").all_text_contents()
        assert cells.count(HOSTILE) == 4
    finally:
        page.close()
