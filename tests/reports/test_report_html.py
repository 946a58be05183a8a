import base64
import html
import json
import re

import pytest

from sae_hacking.reports import pair_view
from sae_hacking.reports import pairs as report
from tests.reports.pairs_fixture import HOSTILE, QUOTES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _data_block(page: str) -> dict:
    match = re.search(r'<script type="application/json" id="pairs-data">(.*?)</script>', page, re.S)
    return json.loads(match.group(1))


@pytest.mark.slow
def test_plots_are_pngs_in_the_run_directory(tmp_path, make_pairs_result):
    result = make_pairs_result()
    paths = report.write_pair_plots(tmp_path, result)
    assert [p.name for p in paths] == ["histogram.png", "effect_vs_decoder.png"]
    for path in paths:
        assert path.parent == tmp_path
        assert path.read_bytes().startswith(PNG_MAGIC)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


@pytest.mark.slow
def test_the_log_scale_changes_the_histogram_only(make_pairs_result):
    result = make_pairs_result()
    assert report.histogram_png(result, True) != report.histogram_png(result, False)
    assert report.histogram_png(result, True) == report.histogram_png(result, True)


@pytest.mark.slow
def test_plots_of_a_run_without_pairs(tmp_path, make_pairs_result):
    result = make_pairs_result(n_pairs=0)
    result["meta"]["histogram"] = {"edges": [-1.0, 0.0, 1.0], "counts": [0, 0]}
    for path in report.write_pair_plots(tmp_path, result):
        assert path.read_bytes().startswith(PNG_MAGIC)
    page = report.write_report(tmp_path, result).read_text(encoding="utf-8")
    data = _data_block(page)
    assert (data["latents"], data["pairs"]) == ({}, [])


def test_hostile_text_is_escaped_everywhere(tmp_path, make_pairs_result):
    result = make_pairs_result()
    report.write_pair_plots(tmp_path, result)
    page = report.write_report(tmp_path, result).read_text(encoding="utf-8")
    # The only markup is the page's own: the hostile strings never appear raw...
    assert HOSTILE not in page
    assert "<b>tags</b>" not in page
    # The JSON data block and the page's script (whose own comments may name "<script>").
    assert page.replace(pair_view.page_script(), "").count("<script") == 2
    # ...they appear escaped where rendered server-side (provenance, input paths)...
    assert html.escape(f"sae-hacking pairs {HOSTILE}") in page
    assert html.escape(f"/runs/{QUOTES}/ablations.safetensors.zst") in page
    # ...and the data block gives them back exactly, for the script to write as text.
    data = _data_block(page)
    assert data["latents"]["3"][0] == HOSTILE
    assert data["latents"]["7"][0] == QUOTES
    assert (
        data["latents"]["3"][1] == "https://www.neuronpedia.org/gemma-2-2b/20-gemmascope-mlp-65k/3"
    )
    assert len(data["pairs"]) == 6
    assert data["pairs"][0][:2] == [3, 7]


def test_template_markers_in_untrusted_text_are_not_expanded(tmp_path, make_pairs_result):
    result = make_pairs_result()
    result["pairs"][1]["ablator1"]["explanation"] = "{{script}} {{csp}}"
    page = report.render_report(result)
    assert _data_block(page)["latents"]["13"][0] == "{{script}} {{csp}}"
    assert page.count("use strict") == pair_view.page_script().count("use strict")


def test_the_page_is_self_contained(tmp_path, make_pairs_result):
    result = make_pairs_result()
    plots = report.write_pair_plots(tmp_path, result)
    page = report.write_report(tmp_path, result).read_text(encoding="utf-8")
    # Nothing is loaded from outside: no src/href to a URL outside the data block, and a policy
    # that forbids every fetch.
    outside_data = page.split('id="pairs-data"')[0] + page.split("</script>", 1)[1]
    assert not re.search(r'(src|href)="(https?:)?//', outside_data)
    assert "default-src 'none'" in page
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert [base64.b64decode(png) for png in embedded] == [p.read_bytes() for p in plots]


@pytest.mark.slow
def test_the_report_draws_missing_plots_itself(tmp_path, make_pairs_result):
    page = report.write_report(tmp_path, make_pairs_result()).read_text(encoding="utf-8")
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(embedded) == 2
    assert all(base64.b64decode(png).startswith(PNG_MAGIC) for png in embedded)
    assert not (tmp_path / "histogram.png").exists()


def test_non_finite_numbers_become_dashes(make_pairs_result):
    result = make_pairs_result(n_pairs=1)
    result["pairs"][0]["expected_cooccurrence"] = float("inf")
    result["pairs"][0]["p_no_cooccurrence"] = float("nan")
    assert _data_block(report.render_report(result))["pairs"][0][-2:] == [None, None]


def test_an_empty_histogram_has_a_plain_axis_and_says_why(make_pairs_result):
    result = make_pairs_result(n_pairs=0)
    result["meta"]["histogram"] = {
        "edges": [-1 + 0.02 * i for i in range(101)],
        "counts": [0] * 100,
    }
    for log_scale in (True, False):
        ax = report.histogram_figure(result, log_scale).axes[0]
        assert tuple(ax.get_ylim()) == (0.0, 1.0) and ax.get_yscale() == "linear"
        assert [t.get_text() for t in ax.texts] == ["no pairs pass the filters"]
    ax = report.histogram_figure(make_pairs_result(), False).axes[0]
    assert ax.get_ylim()[0] == 0.0  # counts never go below the axis


def test_settings_are_shown_as_flags(make_pairs_result):
    result = make_pairs_result()
    result["meta"]["explanations"]["warning"] = (
        "no Neuronpedia explanations: offline (a local export can be given with "
        "`explanations_file`)."
    )
    page = report.render_report(result)
    warning = re.search(r'<p class="warning" role="note">(.*?)</p>', page).group(1)
    assert "given with --explanations-file)" in warning and "`" not in warning
