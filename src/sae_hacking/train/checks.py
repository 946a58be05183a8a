"""Checks of an LM training run's activation cache folder (torch-free; the checkpoint checks of
every trainer are in :mod:`sae_hacking.training.checkpoint`)."""

from __future__ import annotations

from pathlib import Path

from sae_hacking.errors import FieldError
from sae_hacking.folders import check_new_folder

CACHE_FILE = "cache.json"  # names what an activation cache holds


def check_cache_folder(folder: str | Path | None) -> None:
    """``--activation-cache`` names a cache folder, an empty folder, or one that can be made
    (whether the cache holds these activations needs the model's dtype: checked later)."""
    if folder is None:
        return
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise FieldError(
            "activation_cache",
            f"{path} is a file, not a folder; give a folder for the cached activations (it is "
            "created if absent).",
        )
    if not path.is_dir():
        check_new_folder(path, "activation_cache")
    elif not (path / CACHE_FILE).is_file() and any(path.iterdir()):
        raise FieldError(
            "activation_cache", f"{path} is not empty and has no {CACHE_FILE}: not a cache."
        )
