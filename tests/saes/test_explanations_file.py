"""``pairs --explanations-file``: the user's file is checked record by record, and every bad
index is refused in one line naming the file, the record and what is wrong."""

import gzip
import json

import pytest

from sae_hacking.errors import FieldError
from sae_hacking.saes.neuronpedia import load_explanations, read_explanations_file


def write(tmp_path, records, name="explanations.json"):
    path = tmp_path / name
    path.write_text(json.dumps(records))
    return path


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"description": "no index"}, "record 2: has no index"),
        ({"index": None, "description": "x"}, "record 2: index is null"),
        ({"index": "seven", "description": "x"}, "record 2: index 'seven' is not an integer"),
        ({"index": 1.5, "description": "x"}, "record 2: index 1.5 is not an integer"),
        ({"index": True, "description": "x"}, "record 2: index True is not an integer"),
        ({"index": -3, "description": "x"}, "record 2: index -3 is negative"),
        ({"index": 48, "description": "x"}, "record 2: index 48 is out of range"),
        ({"index": "0", "description": "again"}, "record 2: index 0 was given already (record 1)"),
        ("just text", "record 2: is a str, not an {index, description} object"),
    ],
)
def test_a_bad_index_is_named_with_its_record(tmp_path, bad, words):
    path = write(tmp_path, [{"index": 0, "description": "first"}, bad])
    with pytest.raises(FieldError) as err:
        read_explanations_file(path, n_latents=48)
    assert err.value.field == "explanations_file"
    assert str(path) in err.value.message and words in err.value.message, err.value.message
    assert "\n" not in err.value.message


def test_good_files_in_every_format(tmp_path):
    records = [{"index": "2", "description": " two "}, {"index": 0, "description": ""}]
    expected = {2: "two"}  # Neuronpedia writes indices as strings; empty descriptions drop
    assert read_explanations_file(write(tmp_path, records), 48) == expected
    assert read_explanations_file(write(tmp_path, {"2": "two"}, "object.json"), 48) == expected
    lines = "\n".join(json.dumps(r) for r in records).encode()
    (tmp_path / "batch.jsonl.gz").write_bytes(gzip.compress(lines))
    assert read_explanations_file(tmp_path / "batch.jsonl.gz", 48) == expected
    explanations, source, warning = load_explanations(None, str(tmp_path / "batch.jsonl.gz"), 3)
    assert (explanations, source, warning) == (expected, "file", None)
    with pytest.raises(FieldError, match="out of range; the ablator SAE has latents 0..1"):
        load_explanations(None, str(tmp_path / "batch.jsonl.gz"), 2)


def test_not_a_list_is_one_sentence(tmp_path):
    with pytest.raises(FieldError, match="holds a JSON str, not a list"):
        read_explanations_file(write(tmp_path, "text"))
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(FieldError, match="is not a list of"):
        read_explanations_file(tmp_path / "broken.json")


def test_rows_of_neuronpedias_export_may_repeat_an_index(tmp_path):
    """The export holds several explanations of some latents: the first non-empty one is kept,
    as Neuronpedia's site shows; in a file without the export's fields a repeat is refused."""
    rows = [
        {"index": "5", "description": "", "modelId": "gemma-2-2b"},
        {"index": "5", "description": "fives", "typeName": "oai_token-act-pair"},
        {"index": "5", "description": "a second opinion"},
    ]
    assert read_explanations_file(write(tmp_path, rows), 48) == {5: "fives"}
    bad = write(tmp_path, [*rows, {"index": -1, "modelId": "gemma-2-2b"}], "negative.json")
    with pytest.raises(FieldError, match="record 4: index -1 is negative"):
        read_explanations_file(bad)  # an export's indices are checked all the same
