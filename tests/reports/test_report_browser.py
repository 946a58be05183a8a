"""report.html in a real browser: a Chromium driven by playwright (see tests/browser.py; CI
installs Debian's). Every request other than the page itself is refused and recorded."""

import os

import pytest

from sae_hacking.reports import pairs as report
from tests.browser import guard
from tests.reports.pairs_fixture import HOSTILE, QUOTES

EFFECT = 'th[data-col="9"]'


def _effect_cosines(page) -> list[float]:
    return [
        float(t) for t in page.locator("#pairs-table tbody tr td:nth-child(10)").all_text_contents()
    ]


@pytest.fixture
def browser_page(chromium):
    page = chromium.new_page(viewport={"width": 1500, "height": 1100})
    try:
        yield page
    finally:
        page.close()


@pytest.mark.slow
def test_report_in_chromium(browser_page, tmp_path, make_pairs_result):
    result = make_pairs_result(n_pairs=6)
    report.write_pair_plots(tmp_path, result)
    path = report.write_report(tmp_path, result)
    page = browser_page
    url = path.resolve().as_uri()
    refused, errors = guard(page, lambda u: u == url)
    page.goto(url)

    rows = page.locator("#pairs-table tbody tr")
    assert rows.count() == 6
    assert errors == [] and refused == []
    assert page.evaluate("typeof window.pwned") == "undefined"
    # The hostile explanations are shown as the literal text they are.
    assert rows.nth(0).locator("td").nth(2).text_content() == HOSTILE
    assert rows.nth(0).locator("td").nth(6).text_content() == QUOTES
    assert page.locator("#pairs-table b").count() == 0
    link = rows.nth(0).locator("td").nth(1).locator("a")
    assert (
        link.get_attribute("href")
        == "https://www.neuronpedia.org/gemma-2-2b/20-gemmascope-mlp-65k/3"
    )
    assert "noopener" in link.get_attribute("rel")

    # Sorted by effect cosine, descending, as pairs.json is; clicking flips it, then back.
    initial = _effect_cosines(page)
    assert initial == sorted(initial, reverse=True)
    assert page.locator(EFFECT).get_attribute("aria-sort") == "descending"
    page.click(EFFECT)
    assert _effect_cosines(page) == sorted(initial)
    assert page.locator(EFFECT).get_attribute("aria-sort") == "ascending"
    page.click(EFFECT)
    assert _effect_cosines(page) == sorted(initial, reverse=True)
    # Another numeric column sorts as numbers, ascending first.
    page.click('th[data-col="1"]')
    ids = [
        int(t) for t in page.locator("#pairs-table tbody tr td:nth-child(2)").all_text_contents()
    ]
    assert ids == sorted(ids) and ids != sorted(ids, key=str)

    # The text filter matches explanations and ids; the numeric filters bound their columns.
    page.fill("#filter-text", "topic 3")
    assert rows.count() == 1
    page.fill("#filter-text", "pwned")
    assert rows.count() == 1
    page.fill("#filter-text", "43")
    assert rows.count() == 1 and rows.nth(0).locator("td").nth(1).text_content() == "43"
    # Ids match exactly: "3" is latent 3, not 13, 23 or 43; explanations match as text
    # ("topic 3").
    page.fill("#filter-text", "3")
    assert [r.locator("td").nth(0).text_content() for r in rows.all()] == ["1", "4"]
    page.fill("#filter-text", "")
    page.fill("#min-effect", "0.6")
    assert sorted(_effect_cosines(page)) == sorted(c for c in initial if c >= 0.6)
    page.fill("#max-cooc", "0")
    counts = page.locator("#pairs-table tbody tr td:nth-child(12)").all_text_contents()
    assert counts and set(counts) == {"0"}
    shown = len(counts)
    assert page.locator("#count").text_content() == (
        f"showing {shown} of {shown} matching pairs (6 in this run)"
    )
    page.fill("#min-effect", "")
    page.fill("#max-cooc", "")
    assert rows.count() == 6

    # Both plots are embedded and decoded by the browser.
    widths = page.eval_on_selector_all("figure img", "imgs => imgs.map(i => i.naturalWidth)")
    assert len(widths) == 2 and min(widths) > 100
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert errors == [] and refused == []
    shot = os.environ.get("SAE_HACKING_REPORT_SCREENSHOT")
    if shot:  # for looking at the page by hand
        page.screenshot(path=shot, full_page=True)


@pytest.mark.slow
def test_many_pairs_show_a_page_at_a_time(browser_page, tmp_path, make_pairs_result):
    path = report.write_report(tmp_path, make_pairs_result(n_pairs=1200))
    page = browser_page
    page.goto(path.resolve().as_uri())
    rows = page.locator("#pairs-table tbody tr")
    assert rows.count() == 500
    page.click("#more")
    assert rows.count() == 1000
    page.click("#more")
    assert rows.count() == 1200
    assert page.locator("#more").is_hidden()


@pytest.mark.slow
def test_the_table_fits_1400_pixels_with_long_explanations(chromium, tmp_path, make_pairs_result):
    result = make_pairs_result(n_pairs=8)
    long_text = "an explanation that goes on and on " * 20
    for k, pair in enumerate(result["pairs"]):
        pair["ablator1"]["explanation"] = "x" * 400 if k % 2 else long_text
        pair["ablator2"]["explanation"] = long_text
        pair["ablator1"]["id"] = 1_048_575 - k
        pair["ablator1"]["activation_count"] = 123_456_789
    path = report.write_report(tmp_path, result)
    page = chromium.new_page(viewport={"width": 1400, "height": 900})
    try:
        page.goto(path.resolve().as_uri())
        width = page.evaluate("document.getElementById('pairs-table').scrollWidth")
        assert width <= 1400 and page.evaluate("document.documentElement.scrollWidth") <= 1400
        assert page.evaluate("document.querySelector('.table-wrap').scrollWidth") <= 1400
        cell = page.locator("#pairs-table tbody tr").nth(0).locator("td").nth(6)
        assert cell.get_attribute("title") == long_text  # the whole text in the tooltip
        shown = cell.text_content()
        assert shown.endswith("\u2026") and len(shown) == 120 and long_text.startswith(shown[:-1])
    finally:
        page.close()
