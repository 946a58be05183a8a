"""The CLI and the legacy script path, run as a user would (subprocesses)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sae_hacking.cli import main

REPO = Path(__file__).resolve().parents[2]
LEGACY_SCRIPT = REPO / "src" / "sae_hacking" / "train_topk_sae_toy.py"
LEGACY_FLAGS = [
    "--lr",
    "1e-4",
    "--sae-hidden-dim",
    "30",
    "--dataset-num-features",
    "30",
    "--batch-size",
    "100",
    "--hierarchical",
    "--perturbation_size",
    "0.4",
    "--model-dim",
    "50",
]


def run(args, cwd=REPO, timeout=240):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def cli(*args):
    return run([sys.executable, "-m", "sae_hacking.cli", *args])


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_legacy_command_verbatim_without_a_gpu_is_one_clear_line(tmp_path):
    proc = run(
        [
            sys.executable,
            str(LEGACY_SCRIPT),
            *LEGACY_FLAGS,
            "--cuda",
            "--output-dir",
            str(tmp_path / "run"),
        ]
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA GPU" in lines[0], proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_legacy_script_trains_with_the_legacy_flags(tmp_path):
    proc = run(
        [
            sys.executable,
            str(LEGACY_SCRIPT),
            *LEGACY_FLAGS,
            "--max-step",
            "300",
            "--eval-every",
            "100",
            "--no-plots",
            "--quiet",
            "--output-dir",
            str(tmp_path),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    assert "pair_detection_rate" in proc.stdout
    assert (tmp_path / "sae.safetensors").is_file()


@pytest.mark.slow
def test_every_legacy_flag_is_accepted():
    proc = run([sys.executable, str(LEGACY_SCRIPT), "--help"])
    assert proc.returncode == 0, proc.stderr
    # Each whole flag, so "--lr" is not found inside "--min-lr".
    flags = set(re.findall(r"--[\w-]+", proc.stdout))
    for flag in (
        "--cuda",
        "--sae-hidden-dim",
        "--dataset-num-features",
        "--max-step",
        "--lr",
        "--min-lr",
        "--hierarchical",
        "--handcode-sae",
        "--batch-size",
        "--seed",
        "--perturbation_size",
        "--model-dim",
        "--aux-loss-coeff",
        "--dataset-k",
        "--sae-k",
    ):
        assert flag in flags, flag


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--sae-hidden-dim", "0"], "--sae-hidden-dim must be positive"),
        (["--model-dim", "-3"], "--model-dim must be positive"),
        (["--batch-size", "0"], "--batch-size must be positive"),
        (["--sae-k", "31"], "--sae-k (31) must be at most --sae-hidden-dim (30)"),
        (["--dataset-k", "40"], "--dataset-k (40) must be at most --dataset-num-features (30)"),
        (["--lr", "0"], "--lr must be positive"),
        (["--handcode-sae"], "--handcode-sae needs the hierarchical SAE"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_bad_flags_give_one_clear_line_and_exit_2(tmp_path, capsys, flags, needle):
    code = main(["toy", *flags, "--output-dir", str(tmp_path / "run")])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_handcoded_run_from_the_cli_detects_every_pair(tmp_path):
    proc = cli(
        "toy",
        "--hierarchical",
        "--handcode-sae",
        "--max-step",
        "0",
        "--no-plots",
        "--quiet",
        "--output-dir",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert "pair_detection_rate              1.0000" in proc.stdout


@pytest.mark.slow
def test_toy_compare_writes_table_csv_and_plot(tmp_path):
    proc = cli(
        "toy-compare",
        "--seeds",
        "1",
        "2",
        "--max-step",
        "150",
        "--eval-every",
        "50",
        "--dataset-num-features",
        "6",
        "--sae-hidden-dim",
        "6",
        "--model-dim",
        "12",
        "--dataset-k",
        "2",
        "--sae-k",
        "2",
        "--quiet",
        "--output-dir",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert "| metric | flat TopK | hierarchical TopK | Matryoshka |" in proc.stdout
    for name in ("comparison.md", "comparison.csv", "comparison.json", "comparison.png"):
        assert (tmp_path / name).is_file(), name
    csv_rows = (tmp_path / "comparison.csv").read_text().splitlines()
    assert csv_rows[0] == "architecture,metric,mean,std"
    assert any(r.startswith("hierarchical,pair_detection_rate,") for r in csv_rows)
    assert len(list(tmp_path.glob("*-seed*"))) == 8  # 4 architectures x 2 seeds


@pytest.mark.slow
def test_help_starts_without_heavy_imports():
    code = (
        "import sys; from sae_hacking.cli import build_parser; build_parser(); "
        "print(','.join(m for m in ('torch', 'transformers', 'sae_lens', 'matplotlib') "
        "if m in sys.modules))"
    )
    proc = run([sys.executable, "-c", code])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_toy_compare_failing_start_leaves_no_folder(tmp_path, monkeypatch):
    from sae_hacking.toy import compare

    def fail(job):
        raise KeyboardInterrupt  # Ctrl-C in the first run

    monkeypatch.setattr(compare, "_train_one", fail)
    out = tmp_path / "cmp"
    argv = ["toy-compare", "--seeds", "1", "--max-step", "5", "--jobs", "1", "--quiet"]
    assert main([*argv, "--output-dir", str(out)]) == 130
    assert not out.exists()  # so the same command runs again
