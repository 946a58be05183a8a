"""This project's own SAE checkpoints: one ``.safetensors`` file per SAE.

The tensors are the module's ``state_dict`` (parameters and buffers, Shazeer-suffixed names);
the safetensors metadata holds ``sae_hacking`` = JSON of ``{"config": sae.config(), "info":
SAEInfo fields, "extra": ...}``, so a file is self-describing and loads without side files.
The info's ``input_transform`` is written only when it is not the identity (so files of SAEs
without one are as they were).
``config["architecture"]`` is a name from :mod:`sae_hacking.saes.registry` (older files' names
are still read).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from sae_hacking.atomic import atomic_write
from sae_hacking.errors import UsageError
from sae_hacking.saes.base import SAE, SAEInfo
from sae_hacking.saes.processing import InputTransform
from sae_hacking.saes.registry import architecture_class

METADATA_KEY = "sae_hacking"


def save_sae_checkpoint(sae: SAE, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``sae`` to ``path`` atomically; ``extra`` is any JSON-able provenance."""
    info = dataclasses.asdict(sae.info)
    if sae.input_transform.is_identity:
        del info["input_transform"]
    else:
        info["input_transform"] = sae.input_transform.to_json()
    meta = {
        "config": sae.config(),
        "info": info,
        "extra": extra or {},
    }
    tensors = {name: t.detach().contiguous().cpu() for name, t in sae.state_dict().items()}
    return atomic_write(
        path, lambda tmp: save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(meta)})
    )


def read_checkpoint_metadata(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
    except (OSError, SafetensorError) as err:
        raise UsageError(f"{path} is not a readable safetensors file ({err}).") from err
    if raw is None:
        raise UsageError(f"{path} is a safetensors file but not an sae_hacking SAE checkpoint.")
    return json.loads(raw)


def load_sae_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> SAE:
    """Rebuild an SAE saved by :func:`save_sae_checkpoint`."""
    path = Path(path)
    meta = read_checkpoint_metadata(path)
    config = dict(meta["config"])
    cls = architecture_class(config.pop("architecture"), legacy=True)
    info = dict(meta.get("info", {}))
    info["input_transform"] = InputTransform.from_json(info.get("input_transform"))
    sae = cls(**config, info=SAEInfo(**info))
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        state = {name: handle.get_tensor(name) for name in handle.keys()}
    sae.load_state_dict(state)
    return sae.to(device)
