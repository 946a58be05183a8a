"""tuples.html in a real browser (tests/browser.py): rows render, columns sort, the filter
works, hostile labels stay text, and the page makes no request."""

from __future__ import annotations

import os

import pytest

from sae_hacking.reports import tuples as page_module
from tests.browser import guard

HOSTILE = '<img src=x onerror="window.pwned=1">'
SCRIPT = "<script>window.pwned=1</script>"
NP = "https://www.neuronpedia.org/gemma-2-2b/20-gemmascope-mlp-65k/"


def tuples_result() -> dict:
    tuples = []
    for i, (a, b, c, d) in enumerate([(3, 10, 7, 11), (3, 12, 9, 11), (5, 10, 7, 13),
                                      (7, 12, 3, 10), (9, 13, 5, 12)]):  # fmt: skip
        ab, ad, cb, cd = 0.5 + i, 0.4 + 2 * i, 0.9 - 0.1 * i, -0.3 - 0.05 * i
        tuples.append({"A": a, "B": b, "C": c, "D": d, "AB": ab, "AD": ad, "CB": cb, "CD": cd,
                       "strength": min(ab, ad, cb, -cd)})  # fmt: skip
    tuples.sort(key=lambda t: -t["strength"])
    ablator = {
        "3": {"text": HOSTILE, "source": "explanation", "url": NP + "3"},
        "5": {"text": "capital letters", "source": "evidence", "url": NP + "5"},
        "7": {"text": "", "source": "none", "url": "javascript:alert(1)"},
        "9": {"text": "x" * 300, "source": "logit lens", "url": None},
    }
    reader = {str(i): {"text": f"reader {i} {SCRIPT}", "source": "explanation", "url": None}
              for i in (10, 11, 12, 13)}  # fmt: skip
    meta = {
        "kind": "four-tuples",
        "inputs": {"model": SCRIPT, "ablator_sae_release": HOSTILE, "reader_sae_release": "r"},
        "treat_as_zero": 0.0,
        "total": 2**60,
        "kept": len(tuples),
        "labels": {"ablator": [HOSTILE], "reader": []},
        "provenance": {"command": f"sae-hacking four-tuples {SCRIPT}"},
    }
    return {"meta": meta, "labels": {"ablator": ablator, "reader": reader}, "tuples": tuples}


def column(page, key: str) -> list[str]:
    index = page.eval_on_selector_all(
        "#tuples-table th", f"ths => ths.findIndex(th => th.dataset.key === {key!r})"
    )
    return page.locator(f"#tuples-table tbody tr td:nth-child({index + 1})").all_text_contents()


@pytest.mark.slow
def test_tuples_page_in_chromium(chromium, tmp_path):
    result = tuples_result()
    path = page_module.write_report(tmp_path, result)
    page = chromium.new_page(viewport={"width": 1500, "height": 1000})
    try:
        url = path.resolve().as_uri()
        refused, errors = guard(page, lambda u: u == url)
        page.goto(url)
        rows = page.locator("#tuples-table tbody tr")
        assert rows.count() == 5
        # Kept order: strength descending, as tuples.json.
        strengths = [t["strength"] for t in result["tuples"]]
        assert [float(s) for s in column(page, "strength")] == pytest.approx(strengths, 1e-3)
        assert page.locator('th[data-key="strength"]').get_attribute("aria-sort") == "descending"
        # Hostile text is shown as the text it is; no element or handler came from it.
        assert HOSTILE in column(page, "A_label") + column(page, "C_label")
        assert all(SCRIPT in text for text in column(page, "B_label"))
        assert page.locator("#tuples-table img, #tuples-table script").count() == 0
        assert SCRIPT in page.locator("#summary").text_content()
        # Latent links: Neuronpedia's https URLs only, opened only by a click.
        links = page.locator("#tuples-table tbody tr td a")
        assert {a.get_attribute("href") for a in links.all()} == {NP + "3", NP + "5"}
        assert all("noopener" in a.get_attribute("rel") for a in links.all())
        assert page.locator('#tuples-table a[href^="javascript"]').count() == 0
        # The long label is cut; its source is shown for local labels.
        assert "(logit lens)" in " ".join(column(page, "A_label") + column(page, "C_label"))

        # Sorting: AB descending on the first click, ascending on the next; latents ascending.
        abs_ = [t["AB"] for t in result["tuples"]]
        page.click('th[data-key="AB"] button')
        assert [float(x) for x in column(page, "AB")] == pytest.approx(sorted(abs_, reverse=True))
        page.click('th[data-key="AB"] button')
        assert [float(x) for x in column(page, "AB")] == pytest.approx(sorted(abs_))
        assert page.locator('th[data-key="AB"]').get_attribute("aria-sort") == "ascending"
        page.click('th[data-key="C"] button')
        assert [int(x) for x in column(page, "C")] == sorted(t["C"] for t in result["tuples"])

        # Filter: a latent number matches exactly, label text as a substring.
        page.fill("#filter-text", "5")
        assert rows.count() == 2  # A = 5 or C = 5, not 13 or 15
        page.fill("#filter-text", "capital")
        assert rows.count() == 2
        page.fill("#filter-text", "reader 13")
        assert rows.count() == 2
        page.fill("#filter-text", "")
        assert rows.count() == 5
        assert "of 1,152,921,504,606,846,976 in all" in page.locator("#count").text_content()

        assert page.evaluate("typeof window.pwned") == "undefined"
        assert errors == [] and refused == []
        shot = os.environ.get("SAE_HACKING_REPORT_SCREENSHOT")
        if shot:  # for looking at the page by hand
            page.screenshot(path=shot, full_page=True)
    finally:
        page.close()
