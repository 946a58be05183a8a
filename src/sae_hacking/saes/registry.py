"""Every SAE architecture this package knows, under one name each (torch-free at import).

The name is what the CLI accepts (``--architecture``), what a checkpoint's config records and
what :attr:`SAE.architecture` says; SAELens's name for the same architecture, where SAELens has
one, is used only when reading or writing the SAELens format. An SAE is exported to SAELens in
its inference form: BatchTopK and Matryoshka SAEs become JumpReLU SAEs whose every threshold is
the learnt global one, as SAELens saves its own (``export_as``); a hierarchical SAE has no
SAELens form, nor has a tiered SAE (children fire only under their parent). Classes are imported on demand, so reading the choices costs nothing and loading
one kind stays light.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from sae_hacking.errors import UsageError


@dataclass(frozen=True)
class Architecture:
    name: str
    target: str  # "module:Class"
    trainable: bool  # the class implements saes.trainable.TrainableSAE
    saelens: str | None = None  # SAELens's architecture name, if SAELens has this one
    legacy: tuple[str, ...] = ()  # names older checkpoints used; accepted when loading only
    # SAELens's name for the architecture of the inference form this one is exported as.
    export_as: str | None = None


ARCHITECTURES = (
    Architecture("topk", "sae_hacking.saes.topk:TopKSAE", True, "topk", export_as="topk"),
    Architecture(
        "hierarchical",
        "sae_hacking.saes.hierarchical:HierarchicalTopKSAE",
        True,
        legacy=("hierarchical_topk",),
    ),
    Architecture(
        "matryoshka",
        "sae_hacking.saes.matryoshka:MatryoshkaBatchTopKSAE",
        True,
        legacy=("matryoshka_batchtopk",),
        export_as="jumprelu",
    ),
    Architecture(
        "batchtopk", "sae_hacking.saes.batchtopk:BatchTopKSAE", True, export_as="jumprelu"
    ),
    Architecture(
        "jumprelu", "sae_hacking.saes.jumprelu:JumpReLUSAE", True, "jumprelu", export_as="jumprelu"
    ),
    Architecture("relu", "sae_hacking.saes.relu:ReLUSAE", True, "standard", export_as="standard"),
    Architecture("tiered", "sae_hacking.saes.tiered:TieredSAE", True),
)
BY_NAME = {arch.name: arch for arch in ARCHITECTURES}
NAMES = tuple(BY_NAME)
TRAINABLE = tuple(arch.name for arch in ARCHITECTURES if arch.trainable)
EXPORTABLE = tuple(arch.name for arch in ARCHITECTURES if arch.export_as)
# SAELens name -> ours, for the architectures both have.
FROM_SAELENS = {arch.saelens: arch.name for arch in ARCHITECTURES if arch.saelens}
_LEGACY = {old: arch.name for arch in ARCHITECTURES for old in arch.legacy}


def get(name: str, legacy: bool = False) -> Architecture:
    """The architecture called ``name``; with ``legacy``, older checkpoint names count too."""
    if legacy:
        name = _LEGACY.get(name, name)
    if name not in BY_NAME:
        raise UsageError(f"unknown SAE architecture {name!r}; expected one of {', '.join(NAMES)}.")
    return BY_NAME[name]


def architecture_class(name: str, legacy: bool = False) -> type:
    """The class of the architecture called ``name`` (a subclass of ``saes.base.SAE``)."""
    module, cls = get(name, legacy).target.split(":")
    return getattr(importlib.import_module(module), cls)


def from_saelens(saelens_name: str, where: str) -> Architecture:
    """Our architecture for SAELens's ``saelens_name``; ``where`` names the file for errors."""
    if saelens_name not in FROM_SAELENS:
        raise UsageError(
            f"{where}: SAELens architecture {saelens_name!r} is not supported; supported: "
            f"{', '.join(FROM_SAELENS)}."
        )
    return BY_NAME[FROM_SAELENS[saelens_name]]


def saelens_name(name: str) -> str:
    """SAELens's name for our architecture ``name``; a :class:`UsageError` if it has none."""
    arch = get(name)
    if arch.saelens is None:
        raise UsageError(
            f"a {name} SAE has no SAELens format; supported: {', '.join(FROM_SAELENS.values())}."
        )
    return arch.saelens


def export_name(name: str) -> str:
    """SAELens's architecture name for the inference form our architecture ``name`` is
    exported as; a :class:`UsageError` if it has none."""
    arch = get(name)
    if arch.export_as is None:
        raise UsageError(
            f"a {name} SAE has no SAELens format (exportable: {', '.join(EXPORTABLE)}); save it "
            "as an sae_hacking .safetensors checkpoint, which load_sae reads."
        )
    return arch.export_as
