"""``sae-hacking latents-report RUN --ablations ABLATE [--reader-evidence READER]``: an ablated
latent's page section carries the reader moves :func:`reader_moves` computes, its readers
labelled by the reader run's evidence (as :meth:`Evidence.latents` reads it) or by
:func:`reader_logit_lens`; Chromium draws one entry per move with the labels as text, and the
index counts the ablations; an ablate run of another SAE, or a reader run of another SAE than
the ablate run's reader, is one line, exit 2, nothing written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sae_hacking.absorption.evidence.moves import reader_logit_lens, reader_moves
from sae_hacking.absorption.evidence.read import Evidence, token_decoder
from sae_hacking.absorption.evidence.report import write_report
from sae_hacking.cli import main
from tests.browser import guard

ABLATOR_HOOK, D_ABLATOR = "blocks.0.hook_mlp_out", 24
READER_HOOK, D_READER = "blocks.1.hook_resid_post", 30
PER_PAGE = 10
TOKEN_CHARS = 24  # reports.latents.TOKEN_CHARS
HOSTILE = '<img src=x onerror="window.pwned=1"><b>'


@pytest.fixture(scope="module")
def runs(tiny_model_path, random_sae_path, prompts_path, tmp_path_factory):
    """Co-occurrences with evidence of ablator A, ``ablate`` A -> reader R on the same text,
    and a ``latents`` run of R."""
    root = tmp_path_factory.mktemp("latents-moves")
    model = str(tiny_model_path("gemma2"))
    ablator = str(random_sae_path(ABLATOR_HOOK, D_ABLATOR, seed=5))
    reader = str(random_sae_path(READER_HOOK, D_READER, seed=2))
    data = str(prompts_path(16, seed=4))
    common = ["--model", model, "--dataset-id", data, "--max-tokens", "12", "--n-prompts", "16"]
    common += ["--quiet", "--device", "cpu"]
    assert main(["cooccurrences", *common, "--ablator-sae-release", ablator,
                 "--output-dir", str(root / "co")]) == 0  # fmt: skip
    assert main(["ablate", *common, "--ablator-sae-release", ablator, "--reader-sae-release",
                 reader, "--abridge-ablations-to", "3", "--output-dir", str(root / "ablate")]) == 0  # fmt: skip
    assert main(["latents", *common, "--sae-release", reader,
                 "--output-dir", str(root / "reader")]) == 0  # fmt: skip
    return {"co": root / "co", "ablate": root / "ablate", "reader": root / "reader"}


def json_block(path: Path, element: str) -> dict:
    text = path.read_text(encoding="utf-8")
    match = re.search(f'<script type="application/json" id="{element}">(.*?)</script>', text, re.S)
    return json.loads(match.group(1))


def decoder(run: Path):
    from sae_hacking.train.run import load_tokenizer

    with Evidence(run) as evidence:
        return token_decoder(load_tokenizer(evidence.model))


def hostile(real):
    """Every token's text behind markup: labels must reach the page as text."""
    return lambda ids: [HOSTILE + piece for piece in real(ids)]


def cut(text: str) -> str:
    return text if len(text) <= TOKEN_CHARS else text[: TOKEN_CHARS - 1] + "\u2026"


def page_latents(out: Path) -> dict[int, dict]:
    found = {}
    for page in sorted(out.glob("page-*.html")):
        found.update({x["index"]: x for x in json_block(page, "page-data")["latents"]})
    return found


def check_moves(latents: dict[int, dict], want: dict[int, dict]) -> set[int]:
    """The pages' moves are reader_moves' (and every other latent has none); the readers."""
    readers = set()
    for i, latent in latents.items():
        if i not in want:
            assert latent["moves"] is None
            continue
        got = latent["moves"]
        assert {k: got[k] for k in ("ablations", "up", "down")} == want[i]
        moved = [r for r, _ in want[i]["up"] + want[i]["down"]]
        assert sorted(got["readers"]) == sorted(str(r) for r in moved)
        readers.update(moved)
    return readers


@pytest.mark.slow
def test_labels_from_the_reader_evidence(runs, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["latents-report", str(runs["co"]), "--output-dir", str(out), "--latents-per-page"]
    argv += [str(PER_PAGE), "--ablations", str(runs["ablate"])]
    assert main([*argv, "--reader-evidence", str(runs["reader"])]) == 0
    assert capsys.readouterr().out.strip() == str(out / "index.html")
    want, _ = reader_moves(runs["ablate"])
    assert 3 <= len(want) < D_ABLATOR  # some latents ablated, some not: a real test
    latents = page_latents(out)
    assert sorted(latents) == list(range(D_ABLATOR))
    readers = check_moves(latents, want)
    decode = decoder(runs["reader"])
    with Evidence(runs["reader"]) as reader:
        for r in readers:
            [ref] = reader.latents(r, r + 1, decode)
            label = {
                "count": ref["count"],
                "density": ref["density"],
                "tops": [cut(ex["tokens"][ex["center"]]) for ex in ref["top"][:3]],
                "url": None,  # a local reader SAE: no Neuronpedia id
            }
            for i in want:
                if str(r) in latents[i]["moves"]["readers"]:
                    assert latents[i]["moves"]["readers"][str(r)] == label
        assert any(ref["top"] for ref in reader.latents(0, D_READER, decode))
    index = json_block(out / "index.html", "latents-data")
    assert index["meta"]["has_moves"] and index["meta"]["reader_labels"] == "evidence"
    assert {r[0]: (r[5] if len(r) > 5 else None) for r in index["rows"]} == {
        i: want[i]["ablations"] if i in want else None for i in range(D_ABLATOR)
    }
    facts = (out / "page-00000.html").read_text(encoding="utf-8")
    assert "<dt>reader labels</dt><dd>evidence of " in facts


@pytest.mark.slow
def test_labels_from_the_logit_lens_and_some_latents(runs, tmp_path):
    want, settings = reader_moves(runs["ablate"])
    some = sorted(want)[:2] + [i for i in range(D_ABLATOR) if i not in want][:1]
    decode = decoder(runs["co"])
    out = write_report(runs["co"], tmp_path / "r", PER_PAGE, some, ablations=runs["ablate"])
    latents = page_latents(out.parent)
    assert sorted(latents) == some
    readers = check_moves(latents, {i: want[i] for i in some if i in want})
    lens = reader_logit_lens(settings, sorted(readers), 5, decode)
    assert sorted(lens) == sorted(readers)
    for i in some[:2]:
        for r, label in latents[i]["moves"]["readers"].items():
            assert label == {"lens": [cut(t) for t, _ in lens[int(r)]["up"]], "url": None}
    meta = json_block(out, "latents-data")["meta"]
    assert meta["reader_labels"] == "logit lens"
    facts = out.read_text(encoding="utf-8")
    assert "<dt>ablated latents in this report</dt><dd>2</dd>" in facts  # only the listed ones
    assert "<dt>reader labels</dt><dd>logit lens of the reader SAE" in facts


@pytest.mark.slow
def test_the_moves_in_chromium(runs, chromium, tmp_path):
    want, settings = reader_moves(runs["ablate"])
    real = decoder(runs["co"])
    pages = {}
    for kind, reader in (("evidence", runs["reader"]), ("lens", None)):
        out = tmp_path / kind
        write_report(runs["co"], out, PER_PAGE, decode=hostile(real), ablations=runs["ablate"],
                     reader_evidence=reader)  # fmt: skip
        pages[kind] = out
    page = chromium.new_page(viewport={"width": 1400, "height": 900})
    root = tmp_path.resolve().as_uri() + "/"
    refused, errors = guard(page, lambda url: url.startswith(root))
    try:
        for kind, out in pages.items():
            latents = page_latents(out)
            for i in sorted(want):
                data = latents[i]["moves"]
                page.goto((out / f"page-{i // PER_PAGE:05d}.html").resolve().as_uri())
                block = page.locator(f"#latent-{i} .moves")
                for side in ("up", "down"):
                    entries = block.locator(f"ol.{side} > li.move")
                    assert entries.count() == len(data[side])  # one entry per move
                    for k, (r, value) in enumerate(data[side]):
                        entry = entries.nth(k)
                        assert entry.get_attribute("data-reader") == str(r)
                        assert entry.locator(".reader").text_content() == f"reader {r}"
                        shown = float(entry.locator(".effect").text_content())
                        assert shown == pytest.approx(value, rel=1e-2)
                        label = data["readers"][str(r)]
                        tokens = label["tops"] if kind == "evidence" else label["lens"]
                        assert entry.locator(".label .tok").all_text_contents() == tokens
                        assert all(t.startswith(HOSTILE[: TOKEN_CHARS - 1]) for t in tokens)
                assert page.locator("img, b").count() == 0
                assert page.evaluate("typeof window.pwned") == "undefined"
            never = next(i for i in range(D_ABLATOR) if i not in want)
            page.goto((out / f"page-{never // PER_PAGE:05d}.html").resolve().as_uri())
            assert page.locator(f"#latent-{never} .moves").count() == 0
        # The index: the "ablated" column, blank for latents never ablated, sortable.
        page.goto((pages["evidence"] / "index.html").resolve().as_uri())
        rows = page.locator("#latents-table tbody tr")
        cells = rows.locator("td.ablated").all_text_contents()
        assert cells == [str(want[i]["ablations"]) if i in want else "" for i in range(D_ABLATOR)]
        page.click('th[data-key="ablated"] button')
        order = sorted(want, key=lambda i: (-want[i]["ablations"], i))
        shown = [int(t) for t in rows.locator("td:first-child").all_text_contents()]
        assert shown[: len(order)] == order
        assert set(shown[len(order) :]) == set(range(D_ABLATOR)) - set(want)
        # Without --ablations: no such column.
        plain = write_report(runs["co"], tmp_path / "plain", PER_PAGE, decode=real)
        page.goto(plain.resolve().as_uri())
        assert page.locator('th[data-key="ablated"], td.ablated').count() == 0
        assert page.locator("#latents-table thead th").count() == 6
        assert refused == [] and errors == []
    finally:
        page.close()


def test_a_never_active_ablated_latent_and_reader_links(chromium, tmp_path):
    """A latent the evidence never saw fire can still have been ablated (other text): its
    section shows the moves; a reader with a Neuronpedia page links there (http(s) only)."""
    from sae_hacking.reports.latents import write_latents_report

    site = "https://www.neuronpedia.org/m/r/"
    readers = {
        "4": {"lens": [HOSTILE, "b"], "url": site + "4"},
        "7": {"lens": ["c"], "url": "javascript:window.pwned=1"},
        "2": {"lens": [], "url": None},
    }
    moves = {"ablations": 3, "up": [[4, 0.5], [7, 0.25]], "down": [[2, -1.0]], "readers": readers}
    never = {
        "index": 1, "count": 0, "density": 0.0, "max": None, "top": [], "bands": [],
        "histogram": {"edges": [], "counts": []}, "logit_lens": None, "explanation": None,
        "url": None, "neighbours": None, "moves": moves,
    }  # fmt: skip
    meta = {"e": 2, "tokens": 10, "per_page": 1, "pages": [1], "listed": [1], "title": "t"}
    meta |= {"has_moves": True, "reader_labels": "logit lens"}
    write_latents_report(tmp_path / "r", meta, [(1, [never])])
    page = chromium.new_page()
    root = tmp_path.resolve().as_uri() + "/"
    refused, errors = guard(page, lambda url: url.startswith(root))
    try:
        page.goto((tmp_path / "r" / "page-00001.html").resolve().as_uri())
        block = page.locator("#latent-1 .moves")
        assert block.locator("li.move").count() == 3
        up = block.locator("ol.up > li.move")
        assert up.nth(0).locator("a").get_attribute("href") == site + "4"
        assert up.nth(0).locator("a.reader").text_content() == "reader 4"
        assert up.nth(1).locator("a").count() == 0  # not an http(s) address
        assert up.nth(1).locator(".reader").text_content() == "reader 7"
        assert up.nth(0).locator(".label .tok").all_text_contents() == [cut(HOSTILE), "b"]
        assert block.locator("ol.down .label .tok").count() == 0
        assert page.locator("img, b").count() == 0
        page.goto((tmp_path / "r" / "index.html").resolve().as_uri())
        assert page.locator("td.ablated").all_text_contents() == ["3"]
        assert refused == errors == []
    finally:
        page.close()


def exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as done:
        return done.code


@pytest.mark.slow
def test_bad_input_is_one_line_and_writes_nothing(runs, tmp_path, capsys):
    out = tmp_path / "out"
    co, ablate, reader = str(runs["co"]), str(runs["ablate"]), str(runs["reader"])
    cases = [
        # an ablate run of another ablator: the reader's latents run is not of the ablated SAE
        ([reader, "--ablations", ablate], "--ablations " + ablate + " ablated another SAE"),
        # the path is no ablate run
        ([co, "--ablations", co + "/cooccurrences.safetensors.zst"], "not an ablate run's"),
        ([co, "--ablations", co], "holds no ablate results"),
        ([co, "--ablations", str(tmp_path / "nowhere")], "holds no ablate results"),
        # a reader run of another SAE: the ablator's own evidence
        (
            [co, "--ablations", ablate, "--reader-evidence", co],
            f"--reader-evidence {co} holds the evidence of another SAE",
        ),
        ([co, "--ablations", ablate, "--reader-evidence", ablate], "--reader-evidence names no"),
        ([co, "--reader-evidence", reader], "--reader-evidence labels the readers of --ablations"),
    ]
    for argv, words in cases:
        assert exit_code(["latents-report", *argv, "--output-dir", str(out)]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and words in err, (argv, err)
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temporary folder left
