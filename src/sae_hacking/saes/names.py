"""How an SAE is named: a local path or a SAELens release (torch-free). Below both
:mod:`~sae_hacking.saes.source` and :mod:`~sae_hacking.saes.releases`, which each need it, so
neither imports the other for it."""

from __future__ import annotations

from pathlib import Path


def looks_like_path(name: str) -> bool:
    """Whether an SAE name is a local path rather than a SAELens release name."""
    return (
        Path(name).expanduser().exists()
        or name.startswith((".", "/", "~"))
        or name.endswith((".npz", ".safetensors"))
    )
