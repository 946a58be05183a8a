"""``sae-hacking train`` when things go wrong: a run whose loss or weights stop being finite stops
with one line and never saves a NaN; a refused or failed resume writes nothing; bad caches and
settings are refused before the model loads; a failed start leaves no folder behind; the
warnings, the ``--n-prompts`` help and the summary's notes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sae_hacking.cli import main
from sae_hacking.errors import FieldError, UsageError
from sae_hacking.train import run as run_module
from sae_hacking.train.run import SUMMARY_KEYS, run, summary_note
from sae_hacking.training import engine as engine_module
from sae_hacking.training.checkpoint import checkpoint_step, json_safe
from sae_hacking.training.metrics import summary_lines

SMALL = {"sae_hidden_dim": 64, "k": 8, "eval_every": 1000}


def strict_rows(path) -> list[dict]:
    """The JSON lines of ``path``, refusing the bare NaN and Infinity JSON does not have."""

    def refuse(constant):
        raise AssertionError(f"{path} holds a bare {constant}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def argv_of(config, *flags: str) -> list[str]:
    """The command line of ``config``'s model and text, plus ``flags``."""
    base = ["train", "--model", config.model.name, "--dataset-id", config.text.dataset_id]
    base += ["--device", "cpu", "--quiet", "--max-tokens", "32", "--batch-size", "8"]
    base += ["--batch-tokens", "128"]
    base += ["--buffer-tokens", "512", "--eval-prompts", "8", "--sae-hidden-dim", "64", "--k", "8"]
    return [*base, *flags]


@pytest.fixture
def no_model(monkeypatch):
    """Loading the model fails the test: what is refused must be refused before it."""

    def refuse(config):
        raise AssertionError("the model loaded although the check needs none")

    monkeypatch.setattr(run_module, "load_model", refuse)


def test_lr_1e30_stops_with_one_line_and_leaves_nothing(make_config, tmp_path, capsys):
    out = tmp_path / "diverged"
    argv = argv_of(make_config(), "--max-step", "30", "--log-every", "10", "--lr", "1e30")
    argv += ["--output-dir", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "diverged by step 10" in err and "--lr (it is 1e+30)" in err
    assert not out.exists()  # no checkpoint had been written: nothing to keep
    argv[argv.index("1e30")] = "3e-3"  # the corrected command runs in the same folder
    assert main(argv) == 0
    assert (out / "sae.safetensors").is_file()
    strict_rows(out / "metrics.jsonl")


@pytest.mark.parametrize("log_every, stops_at", [(5, 15), (100, 16)])
def test_a_run_that_turns_nan_keeps_its_last_finite_checkpoint(
    make_config, tmp_path, monkeypatch, log_every, stops_at
):
    real_step = engine_module.train_step
    calls = {"n": 0}

    def nan_weights_after_step_13(sae, *args, **kwargs):
        out = real_step(sae, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 13:
            with torch.no_grad():
                next(sae.parameters()).fill_(float("nan"))
        return out

    monkeypatch.setattr(engine_module, "train_step", nan_weights_after_step_13)
    config = make_config("nan", max_step=30, checkpoint_every=8, log_every=log_every, **SMALL)
    # Found where the loss is logged (step 15), else by the check before the next checkpoint.
    with pytest.raises(UsageError, match=f"diverged by step {stops_at}: .*checkpoint of step 8"):
        run(config)
    run_dir = tmp_path / "nan"
    assert not (run_dir / "sae.safetensors").exists() and not (run_dir / "saelens").exists()
    assert not (run_dir / "metrics.json").exists()
    assert checkpoint_step(run_dir) == 8
    assert all(
        torch.isfinite(t).all() for t in load_file(run_dir / "checkpoint.safetensors").values()
    )
    if log_every == 5:
        last = strict_rows(run_dir / "metrics.jsonl")[-1]
        assert last["step"] == 15 and last["loss"] is None  # NaN is written as null


def test_bad_cache_blocks_are_one_line_and_leave_no_run(make_config, tmp_path, capsys):
    cache = tmp_path / "cache"
    run(make_config("first", activation_cache=str(cache), max_step=10, **SMALL))
    block = cache / "block-000000000000.safetensors"
    whole = block.read_bytes()
    with safe_open(str(block), "pt") as handle:
        meta = handle.metadata()
    acts_TM = load_file(block)["acts_TM"]
    acts_TM[3, 5] = float("nan")
    save_file({"acts_TM": acts_TM}, str(block), metadata=meta)
    with pytest.raises(FieldError, match="not finite") as refused:
        run(make_config("nan", activation_cache=str(cache), max_step=10, **SMALL))
    assert refused.value.field == "activation_cache" and not (tmp_path / "nan").exists()
    block.write_bytes(whole[: len(whole) // 2])
    capsys.readouterr()
    out = tmp_path / "truncated"
    argv = argv_of(make_config(), "--max-step", "10", "--activation-cache", str(cache))
    assert main([*argv, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--activation-cache {block} is truncated" in err
    assert not out.exists()
    assert main([*argv, "--batch-size", "4", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err  # the settings that differ, as flags
    assert "caches other activations (--batch-size 8 there, 4 here)" in err and not out.exists()


def test_checks_that_need_no_model_answer_before_it_loads(make_config, tmp_path, capsys, no_model):
    a_file = tmp_path / "file"
    a_file.write_text("not a cache\n")
    out = tmp_path / "out"
    argv = [*argv_of(make_config(), "--output-dir", str(out)), "--activation-cache", str(a_file)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file, not a folder" in err and not out.exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine\n")
    with pytest.raises(FieldError, match="not a cache"):
        run(make_config(activation_cache=str(other)))
    assert main([*argv_of(make_config()), "--max-tokens-in-prompt", "1"]) == 2
    assert "--max-tokens-in-prompt must be at least 2" in capsys.readouterr().err


def test_a_refused_or_failed_resume_writes_nothing(make_config, tmp_path, monkeypatch, capsys):
    config = make_config("run", max_step=None, train_tokens=12 * 128, checkpoint_every=6, **SMALL)
    run_dir, _ = run(config)
    kept = {name: (run_dir / name).read_bytes() for name in ("run.json", "args.yaml")}
    capsys.readouterr()

    def resume(*flags: str) -> int:
        return main(["train", "--resume", str(run_dir), "--quiet", *flags])

    def unchanged() -> None:
        for name, content in kept.items():
            assert (run_dir / name).read_bytes() == content, name

    def refuse(config):
        raise AssertionError("the model loaded although the resume is refused")

    monkeypatch.setattr(run_module, "load_model", refuse)
    assert resume("--train-tokens", str(5 * 128)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--train-tokens (640) asks for 5 steps" in err
    assert "has taken 12 (1536 tokens)" in err
    unchanged()
    assert resume() == 0 and "is complete" in capsys.readouterr().out  # still resumable
    for name in ("checkpoint.safetensors", "checkpoint.trainer.pt"):
        path = run_dir / name
        whole = path.read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
        assert resume("--train-tokens", str(24 * 128)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{path} is truncated" in err
        unchanged()
        path.write_bytes(whole)
    monkeypatch.undo()
    assert resume("--train-tokens", str(24 * 128)) == 0  # a resume that goes on records it
    assert json.loads((run_dir / "run.json").read_text())["config"]["train_tokens"] == 24 * 128


def test_a_failed_start_removes_what_it_created(make_config, tmp_path):
    one_line = tmp_path / "one.txt"
    one_line.write_text("just one line\n")
    with pytest.raises(FieldError, match="training tokens"):
        run(make_config("new", dataset_id=str(one_line), eval_prompts=0))
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FieldError, match="training tokens"):
        run(make_config("empty", dataset_id=str(one_line), eval_prompts=0))
    assert list((tmp_path / "empty").iterdir()) == []  # kept, as it was: empty
    _, metrics = run(make_config("new", max_step=10, **SMALL))
    assert metrics["step"] == 10


def test_warnings_for_few_tokens_and_a_long_warm_up(make_config, tmp_path, capsys):
    out = tmp_path / "warned"
    flags = ["--n-prompts", "20", "--max-step", "60", "--lr-warmup-steps", "100"]
    assert main([*argv_of(make_config(), *flags), "--output-dir", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: --lr-warmup-steps (100) is longer than the run's 60 steps" in err
    assert "training tokens per epoch (its rows after the first --eval-prompts (8)" in err
    assert "or a smaller --max-step" in err


def test_n_prompts_help_says_the_held_out_rows_come_first(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "first --eval-prompts rows are held out for evaluation and training reads the N" in (
        help_text
    )


def test_the_summary_explains_ce_loss_recovered():
    def line(**metrics) -> str:
        (shown,) = [
            s
            for s in summary_lines(metrics, SUMMARY_KEYS, summary_note)
            if "ce_loss_recovered" in s
        ]
        return shown

    assert line(ce_clean=2.0, ce_zero_ablated=5.0, ce_loss_recovered=0.9).endswith("0.9000")
    assert "below the clean model's" in line(
        ce_clean=2.0, ce_zero_ablated=5.0, ce_loss_recovered=1.03
    )
    assert "means little" in line(ce_clean=2.0, ce_zero_ablated=1.5, ce_loss_recovered=1.2)
    undefined = line(ce_clean=2.0, ce_zero_ablated=2.0, ce_loss_recovered=None)
    assert "n/a" in undefined and "leaves the held-out loss" in undefined
    assert json_safe({"a": float("nan"), "b": float("inf"), "c": 1.5}) == {
        "a": None,
        "b": None,
        "c": 1.5,
    }
