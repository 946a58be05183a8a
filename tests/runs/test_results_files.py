"""Results files: streamed safetensors(.zst) writing, partial reads, corrupt files, shards."""

import io

import pytest
import torch
import zstandard
from safetensors.torch import load as load_safetensors

import sae_hacking.runs.results as results
import sae_hacking.runs.zstd_frames as zstd_frames
from sae_hacking.errors import UsageError
from sae_hacking.runs.results import ResultsFile, read_meta, write_results, write_safetensors
from sae_hacking.runs.shards import Shard, covers_everything

TENSORS = {
    "counts_P": torch.arange(5000, dtype=torch.int32) * 7,
    "activations_e": torch.arange(13, dtype=torch.int64) - 4,
    "effects_DE": torch.randn(3, 11, generator=torch.Generator().manual_seed(0)),
    "flags_D": torch.tensor([True, False, True]),
    "half_D": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
}


@pytest.fixture(autouse=True)
def small_frames(monkeypatch):
    # many frames in a small file
    monkeypatch.setattr(zstd_frames, "FRAME_BYTES", 1024)
    monkeypatch.setattr(results, "FRAME_BYTES", 1024)


def decompress(path):
    reader = zstandard.ZstdDecompressor().stream_reader(
        io.BytesIO(path.read_bytes()), read_across_frames=True
    )
    return reader.read()


@pytest.mark.parametrize("name", ["r.safetensors.zst", "r.safetensors"])
def test_round_trip_and_partial_reads(tmp_path, name):
    path = write_safetensors(tmp_path / name, TENSORS, {"kind": "test", "n": 3})
    raw = decompress(path) if name.endswith(".zst") else path.read_bytes()
    standard = load_safetensors(raw)  # a standard safetensors file once decompressed
    assert all(torch.equal(standard[k], v) for k, v in TENSORS.items())
    with ResultsFile(path) as f:
        assert f.meta == {"kind": "test", "n": 3}
        assert set(f.keys()) == set(TENSORS)
        for key, value in TENSORS.items():
            assert f.shape(key) == tuple(value.shape) and f.dtype(key) == value.dtype
            assert torch.equal(f.read(key), value)
        counts = TENSORS["counts_P"]
        assert torch.equal(f.read_range("counts_P", 250, 1300), counts[250:1300])
        idx = torch.tensor([4999, 0, 256, 257, 4999, 1023])
        assert torch.equal(f.read_elements("counts_P", idx), counts[idx])
        assert torch.equal(f.read_elements("half_D", [1, 0]), TENSORS["half_D"][[1, 0]])
        with pytest.raises(UsageError, match="no tensor 'missing'"):
            f.read("missing")
        with pytest.raises(UsageError, match="element ids"):
            f.read_elements("counts_P", [5000])


def test_compressed_file_is_seekable_frames(tmp_path):
    path = write_safetensors(tmp_path / "r.safetensors.zst", TENSORS, {})
    with ResultsFile(path) as f:
        assert type(f.frames).__name__ == "SeekableFrames" and len(f.frames.starts) > 10


def test_file_without_seek_table_reads_by_streaming(tmp_path):
    path = write_safetensors(tmp_path / "r.safetensors.zst", TENSORS, {"a": 1})
    plain = tmp_path / "recompressed.safetensors.zst"
    plain.write_bytes(zstandard.ZstdCompressor().compress(decompress(path)))
    with ResultsFile(plain) as f:
        assert type(f.frames).__name__ == "StreamFrames"
        for key, value in TENSORS.items():
            assert torch.equal(f.read(key), value)
        assert torch.equal(f.read_elements("counts_P", [4000, 3]), TENSORS["counts_P"][[4000, 3]])


def test_sidecar(tmp_path):
    data, sidecar = write_results(tmp_path / "out", TENSORS, {"kind": "test"})
    assert data.name == "out.safetensors.zst" and sidecar.name == "out.json"
    meta = read_meta(sidecar)
    assert meta["kind"] == "test" and meta["file"] == data.name
    assert meta["tensors"]["counts_P"] == {"dtype": "I32", "shape": [5000]}
    assert read_meta(data) == {"kind": "test"}


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: b"not a results file at all",
        lambda b: b"",
        lambda b: b[:100] + bytes(len(b) - 100),  # zeroed after the first frame header
    ],
)
@pytest.mark.parametrize("name", ["r.safetensors.zst", "r.safetensors"])
def test_corrupt_files_are_usage_errors(tmp_path, damage, name):
    path = write_safetensors(tmp_path / name, TENSORS, {"kind": "test"})
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(UsageError, match=str(path.name)):
        with ResultsFile(path) as f:
            for key in f.keys():
                f.read(key)


def test_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="cannot be opened"):
        ResultsFile(tmp_path / "nope.safetensors.zst")


def test_shards():
    assert Shard.parse("1/4") == Shard(1, 4) and str(Shard(1, 4)) == "1/4"
    for bad in ("4/4", "x", "1/0", "-1/2", "1/2/3"):
        with pytest.raises(UsageError):
            Shard.parse(bad)
    assert [Shard(1, 3).source_row(k) for k in range(3)] == [1, 4, 7]
    assert (
        Shard(1, 3).n_rows(10) == 3 and Shard(0, 3).n_rows(10) == 4 and Shard(2, 3).n_rows(2) == 0
    )
    assert sum(Shard(i, 4).n_rows(11) for i in range(4)) == 11
    assert Shard(0, 2).overlaps(Shard(2, 4)) and not Shard(0, 2).overlaps(Shard(1, 4))
    assert covers_everything([Shard(0, 2), Shard(1, 4), Shard(3, 4)])
    assert not covers_everything([Shard(0, 2), Shard(1, 4)])


def streamed(tensor, pieces):
    """``tensor`` as a TensorStream of ``pieces`` row slices."""
    bounds = torch.linspace(0, tensor.shape[0], pieces + 1).long().tolist()
    return results.TensorStream(
        tensor.dtype,
        tuple(tensor.shape),
        lambda: (tensor[a:b] for a, b in zip(bounds, bounds[1:], strict=False)),
    )


@pytest.mark.parametrize("name", ["r.safetensors.zst", "r.safetensors"])
def test_a_tensor_stream_writes_the_file_of_its_tensor(tmp_path, name):
    big = torch.arange(3000, dtype=torch.int64).reshape(100, 30)  # frames cut pieces and rows
    whole = write_safetensors(tmp_path / f"whole-{name}", {**TENSORS, "big_DE": big}, {"a": 1})
    stream = {**TENSORS, "big_DE": streamed(big, 7)}
    path = write_safetensors(tmp_path / f"stream-{name}", stream, {"a": 1})
    assert path.read_bytes() == whole.read_bytes()
    with ResultsFile(path) as f:
        assert torch.equal(f.read("big_DE"), big)
    _, sidecar = write_results(tmp_path / "out", stream, {})
    assert read_meta(sidecar)["tensors"]["big_DE"] == {"dtype": "I64", "shape": [100, 30]}


def test_a_tensor_stream_of_the_wrong_length_writes_nothing(tmp_path):
    short = results.TensorStream(torch.int64, (4, 3), lambda: iter([torch.zeros(3, 3).long()]))
    with pytest.raises(ValueError, match="9 of its 12 elements"):
        write_safetensors(tmp_path / "r.safetensors.zst", {"x_DE": short}, {})
    long = results.TensorStream(torch.int64, (1, 3), lambda: iter([torch.zeros(2, 3).long()]))
    with pytest.raises(ValueError, match="more than"):
        write_safetensors(tmp_path / "r.safetensors.zst", {"x_DE": long}, {})
    assert list(tmp_path.iterdir()) == []


def test_stored_tensors_read_on_demand(tmp_path):
    path = write_safetensors(tmp_path / "r.safetensors", TENSORS, {})
    stored = results.StoredTensors(path)
    assert sorted(stored) == sorted(TENSORS) and len(stored) == len(TENSORS)
    assert torch.equal(stored["counts_P"], TENSORS["counts_P"])
    with stored.open() as f:
        assert f.read_range("counts_P", 10, 12).tolist() == [70, 77]
    with pytest.raises(KeyError):
        stored["nothing"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_gpu_tensor_is_written_frame_by_frame_as_on_the_cpu(tmp_path):
    cpu = write_safetensors(tmp_path / "cpu.safetensors.zst", TENSORS, {})
    on_gpu = {k: v.cuda() for k, v in TENSORS.items()}
    assert write_safetensors(tmp_path / "gpu.safetensors.zst", on_gpu, {}).read_bytes() == (
        cpu.read_bytes()
    )
