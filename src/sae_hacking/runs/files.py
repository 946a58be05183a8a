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


def default_run_dir(slug: str, root: str | Path = "results") -> Path:
    """``results/<timestamp>-<slug>``, with ``-2``, ``-3``, ... when that exists already (two
    runs started in the same second must not share a folder)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{stamp}-{slug}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def write_args_yaml(run_dir: Path, args: dict[str, Any]) -> Path:
    """``args.yaml``: the run's arguments plus :func:`provenance`."""
    doc = {"args": args, "provenance": provenance()}
    return atomic_write_text(run_dir / "args.yaml", yaml.safe_dump(doc, sort_keys=True))
