"""The report table's columns are named once: each header carries its key, and pairs.js fills a
row object with exactly those keys (from the data's named fields), never by position."""

import re
from importlib import resources

from sae_hacking.reports import pairs as report


def test_every_column_key_is_a_row_field_built_by_the_script():
    keys = [column[0] for column in report.COLUMNS]
    assert len(set(keys)) == len(keys) and report.SORT_KEY in keys
    script = resources.files("sae_hacking.reports").joinpath("assets/pairs.js").read_text()
    # Keys come from the pair fields, or are set on the row by name in pairs.js.
    assigned = set(re.findall(r"\b([a-z_]+[0-9]?):", script)) | set(report.PAIR_FIELDS)
    assert set(keys) <= assigned, set(keys) - assigned
    assert not re.search(r"\b(r|row|x|y|p|cells)\[\d+\]", script), "a cell read by position"


def test_headers_and_data_name_their_fields():
    page = report.render_report({"meta": {}, "pairs": []})
    for key in (column[0] for column in report.COLUMNS):
        assert f'data-key="{key}"' in page
    assert 'data-sort-key="effect_cosine"' in page
    assert '"pair_fields":["latent1","latent2","effect_cosine"' in page
