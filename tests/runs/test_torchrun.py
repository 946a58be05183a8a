"""``torchrun -m sae_hacking cooccurrences|ablate`` with 2 gloo processes on the CPU: results
bit-identical to one process, a killed job resumed by rerunning the same command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sae_hacking.runs.distributed import RANKS_DIR, Ranks, ranks_from_env
from sae_hacking.runs.results import ResultsFile

pytestmark = pytest.mark.slow
N_PROMPTS = 40


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_path, prompts_path, random_sae_path):
    return {
        "model": str(tiny_model_path("gemma2")),
        "prompts": str(prompts_path(N_PROMPTS + 4, seed=11)),
        "ablator": str(random_sae_path("blocks.0.hook_mlp_out", 48)),
        "reader": str(random_sae_path("blocks.1.hook_resid_post", 40, seed=2)),
        "root": tmp_path_factory.mktemp("torchrun"),
    }


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def argv(command: str, setup: dict, out: Path, *extra: str) -> list[str]:
    args = [command, "--model", setup["model"], "--dataset-id", setup["prompts"]]
    args += ["--n-prompts", str(N_PROMPTS), "--max-tokens", "16", "--batch-size", "2"]
    args += ["--ablator-sae-release", setup["ablator"], "--device", "cpu", "--quiet"]
    if command == "ablate":
        args += ["--reader-sae-release", setup["reader"], "--abridge-ablations-to", "3"]
    else:  # one prompt per batch: each activation, so the evidence, is bit-identical to 1 process
        args += ["--batch-size", "1"]
    return [*args, "--output-dir", str(out), *extra]


def torchrun(args: list[str], script: Path | None = None) -> subprocess.Popen:
    """``torchrun -m sae_hacking ARGS`` with 2 ranks, or ``script ARGS`` in place of the module."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    command += ["--standalone", *([str(script)] if script else ["-m", "sae_hacking"]), *args]
    return subprocess.Popen(
        command, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def single(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sae_hacking", *args], env=env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def same_tensors(a: Path, b: Path) -> None:
    with ResultsFile(a) as fa, ResultsFile(b) as fb:
        assert fa.keys() == fb.keys()
        for key in fa.keys():
            assert torch.equal(fa.read(key), fb.read(key)), key


@pytest.mark.parametrize(
    ("command", "name"), [("cooccurrences", "cooccurrences"), ("ablate", "ablations")]
)
def test_two_ranks_equal_one_process(setup, command, name):
    root = setup["root"]
    single(argv(command, setup, root / f"{command}-single"))
    out = root / f"{command}-ranks"
    job = torchrun(argv(command, setup, out))
    log = job.communicate(timeout=300)[0]
    assert job.returncode == 0, log
    # Only the merged results' path is printed, not the ranks' shards.
    assert f"into {out / name}.safetensors.zst" in log and f"/{RANKS_DIR}/rank-" not in log, log
    assert {p.name for p in out.iterdir()} == {
        "args.yaml",
        f"{name}.json",
        f"{name}.safetensors.zst",
        "run.json",
    }
    same_tensors(
        root / f"{command}-single" / f"{name}.safetensors.zst", out / f"{name}.safetensors.zst"
    )
    # The same command again: the run is complete, nothing changes.
    again = torchrun(argv(command, setup, out))
    assert again.wait(timeout=300) == 0


def test_a_killed_rank_resumes_with_the_same_command(setup):
    root = setup["root"]
    single(argv("cooccurrences", setup, root / "kill-single"))
    out = root / "kill-ranks"
    args = argv("cooccurrences", setup, out, "--save-frequency", "2")
    # Rank 1 dies by SIGKILL right after its first checkpoint (the script's patch), so the kill
    # always lands mid-run: no timing guess, no run that finishes first.
    job = torchrun(args, script=Path(__file__).with_name("killed_after_checkpoint.py"))
    log = job.communicate(timeout=300)[0]
    assert job.returncode != 0, log
    # torchrun's failure summary: rank 1 ended by signal 9.
    assert re.search(r"rank +: 1 .*\n +exitcode +: -9 ", log), log
    assert (out / RANKS_DIR / "rank-1" / "checkpoint.safetensors").is_file()
    assert not (out / "cooccurrences.safetensors.zst").exists()
    rerun = torchrun(args)
    log = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, log
    assert "resuming after" in log
    same_tensors(
        root / "kill-single" / "cooccurrences.safetensors.zst",
        out / "cooccurrences.safetensors.zst",
    )


def test_torchrun_refuses_shard_and_single_process_resume(setup, capsys):
    from sae_hacking.cli import main

    out = setup["root"] / "refuse"
    (out / RANKS_DIR).mkdir(parents=True)
    (out / "run.json").write_text('{"kind": "cooccurrences", "config": {}, "world_size": 2}')
    assert main(["cooccurrences", "--resume", str(out)]) == 2
    assert "started under torchrun with 2 ranks" in capsys.readouterr().err


def test_a_refused_start_prints_one_line_and_ranks_exit_2(setup):
    busy = setup["root"] / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    job = torchrun(argv("cooccurrences", setup, busy))
    log = job.communicate(timeout=300)[0]
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert errors == [f"error: --output-dir {busy} exists and is not empty; choose a new folder."]
    # What torchrun adds: its ChildFailedError summary, naming rank 0 as the root cause.
    assert job.returncode == 1 and "ChildFailedError" in log
    root_cause = log[log.index("Root Cause") :]
    assert "rank      : 0" in root_cause and "exitcode  : 2" in root_cause, log
    assert os.listdir(busy) == ["notes.txt"]


def test_a_start_that_fails_on_every_rank_leaves_nothing(setup, random_sae_path):
    narrow = random_sae_path("blocks.0.hook_mlp_out", 48, d_in=48)  # the model's width is 64
    out = setup["root"] / "narrow" / "run"
    job = torchrun(argv("cooccurrences", setup, out, "--ablator-sae-release", str(narrow)))
    log = job.communicate(timeout=300)[0]
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "48-dimensional" in errors[0], log
    assert job.returncode == 1 and not (setup["root"] / "narrow").exists()


def _decide_for(folder: Path, resume: bool = False) -> dict:
    from types import SimpleNamespace

    from sae_hacking.runs.distributed import _decide

    run = SimpleNamespace(resume=str(folder) if resume else None, output_dir=str(folder))
    outputs = ("cooccurrences.safetensors.zst", "cooccurrences.json")
    return _decide(SimpleNamespace(run=run), "cooccurrences", "co", outputs, 2)


def test_torchrun_into_a_one_process_run_or_a_user_folder(tmp_path):
    from sae_hacking.errors import FieldError

    single = tmp_path / "single"  # what a one-process run leaves
    single.mkdir()
    for name in ("cooccurrences.safetensors.zst", "cooccurrences.json"):
        (single / name).write_bytes(b"")
    (single / "run.json").write_text('{"kind": "cooccurrences", "config": {}, "outputs": []}')
    mine = tmp_path / "mine"  # the user's folder that happens to hold a ranks/ folder
    (mine / RANKS_DIR).mkdir(parents=True)
    for folder in (single, mine):
        with pytest.raises(FieldError) as refused:
            _decide_for(folder)
        assert refused.value.field == "output_dir"
        assert "exists and is not empty" in str(refused.value)
    with pytest.raises(FieldError) as refused:
        _decide_for(single, resume=True)
    assert refused.value.field == "resume" and "not started under torchrun" in str(refused.value)


def test_other_ranks_print_only_errors_about_their_own_files(monkeypatch):
    from sae_hacking.runs.distributed import shown_on_this_rank

    assert shown_on_this_rank("anything")  # no torchrun
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert shown_on_this_rank("anything")
    monkeypatch.setenv("RANK", "1")
    assert not shown_on_this_rank("--output-dir /x exists and is not empty")
    assert shown_on_this_rank("/x/ranks/rank-1/checkpoint.safetensors is truncated")
    assert not shown_on_this_rank("/x/ranks/rank-0/checkpoint.safetensors is truncated")


def test_ranks_from_env():
    assert ranks_from_env({}) is None
    assert ranks_from_env({"WORLD_SIZE": "1", "RANK": "0"}) is None
    assert ranks_from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == Ranks(3, 4, 1)
