"""The pairs report's side-by-side view (issue 21) on real (tiny) runs: cooccurrences with
evidence -> ablate -> pairs. The view's data equals independent computations (centre tokens
counted by a plain loop over ``Evidence.latents``; reader effects from the ablations file read
whole); in Chromium a row opens both latents side by side, hostile text stays text and nothing is
fetched; without evidence the report says so; ``--evidence-from`` of another SAE exits 2."""

from __future__ import annotations

import contextlib
import io
import json
import re

import pytest

from sae_hacking.absorption.pairs.run import CSV_COLUMNS
from sae_hacking.cli import main
from sae_hacking.errors import EXIT_USAGE
from tests.browser import guard
from tests.reports.pairs_fixture import HOSTILE, QUOTES

# The tests marked slow run the pipeline first (about 20 s); the others check the parts alone.

ABLATOR, READER = "blocks.1.hook_mlp_out", "blocks.2.hook_resid_post"
K = 10  # reader latents per list (absorption.pairs.evidence.TOP_READERS)
PAIR_KEYS = {"ablator1", "ablator2", "cosine_similarity", "cooccurrence_count", "decoder_cosine",
             "expected_cooccurrence", "p_no_cooccurrence"}  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_path, random_sae_path, prompts_path):
    root = tmp_path_factory.mktemp("pair_view")
    sae = str(random_sae_path(ABLATOR, 48, seed=5, kind="topk", k=2))
    other = str(random_sae_path(ABLATOR, 48, seed=9, kind="topk", k=2))
    model = ["--model", str(tiny_model_path("gemma2", 3)), "--device", "cpu", "--quiet"]
    text = [
        "--dataset-id",
        str(prompts_path(30, seed=4)),
        "--max-tokens",
        "16",
        "--n-prompts",
        "30",
    ]
    common = [*model, *text, "--ablator-sae-release", sae]
    assert main(["cooccurrences", *common, "--output-dir", str(root / "cooc")]) == 0
    bare = ["--top-examples", "0", "--output-dir", str(root / "bare")]
    assert main(["cooccurrences", *common, *bare]) == 0
    reader = ["--reader-sae-release", str(random_sae_path(READER, 40, seed=6))]
    ablate = [
        *common,
        *reader,
        "--abridge-ablations-to",
        "12",
        "--output-dir",
        str(root / "ablate"),
    ]
    assert main(["ablate", *ablate]) == 0
    for name, release in (("same", sae), ("other", other)):
        argv = [*model, *text, "--sae-release", release, "--output-dir", str(root / name)]
        assert main(["latents", *argv]) == 0
    notes = root / "explanations.json"
    notes.write_text(json.dumps([{"index": i, "description": HOSTILE} for i in range(48)]))
    return root


def pairs(runs, out, *extra, cooc="cooc"):
    argv = ["pairs", "--input-path", str(runs / "ablate"), "--cooccurrence-path", str(runs / cooc),
            "--output-dir", str(out), "--device", "cpu", "--cosine-sim-threshold", "-1",
            "--explanations-file", str(runs / "explanations.json"), *extra]  # fmt: skip
    return main(argv)


def page_data(out) -> dict:
    page = (out / "report.html").read_text(encoding="utf-8")
    block = re.search(r'<script type="application/json" id="pairs-data">(.*?)</script>', page, re.S)
    return json.loads(block.group(1))


@pytest.fixture(scope="module")
def viewed(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("viewed") / "pairs"
    assert pairs(runs, out, "--evidence-pairs", "4") == 0
    return out


def reference_latent(runs, index: int) -> dict:
    from sae_hacking.absorption.evidence.read import Evidence, token_decoder
    from sae_hacking.train.run import load_tokenizer

    with Evidence(runs / "cooc") as evidence:
        decode = token_decoder(load_tokenizer(evidence.model))
        return evidence.latents(index, index + 1, decode)[0]


def centre_counts(latent: dict) -> tuple[dict[str, int], int]:
    """Centre tokens of the distinct (prompt, position) examples, top and sampled, by a loop."""
    seen = {}
    for ex in latent["top"]:
        seen.setdefault((ex["prompt"], ex["position"]), ex["tokens"][ex["center"]])
    for band in latent["bands"]:
        for ex in band["examples"]:
            seen.setdefault((ex["prompt"], ex["position"]), ex["tokens"][ex["center"]])
    counts: dict[str, int] = {}
    for token in seen.values():
        counts[token] = counts.get(token, 0) + 1
    return counts, len(seen)


def mean_effects(runs) -> dict[int, list[float]]:
    from sae_hacking.runs.results import ResultsFile

    with ResultsFile(runs / "ablate" / "ablations.safetensors.zst") as f:
        sums = f.read("effects_DE").double().tolist()
        latents = f.read("latents_D").tolist()
        counts = f.read("ablation_counts_D").tolist()
    return {
        i: [v / max(n, 1) for v in row] for i, row, n in zip(latents, sums, counts, strict=True)
    }


def approx(values, rel=1e-3):
    return pytest.approx(values, rel=rel, abs=1e-6)


@pytest.mark.slow
def test_the_view_data_equals_independent_computations(runs, viewed, capsys):
    result = json.loads((viewed / "pairs.json").read_text())
    data = page_data(viewed)
    view = data["evidence"]
    # Bounded: the first 4 pairs, each latent stored once; the report says how many.
    assert view["n_pairs"] == len(view["pairs"]) == min(4, len(result["pairs"])) == 4
    first = result["pairs"][:4]
    ids = {p[k]["id"] for p in first for k in ("ablator1", "ablator2")}
    assert set(view["latents"]) == {str(i) for i in ids}
    page = (viewed / "report.html").read_text(encoding="utf-8")
    assert f"the first 4 of {len(result['pairs']):,} pairs" in page
    effects = mean_effects(runs)
    trimmed = 0
    for i in ids:
        got, want = view["latents"][str(i)], reference_latent(runs, i)
        assert (got["index"], got["count"]) == (i, want["count"])
        assert got["max"] == approx(want["max"])
        assert len(got["top"]) == min(10, len(want["top"]))  # the run keeps up to 20
        trimmed += len(want["top"]) > 10
        for shown, ex in zip(got["top"] + [e for b in got["bands"] for e in b["examples"]],
                             want["top"][:10] + [e for b in want["bands"] for e in b["examples"]],
                             strict=True):  # fmt: skip
            assert (shown["tokens"], shown["center"]) == (ex["tokens"], ex["center"])
            assert shown["acts"] == approx(ex["acts"]) and shown["value"] == approx(ex["value"])
        assert got["logit_lens"]["up"][0][0] == want["logit_lens"]["up"][0][0]
        # Reader effects: the K most raised and most lowered readers of the mean effect row.
        row = effects[i]
        up = sorted((r for r in range(len(row)) if row[r] > 0), key=lambda r: (-row[r], r))[:K]
        down = sorted((r for r in range(len(row)) if row[r] < 0), key=lambda r: (row[r], r))[:K]
        assert [r for r, _ in got["up"]] == up and [r for r, _ in got["down"]] == down
        assert [v for _, v in got["up"]] == approx([row[r] for r in up])
        assert [v for _, v in got["down"]] == approx([row[r] for r in down])
    assert trimmed  # some latent has more top examples than the view shows
    for p, pv in zip(first, view["pairs"], strict=True):
        a, b = p["ablator1"]["id"], p["ablator2"]["id"]
        (ca, na), (cb, nb) = (centre_counts(reference_latent(runs, i)) for i in (a, b))
        assert pv["totals"] == [na, nb]
        assert {t: (x, y) for t, x, y in pv["tokens"]} == {
            t: (ca.get(t, 0), cb.get(t, 0)) for t in set(ca) | set(cb)
        }
        # Only latent 1's tokens, then only latent 2's, then shared ones, most frequent first.
        groups = [(0 if not y else 1 if not x else 2, -(x + y)) for _, x, y in pv["tokens"]]
        assert groups == sorted(groups)
        # Shared moves: the same reader, the same sign, in both lists; the rest each one's own.
        la, lb = view["latents"][str(a)], view["latents"][str(b)]
        want = {"shared": set(), "only1": set(), "only2": set()}
        for side in ("up", "down"):
            ra, rb = {r for r, _ in la[side]}, {r for r, _ in lb[side]}
            want["shared"] |= ra & rb
            want["only1"] |= ra - rb
            want["only2"] |= rb - ra
        for name, entries in pv["effects"].items():
            assert {e[0] for e in entries} == want[name], name
            for reader, e1, e2 in entries:
                assert [e1, e2] == approx([effects[a][reader], effects[b][reader]])
    assert any(pv["effects"]["shared"] or pv["effects"]["only1"] for pv in view["pairs"])
    assert any(not x or not y for pv in view["pairs"] for _, x, y in pv["tokens"])
    # pairs.json and pairs.csv keep their shape: no view data in them.
    assert set(result) == {"meta", "pairs"} and "evidence" not in result["meta"]
    assert all(set(p) == PAIR_KEYS for p in result["pairs"])
    header = (viewed / "pairs.csv").read_text().splitlines()[0]
    assert header == ",".join(CSV_COLUMNS)


@pytest.fixture(scope="module")
def bare(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("bare") / "pairs"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert pairs(runs, out, cooc="bare") == 0
    (out / "stdout.txt").write_text(printed.getvalue())
    return out


@pytest.mark.slow
def test_a_run_without_evidence_says_so(runs, bare, tmp_path):
    out = bare
    printed = (out / "stdout.txt").read_text()
    assert "No side-by-side view" in printed and "--evidence-from" in printed
    data = page_data(out)
    assert data["pairs"] and data["evidence"]["n_pairs"] == 0 and data["evidence"]["pairs"] == []
    page = (out / "report.html").read_text(encoding="utf-8")
    note = re.search(r'<p id="evidence-note"[^>]*>(.*?)</p>', page).group(1)
    assert "holds no latent evidence" in note and "sae-hacking latents" in note
    assert "\n" not in note
    # The same SAE's latents run gives the view back.
    out = tmp_path / "from"
    assert pairs(runs, out, "--evidence-from", str(runs / "same"), cooc="bare") == 0
    view = page_data(out)["evidence"]
    assert view["n_pairs"] == min(100, len(data["pairs"])) > 0


@pytest.mark.parametrize(
    "source, words",
    [("other", "content hash differs"), ("bare", "names no usable latent evidence")],
)
@pytest.mark.slow
def test_evidence_from_another_sae_or_none_is_one_line(runs, tmp_path, capsys, source, words):
    assert pairs(runs, tmp_path / "bad", "--evidence-from", str(runs / source)) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --evidence-from") and words in err[0], err
    assert not (tmp_path / "bad").exists()


def _alpha(color: str) -> float:
    parts = re.findall(r"[\d.]+", color)
    return float(parts[3]) if len(parts) == 4 else 1.0  # rgb(...) is alpha 1


@pytest.fixture
def browser_page(chromium):
    page = chromium.new_page(viewport={"width": 1500, "height": 1000})
    try:
        yield page
    finally:
        page.close()


@pytest.mark.slow
def test_a_row_opens_both_latents_side_by_side(viewed, browser_page):
    data = page_data(viewed)
    view = data["evidence"]
    page = browser_page
    url = (viewed / "report.html").resolve().as_uri()
    refused, errors = guard(page, lambda u: u == url)
    page.goto(url)
    rows = page.locator("#pairs-table tbody tr")
    assert page.locator("button.pv-open").count() == 4 == page.locator("tr.has-view").count()
    panel = page.locator("#pair-view")
    assert panel.is_hidden()

    # Keyboard: the # button of the first pair opens it with Enter, Escape closes it.
    button = rows.nth(0).locator("button.pv-open")
    button.focus()
    page.keyboard.press("Enter")
    assert panel.is_visible()
    pv = view["pairs"][0]
    ids = data["pairs"][0][:2]
    columns = panel.locator(".pv-latent")
    assert columns.count() == 2
    for k, latent_id in enumerate(ids):
        column = columns.nth(k)
        assert column.get_attribute("data-latent") == str(latent_id)
        latent = view["latents"][str(latent_id)]
        assert column.locator(".pv-explanation").text_content() == HOSTILE  # as text
        lines = column.locator("ol.pv-examples").first.locator(".ctx")
        assert lines.count() == len(latent["top"]) > 0
        for j, ex in enumerate(latent["top"][:3]):
            tokens = lines.nth(j).locator(".tok")
            assert tokens.count() == len(ex["tokens"])  # one span per token
            assert tokens.all_text_contents() == ex["tokens"]
            centre = lines.nth(j).locator(".tok.center")
            assert centre.count() == 1
            assert centre.text_content() == ex["tokens"][ex["center"]]
            color = centre.evaluate("s => s.style.backgroundColor")
            want = min(1.0, ex["acts"][ex["center"]] / latent["max"])
            assert _alpha(color) == pytest.approx(want, abs=6e-3)  # Chromium: 2 decimals
        bands = column.locator("details.pv-bands")
        assert bands.get_attribute("open") is None  # collapsed
        assert column.locator(".pv-lens").count() == 1
    table = panel.locator(".pv-token-table tbody tr")
    assert table.count() == len(pv["tokens"])
    assert table.nth(0).locator("td").nth(0).text_content() == pv["tokens"][0][0]
    for name in ("shared", "only1", "only2"):
        readers = panel.locator(f'.pv-moves[data-list="{name}"] li[data-reader]')
        assert [int(r) for r in readers.evaluate_all("ls => ls.map(l => l.dataset.reader)")] == [
            e[0] for e in pv["effects"][name]
        ]
    inside = "document.getElementById('pair-view').contains(document.activeElement)"
    for key in ("Shift+Tab", "Tab", "Tab"):  # focus stays in the dialog
        page.keyboard.press(key)
        assert page.evaluate(inside), key
    page.keyboard.press("Escape")
    assert panel.is_hidden()
    assert page.evaluate("document.activeElement.classList.contains('pv-open')")

    # A click on a plain cell of another row opens that pair; the close button closes it.
    rows.nth(1).locator("td").nth(4).click()
    assert panel.is_visible()
    assert panel.locator(".pv-latent").nth(0).get_attribute("data-latent") == str(
        data["pairs"][1][0]
    )
    panel.locator("button.pv-close").click()
    assert panel.is_hidden()
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert errors == [] and refused == []


@pytest.mark.slow
def test_without_evidence_the_table_works_and_says_so(bare, browser_page):
    page = browser_page
    url = (bare / "report.html").resolve().as_uri()
    refused, errors = guard(page, lambda u: u == url)
    page.goto(url)
    assert page.locator("#pairs-table tbody tr").count() > 0
    assert page.locator("button.pv-open").count() == 0
    assert "holds no latent evidence" in page.locator("#evidence-note").text_content()
    page.locator("#pairs-table tbody tr").nth(0).locator("td").nth(4).click()
    assert page.locator("#pair-view").is_hidden()
    assert errors == [] and refused == []


@pytest.mark.slow
def test_hostile_tokens_render_as_text(runs, tmp_path, browser_page):
    from sae_hacking.absorption.configs import PairsConfig
    from sae_hacking.absorption.pairs.evidence import pair_views
    from sae_hacking.absorption.pairs.run import find
    from sae_hacking.config import from_flat
    from sae_hacking.reports.pairs import write_report

    config = from_flat(
        PairsConfig,
        {
            "input_path": str(runs / "ablate"),
            "cooccurrence_path": str(runs / "cooc"),
            "cosine_sim_threshold": -1.0,
            "explanations_file": str(runs / "explanations.json"),
            "evidence_pairs": 1,
            "device": "cpu",
        },
    )
    result = find(config)
    views = pair_views(config, result)
    a = str(result["pairs"][0]["ablator1"]["id"])
    example = views["latents"][a]["top"][0]
    example["tokens"][example["center"]] = HOSTILE
    views["latents"][a]["logit_lens"]["up"][0][0] = QUOTES
    views["pairs"][0]["tokens"][0][0] = "{{script}}</script><b>x</b>"
    path = write_report(tmp_path, result, views)
    page = browser_page
    url = path.resolve().as_uri()
    refused, errors = guard(page, lambda u: u == url)
    page.goto(url)
    page.locator("button.pv-open").first.click()
    panel = page.locator("#pair-view")
    centre = panel.locator(".pv-latent").nth(0).locator(".ctx").first.locator(".tok.center")
    assert centre.text_content() == HOSTILE
    assert panel.locator(".pv-lens-up .tok").first.text_content() == QUOTES
    cell = panel.locator(".pv-token-table tbody tr").nth(0).locator("td").nth(0)
    assert cell.text_content() == "{{script}}</script><b>x</b>"
    assert panel.locator("b").count() == 0 and page.locator("script").count() == 2
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert errors == [] and refused == []


def test_the_same_sae_check():
    from sae_hacking.absorption.pairs.evidence import check_same_sae
    from sae_hacking.errors import FieldError

    ablated = {"ablator_fingerprint": "f1", "ablator_sae_release": "r", "model": "m"}
    check_same_sae({"sae_fingerprint": "f1", "sae_release": "elsewhere"}, ablated, "RUN", "m")
    check_same_sae({"sae_fingerprint": "f2"}, None, "RUN")  # unreadable ablations: find says why
    with pytest.raises(FieldError, match="content hash differs"):
        check_same_sae({"sae_fingerprint": "f2"}, ablated, "RUN", "m")
    with pytest.raises(FieldError, match="run on model other"):
        check_same_sae({"sae_fingerprint": "f1"}, ablated, "RUN", "other")
    # Without both hashes: release, id and width.
    names = {"ablator_sae_release": "r", "ablator_sae_id": "", "ablator_d_sae": 48}
    check_same_sae({"sae_release": "r", "sae_id": None, "d_sae": 48}, names, "RUN")
    for other in ({"sae_release": "s", "d_sae": 48}, {"sae_release": "r", "d_sae": 64},
                  {"sae_release": "r", "sae_id": "x"}):  # fmt: skip
        with pytest.raises(FieldError, match="is not the ablated SAE|content hash"):
            check_same_sae({"sae_id": None, **other}, names, "RUN")


def test_token_table_and_moves_by_hand():
    from collections import Counter

    import torch

    from sae_hacking.absorption.pairs.evidence import compare_moves, token_table, top_moves

    rows = token_table(Counter({"a": 1, "b": 3, "c": 2}), Counter({"b": 1, "d": 5, "e": 1}))
    assert rows == [["c", 2, 0], ["a", 1, 0], ["d", 0, 5], ["e", 0, 1], ["b", 3, 1]]
    row1 = torch.tensor([0.5, -0.2, 0.0, 0.5, -0.9, 0.1])
    row2 = torch.tensor([0.4, 0.3, -0.1, -0.5, -0.8, 0.0])
    up, down = top_moves(row1, 2)
    assert up == [[0, 0.5], [3, 0.5]]  # a tie goes to the lower reader index
    assert [r for r, _ in down] == [4, 1]
    first = {"up": up, "down": down}
    second = dict(zip(("up", "down"), top_moves(row2, 2), strict=True))
    moves = compare_moves(first, second, row1, row2)
    # shared: 0 (up in both), 4 (down in both); only1: 3 (up for 1, down for 2), 1 (down for
    # 1, up for 2); only2: 1 (up), 3 (down).
    assert [m[0] for m in moves["shared"]] == [4, 0]
    assert [m[0] for m in moves["only1"]] == [3, 1]
    assert [m[0] for m in moves["only2"]] == [3, 1]
    assert moves["only1"][0][1:] == pytest.approx([0.5, -0.5])


def test_view_data_is_compact_and_finite():
    from sae_hacking.reports.pair_view import note_html, view_data

    example = {"value": 1.23456789, "prompt": 3, "position": 4, "tokens": ["<b>", "x"],
               "acts": [0.0, 1.23456789], "center": 1}  # fmt: skip
    views = {
        "note": "a <b>note</b>",
        "n_pairs": 1,
        "top_readers": 10,
        "latents": {
            5: {
                "index": 5,
                "count": 2,
                "density": 0.5,
                "max": 1.23456789,
                "top": [example],
                "bands": [],
                "logit_lens": None,
                "up": [[1, float("nan")]],
                "down": [],
            }
        },  # fmt: skip
        "pairs": [{"tokens": [["x", 1, 0]], "totals": [1, 0], "effects": {"shared": []}}],
    }
    data = view_data(views)
    shown = data["latents"]["5"]["top"][0]
    assert shown["acts"] == [0, 1.235] and shown["value"] == 1.235 and shown["tokens"][0] == "<b>"
    assert data["latents"]["5"]["up"] == [[1, None]]
    assert data["pairs"][0]["effects"] == {"shared": [], "only1": [], "only2": []}
    assert "&lt;b&gt;note" in note_html(views) and 'data-has-view="1"' in note_html(views)
    assert view_data(None)["n_pairs"] == 0 and 'data-has-view="0"' in note_html(None)
