"""Run directories and provenance (what produced a result, where, from which commit)."""

from __future__ import annotations

import datetime as _dt
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from sae_hacking.atomic import atomic_write_text


def git_commit() -> str | None:
    """The commit of the checkout this code runs from, with ``-dirty`` if it has local changes."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict[str, Any]:
    """Where and with what a result was produced; stored beside every result."""
    from sae_hacking import __version__

    return {
        "sae_hacking_version": __version__,
        "git_commit": git_commit(),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "command": " ".join(sys.argv),
        "time": _dt.datetime.now().isoformat(timespec="seconds"),
    }


def new_run_dir(output_dir: str | Path | None, slug: str, root: str | Path = "results") -> Path:
    """``output_dir`` if given, else ``results/<timestamp>-<slug>``; created if missing."""
    if output_dir is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        output_dir = Path(root) / f"{stamp}-{slug}"
    run_dir = Path(output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def write_args_yaml(run_dir: Path, args: dict[str, Any]) -> Path:
    """``args.yaml``: the run's arguments plus :func:`provenance`."""
    doc = {"args": args, "provenance": provenance()}
    return atomic_write_text(run_dir / "args.yaml", yaml.safe_dump(doc, sort_keys=True))
