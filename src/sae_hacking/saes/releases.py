"""Pretrained SAEs by SAELens release name, and :func:`load_sae`, the one loading entry point.

Release names resolve through SAELens's registry (``pretrained_saes.yaml`` inside the sae-lens
package: repo id, sae id → path, Neuronpedia id, file layout). The YAML is read directly instead
of through ``import sae_lens``, which imports TransformerLens and takes ~10 s: an unknown
release must be reported in well under two seconds. Files come from the Hugging Face cache, or
are downloaded into it (:func:`sae_hacking.hub.hub_file`).
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from sae_hacking.errors import UsageError
from sae_hacking.hub import hub_file
from sae_hacking.saes.base import SAE, SAEInfo
from sae_hacking.saes.formats import (
    GEMMA_SCOPE_PARAMS,
    SAELENS_CFG,
    SAELENS_WEIGHTS,
    gemma_scope_hook_name,
    load_gemma_scope_npz,
    load_saelens_folder,
)
from sae_hacking.saes.names import looks_like_path
from sae_hacking.saes.processing import CENTRE_FLAG, input_transform, model_processing_centres

# Registry "conversion_func" values whose files this package reads.
GEMMA_SCOPE_LAYOUT = "gemma_2"
SAELENS_LAYOUT = None
# Registry config_overrides keys this loader honours. Any other key fails loudly when its
# release is resolved (a new SAELens release may declare a convention we would otherwise
# silently ignore); tests/saes/test_conventions.py lists those the installed registry uses.
PROCESSING_OVERRIDES = frozenset({"model_from_pretrained_kwargs", "normalize_activations"})
# Where the SAE belongs (hook_name, neuronpedia_id are read) or provenance only: the model
# (the registry's ``model`` already names it) and the training dataset change no activation.
DESCRIPTIVE_OVERRIDES = frozenset({"hook_name", "neuronpedia_id", "model_name", "dataset_path"})
KNOWN_OVERRIDES = PROCESSING_OVERRIDES | DESCRIPTIVE_OVERRIDES


@dataclass(frozen=True)
class ReleaseEntry:
    """One SAE of a release, as the registry describes it."""

    release: str
    sae_id: str
    repo_id: str
    path: str  # folder inside the repo
    model: str
    layout: str | None  # the registry's conversion_func; None for SAELens folders
    neuronpedia_id: str | None
    hook_name: str | None  # known without downloading for Gemma Scope and overridden releases
    # The release's config_overrides (replace cfg.json values) and this SAE's registry
    # norm_scaling_factor (for expected_average_only_in).
    overrides: dict = field(default_factory=dict, hash=False, compare=False)
    norm_scaling_factor: float | None = None


def registry_file() -> Path:
    spec = importlib.util.find_spec("sae_lens")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(
            "SAE release names are resolved through SAELens's registry, but sae-lens is not "
            "installed; install it (pip install sae-lens) or pass a local SAE path."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pretrained_saes.yaml"


@functools.cache
def read_registry() -> dict[str, dict]:
    """The registry as ``{release: yaml entry}`` (parsed once per process, ~0.6 s)."""
    import yaml

    with open(registry_file(), encoding="utf-8") as handle:
        return yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    return f"; did you mean {' or '.join(close)}?" if close else "."


def resolve_release(release: str, sae_id: str) -> ReleaseEntry:
    """Look ``release`` / ``sae_id`` up in the registry; unknown names suggest close ones."""
    registry = read_registry()
    if release not in registry:
        raise UsageError(
            f"unknown SAE release {release!r} (not among SAELens's {len(registry)} releases, "
            f"and not a local path){_suggest(release, list(registry))}"
        )
    entry = registry[release]
    saes = {str(item["id"]): item for item in entry["saes"]}
    if sae_id not in saes:
        raise UsageError(
            f"release {release} has no SAE id {sae_id!r} ({len(saes)} ids, e.g. "
            f"{next(iter(saes))}){_suggest(sae_id, list(saes))}"
        )
    item = saes[sae_id]
    overrides = entry.get("config_overrides") or {}
    unknown = sorted(set(overrides) - KNOWN_OVERRIDES)
    if unknown:
        raise UsageError(
            f"release {release} sets config override {unknown[0]}={overrides[unknown[0]]!r}, "
            "which this loader does not know how to honour, so it refuses to load it."
        )
    layout = entry.get("conversion_func")
    hook_name = overrides.get("hook_name")
    if hook_name is None and layout == GEMMA_SCOPE_LAYOUT:
        hook_name = gemma_scope_hook_name(f"{entry['repo_id']}/{item['path']}")
    return ReleaseEntry(
        release=release,
        sae_id=sae_id,
        repo_id=entry["repo_id"],
        path=str(item["path"]),
        model=entry["model"],
        layout=layout,
        neuronpedia_id=item.get("neuronpedia"),
        hook_name=hook_name,
        overrides=dict(overrides),
        norm_scaling_factor=item.get("norm_scaling_factor"),
    )


def hub_model(release: str | None, sae_id: str | None) -> str | None:
    """The Hugging Face id of the model the registry gives a release's SAE (the registry says
    ``gemma-2-2b``; TransformerLens's table of official names says ``google/gemma-2-2b``), or
    ``None`` for a local SAE or an unknown one. TransformerLens is imported only here (seconds),
    for registry SAEs that name no model otherwise."""
    if not release or not sae_id or looks_like_path(release):
        return None
    try:
        name = resolve_release(release, sae_id).model
    except UsageError:
        return None
    if "/" in name:
        return name
    try:
        from transformer_lens.loading_from_pretrained import get_official_model_name

        return get_official_model_name(name)
    except (ImportError, ValueError):
        return name


def load_release(entry: ReleaseEntry, dtype: torch.dtype = torch.float32) -> SAE:
    """Fetch (or find in the cache) and load the SAE ``entry`` names."""
    info = SAEInfo(entry.hook_name, entry.neuronpedia_id, entry.release, entry.sae_id)
    what = f"SAE {entry.release} / {entry.sae_id}"
    if entry.layout == GEMMA_SCOPE_LAYOUT:
        info.input_transform = input_transform(
            entry.overrides.get("model_from_pretrained_kwargs"),
            entry.overrides.get("normalize_activations"),
            entry.hook_name,
            what,
        )
        params = hub_file(entry.repo_id, f"{entry.path}/{GEMMA_SCOPE_PARAMS}", what=what)
        return load_gemma_scope_npz(params, info, dtype)
    if entry.layout == SAELENS_LAYOUT:
        cfg = hub_file(entry.repo_id, f"{entry.path}/{SAELENS_CFG}", what=what)
        hub_file(entry.repo_id, f"{entry.path}/{SAELENS_WEIGHTS}", what=what)
        return load_saelens_folder(
            cfg.parent, info, dtype, entry.overrides, entry.norm_scaling_factor
        )
    raise UsageError(
        f"release {entry.release} is stored in the {entry.layout!r} layout, which this loader "
        "does not read; supported: Gemma Scope (gemma_2) and SAELens-format releases."
    )


def _load_local(path: Path, dtype: torch.dtype) -> SAE:
    if path.is_dir():
        if (path / SAELENS_CFG).is_file() and (path / SAELENS_WEIGHTS).is_file():
            return load_saelens_folder(path, dtype=dtype)
        if (path / GEMMA_SCOPE_PARAMS).is_file():
            return load_gemma_scope_npz(path / GEMMA_SCOPE_PARAMS, dtype=dtype)
    elif path.suffix == ".npz":
        return load_gemma_scope_npz(path, dtype=dtype)
    elif path.suffix == ".safetensors":
        from sae_hacking.saes.io import load_sae_checkpoint

        return load_sae_checkpoint(path).to(dtype)
    raise UsageError(
        f"{path} is not an SAE this loader reads: expected a Gemma Scope params.npz (or a folder "
        f"holding one), a SAELens folder ({SAELENS_CFG} + {SAELENS_WEIGHTS}) or an sae_hacking "
        ".safetensors checkpoint."
    )


def load_sae(
    release_or_path: str,
    sae_id: str | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    hook_name: str | None = None,
) -> SAE:
    """Load an SAE from a SAELens release name + SAE id, or from a local path.

    A local path (file or folder) is loaded by its layout; with ``sae_id`` it names a sub-path
    (so a local copy of a release repository works with the release's SAE paths). ``hook_name``
    overrides the hook the SAE says it reads (a bare ``params.npz`` may not say).
    """
    if looks_like_path(release_or_path):
        path = Path(release_or_path).expanduser()
        if sae_id:
            path = path / sae_id
        if not path.exists():
            raise UsageError(f"SAE path {path}: no such file or folder.")
        sae = _load_local(path, dtype)
    else:
        if not sae_id:
            raise UsageError(
                f"SAE release {release_or_path!r} needs an SAE id (e.g. "
                "layer_20/width_65k/canonical)."
            )
        sae = load_release(resolve_release(release_or_path, sae_id), dtype)
    if hook_name is not None:
        sae.info.hook_name = hook_name
        if sae.input_transform.center:  # whether the declared centring applies at this hook
            center = model_processing_centres({CENTRE_FLAG: True}, hook_name, release_or_path)
            sae.info.input_transform = replace(sae.input_transform, center=center)
    # Loaded SAEs are for inference: without gradients they accept the inference-mode tensors
    # that HookedLM.read returns.
    return sae.requires_grad_(False).eval().to(device)
