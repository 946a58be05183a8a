"""Text sources: every problem is one UsageError naming the file and the place, whenever the
reader meets it; a text column is refused where it does not apply; the pre-check is torch-free."""

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sae_hacking.data.streams import check_text_source, open_text_stream
from sae_hacking.data.text import batch_prompts
from sae_hacking.errors import FieldError, UsageError

CHUNK = 1 << 20  # the chunk size the locator decodes in; cases straddle it


def _good_lines(n: int) -> list[str]:
    return [f"prompt {i} ruta vo ze" for i in range(n)]


def _late_bad_bytes(path, n_lines=60_000, bad=b"caf\xe9 au lait\n"):
    """``n_lines`` good lines (past the text reader's first buffers), then ``bad``; returns the
    bad line's number and the byte offset of its first invalid byte."""
    good = "".join(line + "\n" for line in _good_lines(n_lines)).encode()
    path.write_bytes(good + bad + b"more text\n")
    return n_lines + 1, len(good) + bad.index(b"\xe9")


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_late_undecodable_bytes_are_a_usage_error_with_the_place(tmp_path, suffix):
    path = tmp_path / f"corpus{suffix}"
    if suffix == ".txt":
        line, offset = _late_bad_bytes(path)
    else:
        good = "".join(f'{{"text": "{t}"}}\n' for t in _good_lines(40_000)).encode()
        bad = b'{"text": "caf\xe9"}\n'
        path.write_bytes(good + bad)
        line, offset = 40_001, len(good) + bad.index(b"\xe9")
    rows = open_text_stream(str(path))  # the first chunk is fine: nothing is raised yet
    with pytest.raises(UsageError) as info:
        for _ in rows:
            pass
    message = str(info.value)
    assert f"{path} is not UTF-8 text: line {line} (byte {offset}) holds b'\\xe9'" in message
    assert "\n" not in message


@pytest.mark.slow
def test_the_error_also_surfaces_through_batches_and_skips(tmp_path):
    from sae_hacking.lm.tiny import train_tokenizer

    path = tmp_path / "corpus.txt"
    line, offset = _late_bad_bytes(path, n_lines=30_000)
    tokenizer = train_tokenizer("gpt2", 300)
    with pytest.raises(UsageError, match=f"line {line} \\(byte {offset}\\)"):
        for _ in batch_prompts(open_text_stream(str(path)), tokenizer, 4096, 8):
            pass
    # Resuming counts the rows to skip, which reads the whole file.
    with pytest.raises(UsageError, match=f"line {line} \\(byte {offset}\\)"):
        next(open_text_stream(str(path), skip=10))


def test_locator_across_chunk_boundaries(tmp_path):
    path = tmp_path / "straddle.txt"
    # A 3-byte character split by the chunk boundary (valid), then a bad byte in the next chunk.
    head = b"a" * (CHUNK - 1) + "\u20ac".encode() + b"\n"
    path.write_bytes(head + b"ok\n\xff\n")
    with pytest.raises(UsageError, match=f"line 3 \\(byte {len(head) + 3}\\) holds b'\\\\xff'"):
        list(open_text_stream(str(path)))
    # A character cut by the end of the file.
    path.write_bytes(b"ok\n" * 10 + "\u20ac".encode()[:2])
    with pytest.raises(UsageError, match="line 11 \\(byte 30\\) holds b'\\\\xe2\\\\x82'"):
        list(open_text_stream(str(path)))


def test_bad_bytes_at_the_start_are_found_up_front(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"\xe9t\xe9\nok\n")
    with pytest.raises(UsageError, match="line 1 \\(byte 0\\)"):
        open_text_stream(str(path))


def test_corrupt_parquet_row_group_is_a_usage_error(tmp_path):
    path = tmp_path / "c.parquet"
    texts = [f"row {i} " + "x" * 50 for i in range(2000)]
    pq.write_table(pa.table({"text": texts}), path, row_group_size=1000, compression="zstd")
    chunk = pq.ParquetFile(path).metadata.row_group(1).column(0)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data = bytearray(path.read_bytes())
    data[start + 20 : start + chunk.total_compressed_size - 5] = b"U" * (
        chunk.total_compressed_size - 25
    )
    path.write_bytes(bytes(data))
    rows = open_text_stream(str(path))
    assert [next(rows) for _ in range(1000)] == texts[:1000]
    with pytest.raises(UsageError, match="c.parquet: row group 1 cannot be read"):
        next(rows)


def test_text_column_does_not_apply_to_txt(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("one\ntwo\n", encoding="utf-8")
    with pytest.raises(FieldError, match="'body' does not apply to .*a.txt") as info:
        open_text_stream(str(txt), text_column="body")
    assert info.value.field == "text_column"
    with pytest.raises(FieldError, match="'text' does not apply"):
        check_text_source(str(txt), "text")  # given by the user: refused
    assert check_text_source(str(txt)) == [txt]
    # Reading with the default name (what callers that resolved the default pass) works.
    assert (
        list(open_text_stream(str(txt), "text"))
        == list(open_text_stream(str(txt)))
        == [
            "one",
            "two",
        ]
    )


def test_text_column_in_folders(tmp_path):
    only_txt = tmp_path / "only-txt"
    only_txt.mkdir()
    (only_txt / "a.txt").write_text("one\n", encoding="utf-8")
    with pytest.raises(FieldError, match="does not apply"):
        check_text_source(str(only_txt), "body")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a.txt").write_text("one\n", encoding="utf-8")
    (mixed / "b.jsonl").write_text('{"body": "two"}\n', encoding="utf-8")
    assert check_text_source(str(mixed), "body") == [mixed / "a.txt", mixed / "b.jsonl"]
    assert list(open_text_stream(str(mixed), "body")) == ["one", "two"]


def test_missing_column_names_the_field(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"body": ["x"]}), path)
    with pytest.raises(FieldError, match="has no column 'text'; its columns are body") as info:
        open_text_stream(str(path))
    assert info.value.field == "text_column"
    late = tmp_path / "late.jsonl"
    late.write_text('{"text": "a"}\n{"body": "b"}\n', encoding="utf-8")
    rows = open_text_stream(str(late))
    assert next(rows) == "a"
    with pytest.raises(FieldError, match="line 2 has no field 'text'; it has: body"):
        next(rows)


@pytest.mark.parametrize(
    ("dataset_id", "expected"),
    [
        ("./missing.txt", "no such file or folder"),
        ("missing.jsonl", "no such file or folder"),
        ("not a dataset id!", "not a Hugging Face hub id"),
        ("a/b/c", "not a Hugging Face hub id"),
    ],
)
def test_bad_sources_name_dataset_id(tmp_path, monkeypatch, dataset_id, expected):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FieldError, match=expected) as info:
        check_text_source(dataset_id)
    assert info.value.field == "dataset_id"


def test_offline_hub_dataset_is_refused_by_the_pre_check():
    with pytest.raises(UsageError, match="nonexistent-org/nope.*HF_HUB_OFFLINE"):
        check_text_source("nonexistent-org/nope")
    assert check_text_source("nonexistent-org/nope", probe_hub=False) is None


def test_batch_size_names_its_field():
    with pytest.raises(FieldError, match="must be at least 1, got 0") as info:
        next(batch_prompts(["a"], None, 0, 8))
    assert info.value.field == "batch_size"


def test_pre_check_is_torch_free(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("one\n", encoding="utf-8")
    code = (
        "import sys\n"
        "from sae_hacking.errors import FieldError\n"
        "from sae_hacking.data.streams import check_text_source\n"
        f"check_text_source({str(txt)!r})\n"
        "try:\n"
        f"    check_text_source({str(txt)!r}, 'body')\n"
        "except FieldError as err:\n"
        "    print(err.field)\n"
        "print(sorted(m for m in ('torch', 'datasets', 'pyarrow') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["text_column", "[]"]
