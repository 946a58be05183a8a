"""Building the SAE a training run asks for, one way for every trainer."""

from __future__ import annotations

import torch

from sae_hacking.saes.base import SAEInfo
from sae_hacking.saes.registry import architecture_class
from sae_hacking.saes.trainable import TrainableSAE


def architecture_options(
    architecture: str,
    d_sae: int,
    k: int,
    *,
    groups: tuple[int, ...] | None = None,
    l1_coefficient: float | None = None,
    l0_coefficient: float | None = None,
    jumprelu_bandwidth: float | None = None,
    jumprelu_init_threshold: float | None = None,
    aux_loss_coeff: float | None = None,
    children_per_parent: int | None = None,
    child_k: int | None = None,
    nested_weight: float | None = None,
) -> dict:
    """The constructor arguments, besides ``d_in``, ``gen`` and ``info``, of ``architecture``:
    ``d_sae`` latents (parent latents of the hierarchical SAE), ``k`` active ones (the TopK
    family; the tiered SAE's parents), Matryoshka's nested ``groups``, the tiered SAE's
    ``children_per_parent``, ``child_k`` (children kept per input on average) and
    ``nested_weight``; the rest only where that architecture has it
    (``None``: its default)."""
    if architecture == "relu":
        return {"d_sae": d_sae, "l1_coefficient": l1_coefficient}
    if architecture == "jumprelu":
        return {
            "d_sae": d_sae,
            "l0_coefficient": l0_coefficient,
            "bandwidth": jumprelu_bandwidth,
            "init_threshold": jumprelu_init_threshold,
        }
    if architecture == "hierarchical":
        extra = {} if aux_loss_coeff is None else {"aux_loss_coeff": aux_loss_coeff}
        return {"n_parents": d_sae, "k": k, **extra}
    if architecture == "tiered":
        extra = {"children_per_parent": children_per_parent, "nested_weight": nested_weight}
        extra = {key: value for key, value in extra.items() if value is not None}
        return {"n_parents": d_sae, "k": k, "child_k": child_k, **extra}
    if architecture == "matryoshka":
        return {"group_sizes": groups, "k": k}
    return {"d_sae": d_sae, "k": k}


def build_sae(
    architecture: str,
    d_in: int,
    options: dict,
    gen: torch.Generator,
    info: SAEInfo | None = None,
) -> TrainableSAE:
    """A new ``architecture`` SAE on ``d_in`` inputs, initialised from ``gen``."""
    extra = {} if info is None else {"info": info}
    return architecture_class(architecture)(d_in, gen=gen, **extra, **options)
