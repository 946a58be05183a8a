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
    """The checkpoint's ``sae_hacking`` metadata (a dict with a ``config`` dict); anything else
    is a :class:`UsageError` naming the file."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
    except (OSError, SafetensorError) as err:
        raise UsageError(f"{path} is not a readable safetensors file ({err}).") from err
    if raw is None:
        raise UsageError(f"{path} is a safetensors file but not an sae_hacking SAE checkpoint.")
    try:
        meta = json.loads(raw)
    except ValueError as err:
        raise UsageError(f"{path}: its {METADATA_KEY} metadata is not JSON ({err}).") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise UsageError(
            f"{path}: its {METADATA_KEY} metadata has no config object, so it does not say "
            "which SAE it holds."
        )
    return meta


def check_sae_size(source: str | Path, key: str, value: Any) -> None:
    """An SAE file's ``d_in`` or ``d_sae``: a positive integer, else a :class:`UsageError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(
            f"{source} gives no SAE size: {key} must be a positive integer, got {value!r}."
        )


def load_sae_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> SAE:
    """Rebuild an SAE saved by :func:`save_sae_checkpoint`. A file that does not describe one
    (metadata of no known architecture, tensors missing, extra or of other shapes) is a
    :class:`UsageError` naming the file and what is wrong."""
    path = Path(path)
    meta = read_checkpoint_metadata(path)
    config = dict(meta["config"])
    # Every architecture has d_in; the width is d_sae but for the hierarchical (n_parents) and
    # Matryoshka (group_sizes) SAEs, whose constructors check theirs.
    width = "n_parents" if "n_parents" in config else None if "group_sizes" in config else "d_sae"
    for key in ("d_in", width):
        if key is not None:
            check_sae_size(path, key, config.get(key))
    try:
        cls = architecture_class(str(config.pop("architecture")), legacy=True)
        info = dict(meta.get("info") or {})
        info["input_transform"] = InputTransform.from_json(info.get("input_transform"))
        sae = cls(**config, info=SAEInfo(**info))
    except UsageError as err:
        raise UsageError(f"{path}: {err}") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise UsageError(
            f"{path}: its {METADATA_KEY} metadata does not describe an SAE this version builds "
            f"({type(err).__name__}: {err})."
        ) from None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            state = {name: handle.get_tensor(name) for name in handle.keys()}
    except (OSError, SafetensorError) as err:
        raise UsageError(f"{path}: its tensors cannot be read ({err}).") from None
    _check_state(path, sae, state)
    sae.load_state_dict(state)
    return sae.to(device)


def _check_state(path: Path, sae: SAE, state: dict[str, torch.Tensor]) -> None:
    """The tensors ``sae`` needs, no others, each of its shape."""
    expected = sae.state_dict()
    missing = [name for name in expected if name not in state]
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        what = "; ".join(
            part
            for part in (
                missing and f"it lacks {', '.join(missing)}",
                extra and f"it has unknown {', '.join(extra)}",
            )
            if part
        )
        raise UsageError(
            f"{path}: the tensors are not those of its {sae.architecture} SAE: {what}."
        )
    for name, tensor in expected.items():
        if state[name].shape != tensor.shape:
            raise UsageError(
                f"{path}: {name} has shape {tuple(state[name].shape)}, but its "
                f"{sae.architecture} SAE needs {tuple(tensor.shape)}."
            )
