"""Ablation sums at scale: summed on the device, written and loaded in row chunks, merged by
streaming; the host never holds the ``D x E`` matrix. Synthetic effects, no model: fast."""

import pytest
import torch

from sae_hacking.absorption.ablation import effects as ablation_effects
from sae_hacking.absorption.ablation.core import PromptEffects
from sae_hacking.absorption.ablation.effects import EffectSums, from_fixed, to_fixed
from sae_hacking.absorption.ablation.stream import merge_ablations
from sae_hacking.errors import UsageError
from sae_hacking.runs.results import (
    ResultsFile,
    StoredTensors,
    TensorStream,
    write_results,
    write_safetensors,
)
from sae_hacking.runs.stream import RESULTS_FORMAT

E = 40
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a GPU"))]  # fmt: skip


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Blocks of 4 rows and chunks of 3 rows, so every path crosses several of both."""
    monkeypatch.setattr(ablation_effects, "BLOCK_ROWS", 4)
    monkeypatch.setattr(ablation_effects, "WRITE_CHUNK_BYTES", 3 * 8 * E)


def prompts(n, seed, e=30, k=5, width=E, used_every=4):
    """Random prompts: ``k`` distinct latents of ``e`` each, sparse effects (as a JumpReLU
    reader gives), every ``used_every``-th prompt unused."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        if i % used_every == used_every - 1:
            out.append(
                PromptEffects(False, torch.zeros(0, dtype=torch.long), torch.zeros(0, width))
            )
            continue
        latents = torch.randperm(e, generator=gen)[:k]
        effects = torch.randn(k, width, generator=gen) * 3
        effects[torch.rand(k, width, generator=gen) > 0.2] = 0
        out.append(PromptEffects(True, latents, effects))
    return out


def reference(all_prompts, width=E):
    """The definition on the host: per latent, the sum of the rounded effects, and its count."""
    rows, counts = {}, {}
    for p in all_prompts:
        if not p.used:
            continue
        fixed = torch.round(p.effects_DE.double() * 2**24).long()
        for latent, row in zip(p.latents_D.tolist(), fixed, strict=True):
            rows[latent] = rows.get(latent, torch.zeros(width, dtype=torch.long)) + row
            counts[latent] = counts.get(latent, 0) + 1
    latents = sorted(rows)
    fixed_DE = torch.stack([rows[i] for i in latents])
    return {
        "latents_D": torch.tensor(latents),
        "effects_DE": (fixed_DE.double() / 2**24).float(),
        "effects_fixed_DE": fixed_DE,
        "ablation_counts_D": torch.tensor([counts[i] for i in latents]),
        "n_prompts": torch.tensor(sum(p.used for p in all_prompts)),
        "n_prompts_seen": torch.tensor(len(all_prompts)),
    }


def assert_equal(a, b):
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def data_bytes(path):
    """A results file's tensors as raw bytes (the header's metadata may differ)."""
    with ResultsFile(path) as f:
        return {k: f.read(k).view(-1).view(torch.uint8).numpy().tobytes() for k in f.keys()}


@pytest.mark.parametrize("device", DEVICES)
def test_device_sums_equal_the_host_definition_in_any_batching(device):
    ps = prompts(40, 0)
    one_by_one, batched = EffectSums(E, device), EffectSums(E, device)
    for p in reversed(ps):
        one_by_one.add(PromptEffects(p.used, p.latents_D, p.effects_DE.to(device)))
    for start in range(0, len(ps), 7):  # a latent may repeat within a batch
        batched.add_prompts(ps[start : start + 7])
    assert len({b.device.type for b in batched._blocks}) == 1
    assert batched._blocks[0].device.type == torch.device(device).type
    assert_equal(one_by_one.tensors(), reference(ps))
    assert_equal(batched.tensors(), reference(ps))


def test_streamed_files_equal_files_of_the_whole_tensors(tmp_path):
    sums = EffectSums(E)
    sums.add_prompts(prompts(40, 1))
    streams, whole = sums.streams(), sums.tensors()
    assert isinstance(streams["effects_fixed_DE"], TensorStream)
    for name in ("a.safetensors", "a.safetensors.zst"):  # checkpoint, results
        a = write_safetensors(tmp_path / f"streamed-{name}", streams, {"m": 1})
        b = write_safetensors(tmp_path / f"whole-{name}", whole, {"m": 1})
        assert a.read_bytes() == b.read_bytes()
    _, sidecar = write_results(tmp_path / "r", streams, {})
    assert '"shape": [' in sidecar.read_text()


def test_the_host_holds_one_chunk_of_sums_at_a_time(monkeypatch, tmp_path):
    """Every copy of sums to the host is one chunk (3 rows here), never the D x E matrix; adding
    prompts copies nothing."""
    pieces = []
    real = ablation_effects.to_host
    monkeypatch.setattr(ablation_effects, "to_host", lambda t: pieces.append(t.shape) or real(t))
    sums = EffectSums(E)
    sums.add_prompts(prompts(40, 2))
    assert pieces == []
    path = write_safetensors(tmp_path / "r.safetensors", sums.streams(), {})
    d = len(sums.row_of)
    assert d > 6
    assert max(shape.numel() for shape in pieces) == 3 * E < d * E
    assert sum(shape.numel() for shape in pieces) == 2 * d * E  # int64 sums and float32 sums
    with ResultsFile(path) as f:
        assert torch.equal(
            f.read("effects_fixed_DE"), reference(prompts(40, 2))["effects_fixed_DE"]
        )


def test_a_stored_checkpoint_loads_chunk_by_chunk(monkeypatch, tmp_path):
    sums = EffectSums(E)
    sums.add_prompts(prompts(40, 3))
    path = write_safetensors(tmp_path / "c.safetensors", sums.streams(with_floats=False), {})
    reads = []
    real = ResultsFile.read_range

    def spy(self, key, start, stop):
        reads.append((key, stop - start))
        return real(self, key, start, stop)

    monkeypatch.setattr(ResultsFile, "read_range", spy)
    loaded = EffectSums.from_tensors(StoredTensors(path))
    big = [n for key, n in reads if key == "effects_fixed_DE"]
    assert len(big) > 1 and max(big) == 3 * E
    assert_equal(loaded.tensors(), sums.tensors())
    loaded.add_prompts(prompts(8, 4))  # and continues exactly
    sums.add_prompts(prompts(8, 4))
    assert_equal(loaded.tensors(), sums.tensors())


def shard_file(tmp_path, name, all_prompts, index, count):
    sums = EffectSums(E)
    sums.add_prompts(all_prompts[index::count])
    meta = {
        "format": RESULTS_FORMAT,
        "kind": "ablations",
        "complete": True,
        "settings": {"model": "m"},
        "free_settings": [],
        "shards": [{"index": index, "count": count}],
        **{counter: 0 for counter in ("rows_done", "prompts_done", "tokens_done")},
    }
    return write_results(tmp_path / name, sums.streams(), meta)[0]


def test_merging_shards_streams_rows_and_is_exact(monkeypatch, tmp_path):
    ps = prompts(60, 5, e=40)
    shards = [shard_file(tmp_path, f"s{i}", ps, i, 3) for i in range(3)]
    reads = []
    real = ResultsFile.read_range
    monkeypatch.setattr(
        ResultsFile,
        "read_range",
        lambda self, key, a, b: reads.append((key, b - a)) or real(self, key, a, b),
    )
    out, _ = merge_ablations(tmp_path / "merged", [str(p) for p in shards])
    assert max(n for key, n in reads if key.startswith("effects_fixed")) <= 3 * E
    with ResultsFile(out) as f:
        merged = {key: f.read(key) for key in ablation_effects.RESULT_KEYS}
    assert_equal(merged, reference(ps))
    whole = EffectSums(E)
    whole.add_prompts(ps)
    single = write_results(tmp_path / "single", whole.streams(), {})[0]
    assert data_bytes(out) == data_bytes(single)


def test_a_shard_of_another_width_is_refused(tmp_path):
    ps = prompts(8, 6)
    a = shard_file(tmp_path, "a", ps, 0, 2)
    sums = EffectSums(E + 1)
    sums.add_prompts(prompts(8, 6, width=E + 1)[1::2])
    with ResultsFile(a) as f:
        meta = {**f.meta, "shards": [{"index": 1, "count": 2}]}
    b = write_results(tmp_path / "b", sums.streams(), meta)[0]
    with pytest.raises(UsageError, match="different numbers of reader latents"):
        merge_ablations(tmp_path / "m", [str(a), str(b)])


def test_non_finite_effects_are_refused_before_anything_is_added():
    sums = EffectSums(E)
    bad = prompts(4, 7)
    bad[1].effects_DE[0, 0] = float("nan")
    with pytest.raises(OverflowError):
        sums.add_prompts(bad)
    assert sums.n_prompts_seen == 0 and not sums.row_of
    assert torch.equal(
        from_fixed(to_fixed(torch.tensor([[0.5, -2.0]]))), torch.tensor([[0.5, -2.0]])
    )


def test_sums_live_on_the_gpu_only_where_they_fit(monkeypatch):
    from sae_hacking.absorption.ablation.effects import sums_device

    gpu, cpu = torch.device("cuda:0"), torch.device("cpu")
    gib = 2**30
    # A 24 GiB GPU with 18 GiB free: 34 GB of sums do not fit, 8 GB do.
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (18 * gib, 24 * gib))
    assert sums_device(gpu, "auto", 34 * 10**9) == cpu
    assert sums_device(gpu, "auto", 8 * 10**9) == gpu
    assert sums_device(gpu, "device", 34 * 10**9) == gpu
    assert sums_device(gpu, "host", 1) == cpu
    assert sums_device(cpu, "device", 1) == cpu
