"""Resuming co-occurrence counts from a checkpoint: the counts are copied into the device
tensor a chunk at a time (the host never holds the triangle), exactly, in either dtype."""

import pytest
import torch

import sae_hacking.absorption.cooccurrence.accumulator as co
from sae_hacking.absorption.cooccurrence.accumulator import PairCounter
from sae_hacking.errors import UsageError
from sae_hacking.runs import results
from sae_hacking.runs.results import ResultsFile, StoredTensors, write_safetensors

E = 17  # 153 packed pairs
CHUNK = 10
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a GPU"))]  # fmt: skip


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(co, "LOAD_CHUNK", CHUNK)


@pytest.fixture
def reads(monkeypatch):
    """Every ranged read of a results file, as ``(key, elements)``."""
    seen = []
    real = ResultsFile.read_range

    def spy(self, key, start, stop):
        seen.append((key, stop - start))
        return real(self, key, start, stop)

    monkeypatch.setattr(ResultsFile, "read_range", spy)
    return seen


def active(n, seed, e=E):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, e, generator=gen) < 0.4


def counter_with(rows=None, device="cpu", seed=0):
    counter = PairCounter(E, rows=rows, device=device)
    counter.add_active(active(30, seed))
    return counter


def assert_same(a, b):
    assert a.tokens == b.tokens
    assert a.counts.dtype == b.counts.dtype and torch.equal(a.counts.cpu(), b.counts.cpu())
    assert torch.equal(a.activations_e.cpu(), b.activations_e.cpu())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rows", [None, [16, 2, 5]])
def test_a_stored_checkpoint_loads_chunk_by_chunk_into_the_counts(tmp_path, reads, device, rows):
    saved = counter_with(rows, device)
    path = write_safetensors(tmp_path / "c.safetensors", saved.state(), {}, compress=False)
    resumed = PairCounter(E, rows=rows, device=device)
    where = resumed.counts.data_ptr()
    resumed.load_state(StoredTensors(path))
    sizes = [n for key, n in reads if key == saved.key]
    assert len(sizes) > 2 and max(sizes) == CHUNK < saved.counts.numel()
    assert sum(sizes) == saved.counts.numel()  # each element read once
    assert resumed.counts.data_ptr() == where  # filled in place: no second triangle
    assert resumed.counts.device.type == torch.device(device).type
    assert_same(resumed, saved)
    for counter in (resumed, saved):  # and it continues exactly
        counter.add_active(active(25, 1))
    assert_same(resumed, saved)


def test_an_int64_checkpoint_loads_as_int64(tmp_path, reads, monkeypatch):
    monkeypatch.setattr(co, "INT32_MAX", 40)
    saved = counter_with()
    with pytest.warns(UserWarning, match="int64"):
        saved.add_active(active(20, 2))
    assert saved.counts.dtype == torch.int64
    path = write_safetensors(tmp_path / "c.safetensors", saved.state(), {}, compress=False)
    resumed = PairCounter(E)
    resumed.load_state(StoredTensors(path))
    assert max(n for key, n in reads if key == saved.key) == CHUNK
    assert_same(resumed, saved)


def test_whole_tensors_load_too():
    saved = counter_with()
    resumed = PairCounter(E)
    resumed.load_state({k: v.clone() for k, v in saved.state().items()})
    assert_same(resumed, saved)


def test_a_checkpoint_of_other_settings_is_refused_without_reading_it(tmp_path, reads):
    path = write_safetensors(tmp_path / "c.safetensors", counter_with().state(), {}, compress=False)
    stored = StoredTensors(path)
    assert "cooccurrences_P" in stored and "nothing" not in stored
    assert reads == []  # membership asks the header
    for counter in (PairCounter(E + 1), PairCounter(E, rows=[1])):
        with pytest.raises(UsageError, match="other settings"):
            counter.load_state(stored)
    # (The tests' beartype hook reads one value of each Mapping it checks: the first, small.)
    assert [key for key, _ in reads if key.startswith("cooccurrences")] == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_counts_reach_the_host_one_frame_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "FRAME_BYTES", 64)
    pieces = []
    real = results._host_bytes

    def spy(tensor):
        if tensor.device.type == "cpu":
            pieces.append(tensor.numel())
        return real(tensor)

    monkeypatch.setattr(results, "_host_bytes", spy)
    counter = counter_with(device="cuda")
    path = write_safetensors(tmp_path / "r.safetensors.zst", counter.state(), {})
    assert max(pieces) == 64 // 4 < counter.counts.numel()
    with ResultsFile(path) as f:
        assert torch.equal(f.read("cooccurrences_P"), counter.counts.cpu())
