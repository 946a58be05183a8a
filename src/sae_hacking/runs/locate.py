"""Which results file a user's path names (torch-free, so settings are checked with it before
any heavy import): every command takes a run directory, a ``.json`` sidecar or the results file.
"""

from __future__ import annotations

import json
from pathlib import Path

from sae_hacking.errors import UsageError
from sae_hacking.runs.record import RUN_FILE, ZSTD_SUFFIX, results_paths, results_stem


def results_file_of(path: str | Path, name: str | None = None) -> Path:
    """The results file a user's ``path`` names, as every command takes it: a run directory
    (its ``NAME.safetensors.zst``: ``name``, else the ``results_name`` its ``run.json`` records,
    else its only results file), a ``.json`` sidecar, or the results file with or without
    ``.zst``. The file may not exist (callers say what they expected there)."""
    path = Path(path)
    if path.is_dir():
        if name is None:
            try:
                name = json.loads((path / RUN_FILE).read_text(encoding="utf-8"))["results_name"]
            except (OSError, ValueError, KeyError, TypeError):
                found = sorted(p for p in path.glob(f"*{ZSTD_SUFFIX}") if p.is_file())
                if len(found) > 1:
                    raise UsageError(
                        f"{path} holds several results files ({', '.join(p.name for p in found)}); "
                        "name one."
                    ) from None
                return found[0] if found else path / f"?{ZSTD_SUFFIX}"
        return path / f"{name}{ZSTD_SUFFIX}"
    if path.suffix == ".json":
        return path.with_name(path.name[: -len(".json")] + ZSTD_SUFFIX)
    if not path.exists() and path.name.endswith(".safetensors"):
        return path.with_name(path.name + ".zst")
    return path


def sidecar_of(path: str | Path) -> Path | None:
    """The ``.json`` sidecar of the results ``path`` names, if it is there."""
    try:
        sidecar = results_paths(results_stem(results_file_of(path)))[1]
    except UsageError:
        return None
    return sidecar if sidecar.is_file() else None
