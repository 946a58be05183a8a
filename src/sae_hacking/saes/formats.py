"""Reading and writing SAEs in other projects' layouts.

- Gemma Scope: one ``params.npz`` with ``W_enc`` [d_in, d_sae], ``W_dec`` [d_sae, d_in],
  ``b_enc`` [d_sae], ``b_dec`` [d_in], ``threshold`` [d_sae]; a JumpReLU SAE that does not
  subtract ``b_dec`` from its input.
- SAELens: a folder with ``cfg.json`` and ``sae_weights.safetensors`` (tensors ``W_enc``,
  ``W_dec``, ``b_enc``, ``b_dec``, and ``threshold`` for JumpReLU). Both the SAELens 6 config
  layout (hook name under ``metadata``) and the older flat one are read; architectures
  ``standard`` (ReLU), ``jumprelu`` and ``topk``. Written (:func:`save_saelens_folder`) for
  every architecture with a SAELens inference form (:func:`inference_form`): BatchTopK and
  Matryoshka SAEs as JumpReLU, as SAELens saves its own.

A SAELens SAE's declared model processing (``model_from_pretrained_kwargs``) and activation
normalisation become its :class:`~sae_hacking.saes.processing.InputTransform`. Options these
loaders do not implement (processing they cannot reproduce, per-head hooks, decoder-norm
rescaling) are refused with a :class:`UsageError` rather than silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import torch

from sae_hacking.errors import UsageError
from sae_hacking.saes import registry
from sae_hacking.saes.base import SAE, SAEInfo
from sae_hacking.saes.io import check_sae_size
from sae_hacking.saes.processing import fold_norm_scaling_factor, input_transform

SAELENS_CFG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
GEMMA_SCOPE_PARAMS = "params.npz"
# SAELens reads a cfg.json as its 6.x layout only when it names a version >= 6.
SAELENS_CFG_LAYOUT_VERSION = "6.0.0"


def _build(architecture: str, config: dict, state: dict, info: SAEInfo, dtype) -> SAE:
    """Construct on the meta device (no wasted random init of a large SAE), then adopt ``state``."""
    cls = registry.architecture_class(architecture)
    with torch.device("meta"):
        sae = cls(**config, info=info)
    sae.load_state_dict({k: v.to(dtype) for k, v in state.items()}, assign=True)
    sae.requires_grad_(False)
    return sae.eval()


def _check_shapes(source: str, state: dict, d_in: int, d_sae: int) -> None:
    expected = {
        "W_enc_ME": (d_in, d_sae),
        "W_dec_EM": (d_sae, d_in),
        "b_enc_E": (d_sae,),
        "b_dec_M": (d_in,),
        "threshold_E": (d_sae,),
    }
    for name, tensor in state.items():
        if tuple(tensor.shape) != expected[name]:
            raise UsageError(
                f"{source}: {name.rsplit('_', 1)[0]} has shape {tuple(tensor.shape)} but "
                f"d_in={d_in}, d_sae={d_sae} need {expected[name]}."
            )


def gemma_scope_hook_name(location: str) -> str | None:
    """The hook a Gemma Scope SAE reads, from its repo id or path (``...-res`` → resid_post,
    ``-mlp`` → mlp_out, ``-att`` → attn.hook_z; the layer from ``layer_N``; the residual
    release's ``embedding`` SAEs read ``hook_embed``), named as SAELens names them."""
    layer = re.search(r"layer_(\d+)", location)
    kind = re.search(r"gemma-scope-[^/]*?-(res|mlp|att)(?:-|/|$)", location)
    if re.search(r"gemma-scope-[^/]*?-res[^/]*/embedding(?:/|$)", location):
        return "hook_embed"
    if layer is None or kind is None:
        return None
    suffix = {"res": "hook_resid_post", "mlp": "hook_mlp_out", "att": "attn.hook_z"}
    return f"blocks.{layer.group(1)}.{suffix[kind.group(1)]}"


def load_gemma_scope_npz(
    path: str | Path, info: SAEInfo | None = None, dtype: torch.dtype = torch.float32
) -> SAE:
    """A Gemma Scope ``params.npz`` as a :class:`JumpReLUSAE` (on CPU)."""
    path = Path(path)
    try:
        with np.load(path) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as err:
        raise UsageError(f"{path} cannot be read as a Gemma Scope params.npz ({err}).") from err
    names = {
        "W_enc": "W_enc_ME",
        "W_dec": "W_dec_EM",
        "b_enc": "b_enc_E",
        "b_dec": "b_dec_M",
        "threshold": "threshold_E",
    }
    missing = sorted(set(names) - set(arrays))
    if missing:
        raise UsageError(
            f"{path} lacks {', '.join(missing)}; a Gemma Scope params.npz holds "
            f"{', '.join(names)} (it has {', '.join(sorted(arrays)) or 'nothing'})."
        )
    state = {ours: torch.from_numpy(np.asarray(arrays[theirs])) for theirs, ours in names.items()}
    d_in, d_sae = state["W_enc_ME"].shape
    _check_shapes(str(path), state, d_in, d_sae)
    if info is None:
        info = SAEInfo(hook_name=gemma_scope_hook_name(str(path.resolve())))
    if info.hook_name == "hook_embed":
        # Gemma Scope trained its embedding SAEs on unscaled token embeddings; hook_embed is
        # scaled by sqrt(d_model) as the model scales it, so the weights absorb the scale (as
        # SAELens's loader does): encoder / sqrt(d_in), decoder * sqrt(d_in).
        state["W_enc_ME"] = state["W_enc_ME"] / d_in**0.5
        state["W_dec_EM"] = state["W_dec_EM"] * d_in**0.5
    return _build(
        "jumprelu",
        {"d_in": d_in, "d_sae": d_sae, "apply_b_dec_to_input": False},
        state,
        info,
        dtype,
    )


def _saelens_config(folder: Path, overrides: dict | None = None) -> dict:
    """``cfg.json`` as the settings this loader needs; a file that does not give them (not a
    JSON object, no sizes, values of the wrong type) is a :class:`UsageError` naming it."""
    path = folder / SAELENS_CFG
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UsageError(f"{path} cannot be read as JSON ({err}).") from err
    if not isinstance(cfg, dict):
        raise UsageError(f"{path} holds a JSON {type(cfg).__name__}, not a SAELens config object.")
    # A release's registry overrides replace cfg.json's values, as in SAELens.
    cfg = {**cfg, **(overrides or {})}
    for key in ("d_in", "d_sae"):
        check_sae_size(path, key, cfg.get(key))
    try:
        return _saelens_settings(folder, cfg, overrides)
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise UsageError(
            f"{path} is not a SAELens config this loader reads ({type(err).__name__}: {err})."
        ) from None


def _saelens_settings(folder: Path, cfg: dict, overrides: dict | None) -> dict:
    meta = {k: v for k, v in (cfg.get("metadata") or {}).items() if k not in (overrides or {})}

    def get(key, default=None):
        return meta.get(key, cfg.get(key, default))

    architecture = cfg.get("architecture")
    activation = get("activation_fn", get("activation_fn_str", "relu"))
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    if architecture is None:
        architecture = "topk" if activation == "topk" and k is not None else "standard"
    ours = registry.from_saelens(architecture, str(folder)).name
    normalize = cfg.get("normalize_activations") or "none"
    if normalize is True:  # SAELens < 6's boolean
        normalize = "expected_average_only_in"
    refusals = {
        "hook_head_index": get("hook_head_index") is not None,
        "rescale_acts_by_decoder_norm": bool(cfg.get("rescale_acts_by_decoder_norm")),
        "activation_fn": architecture == "standard" and activation != "relu",
        "reshape_activations": cfg.get("reshape_activations", "none") != "none",
    }
    for option, refused in refusals.items():
        if refused:
            raise UsageError(
                f"{folder}: {option}={cfg.get(option, get(option))!r} is not supported by this "
                "loader."
            )
    return {
        "architecture": ours,
        "d_in": int(cfg["d_in"]),
        "d_sae": int(cfg["d_sae"]),
        "apply_b_dec_to_input": bool(cfg.get("apply_b_dec_to_input", True)),
        "k": None if k is None else int(k),
        "hook_name": get("hook_name", cfg.get("hook_point")),
        "neuronpedia_id": get("neuronpedia_id"),
        "normalize_activations": normalize,
        "model_from_pretrained_kwargs": get("model_from_pretrained_kwargs") or {},
    }


def load_saelens_folder(
    folder: str | Path,
    info: SAEInfo | None = None,
    dtype: torch.dtype = torch.float32,
    overrides: dict | None = None,
    norm_scaling_factor: float | None = None,
) -> SAE:
    """A SAELens-format folder as a ReLU, JumpReLU or TopK SAE (on CPU).

    ``info`` fields that are set override the folder's hook name and Neuronpedia id;
    ``overrides`` (a release's registry ``config_overrides``) replace ``cfg.json`` values; an
    ``expected_average_only_in`` SAE needs the release's ``norm_scaling_factor``, folded into
    its weights as SAELens does.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg = _saelens_config(folder, overrides)
    hook_name = (info and info.hook_name) or cfg["hook_name"]
    normalize = cfg["normalize_activations"]
    if normalize == "expected_average_only_in" and norm_scaling_factor is not None:
        normalize = "none"  # folded below
    transform = input_transform(
        cfg["model_from_pretrained_kwargs"], normalize, hook_name, str(folder)
    )
    try:
        raw = load_file(str(folder / SAELENS_WEIGHTS))
    except (OSError, SafetensorError) as err:
        raise UsageError(f"{folder / SAELENS_WEIGHTS} cannot be read ({err}).") from err
    scaling = raw.pop("scaling_factor", None)
    if scaling is not None and not torch.all(scaling == 1):
        raise UsageError(f"{folder}: a fine-tuning scaling_factor is not supported by this loader.")
    if "log_threshold" in raw and "threshold" not in raw:
        raw["threshold"] = raw.pop("log_threshold").exp()
    names = {"W_enc": "W_enc_ME", "W_dec": "W_dec_EM", "b_enc": "b_enc_E", "b_dec": "b_dec_M"}
    if cfg["architecture"] == "jumprelu":
        names["threshold"] = "threshold_E"
    if set(raw) != set(names):
        raise UsageError(
            f"{folder / SAELENS_WEIGHTS} holds {', '.join(sorted(raw))}; a SAELens "
            f"{registry.saelens_name(cfg['architecture'])} SAE holds {', '.join(names)}."
        )
    state = {ours: raw[theirs] for theirs, ours in names.items()}
    _check_shapes(str(folder), state, cfg["d_in"], cfg["d_sae"])
    if cfg["normalize_activations"] == "expected_average_only_in":
        fold_norm_scaling_factor(state, norm_scaling_factor)
    info = SAEInfo(
        hook_name=hook_name,
        neuronpedia_id=(info and info.neuronpedia_id) or cfg["neuronpedia_id"],
        release=info and info.release,
        sae_id=info and info.sae_id,
        input_transform=transform,
    )
    config = {"d_in": cfg["d_in"], "d_sae": cfg["d_sae"]}
    if cfg["architecture"] == "topk":
        if cfg["k"] is None:
            raise UsageError(f"{folder}: a topk SAE's cfg.json must give k.")
        config["k"] = cfg["k"]
        if not cfg["apply_b_dec_to_input"]:
            # TopKSAE always encodes x - b_dec; fold b_dec into b_enc to encode x itself.
            state["b_enc_E"] = state["b_enc_E"] + state["b_dec_M"] @ state["W_enc_ME"]
    else:
        config["apply_b_dec_to_input"] = cfg["apply_b_dec_to_input"]
    return _build(cfg["architecture"], config, state, info, dtype)


def inference_form(sae: SAE) -> SAE:
    """``sae`` as the architecture it is exported to SAELens as (:func:`registry.export_name`):
    itself for TopK, ReLU and JumpReLU SAEs; for BatchTopK and Matryoshka SAEs a new JumpReLU
    SAE (copied weights, inference-only) whose every threshold is the learnt global one, which
    encodes exactly as they do once trained. A :class:`UsageError` for SAEs without one."""
    target = registry.export_name(sae.architecture)
    if target != "jumprelu" or sae.architecture == "jumprelu":
        return sae
    threshold = float(sae.threshold)
    if threshold < 0:
        raise UsageError(
            f"this {sae.architecture} SAE was never trained (its inference threshold is unset), "
            "so it has no JumpReLU form to export."
        )
    state = {
        name: getattr(sae, name).detach().clone()
        for name in ("W_enc_ME", "b_enc_E", "W_dec_EM", "b_dec_M")
    }
    state["threshold_E"] = torch.full_like(state["b_enc_E"], threshold)
    cls = registry.architecture_class("jumprelu")
    with torch.device("meta"):
        out = cls(
            sae.d_in,
            sae.d_sae,
            apply_b_dec_to_input=sae.apply_b_dec_to_input,
            info=dataclasses.replace(sae.info),
        )
    out.load_state_dict(state, assign=True)
    return out.requires_grad_(False).eval()


def save_saelens_folder(sae: SAE, folder: str | Path, model_name: str | None = None) -> Path:
    """Write ``sae``'s :func:`inference_form` as a SAELens-format folder that SAELens's
    ``SAE.load_from_disk`` reads (``hook_name``, ``model_name`` and ``neuronpedia_id`` in its
    metadata, null when unknown)."""
    from safetensors.torch import save_file

    from sae_hacking.atomic import atomic_write, atomic_write_json

    sae = inference_form(sae)
    saelens_architecture = registry.export_name(sae.architecture)
    folder = Path(folder)
    names = {
        "W_enc_ME": "W_enc",
        "W_dec_EM": "W_dec",
        "b_enc_E": "b_enc",
        "b_dec_M": "b_dec",
        "threshold_E": "threshold",
    }
    tensors = {
        names[name]: t.detach().to("cpu", torch.float32).contiguous()
        for name, t in sae.state_dict().items()
    }
    cfg = {
        "architecture": saelens_architecture,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": bool(getattr(sae, "apply_b_dec_to_input", True)),
        "normalize_activations": sae.input_transform.normalize,
        "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": SAELENS_CFG_LAYOUT_VERSION,
            "hook_name": sae.hook_name,
            "hook_head_index": None,
            "neuronpedia_id": sae.neuronpedia_id,
            "model_name": model_name,
            "prepend_bos": True,
        },
    }
    if sae.input_transform.center:
        cfg["metadata"]["model_from_pretrained_kwargs"] = {"center_writing_weights": True}
    if sae.architecture == "topk":
        cfg["k"] = sae.k
        cfg["rescale_acts_by_decoder_norm"] = False
    atomic_write(folder / SAELENS_WEIGHTS, lambda tmp: save_file(tensors, str(tmp)))
    atomic_write_json(folder / SAELENS_CFG, cfg)
    return folder
