"""The CPU thread rule: all idle cores, fewer under load, the user's choice kept."""

import pytest
import torch

from sae_hacking import threads
from sae_hacking.threads import auto_threads, busy_cores, cpu_times, parse_quota, use_cpu_threads


@pytest.mark.parametrize(
    ("cpus", "load", "processes", "expected"),
    [
        (2, 0.0, 1, 2),  # idle: every core
        (2, 0.4, 1, 2),
        (2, 1.0, 1, 1),  # one core busy elsewhere
        (2, 7.5, 1, 1),  # overloaded: still one
        (16, 3.2, 1, 13),
        (16, 0.0, 4, 4),  # torchrun: the node's cores shared by its processes
        (16, 14.0, 4, 1),
    ],
)
def test_auto_threads(cpus, load, processes, expected):
    assert auto_threads(cpus, load, processes) == expected


def test_busy_cores_from_proc_stat():
    before = "cpu  1 1 1 1 1 1 1 1 0 0\ncpu0 100 0 0 100 0 0 0 0 0 0\ncpu1 50 0 0 150 0 0 0 0 0 0\n"
    # cpu0 fully busy for 100 ticks, cpu1 idle (iowait counts as idle); cpu2 is not ours.
    after = (
        "cpu0 180 0 20 100 0 0 0 0 0 0\ncpu1 50 0 0 230 20 0 0 0 0 0\n"
        "cpu2 900 0 0 0 0 0 0 0 0 0\nintr 5 6\n"
    )
    cpus = {0, 1}
    assert busy_cores(cpu_times(before, cpus), cpu_times(after, cpus)) == pytest.approx(1.0)
    assert set(cpu_times(after, {0, 1, 2})) == {0, 1, 2}


def test_cgroup_quota():
    assert parse_quota("max", "100000") is None and parse_quota("-1\n", "100000\n") is None
    assert parse_quota("150000", "100000") == 1.5  # docker run --cpus 1.5: two threads


@pytest.fixture
def restore_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setenv("NUMBA_NUM_THREADS", "1")  # set_env's setdefault must not leak
    yield
    torch.set_num_threads(before)


def test_use_cpu_threads_follows_the_load(monkeypatch, restore_threads):
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    monkeypatch.setattr(threads, "other_load", lambda: 1.2)
    assert use_cpu_threads() == 1 and torch.get_num_threads() == 1
    monkeypatch.setattr(threads, "other_load", lambda: 0.1)
    assert use_cpu_threads() == 2 and torch.get_num_threads() == 2
    assert use_cpu_threads(1) == 1 and torch.get_num_threads() == 1  # --threads 1


def test_omp_num_threads_is_the_users_choice(monkeypatch, restore_threads):
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(threads, "other_load", lambda: 0.0)
    monkeypatch.setattr(threads, "available_cpus", lambda: 8)
    assert use_cpu_threads() == 1 and torch.get_num_threads() == 1


def test_the_model_loads_with_the_chosen_threads(tiny_model_path, monkeypatch, restore_threads):
    from sae_hacking.lm.source import ModelSource

    ModelSource(str(tiny_model_path("gemma2")), device="cpu", threads=1).load()
    assert torch.get_num_threads() == 1


def test_results_do_not_depend_on_the_thread_count(
    tiny_model_path, prompts_path, tmp_path, restore_threads
):
    # Resume, shards and torchrun may run with other thread counts than the first process (the
    # rule follows the load), so exactness needs results that are the same for any count.
    from safetensors.torch import load_file

    from sae_hacking.config import from_flat
    from sae_hacking.train.config import TrainConfig
    from sae_hacking.train.run import run

    flat = {
        "model": str(tiny_model_path("gemma2")),
        "device": "cpu",
        "dataset_id": str(prompts_path(60, seed=5)),
        "max_tokens_in_prompt": 32,
        "hook": "blocks.1.hook_resid_post",
        "architecture": "topk",
        "sae_hidden_dim": 128,
        "k": 8,
        "max_step": 30,
        "batch_tokens": 128,
        "buffer_tokens": 512,
        "eval_prompts": 8,
        "eval_every": 15,
        "quiet": True,
    }
    saes = []
    for n in (1, 2):
        config = from_flat(
            TrainConfig, {**flat, "threads": n, "output_dir": str(tmp_path / f"t{n}")}
        )
        run_dir, metrics = run(config)
        saes.append((load_file(run_dir / "sae.safetensors"), metrics["fvu"]))
    (one, fvu_one), (two, fvu_two) = saes
    assert one.keys() == two.keys()
    for key in one:
        assert torch.equal(one[key], two[key]), key
    assert fvu_one == fvu_two
