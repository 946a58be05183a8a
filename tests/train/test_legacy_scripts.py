"""The legacy ``train_sae.py`` and ``train_topk_sae.py`` with their own flags, as a user runs
them (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "src" / "sae_hacking"
pytestmark = pytest.mark.slow


def script(name: str, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture
def local(tiny_model_path, prompts_path):
    return [
        "--model", str(tiny_model_path("gemma2")),
        "--dataset-id", str(prompts_path(60, seed=5)),
        "--max-tokens-in-prompt", "24",
        "--batch-tokens", "64",
        "--buffer-tokens", "256",
        "--eval-prompts", "4",
        "--quiet",
    ]  # fmt: skip


def test_help_as_the_legacy_readme_says():
    for name in ("train_sae.py", "train_topk_sae.py"):
        done = script(name, "-h")
        assert done.returncode == 0, done.stderr
        for flag in ("--sae_hidden_dim", "--max_step", "--only_count_tokens", "--cuda"):
            assert flag in done.stdout or flag.replace("_", "-") in done.stdout
    # The legacy defaults: TinyStories-33M at hidden_states[2], over TinyStories.
    done = script("train_topk_sae.py", "-h")
    for default in (
        "roneneldan/TinyStories-33M",
        "roneneldan/TinyStories",
        "blocks.1.hook_resid_post",
    ):
        assert default in done.stdout


def test_legacy_relu_script_trains_a_relu_sae(local, tmp_path):
    out = tmp_path / "relu"
    done = script(
        "train_sae.py", *local, "--sae_hidden_dim", "48", "--max_step", "6",
        "--l1_coefficient", "2.0", "--output-dir", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "run.json").read_text())["config"]["architecture"] == "relu"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 6
    assert (out / "saelens" / "cfg.json").is_file()


def test_legacy_topk_script_hierarchical_and_abridge(local, tmp_path):
    out = tmp_path / "hier"
    done = script(
        "train_topk_sae.py", *local, "--sae_hidden_dim", "16", "--k", "4", "--max_step", "4",
        "--hierarchical", "--abridge", "30", "--output-dir", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = json.loads((out / "run.json").read_text())["config"]
    assert (config["architecture"], config["n_prompts"]) == ("hierarchical", 30)
    assert not (out / "saelens").exists() and (out / "sae.safetensors").is_file()


def test_legacy_flags_count_tokens_and_cuda(local):
    done = script("train_topk_sae.py", *local, "--only_count_tokens", "--abridge", "10")
    assert done.returncode == 0, done.stderr
    assert "10 prompts" in done.stdout
    done = script("train_topk_sae.py", *local, "--cuda", "--max_step", "2")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "cuda" in done.stderr.lower()
