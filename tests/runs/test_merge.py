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


def test_a_merge_of_some_shards_is_marked_partial_and_merges_on(tmp_path, small_chunks):
    import json

    from sae_hacking.runs.shards import check_all_shards

    paths = write_shards(tmp_path)
    _, sidecar = merge.merge_results(tmp_path / "some", [paths[0], paths[2]])
    meta = json.loads(sidecar.read_text())
    assert meta["partial"] is True and meta["complete"] is True
    assert meta["shards_present"] == {"present": [0, 2], "of": 3}
    with pytest.raises(UsageError, match=r"shards 0/3, 2/3 only \(2 of 3 .*`allow_partial`"):
        check_all_shards(meta, sidecar)
    check_all_shards(meta, sidecar, allow_partial=True)
    with ResultsFile(paths[1]) as lone, pytest.raises(UsageError, match="shard 1/3 only"):
        check_all_shards(lone.meta, paths[1])  # a lone shard is partial too
    # The missing shard merges in: the whole run, no longer partial.
    _, whole = merge.merge_results(tmp_path / "all", [tmp_path / "some.safetensors.zst", paths[1]])
    meta = json.loads(whole.read_text())
    assert meta["partial"] is False and meta["covers_all_rows"] is True
    assert meta["shards_present"] == {"present": [0, 1, 2], "of": 3}
    check_all_shards(meta, whole)


def test_the_command_takes_run_directories_sidecars_and_an_output_folder(tmp_path, capsys):
    import json

    from sae_hacking.cli import main
    from sae_hacking.errors import EXIT_USAGE

    paths = write_shards(tmp_path)
    inputs = []
    for i, path in enumerate(paths):  # a run directory, a sidecar, a results file
        run_dir = tmp_path / f"run{i}"
        run_dir.mkdir()
        for name in (path.name, path.name.replace(".safetensors.zst", ".json")):
            (path.parent / name).rename(run_dir / name.replace(f"shard{i}", "test"))
        inputs.append([run_dir, run_dir / "test.json", run_dir / "test.safetensors.zst"][i % 3])
    out = tmp_path / "merged"
    out.mkdir()
    assert main(["merge", str(out), *map(str, inputs)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["test.json", "test.safetensors.zst"]
    assert json.loads((out / "test.json").read_text())["partial"] is False
    assert capsys.readouterr().out.count("\n") == 1  # the paths written, no partial note
    # Two of three: written, with a note that the merge is partial.
    assert main(["merge", str(tmp_path / "two"), *map(str, inputs[:2])]) == 0
    assert "partial" in capsys.readouterr().out
    # A folder without results, one line.
    (tmp_path / "empty").mkdir()
    argv = ["merge", str(tmp_path / "x"), str(inputs[0]), str(tmp_path / "empty")]
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "empty: no results file there" in err[0], err
