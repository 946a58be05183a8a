"""Nothing a user does loses data: a command writes only into folders and files it created in
this run (unless told to resume), a resume that cannot apply changes nothing on disk, a start
that fails leaves nothing behind, and runs are identified by what their SAEs are."""

import json
import os
import shutil

import pytest

from sae_hacking.cli import main
from sae_hacking.errors import EXIT_USAGE
from sae_hacking.runs.results import ResultsFile, write_safetensors

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def files(tiny_model_path, random_sae_path, prompts_path):
    return {
        "model": str(tiny_model_path("gemma2")),
        "sae": str(random_sae_path(HOOK, 32, seed=3)),
        "other_sae": str(random_sae_path(HOOK, 32, seed=4)),
        "data": str(prompts_path(40, seed=2)),
    }


def cooc(files, out, *extra, n=8):
    argv = [
        "cooccurrences", "--model", files["model"], "--device", "cpu", "--quiet",
        "--ablator-sae-release", files["sae"], "--dataset-id", files["data"],
        "--max-tokens", "12", "--n-prompts", str(n), "--output-dir", str(out), *extra,
    ]  # fmt: skip
    return main(argv)


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_no_command_writes_into_a_folder_that_holds_anything(files, tmp_path, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "checkpoint.safetensors").write_bytes(b"someone else's")
    (busy / "args.yaml").write_text("mine: true\n")
    before = snapshot(busy)
    assert cooc(files, busy) == EXIT_USAGE
    assert main(["toy", "--max-step", "1", "--quiet", "--output-dir", str(busy)]) == EXIT_USAGE
    argv = ["toy-compare", "--seeds", "1", "--max-step", "1", "--quiet", "--output-dir", str(busy)]
    assert main(argv) == EXIT_USAGE
    assert "exists and is not empty" in capsys.readouterr().err
    assert snapshot(busy) == before
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert cooc(files, afile) == EXIT_USAGE
    assert "is a file" in capsys.readouterr().err
    assert cooc(files, "/proc/sae-hacking-test") == EXIT_USAGE
    assert "system folder" in capsys.readouterr().err


def test_merge_never_overwrites(files, tmp_path, capsys):
    for shard in ("0/2", "1/2"):
        assert cooc(files, tmp_path / shard.replace("/", "of"), "--shard", shard) == 0
    parts = [str(tmp_path / s / "cooccurrences.safetensors.zst") for s in ("0of2", "1of2")]
    (tmp_path / "taken.json").write_text("{}")
    before = snapshot(tmp_path)
    assert main(["merge", parts[0], *parts]) == EXIT_USAGE  # the output is an input
    assert "one of its inputs" in capsys.readouterr().err
    assert main(["merge", str(tmp_path / "taken"), *parts]) == EXIT_USAGE
    assert "never overwrites" in capsys.readouterr().err
    assert snapshot(tmp_path) == before
    assert main(["merge", str(tmp_path / "merged"), *parts]) == 0


def test_a_resume_that_cannot_apply_changes_nothing(files, tmp_path, capsys):
    run = tmp_path / "run"
    assert cooc(files, run) == 0
    before = snapshot(run)
    resume = ["cooccurrences", "--resume", str(run), "--quiet"]
    assert main([*resume, "--n-prompts", "20"]) == EXIT_USAGE
    assert "--n-prompts is 8 in the finished run" in capsys.readouterr().err
    assert main([*resume, "--max-tokens", "5"]) == EXIT_USAGE
    assert "--max-tokens-in-prompt is 12" in capsys.readouterr().err
    assert main(resume) == 0 and "complete" in capsys.readouterr().out
    assert snapshot(run) == before
    (run / "run.json").write_text('{"kind": "cooccurrences", "settings": [}')
    broken = snapshot(run)
    assert main(resume) == EXIT_USAGE
    assert "run.json is unreadable" in capsys.readouterr().err
    assert snapshot(run) == broken
    assert main(["ablate", "--resume", str(run)]) == EXIT_USAGE  # another kind of run


def test_a_failed_start_leaves_nothing(files, tmp_path, random_sae_path, capsys):
    narrow = random_sae_path(HOOK, 32, seed=3, d_in=48)
    out = tmp_path / "deep" / "run"
    assert cooc(files, out, "--ablator-sae-release", str(narrow)) == EXIT_USAGE
    assert "48-dimensional" in capsys.readouterr().err
    assert not (tmp_path / "deep").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cooc(files, empty, "--ablator-sae-release", str(narrow)) == EXIT_USAGE
    assert empty.is_dir() and not any(empty.iterdir())
    assert cooc(files, empty) == 0  # the corrected command is accepted


def test_runs_resume_from_anywhere_and_record_absolute_paths(files, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(files["data"], work / "prompts.txt")
    monkeypatch.chdir(work)
    assert cooc(files, "run", "--dataset-id", "prompts.txt", "--save-frequency", "2") == 0
    record = json.loads((work / "run" / "run.json").read_text())
    assert record["config"]["dataset_id"] == str(work / "prompts.txt")
    assert record["config"]["output_dir"] == str(work / "run")
    monkeypatch.chdir(tmp_path)
    # the same file, spelled absolutely, is no change
    resume = ["cooccurrences", "--resume", str(work / "run"), "--quiet"]
    assert main([*resume, "--dataset-id", str(work / "prompts.txt")]) == 0


def test_results_are_matched_by_sae_content_not_path_spelling(files, tmp_path, capsys):
    sae = tmp_path / "sae.safetensors"
    shutil.copy(files["sae"], sae)
    os.chdir(tmp_path)
    try:
        assert (
            cooc(
                files,
                tmp_path / "a",
                "--shard",
                "0/2",
                "--ablator-sae-release",
                "./sae.safetensors",
            )
            == 0
        )
        assert (
            cooc(
                files, tmp_path / "b", "--shard", "1/2", "--ablator-sae-release", "sae.safetensors"
            )
            == 0
        )
        parts = [str(tmp_path / s / "cooccurrences.safetensors.zst") for s in "ab"]
        assert main(["merge", str(tmp_path / "same"), *parts]) == 0
        shutil.copy(files["other_sae"], sae)  # other weights at the same path
        assert (
            cooc(
                files, tmp_path / "c", "--shard", "1/2", "--ablator-sae-release", "sae.safetensors"
            )
            == 0
        )
        other = str(tmp_path / "c" / "cooccurrences.safetensors.zst")
        assert main(["merge", str(tmp_path / "mixed"), parts[0], other]) == EXIT_USAGE
        assert "sae_fingerprint" in capsys.readouterr().err
    finally:
        os.chdir(os.path.dirname(__file__))


def test_unfinished_runs_are_not_taken_for_results(files, tmp_path, capsys):
    run = tmp_path / "run"
    assert cooc(files, run) == 0
    # What a killed run leaves: its checkpoint (the same tensors, marked incomplete), no results.
    with ResultsFile(run / "cooccurrences.safetensors.zst") as done:
        tensors = {key: done.read(key) for key in done.keys()}
        meta = {**done.meta, "complete": False}
    write_safetensors(run / "checkpoint.safetensors", tensors, meta, compress=False)
    (run / "cooccurrences.safetensors.zst").unlink()
    (run / "cooccurrences.json").unlink()
    assert main(["cooccurrences-show", str(run)]) == EXIT_USAGE
    assert "unfinished" in capsys.readouterr().err
    assert main(["cooccurrences-show", str(run / "checkpoint.safetensors")]) == EXIT_USAGE
    assert "checkpoint of an unfinished run" in capsys.readouterr().err
    with pytest.raises(SystemExit) as parse_error:  # argparse's own exit, with one line
        main(["cooccurrences-show", str(run), "--top", "-1"])
    assert parse_error.value.code == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--top" in err[0]


def test_toy_runs_resume_by_the_same_rule(tmp_path, capsys):
    run = tmp_path / "toy"
    small = ["--max-step", "20", "--eval-every", "10", "--checkpoint-every", "10", "--no-plots"]
    assert main(["toy", *small, "--quiet", "--output-dir", str(run)]) == 0
    record = json.loads((run / "run.json").read_text())
    assert record["kind"] == "toy" and record["config"]["max_step"] == 20
    before = snapshot(run)
    assert main(["toy", "--resume", str(run), "--lr", "0.1"]) == EXIT_USAGE
    assert "--lr is 0.0003 in the run being resumed" in capsys.readouterr().err
    assert main(["toy", "--resume", str(run), "--quiet"]) == 0  # complete: nothing to do
    assert snapshot(run) == before
    assert main(["toy", "--resume", str(run), "--max-step", "30", "--quiet"]) == 0
    assert json.loads((run / "run.json").read_text())["config"]["max_step"] == 30
    assert json.loads((run / "metrics.json").read_text())["step"] == 30
