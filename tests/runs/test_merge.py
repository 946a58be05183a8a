"""``merge_results`` streams: every output tensor is summed and written a chunk at a time, and
the files are byte for byte those of the whole-tensor merge it replaced (kept below as the
oracle), int32 -> int64 promotion included."""

import pytest
import torch

from sae_hacking.errors import UsageError
from sae_hacking.runs import merge, results
from sae_hacking.runs.record import check_merge_output
from sae_hacking.runs.results import ResultsFile, write_results
from sae_hacking.runs.stream import RESULTS_FORMAT

CHUNK = 7
BIG = 800_000_000  # three of these overflow int32, two do not


@pytest.fixture(autouse=True)
def fixed_provenance(monkeypatch):
    monkeypatch.setattr(merge, "provenance", lambda: {"time": "fixed"})


def old_merge(out, paths, chunk=5):
    """The merge before it streamed: whole tensors on the host, int32 promoted on overflow."""

    def sum_into(out, f, key):
        for start, piece in f.iter_ranges(key, chunk):
            stop = start + piece.numel()
            if out.dtype == torch.int32:
                total = out[start:stop].long() + piece.long()
                if total.numel() and int(total.max()) > merge.INT32_MAX:
                    out = out.long()
                    out[start:stop] = total
                    continue
                out[start:stop] = total.int()
            else:
                out[start:stop] += piece.to(out.dtype)
        return out

    stem = check_merge_output(out, paths)
    files = [ResultsFile(p) for p in paths]
    try:
        shards = merge.check_compatible(files)
        first = files[0]
        same = set(first.meta.get("same_tensors", ()))
        tensors = {}
        for key in first.keys():
            value = first.read(key).reshape(-1)
            for f in files[1:]:
                if key in same:
                    if not torch.equal(f.read(key).reshape(-1), value):
                        raise UsageError(f"{key!r} differs")
                else:
                    value = sum_into(value, f, key)
            tensors[key] = value.reshape(first.shape(key))
        meta = merge.merged_meta([f.meta for f in files], paths, shards)
    finally:
        for f in files:
            f.close()
    return write_results(stem, tensors, meta)


def shard_tensors(i, n, overflow):
    gen = torch.Generator().manual_seed(i)
    big_P = torch.randint(0, 1000, (50,), generator=gen, dtype=torch.int32)
    swing_D = torch.zeros(4, dtype=torch.int32)
    if overflow:  # element 40 overflows at the last file only: a late chunk of a late file
        big_P[38:45] += BIG
        # a running sum above int32 that comes back: promoted all the same, as it always was
        swing_D[2] = (1_500_000_000, 1_000_000_000, -2_000_000_000)[i]
    return {
        "swing_D": swing_D,
        "counts_P": torch.randint(0, 10**6, (50,), generator=gen, dtype=torch.int32),
        "big_P": big_P,
        "signed_D": torch.randint(-(2**29), 2**29, (3, 11), generator=gen, dtype=torch.int32),
        "activations_e": torch.randint(0, 2**40, (13,), generator=gen),
        "effects_DE": torch.randn(5, 9, generator=gen) * 10 ** torch.randn(5, 9, generator=gen),
        "half_D": torch.randn(17, generator=gen).bfloat16(),
        "rows_D": torch.tensor([4, 1, 9]),
        "tokens_1": torch.tensor([100 + i]),
        "n_prompts": torch.tensor(7 + i),
        "empty_N": torch.zeros(0),
    }


def write_shards(folder, n=3, overflow=False, **changed):
    """``n`` shard results of :func:`shard_tensors`; ``changed``: ``{key: tensor}`` in the last."""
    paths = []
    for i in range(n):
        tensors = shard_tensors(i, n, overflow)
        if i == n - 1:
            tensors.update(changed)
        meta = {
            "format": RESULTS_FORMAT,
            "complete": True,
            "kind": "test",
            "settings": {"model": "m", "batch_size": i + 1},
            "free_settings": ["batch_size"],
            "shards": [{"index": i, "count": n}],
            "same_tensors": ["rows_D"],
            "rows_done": 3 + i,
            "prompts_done": 2 + i,
            "tokens_done": 100 + i,
        }
        paths.append(write_results(folder / f"shard{i}", tensors, meta)[0])
    return paths


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(merge, "CHUNK", CHUNK)


@pytest.mark.parametrize("overflow", [False, True])
def test_the_files_equal_the_whole_tensor_merge_byte_for_byte(tmp_path, small_chunks, overflow):
    paths = write_shards(tmp_path, overflow=overflow)
    old = old_merge(tmp_path / "old" / "merged", paths)
    new = merge.merge_results(tmp_path / "new" / "merged", paths)
    for a, b in zip(old, new, strict=True):
        assert a.read_bytes() == b.read_bytes()
    with ResultsFile(new[0]) as f:
        assert f.dtype("big_P") == (torch.int64 if overflow else torch.int32)
        assert f.dtype("swing_D") == f.dtype("big_P")
        assert f.dtype("counts_P") == f.dtype("signed_D") == torch.int32
        assert int(f.read("big_P")[40]) == sum(int(shard_tensors(i, 3, overflow)["big_P"][40])
                                              for i in range(3))  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == [
        "merged.json",
        "merged.safetensors.zst",
    ]  # the int32 attempt left nothing behind


def test_two_shards_below_the_limit_stay_int32(tmp_path, small_chunks):
    paths = write_shards(tmp_path, overflow=True)[:2]
    new = merge.merge_results(tmp_path / "merged", paths)
    with ResultsFile(new[0]) as f:
        assert f.dtype("big_P") == torch.int32
        assert int(f.read("big_P")[40]) > 2 * BIG


def test_the_host_holds_one_chunk_at_a_time(tmp_path, small_chunks, monkeypatch):
    """Every read of an input and every piece written is one chunk, never a whole tensor."""
    paths = write_shards(tmp_path, overflow=True)
    reads, pieces = [], []
    real_read, real_bytes = ResultsFile.read_range, results._host_bytes

    def spy_read(self, key, start, stop):
        reads.append(stop - start)
        return real_read(self, key, start, stop)

    monkeypatch.setattr(ResultsFile, "read_range", spy_read)
    monkeypatch.setattr(results, "_host_bytes", lambda t: pieces.append(t.numel()) or real_bytes(t))
    merge.merge_results(tmp_path / "merged", paths)
    assert max(reads) == max(pieces) == CHUNK
    assert len(pieces) > 2 * 50 // CHUNK


def test_shards_that_differ_in_a_same_tensor_are_refused(tmp_path, small_chunks):
    paths = write_shards(tmp_path, rows_D=torch.tensor([4, 1, 8]))
    with pytest.raises(UsageError, match="differ in 'rows_D'"):
        merge.merge_results(tmp_path / "out" / "merged", paths)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_an_int32_sum_below_the_range_is_promoted_too(tmp_path, small_chunks):
    """(The whole-tensor merge wrapped it around silently.)"""
    low = torch.full((3, 11), -(2**31) + 5, dtype=torch.int32)
    paths = write_shards(tmp_path, n=2, signed_D=low)
    new = merge.merge_results(tmp_path / "merged", paths)
    with ResultsFile(new[0]) as f:
        assert f.dtype("signed_D") == torch.int64
        first = shard_tensors(0, 2, False)["signed_D"]
        assert torch.equal(f.read("signed_D"), first.long() + low.long())
        assert int(f.read("signed_D").min()) < -(2**31)
