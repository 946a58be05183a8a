"""Random SAEs for the tests and benchmarks: every parameter drawn from a seeded normal.

Test-only (nothing in the package imports it); the benchmarks import it too, with the
repository root put on ``sys.path`` by ``benchmarks/_common.py``.
"""

from __future__ import annotations

from sae_hacking.saes.base import SAE, SAEInfo
from sae_hacking.saes.jumprelu import JumpReLUSAE
from sae_hacking.saes.relu import ReLUSAE
from sae_hacking.saes.tiny import randomise_
from sae_hacking.saes.topk import TopKSAE

RANDOM_SAE_KINDS = ("jumprelu", "relu", "topk")


def random_sae(
    hook: str | None,
    d_sae: int,
    seed: int = 0,
    d_in: int = 64,
    kind: str = "jumprelu",
    scale: float = 0.3,
    k: int = 8,
) -> SAE:
    """An inference-only SAE of ``kind`` at ``hook`` with every parameter ``N(0, scale^2)``
    (JumpReLU thresholds made non-negative; TopK keeps ``k`` latents)."""
    info = SAEInfo(hook_name=hook)
    if kind == "jumprelu":
        sae = JumpReLUSAE(d_in, d_sae, info=info)
    elif kind == "relu":
        sae = ReLUSAE(d_in, d_sae, info=info)
    elif kind == "topk":
        sae = TopKSAE(d_in, d_sae, k=k, info=info)
    else:
        raise ValueError(f"kind must be one of {', '.join(RANDOM_SAE_KINDS)}, got {kind!r}")
    return randomise_(sae, seed, scale)
