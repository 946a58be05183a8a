"""A run's life across every command kind: a refused or failed resume writes nothing (run.json,
args.yaml and the checkpoint stay byte-identical), and a start that fails after its folder was
made removes what it made, so the corrected command runs in the same folder."""

import subprocess
import sys

import pytest

from sae_hacking.cli import main
from sae_hacking.errors import EXIT_USAGE, UsageError
from sae_hacking.runs.stream import StreamRun

ABLATOR_HOOK = "blocks.0.hook_resid_post"
READER_HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def files(tiny_model_path, random_sae_path, prompts_path, tmp_path_factory):
    good = prompts_path(40, seed=2)
    bad = tmp_path_factory.mktemp("lifecycle") / "bad.txt"
    lines = good.read_bytes().splitlines(keepends=True)
    bad.write_bytes(b"".join(lines[:5]) + b"caf\xe9\n" + b"".join(lines[5:]))  # not UTF-8
    return {
        "model": str(tiny_model_path("gemma2")),
        "ablator": str(random_sae_path(ABLATOR_HOOK, 32, seed=3)),
        "reader": str(random_sae_path(READER_HOOK, 40, seed=2)),
        "data": str(good),
        "bad_data": str(bad),
    }


def streamed(kind, files, out, *extra, data=None):
    argv = [
        kind, "--model", files["model"], "--device", "cpu", "--quiet",
        "--ablator-sae-release", files["ablator"], "--dataset-id", data or files["data"],
        "--max-tokens", "12", "--n-prompts", "8", "--batch-size", "2",
        "--output-dir", str(out), *extra,
    ]  # fmt: skip
    if kind == "ablate":
        argv += ["--reader-sae-release", files["reader"], "--abridge-ablations-to", "3"]
    return main(argv)


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("kind", ["cooccurrences", "ablate"])
def test_a_refused_or_failed_streamed_resume_writes_nothing(
    files, tmp_path, monkeypatch, capsys, kind
):
    run = tmp_path / "run"

    def killed(self, accumulator):  # a kill after the last checkpoint
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(StreamRun, "finish", killed)
        assert streamed(kind, files, run, "--save-frequency", "2") == 130
    assert (run / "checkpoint.safetensors").is_file()  # a run with a checkpoint is kept
    capsys.readouterr()
    resume = [kind, "--resume", str(run), "--quiet"]
    before = snapshot(run)
    assert main([*resume, "--max-tokens", "5"]) == EXIT_USAGE  # refused
    assert "--max-tokens-in-prompt is 12" in one_error_line(capsys)
    assert snapshot(run) == before
    good = (run / "checkpoint.safetensors").read_bytes()
    truncate(run / "checkpoint.safetensors")
    before = snapshot(run)
    assert main([*resume, "--batch-size", "4"]) == EXIT_USAGE  # failed: a setting that may change
    assert "checkpoint.safetensors is not a readable results file" in one_error_line(capsys)
    assert snapshot(run) == before
    (run / "checkpoint.safetensors").write_bytes(good)
    assert main([*resume, "--batch-size", "4"]) == 0  # resumed, and then recorded
    assert '"batch_size": 4' in (run / "run.json").read_text()


@pytest.mark.parametrize("kind", ["cooccurrences", "ablate"])
def test_a_streamed_start_that_fails_late_leaves_nothing(files, tmp_path, capsys, kind):
    """Undecodable bytes on row 6 are met after the run folder was made."""
    out = tmp_path / "deep" / "run"
    assert streamed(kind, files, out, data=files["bad_data"]) == EXIT_USAGE
    assert "holds b'\\xe9'" in one_error_line(capsys)
    assert not (tmp_path / "deep").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert streamed(kind, files, empty, data=files["bad_data"]) == EXIT_USAGE
    assert empty.is_dir() and not any(empty.iterdir())
    assert streamed(kind, files, empty) == 0  # the corrected command, in the same folder


TOY = ["toy", "--max-step", "20", "--eval-every", "10", "--checkpoint-every", "10", "--no-plots"]


def test_a_failed_toy_resume_writes_nothing(tmp_path, capsys):
    run = tmp_path / "toy"
    assert main([*TOY, "--quiet", "--output-dir", str(run)]) == 0
    resume = ["toy", "--resume", str(run), "--max-step", "30", "--quiet"]
    for name in ("checkpoint.trainer.pt", "checkpoint.safetensors"):
        good = (run / name).read_bytes()
        truncate(run / name)
        before = snapshot(run)
        capsys.readouterr()
        assert main(resume) == EXIT_USAGE
        line = one_error_line(capsys)
        assert str(run) in line and "checkpoint" in line, line
        assert snapshot(run) == before
        (run / name).write_bytes(good)
    assert main(resume) == 0


def test_a_toy_start_that_fails_before_its_first_checkpoint_leaves_nothing(
    tmp_path, monkeypatch, capsys
):
    from sae_hacking.toy.train import ToyTrainer

    def refused(self):
        raise UsageError("refused late")

    out = tmp_path / "toy"
    with monkeypatch.context() as patch:
        patch.setattr(ToyTrainer, "train", refused)
        assert main([*TOY, "--quiet", "--output-dir", str(out)]) == EXIT_USAGE
    assert one_error_line(capsys) == "error: refused late"
    assert not out.exists()
    assert main([*TOY, "--quiet", "--output-dir", str(out)]) == 0


@pytest.mark.parametrize("command", ["validate-absorption", "demo"])
def test_validate_refuses_a_prompt_without_room_before_torch(tmp_path, command):
    out = tmp_path / "v"
    code = (
        "import sys\n"
        "from sae_hacking.cli import main\n"
        f"code = main([{command!r}, '--max-tokens-in-prompt', '1', '--output-dir', {str(out)!r}])\n"
        "print(code, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: --max-tokens-in-prompt must be at least 2 (BOS + a token), got 1."
    ]
    assert not out.exists()


@pytest.mark.slow
def test_a_validate_run_that_fails_late_leaves_nothing(tmp_path, monkeypatch, capsys):
    from sae_hacking.absorption.pairs import run as pairs_run

    def refused(config):
        raise UsageError("refused at the pairs stage")

    out = tmp_path / "v"
    argv = ["validate-absorption", "--quick", "--quiet", "--output-dir", str(out)]
    with monkeypatch.context() as patch:
        patch.setattr(pairs_run, "run", refused)
        assert main(argv) == EXIT_USAGE
    assert one_error_line(capsys) == "error: refused at the pairs stage"
    assert not out.exists()
    assert main(argv) == 0


def test_a_malformed_sae_is_one_line_before_the_run_folder(files, tmp_path, capsys):
    from sae_hacking.saes.formats import save_saelens_folder
    from sae_hacking.saes.io import load_sae_checkpoint

    lens = tmp_path / "lens"
    save_saelens_folder(load_sae_checkpoint(files["ablator"]), lens)
    (lens / "cfg.json").write_text("{}")
    out = tmp_path / "run"
    assert streamed("cooccurrences", files, out, "--ablator-sae-release", str(lens)) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: {lens / 'cfg.json'} gives no SAE size: d_in"), line
    assert not out.exists()
