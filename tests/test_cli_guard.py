"""``run_guarded``, the one wrapper of every command: a closed stdout (``... | head``) is a quiet
exit 141, not a traceback; another broken pipe is a bug and keeps its traceback."""

import os
import subprocess
import sys

import pytest

from sae_hacking.cli import EXIT_BROKEN_PIPE, main, run_guarded


def test_a_closed_stdout_is_a_quiet_exit(monkeypatch, capsys):
    read, write = os.pipe()
    os.close(read)  # the reader has gone, as `head` does after its lines
    out = os.fdopen(write, "w")
    monkeypatch.setattr(sys, "stdout", out)

    def talk():
        for i in range(100_000):
            print(i)

    try:
        assert run_guarded(talk) == EXIT_BROKEN_PIPE
        print("at exit, too, this goes nowhere")
        out.flush()
    finally:
        monkeypatch.undo()
        out.close()
    assert capsys.readouterr().err == ""


def test_a_closed_stdout_after_the_last_print_is_caught_too(monkeypatch):
    read, write = os.pipe()
    os.close(read)
    out = os.fdopen(write, "w")
    monkeypatch.setattr(sys, "stdout", out)
    try:  # one short line stays in the buffer: the flush at the end meets the closed pipe
        assert run_guarded(lambda: print("done")) == EXIT_BROKEN_PIPE
    finally:
        monkeypatch.undo()
        out.close()


def test_another_broken_pipe_keeps_its_traceback():
    def broken():
        raise BrokenPipeError("a socket, not stdout")

    with pytest.raises(BrokenPipeError):
        run_guarded(broken)


@pytest.mark.slow
def test_cooccurrences_show_into_a_closed_pipe(tiny_model_path, random_sae_path, prompts_path):
    hook = "blocks.0.hook_resid_post"
    run = prompts_path(8, seed=5).parent / "show-run"
    if not run.exists():
        argv = [
            "cooccurrences", "--model", str(tiny_model_path("gemma2")), "--device", "cpu",
            "--ablator-sae-release", str(random_sae_path(hook, 32, seed=3)), "--quiet",
            "--dataset-id", str(prompts_path(8, seed=5)), "--max-tokens", "12",
            "--output-dir", str(run),
        ]  # fmt: skip
        assert main(argv) == 0
    read, write = os.pipe()
    os.close(read)
    done = subprocess.run(
        [sys.executable, "-m", "sae_hacking", "cooccurrences-show", str(run), "3"],
        stdout=write,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    os.close(write)
    assert (done.returncode, done.stderr) == (EXIT_BROKEN_PIPE, "")
