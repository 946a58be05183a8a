"""The ``device`` setting: its spelling (torch-free, checked with the other settings) and the
torch device it names on this machine."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sae_hacking.errors import FieldError

if TYPE_CHECKING:
    import torch

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device_name(field: str, name: str) -> None:
    """The device's spelling (whether it exists is checked when torch is loaded)."""
    if not DEVICE_PATTERN.match(str(name)):
        raise FieldError(field, f"is {name!r}, expected one of auto, cpu, cuda, cuda:N, mps.")


def resolve_device(name: str) -> torch.device:
    """Map ``auto|cpu|cuda|cuda:N|mps`` to a device that exists on this machine.

    ``auto`` prefers CUDA, then MPS, then CPU. Asking for a device that is missing is a
    :class:`FieldError` rather than a crash deep inside the first ``.to()``.
    """
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise FieldError(
            "device",
            f"{name!r} is not a device name; expected one of auto, cpu, cuda, cuda:N, mps.",
        ) from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FieldError(
                "device",
                f"is {name} but this machine has no CUDA GPU that torch can use; drop it or use "
                "auto.",
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise FieldError(
                "device",
                f"is {name} but only {torch.cuda.device_count()} CUDA GPU(s) are visible.",
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise FieldError("device", f"is {name} but MPS is not available on this machine.")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise FieldError(
            "device", f"{name!r} is not supported; expected auto, cpu, cuda[:N] or mps."
        )
    return device
