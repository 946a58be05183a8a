"""A content hash of an SAE's weights: runs record it, so results are matched by what the SAE
is, not by how its path was spelled (``./x`` and ``x``; or new weights at an old path)."""

from __future__ import annotations

import hashlib
import json

import torch


def sae_fingerprint(sae: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of the module's tensors (names, dtypes, shapes, bytes) and
    of the input transform it applies, when that is not the identity (the same weights fed
    centred or normalised inputs are another SAE)."""
    digest = hashlib.sha256()
    transform = getattr(getattr(sae, "info", None), "input_transform", None)
    if transform is not None and not transform.is_identity:
        digest.update(json.dumps(transform.to_json(), sort_keys=True).encode())
    for name, tensor in sorted(sae.state_dict().items()):
        flat = tensor.detach().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).cpu().numpy().tobytes())
    return digest.hexdigest()[:16]
