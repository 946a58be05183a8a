"""``torchrun -m sae_hacking train`` with 2 gloo processes: data-parallel training (DDP), exact
resume under the same world size, and a clear refusal of another one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from sae_hacking.cli import main

pytestmark = pytest.mark.slow


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture(scope="module")
def base(tiny_model_path, prompts_path):
    return [
        "train", "--model", str(tiny_model_path("gemma2")),
        "--dataset-id", str(prompts_path(80, seed=13)), "--max-tokens", "32", "--batch-size", "4",
        "--sae-hidden-dim", "64", "--k", "8", "--batch-tokens", "64", "--buffer-tokens", "256",
        "--eval-prompts", "4", "--eval-every", "12", "--checkpoint-every", "6", "--log-every", "4",
        "--lr-decay", "constant", "--lr", "3e-3", "--device", "cpu", "--quiet",
    ]  # fmt: skip


def torchrun(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "-m", "sae_hacking", *args]
    return subprocess.run(command, env=env(), capture_output=True, text=True, timeout=300)


def test_two_ranks_train_and_resume_exactly(base, tmp_path, capsys):
    whole = tmp_path / "whole"
    done = torchrun(*base, "--max-step", "24", "--output-dir", str(whole))
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((whole / "run.json").read_text())["world_size"] == 2
    metrics = json.loads((whole / "metrics.json").read_text())
    assert metrics["step"] == 24 and metrics["fvu"] < 1
    train = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in train if r["split"] == "train"]
    assert losses[-1] < losses[0]

    parts = tmp_path / "parts"
    done = torchrun(*base, "--max-step", "12", "--output-dir", str(parts))
    assert done.returncode == 0, done.stdout + done.stderr
    done = torchrun(*base, "--resume", str(parts), "--max-step", "24")
    assert done.returncode == 0, done.stdout + done.stderr
    a, b = load_file(whole / "sae.safetensors"), load_file(parts / "sae.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)

    # One process cannot continue what two trained.
    assert main(["train", "--resume", str(parts), "--max-step", "30", "--quiet"]) == 2
    assert "trained by 2 processes" in capsys.readouterr().err
