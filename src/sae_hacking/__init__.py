"""Sparse-autoencoder research toolkit for feature absorption and hierarchical features.

Dimension letters used in tensor names (Shazeer typing), shared by the whole package:

- ``1``: singleton (broadcast) dimension
- ``A``: parent features of a toy dataset
- ``B``: batch
- ``C``: children per parent in a toy dataset (2)
- ``D``: no convention, locally unique (e.g. the hierarchical SAE's flat view of 3 E latents)
- ``E``: SAE latents (parent latents of a hierarchical SAE; a reader SAE's when ``e`` is the ablator's)
- ``e``: ablator SAE latents
- ``F``: reserved for ``torch.nn.functional``
- ``G``: a multiple of E (e.g. nested Matryoshka groups)
- ``H``: all children latents of a hierarchical SAE (2 E)
- ``K``: k in top-k
- ``M``: model (input) dimension
- ``N``: entries of a data-dependent flattened list (every active latent of every token,
  concatenated; or one ablation variant row per prompt and ablated latent)
- ``P``: packed pairs ``i <= j`` of latents (length e (e + 1) / 2, an upper triangle row by row)
- ``S``: sequence length
- ``T``: tokens of a flattened batch (real tokens only; ``offsets_T1`` has T + 1 entries)
- ``U``: the used prompts of a batch (a subset of B)
- ``V``: vocabulary
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The public API, loaded on first use: `import sae_hacking` stays torch-free, so the command line
# answers usage errors before any heavy import.
_PUBLIC = {
    "HookedLM": "sae_hacking.lm.hooked",
    "load_sae": "sae_hacking.saes.releases",
    "splice": "sae_hacking.saes.splice",
    "ZeroLatents": "sae_hacking.saes.splice",
    "make_tiny_model": "sae_hacking.lm.tiny",
}
__all__ = ["HookedLM", "ZeroLatents", "__version__", "load_sae", "make_tiny_model", "splice"]

if TYPE_CHECKING:
    from sae_hacking.lm.hooked import HookedLM
    from sae_hacking.lm.tiny import make_tiny_model
    from sae_hacking.saes.releases import load_sae
    from sae_hacking.saes.splice import ZeroLatents, splice


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sae_hacking' has no attribute {name!r}")
