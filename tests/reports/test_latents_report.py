"""``sae-hacking latents-report``: the pages carry what the evidence reader says (and the
co-occurring latents what the counts say), they render it in Chromium from file:// with no
request and hostile text shown as text, and bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sae_hacking.absorption.cooccurrence.accumulator import Cooccurrences
from sae_hacking.absorption.evidence.read import Evidence, token_decoder
from sae_hacking.absorption.evidence.report import write_report
from sae_hacking.cli import main
from sae_hacking.reports.inline import sha256_source
from tests.browser import guard

HOOK = "blocks.0.hook_mlp_out"
D_SAE = 24
PER_PAGE = 10  # pages 0, 1, 2 (the last one of 4 latents)
HOSTILE = '<img src=x onerror="window.pwned=1"></script><script>window.pwned=1</script>'
HOSTILE_TOKEN = "<b>bold</b></script>"


def evidence_flags(model, sae, data, out, *extra):
    # This project's evidence defaults (20 top, 10 x 5 sampled, ±16 tokens): the size figures.
    return [
        "cooccurrences", "--model", str(model), "--ablator-sae-release", str(sae),
        "--dataset-id", str(data), "--max-tokens", "40", "--n-prompts", "40",
        "--output-dir", str(out), "--quiet", "--device", "cpu", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tiny_model_path, random_sae_path, prompts_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("latents-report")
    model, sae = tiny_model_path("gemma2"), random_sae_path(HOOK, D_SAE, seed=5)
    data = prompts_path(40, seed=2, min_words=8, max_words=40)
    assert main(evidence_flags(model, sae, data, root / "co")) == 0
    assert main(evidence_flags(model, sae, data, root / "bare", "--top-examples", "0")) == 0
    latents = evidence_flags(model, sae, data, root / "lat", "--n-prompts", "6")
    latents[: latents.index("--dataset-id")] = ["latents", "--model", str(model)]
    assert main([*latents, "--sae-release", str(sae)]) == 0
    explanations = root / "explanations.json"
    rows = [{"index": i, "description": f"topic {i} of the text"} for i in range(0, D_SAE, 2)]
    rows[1]["description"] = HOSTILE  # latent 2
    explanations.write_text(json.dumps(rows), encoding="utf-8")
    return {
        "co": root / "co",
        "bare": root / "bare",
        "lat": root / "lat",
        "explanations": explanations,
        "root": root,
    }


def json_block(path: Path, element: str) -> dict:
    text = path.read_text(encoding="utf-8")
    match = re.search(f'<script type="application/json" id="{element}">(.*?)</script>', text, re.S)
    return json.loads(match.group(1))


def decoder(run: Path):
    from sae_hacking.train.run import load_tokenizer

    with Evidence(run) as evidence:
        return token_decoder(load_tokenizer(evidence.model))


def cut(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "\u2026"


def strip_extras(latent: dict) -> dict:
    return {
        k: v for k, v in latent.items() if k not in ("explanation", "url", "neighbours", "moves")
    }


def acts_rounded(latent: dict) -> dict:
    """The reader's latent with the context activations as the page rounds them."""
    out = json.loads(json.dumps(latent))
    for example in out["top"] + [ex for band in out["bands"] for ex in band["examples"]]:
        example["acts"] = [float(f"{a:.4g}") for a in example["acts"]]
    return out


def reference_neighbours(co: Cooccurrences, i: int) -> list[list]:
    row = co.row(i).tolist()
    counts = co.activations().tolist()
    partners = sorted((j for j in range(co.e) if j != i and row[j] > 0), key=lambda j: (-row[j], j))
    return [[j, row[j], counts[i] * counts[j] / co.tokens] for j in partners[:10]]


@pytest.mark.slow
def test_the_pages_carry_what_the_reader_says(runs, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["latents-report", str(runs["co"]), "--output-dir", str(out)]
    argv += ["--latents-per-page", str(PER_PAGE), "--explanations-file", str(runs["explanations"])]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == str(out / "index.html")
    pages = sorted(p.name for p in out.iterdir())
    assert pages == ["index.html", "page-00000.html", "page-00001.html", "page-00002.html"]

    decode = decoder(runs["co"])
    with Evidence(runs["co"]) as evidence, Cooccurrences(runs["co"]) as co:
        summary = evidence.summary()
        index = json_block(out / "index.html", "latents-data")
        assert index["meta"]["tokens"] == evidence.tokens and index["meta"]["e"] == D_SAE
        assert [r[:3] for r in index["rows"]] == [
            [s["index"], s["count"], s["max"]] for s in summary
        ]
        for page in range(3):
            data = json_block(out / f"page-{page:05d}.html", "page-data")
            want = evidence.latents(page * PER_PAGE, (page + 1) * PER_PAGE, decode)
            assert [strip_extras(x) for x in data["latents"]] == [acts_rounded(x) for x in want]
            assert data["meta"]["prev"] == (f"page-{page - 1:05d}.html" if page else None)
            assert data["meta"]["next"] == (f"page-{page + 1:05d}.html" if page < 2 else None)
            for latent, row in zip(want, index["rows"][page * PER_PAGE :], strict=False):
                tops = [cut(ex["tokens"][ex["center"]], 24) for ex in latent["top"][:3]]
                assert row[3] == tops
            for latent in data["latents"]:
                i = latent["index"]
                explanation = None if i % 2 else (f"topic {i} of the text" if i != 2 else HOSTILE)
                assert latent["explanation"] == explanation and latent["url"] is None
                assert latent["moves"] is None  # no --ablations
                got = [n[:3] for n in latent["neighbours"]]
                assert got == reference_neighbours(co, i)
                assert [n[3] for n in latent["neighbours"]] == [
                    None if j % 2 else (HOSTILE if j == 2 else f"topic {j} of the text")
                    for j, *_ in got
                ]  # fmt: skip
        assert sum(latent["count"] > 0 for latent in summary) > D_SAE // 2  # a real test
    # One inline style and one inline script, each allowed by the policy's hash, nothing else.
    text = (out / "page-00001.html").read_text(encoding="utf-8")
    styles = re.findall(r"<style>(.*?)</style>", text, re.S)
    scripts = re.findall(r"<script>(.*?)</script>", text, re.S)
    assert len(styles) == len(scripts) == 1
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', text).group(1)
    assert f"style-src '{sha256_source(styles[0])}'" in policy
    assert f"script-src '{sha256_source(scripts[0])}'" in policy
    assert "default-src 'none'" in policy and "<img" not in text and "<b>" not in text


def test_the_index_stays_small(runs, tmp_path):
    """The index keeps a few numbers and short strings per latent (the size figures of
    reports/latents.py): well under 200 bytes each, explanations included."""
    index = write_report(runs["co"], tmp_path / "r", 10, None, str(runs["explanations"]))
    data = index.read_text(encoding="utf-8")
    block = re.search(r'id="latents-data">(.*?)</script>', data, re.S).group(1)
    assert len(block.encode()) / D_SAE < 200


# -- in Chromium -----------------------------------------------------------------------------


def hostile_decoder(run: Path):
    """The run's decoder, with the centre token of latent 0's top example (and every other
    occurrence of that id, in contexts and the logit lens) shown as markup."""
    with Evidence(run) as evidence:
        ids = evidence.file.read("top_context_ids_eXW")[0, 0].tolist()
        target = ids[(evidence.width - 1) // 2]
    real = decoder(run)

    def decode(token_ids):
        pieces = real(token_ids)
        return [HOSTILE_TOKEN if t == target else p for t, p in zip(token_ids, pieces, strict=True)]

    return decode


def open_guarded(page, out: Path, name: str):
    """Open a report file; any request outside the report folder is refused and recorded."""
    root = out.resolve().as_uri() + "/"
    refused, errors = guard(page, lambda url: url.startswith(root))
    page.goto((out / name).resolve().as_uri())
    return refused, errors


def alpha(color: str) -> float:
    parts = re.match(r"rgba?\(([^)]*)\)", color).group(1).split(",")
    return float(parts[3]) if len(parts) == 4 else 1.0


@pytest.mark.slow
def test_index_and_pages_in_chromium(runs, chromium, tmp_path):
    out = tmp_path / "report"
    write_report(runs["co"], out, PER_PAGE, None, str(runs["explanations"]),
                 decode=hostile_decoder(runs["co"]))  # fmt: skip
    index = json_block(out / "index.html", "latents-data")
    page = chromium.new_page(viewport={"width": 1400, "height": 900})
    try:
        refused, errors = open_guarded(page, out, "index.html")
        rows = page.locator("#latents-table tbody tr")
        assert rows.count() == D_SAE
        assert [int(t) for t in rows.locator("td:first-child").all_text_contents()] == list(
            range(D_SAE)
        )
        # Hostile explanations and token strings are text.
        assert rows.nth(2).locator("td").nth(5).text_content() == HOSTILE
        assert HOSTILE_TOKEN in rows.nth(0).locator("td.tops").text_content()
        assert page.locator("img, b").count() == 0
        # Search by index (exactly), by explanation text and by a top token.
        page.fill("#search", "7")
        assert rows.locator("td:first-child").all_text_contents() == ["7"]
        page.fill("#search", "TOPIC 1")
        assert rows.locator("td:first-child").all_text_contents() == ["10", "12", "14", "16", "18"]
        token = index["rows"][5][3][0].strip().lower()
        page.fill("#search", token)
        want = [str(r[0]) for r in index["rows"] if token in "\n".join(r[3]).lower()]
        assert rows.locator("td:first-child").all_text_contents() == want and want
        page.fill("#search", "")
        # Sorted by count, largest first (ties: smaller index), then back by index.
        page.click('th[data-key="count"] button')
        order = sorted(index["rows"], key=lambda r: (-r[1], r[0]))
        assert rows.locator("td:first-child").all_text_contents() == [str(r[0]) for r in order]
        page.click('th[data-key="index"] button')
        # A row's link opens the latent's section on its page.
        page.click('#latents-table a:text-is("12")')
        page.wait_for_load_state()
        assert page.url.endswith("/page-00001.html#latent-12")
        # ... at the top of the view, once the sections around it are laid out
        page.wait_for_function(
            "(() => { const top = document.getElementById('latent-12')"
            ".getBoundingClientRect().top; return top >= 0 && top < 50; })()",
            timeout=5000,
        )

        data = json_block(out / "page-00001.html", "page-data")
        latent = next(x for x in data["latents"] if x["index"] == 12)
        section = page.locator("#latent-12")
        lines = section.locator("ol.top > li")
        assert lines.count() == len(latent["top"])
        for k, example in enumerate(latent["top"]):
            spans = lines.nth(k).locator(".ctx > .tok")
            assert spans.all_text_contents() == example["tokens"]
            center = lines.nth(k).locator(".tok.center")
            assert center.text_content() == example["tokens"][example["center"]]
            color = center.evaluate("el => getComputedStyle(el).backgroundColor")
            want = min(1.0, example["acts"][example["center"]] / latent["max"])
            assert alpha(color) == pytest.approx(want, abs=0.005)  # 8-bit alpha in the browser
        assert section.locator("svg.hist rect.bar").count() == len(latent["histogram"]["counts"])
        lens = latent["logit_lens"]
        assert section.locator(".lens ol.up li .tok").all_text_contents() == [
            t for t, _ in lens["up"]
        ]
        assert section.locator(".lens ol.down li").count() == len(lens["down"]) == 10
        assert len(lens["up"]) == 10
        links = section.locator("table.neighbours tbody tr td:first-child a")
        assert links.count() == len(latent["neighbours"]) == 10
        j = latent["neighbours"][0][0]
        assert links.nth(0).get_attribute("href") == f"page-{j // PER_PAGE:05d}.html#latent-{j}"
        # The quantile bands are drawn when opened, strongest first.
        section.locator("details.bands summary").click()
        bands = section.locator("details.bands .band")
        bands.first.wait_for()  # drawn by the toggle event, after the click returns
        assert bands.count() == len(latent["bands"])
        assert bands.nth(0).locator("li").count() == len(latent["bands"][-1]["examples"])
        # The hostile explanation and token on page 0.
        page.click('nav.pages a[rel="prev"] >> nth=0')
        page.wait_for_load_state()
        assert page.url.endswith("/page-00000.html")
        assert page.locator("#latent-2 .explanation .text").text_content() == HOSTILE
        shown = page.locator("#latent-0 ol.top > li").first.locator(".tok.center").text_content()
        assert shown == HOSTILE_TOKEN
        assert page.locator("img, b").count() == 0
        assert page.evaluate("typeof window.pwned") == "undefined"
        assert refused == [] and errors == []
    finally:
        page.close()


@pytest.mark.slow
def test_some_latents_only_their_pages(runs, chromium, capsys):
    out = runs["co"] / "latents-report"  # the default folder
    try:
        argv = ["latents-report", str(runs["co"]), "--latents", "13", "3", "12", "3"]
        assert main([*argv, "--latents-per-page", str(PER_PAGE)]) == 0
        assert capsys.readouterr().out.strip() == str(out / "index.html")
        assert sorted(p.name for p in out.iterdir()) == [
            "index.html", "page-00000.html", "page-00001.html"
        ]  # fmt: skip
        assert [r[0] for r in json_block(out / "index.html", "latents-data")["rows"]] == [3, 12, 13]
        data = json_block(out / "page-00001.html", "page-data")
        assert [x["index"] for x in data["latents"]] == [12, 13]
        assert data["meta"]["prev"] == "page-00000.html" and data["meta"]["next"] is None
        assert all(x["explanation"] is None for x in data["latents"])  # no id, no file
        page = chromium.new_page()
        try:
            refused, errors = open_guarded(page, out, "page-00001.html")
            cells = page.locator("#latent-12 table.neighbours tbody tr td:first-child")
            linked = [int(t) for t in cells.locator("a").all_text_contents()]
            partners = [n[0] for n in data["latents"][0]["neighbours"]]
            assert linked == [j for j in partners if j in (3, 13)]
            assert cells.count() == len(partners)
            assert refused == [] and errors == []
        finally:
            page.close()
    finally:
        import shutil

        shutil.rmtree(out, ignore_errors=True)


@pytest.mark.slow
def test_a_latents_run_and_a_never_active_latent(runs, chromium, tmp_path):
    """A ``latents`` run has no pair counts: no co-occurring latents; a latent that never
    fired has a section that says so (a page built from such data, drawn without errors)."""
    from sae_hacking.reports.latents import write_latents_report

    index = write_report(runs["lat"], tmp_path / "lat", PER_PAGE)
    data = json_block(index.parent / "page-00000.html", "page-data")
    assert all(latent["neighbours"] is None for latent in data["latents"])
    never = {
        "index": 1, "count": 0, "density": 0.0, "max": None, "top": [], "bands": [],
        "histogram": {"edges": [], "counts": []}, "logit_lens": None, "explanation": None,
        "url": None, "neighbours": [],
    }  # fmt: skip
    meta = {"e": 2, "tokens": 10, "per_page": 1, "pages": [1], "listed": [1], "title": "t"}
    write_latents_report(tmp_path / "never", meta, [(1, [never])])
    page = chromium.new_page()
    try:
        refused, errors = open_guarded(page, index.parent, "page-00000.html")
        assert page.locator("section.latent").count() == PER_PAGE
        assert page.locator("table.neighbours").count() == 0
        assert page.locator("svg.hist").count() == PER_PAGE
        index_rows = json_block(index, "latents-data")["rows"]
        assert len(index_rows) == D_SAE
        refused2, errors2 = open_guarded(page, tmp_path / "never", "page-00001.html")
        assert (
            page.locator("#latent-1 .muted").text_content() == "never active on the tokens counted"
        )
        page.goto((tmp_path / "never" / "index.html").resolve().as_uri())
        assert page.locator("#latents-table tbody td").nth(3).text_content() == "\u2014"  # no max
        assert refused == errors == refused2 == errors2 == []
    finally:
        page.close()


# -- bad input ---------------------------------------------------------------------------------


def exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as done:  # argparse's own errors (still one line, exit 2)
        return done.code


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.mark.slow
def test_bad_input_is_one_line_and_writes_nothing(runs, tmp_path, capsys):
    out = tmp_path / "out"
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine", encoding="utf-8")
    co = str(runs["co"])
    cases = [
        ([str(tmp_path / "nowhere")], "no results file"),
        ([str(not_a_run)], "holds no cooccurrences or latents results"),
        ([str(runs["bare"])], "--top-examples 0"),
        ([co, "--latents", "3", str(D_SAE)], f"latent {D_SAE} is out of range"),
        ([co, "--latents", "-1"], "not negative"),
        ([co, "--latents-per-page", "0"], "must be at least 1"),
        ([co, "--explanations-file", str(tmp_path / "none.json")], "--explanations-file"),
    ]
    for argv, words in cases:
        assert exit_code(["latents-report", *argv, "--output-dir", str(out)]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and words in err, (argv, err)
        assert not out.exists()
    assert main(["latents-report", co, "--output-dir", str(full)]) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and err.count("\n") == 1
    assert leftovers(full) == ["keep.txt"]
    assert leftovers(tmp_path) == ["empty", "full"]  # no temporary folder left behind
    assert (
        leftovers(runs["co"]) == leftovers(runs["co"])
        and not (runs["co"] / "latents-report").exists()
    )


@pytest.mark.slow
def test_a_failure_while_writing_leaves_no_folder(runs, tmp_path):
    real = decoder(runs["co"])
    calls = []

    def failing(ids):
        calls.append(1)
        if len(calls) > 200:  # some way into the second page
            raise RuntimeError("disk full, say")
        return real(ids)

    empty = tmp_path / "report"
    empty.mkdir()  # an empty folder is fine, and stays as it was on failure
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(runs["co"], empty, PER_PAGE, decode=failing)
    assert leftovers(tmp_path) == ["report"] and leftovers(empty) == []
