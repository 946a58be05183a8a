"""Text streams (local files, hub datasets offline) and tokenised batches with their masks."""

import json
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from sae_hacking.data.text import (
    CHARS_PER_TOKEN,
    batch_prompts,
    encode_prefixes,
    open_text_stream,
    tokenize_prompts,
)
from sae_hacking.errors import UsageError
from sae_hacking.lm.tiny import generate_texts, train_tokenizer

TEXTS = generate_texts(23, seed=5, min_words=1, max_words=30)


@pytest.fixture(scope="module")
def gemma_tok():
    return train_tokenizer("gemma2", 400)


@pytest.fixture(scope="module")
def gpt2_tok():
    return train_tokenizer("gpt2", 400)


@pytest.mark.parametrize("name", ["gemma_tok", "gpt2_tok"])
def test_ragged_batch_masks_and_bos(request, name):
    tok = request.getfixturevalue(name)
    texts = ["Kalo mine.", "Ru", TEXTS[3] * 3, "Sa ti vo ze po"]
    batch = tokenize_prompts(tok, texts, max_tokens=12)
    plain = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    bos = tok.bos_token_id
    assert batch.input_ids_BS.shape == (4, min(12, max(len(p) + 1 for p in plain)))
    for i, ids in enumerate(plain):
        n = min(len(ids) + 1, 12)  # exactly one BOS, whoever added it, and the cut
        assert batch.input_ids_BS[i, :n].tolist() == [bos, *ids][:n]
        assert batch.attention_mask_BS[i].tolist() == [1] * n + [0] * (
            batch.input_ids_BS.shape[1] - n
        )
        assert batch.real_token_mask_BS[i].tolist() == [False] + [True] * (n - 1) + [False] * (
            batch.input_ids_BS.shape[1] - n
        )
        assert (batch.input_ids_BS[i, 1:n] != bos).all()
    assert batch.n_real_tokens == int(batch.attention_mask_BS.sum()) - 4


def test_without_bos_and_without_pad_token(gpt2_tok):
    batch = tokenize_prompts(gpt2_tok, ["Kalo mine.", "Ru"], max_tokens=8, prepend_bos=False)
    assert batch.input_ids_BS[0, 0] != gpt2_tok.bos_token_id
    assert batch.real_token_mask_BS.equal(batch.attention_mask_BS.bool())
    no_pad = train_tokenizer("gpt2", 400)
    no_pad.pad_token = None
    batch = tokenize_prompts(no_pad, ["Kalo mine ruta.", "Ru"], max_tokens=8)
    assert batch.input_ids_BS[1, -1] == no_pad.eos_token_id
    assert batch.attention_mask_BS[1, -1] == 0 and not batch.real_token_mask_BS[1, -1]
    no_bos = train_tokenizer("qwen2", 400)  # Qwen2 tokenizers name no BOS; <|endoftext|> is it
    no_bos.bos_token = None
    batch = tokenize_prompts(no_bos, ["Kalo mine."], max_tokens=8)
    assert batch.input_ids_BS[0, 0] == no_bos.convert_tokens_to_ids("<|endoftext|>")
    assert not batch.real_token_mask_BS[0, 0]


def test_max_tokens_must_leave_room(gpt2_tok):
    with pytest.raises(UsageError, match="`max_tokens_in_prompt`"):
        tokenize_prompts(gpt2_tok, ["x"], max_tokens=1)


def write_sources(folder):
    """The same 23 rows as .txt (with blank lines), .jsonl and a 4-row-group .parquet."""
    folder.mkdir()
    (folder / "a.txt").write_text("\n".join(t + "\n" for t in TEXTS[:5]), encoding="utf-8")
    with open(folder / "b.jsonl", "w", encoding="utf-8") as handle:
        for text in TEXTS[5:12]:
            handle.write(json.dumps({"text": text, "meta": 1}) + "\n")
    pq.write_table(
        pa.table({"text": TEXTS[12:], "n": list(range(11))}), folder / "c.parquet", row_group_size=3
    )
    (folder / "notes.md").write_text("ignored", encoding="utf-8")
    return folder


def test_local_sources_read_in_order_and_skip_exactly(tmp_path):
    folder = write_sources(tmp_path / "corpus")
    assert list(open_text_stream(str(folder))) == TEXTS
    assert list(open_text_stream(str(folder / "a.txt"))) == TEXTS[:5]
    assert list(open_text_stream(str(folder / "b.jsonl"))) == TEXTS[5:12]
    assert list(open_text_stream(str(folder / "c.parquet"))) == TEXTS[12:]
    for skip in range(len(TEXTS) + 2):
        assert list(open_text_stream(str(folder), skip=skip)) == TEXTS[skip:], skip
    for skip in range(12):
        assert list(open_text_stream(str(folder / "c.parquet"), skip=skip)) == TEXTS[12 + skip :]


def test_other_text_column(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"body": "one"}\n\n{"body": "two"}\n', encoding="utf-8")
    assert list(open_text_stream(str(path), text_column="body")) == ["one", "two"]


def test_batches_resume_where_they_stopped(tmp_path, gpt2_tok):
    rows = ["alpha", "", "beta", "gamma", "   ", "delta", "eps", "zeta"]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps({"text": r}) + "\n" for r in rows), encoding="utf-8")
    batches = list(batch_prompts(open_text_stream(str(path)), gpt2_tok, 2, 8))
    assert [b.texts for b in batches] == [["alpha", "beta"], ["gamma", "delta"], ["eps", "zeta"]]
    assert [(b.first_row, b.next_row) for b in batches] == [(0, 3), (3, 6), (6, 8)]
    resumed = batch_prompts(open_text_stream(str(path), skip=3), gpt2_tok, 2, 8, start_row=3)
    again = list(resumed)
    assert [b.texts for b in again] == [b.texts for b in batches[1:]]
    assert all(
        a.input_ids_BS.equal(b.input_ids_BS) for a, b in zip(again, batches[1:], strict=True)
    )
    limited = list(batch_prompts(open_text_stream(str(path)), gpt2_tok, 2, 8, n_rows=4))
    assert [b.texts for b in limited] == [["alpha", "beta"], ["gamma"]]
    assert limited[-1].next_row == 4


def test_shard_batches_skip_and_split(tmp_path, gpt2_tok):
    """A run's batches: the first ``n`` rows, resumed after ``rows_done`` rows of its shard."""
    from sae_hacking.runs.shards import Shard
    from sae_hacking.runs.stream import shard_batches

    path = tmp_path / "c.txt"
    path.write_text("\n".join(f"Kalo mine {i}." for i in range(9)), encoding="utf-8")

    def texts(**kwargs):
        batches = list(shard_batches(str(path), "text", gpt2_tok, 3, 5, 7, **kwargs))
        return [b.texts for b in batches], [(b.first_row, b.next_row) for b in batches]

    rows = [f"Kalo mine {i}." for i in range(9)]
    assert texts() == ([rows[0:3], rows[3:6], rows[6:7]], [(0, 3), (3, 6), (6, 7)])
    assert texts(rows_done=2) == ([rows[2:5], rows[5:7]], [(2, 5), (5, 7)])
    # shard 1/2 owns source rows 1, 3, 5 of the first 7; its rows count from 0
    assert texts(shard=Shard(1, 2)) == ([rows[1:6:2]], [(0, 3)])
    assert texts(shard=Shard(1, 2), rows_done=1) == ([rows[3:6:2]], [(1, 3)])


def test_stream_errors(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        open_text_stream(str(tmp_path / "missing.jsonl"))
    (tmp_path / "x.csv").write_text("a,b", encoding="utf-8")
    with pytest.raises(UsageError, match="expected one of .txt, .jsonl, .parquet"):
        open_text_stream(str(tmp_path / "x.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no .txt, .jsonl, .parquet files"):
        open_text_stream(str(tmp_path / "empty"))
    (tmp_path / "bad.jsonl").write_text('{"body": "x"}\n', encoding="utf-8")
    with pytest.raises(UsageError, match="no field 'text'.*it has: body"):
        open_text_stream(str(tmp_path / "bad.jsonl"))
    (tmp_path / "broken.jsonl").write_text('{"text": "x"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(UsageError, match="line 2 is not valid JSON"):
        list(open_text_stream(str(tmp_path / "broken.jsonl")))
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "p.parquet")
    with pytest.raises(UsageError, match="no column 'text'.*body"):
        open_text_stream(str(tmp_path / "p.parquet"))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(UsageError, match="cannot be read as parquet"):
        open_text_stream(str(tmp_path / "junk.parquet"))


def test_hub_dataset_offline_fails_fast(network_attempts):
    start = time.monotonic()
    with pytest.raises(UsageError, match="`dataset_id` nonexistent-org/nope.*local .txt"):
        open_text_stream("nonexistent-org/nope")
    # No connection at all in offline mode (retries would show up as attempts); the generous
    # time bound only catches a hang.
    assert network_attempts == [] and time.monotonic() - start < 60


def test_tokenised_batches_are_deterministic(tmp_path, gemma_tok):
    folder = write_sources(tmp_path / "corpus")
    first = list(batch_prompts(open_text_stream(str(folder)), gemma_tok, 4, 16))
    second = list(batch_prompts(open_text_stream(str(folder)), gemma_tok, 4, 16))
    assert len(first) == 6
    assert all(
        torch.equal(a.input_ids_BS, b.input_ids_BS) for a, b in zip(first, second, strict=True)
    )


@pytest.mark.parametrize("name", ["gemma_tok", "gpt2_tok"])
def test_long_documents_tokenise_like_the_whole_text(request, name):
    """Only a prefix of a long document is tokenised; its first max_tokens tokens must be the
    whole document's, wherever the cut falls (also inside a word or a run of spaces)."""
    tok = request.getfixturevalue(name)
    words = " ".join(generate_texts(400, seed=8))
    docs = [words, words.replace(" ", "   "), "x" * 5000 + " " + words, words[7:]]
    for max_tokens in (5, 37, 100):
        budget_docs = [d for d in docs if len(d) > CHARS_PER_TOKEN * (max_tokens + 16)]
        assert budget_docs, "the test must cut documents"
        got = encode_prefixes(tok, budget_docs, max_tokens)
        for doc, ids in zip(budget_docs, got, strict=True):
            assert ids[:max_tokens] == tok(doc)["input_ids"][:max_tokens]


def test_prefix_too_short_falls_back_to_the_whole_text(gpt2_tok, monkeypatch):
    import sae_hacking.data.text as text

    monkeypatch.setattr(text, "CHARS_PER_TOKEN", 1)  # a prefix of max_tokens + 16 characters
    doc = " ".join(generate_texts(50, seed=9))
    whole = gpt2_tok(doc)["input_ids"]
    assert len(gpt2_tok(doc[: 40 + 16])["input_ids"]) < 40 + 16  # so the fallback must run
    assert text.encode_prefixes(gpt2_tok, [doc], 40)[0] == whole


def test_length_sorted_batches_keep_every_prompt_and_drop_only_padding(gemma_tok):
    from sae_hacking.data.text import length_sorted

    texts = generate_texts(7, seed=2, min_words=1, max_words=12)
    whole = tokenize_prompts(gemma_tok, texts, 16)
    parts = length_sorted(whole, 3)
    assert [len(p.texts) for p in parts] == [3, 3, 1]
    assert sorted(t for p in parts for t in p.texts) == sorted(texts)
    for part in parts:
        lengths = part.attention_mask_BS.sum(1)
        assert part.input_ids_BS.shape[1] == int(lengths.max())  # trimmed to its longest
        for row, text in enumerate(part.texts):
            i = texts.index(text)
            n = int(lengths[row])
            assert torch.equal(part.input_ids_BS[row, :n], whole.input_ids_BS[i, :n])
            width = part.input_ids_BS.shape[1]
            assert torch.equal(part.real_token_mask_BS[row], whole.real_token_mask_BS[i, :width])
    assert sum(int(p.attention_mask_BS.sum()) for p in parts) == int(whole.attention_mask_BS.sum())
