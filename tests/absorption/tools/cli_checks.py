"""How the analysis-tool tests run a command and check a refusal (one helper for every tool)."""

from __future__ import annotations

from sae_hacking.cli import main


def runner(command: str):
    """``run_cli(args, capsys) -> (exit code, stdout, stderr)`` of ``sae-hacking command``."""

    def run_cli(args, capsys):
        code = main([command, *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run_cli


def refusal_checker(run_cli):
    """``check_refused(args, capsys, tmp_path, *words)``: exit 2, one ``error:`` line holding
    every word, and no output folder left."""

    def check_refused(args, capsys, tmp_path, *words) -> None:
        out = tmp_path / "refused"
        code, _, stderr = run_cli([*args, "--output-dir", str(out)], capsys)
        lines = stderr.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), stderr
        for word in words:
            assert word in lines[0], lines[0]
        assert not out.exists()

    return check_refused
