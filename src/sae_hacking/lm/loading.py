"""Loading a Hugging Face causal LM and its tokenizer from a hub id or a local folder.

Nothing here imports torch or transformers at module level: :func:`check_model_source` (what a
command calls before anything heavy is imported) reads only JSON and the safetensors headers, so a
broken model folder is refused in milliseconds rather than after the import of torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sae_hacking.errors import FieldError, UsageError
from sae_hacking.hub import check_repo_id, hub_unreachable_reason, unreachable_message

if TYPE_CHECKING:
    import torch

DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
# The model types lm.arch has hook points for (a test keeps this equal to its ARCH_SPECS).
SUPPORTED_MODEL_TYPES = ("gemma2", "gpt2", "gpt_neo", "gpt_neox", "llama", "qwen2")
# What transformers looks for in a folder, in its order of preference.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on the JSON header


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` is bfloat16 on CUDA (what Gemma-2 and Gemma Scope use) and float32 elsewhere."""
    import torch

    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPE_CHOICES:
        raise FieldError(
            "dtype", f"{name!r} is not supported; expected one of {', '.join(DTYPE_CHOICES)}."
        )
    return getattr(torch, name)


def is_local_path(name: str) -> bool:
    """A folder that exists, or anything spelled like a path (``./x``, ``/x``, ``~/x``, ``x/``).

    Hub ids (``org/name``) are everything else; the explicit spellings let a mistyped folder
    fail as a missing folder instead of as a hub lookup.
    """
    return (
        Path(name).expanduser().exists()
        or name.startswith((".", "/", "~"))
        or name.endswith(("/", os.sep))
    )


def check_model_source(name: str) -> None:
    """Refuse a model that cannot load, without importing torch or transformers.

    A local folder gets :func:`check_model_folder`. A hub id must be a valid repository id; if
    its ``config.json`` is cached, the config is checked, and if it is not cached the hub must be
    reachable (a probe of at most about a second). Raises :class:`FieldError` for field
    ``model``.
    """
    if is_local_path(name):
        check_model_folder(name)
        return
    check_repo_id(name, "model")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, "config.json")
    if isinstance(cached, str):
        _check_config(Path(cached), name)
        return
    reason = hub_unreachable_reason()
    if reason is not None:
        raise _unreachable(name, reason)


def check_model_folder(name: str | Path) -> Path:
    """The folder ``name`` names, checked to be a loadable model folder of a supported type.

    Checks: the folder exists; ``config.json`` is a JSON object whose ``model_type`` is one of
    :data:`SUPPORTED_MODEL_TYPES`; a weights file exists; every safetensors file's header parses
    and the file is as long as the header says (a cut download or copy is caught here).
    """
    folder = Path(name).expanduser()
    if not folder.is_dir():
        raise FieldError("model", f"{name}: no such folder.")
    if not (folder / "config.json").is_file():
        raise FieldError(
            "model", f"{name} is not a Hugging Face model folder (it has no config.json)."
        )
    _check_config(folder / "config.json", name)
    weights = next((folder / f for f in WEIGHT_FILES if (folder / f).is_file()), None)
    if weights is None:
        raise FieldError(
            "model",
            f"{name} has no weights file (expected {' or '.join(WEIGHT_FILES[::2])}).",
        )
    for file in _safetensors_files(weights, name):
        _check_safetensors(file, name)
    return folder


def _check_config(config: Path, name: str | Path) -> None:
    try:
        values = json.loads(config.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise FieldError("model", f"{name}: config.json is not UTF-8 text.") from None
    except json.JSONDecodeError as err:
        raise FieldError(
            "model", f"{name}: config.json is not valid JSON ({err.msg} at line {err.lineno})."
        ) from None
    except OSError as err:
        raise FieldError("model", f"{name}: config.json cannot be read ({err.strerror}).") from None
    if not isinstance(values, dict):
        raise FieldError("model", f"{name}: config.json does not hold a JSON object.")
    model_type = values.get("model_type")
    if not model_type:
        raise FieldError("model", f"{name}: config.json has no model_type.")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise FieldError(
            "model",
            f"{name} is a {model_type!r} model, which is not supported for hook points; "
            f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}.",
        )


def _safetensors_files(weights: Path, name: str | Path) -> list[Path]:
    if weights.name == "model.safetensors":
        return [weights]
    if weights.name != "model.safetensors.index.json":
        return []  # pickled weights: only loading them can tell
    try:
        shards = sorted(set(json.loads(weights.read_text(encoding="utf-8"))["weight_map"].values()))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        raise FieldError("model", f"{name}: {weights.name} is not a valid shard index.") from None
    missing = [shard for shard in shards if not (weights.parent / shard).is_file()]
    if missing:
        raise FieldError(
            "model", f"{name} lacks {len(missing)} weight shard(s) its index lists: {missing[0]}."
        )
    return [weights.parent / shard for shard in shards]


def _check_safetensors(file: Path, name: str | Path) -> None:
    """The header (8-byte length, then JSON) parses and the data it describes is all there."""
    corrupt = FieldError("model", f"{name}: {file.name} is not a valid safetensors file.")
    size = file.stat().st_size
    with open(file, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise corrupt
        (n_header,) = struct.unpack("<Q", head)
        if n_header > min(size - 8, _MAX_HEADER_BYTES):
            raise corrupt
        try:
            header = json.loads(handle.read(n_header))
            end = max(
                (int(e["data_offsets"][1]) for k, e in header.items() if k != "__metadata__"),
                default=0,
            )
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, IndexError, AttributeError):
            raise corrupt from None
    if size < 8 + n_header + end:
        raise FieldError(
            "model",
            f"{name}: {file.name} is truncated ({size} bytes, its header describes "
            f"{8 + n_header + end}); copy or download it again.",
        )


def _unreachable(name: str, reason: str) -> FieldError:
    return FieldError(
        "model",
        unreachable_message(
            name,
            reason,
            "pass a local model folder instead (`model` ./path/to/model, e.g. one written by "
            f"`sae-hacking make-tiny-model`), or run `hf download {name}` where there is network "
            "and copy the cache here.",
        ),
    )


@contextlib.contextmanager
def transformers_output(progress: bool = False) -> Iterator[None]:
    """Inside: transformers and huggingface_hub print no progress bars (unless ``progress``) and
    no warnings; the settings before are restored after."""
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # HF_HUB_DISABLE_PROGRESS_BARS=0 warns on disabling
        if not progress and bars_were_on:
            hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        try:
            yield
        finally:
            hf_logging.set_verbosity(verbosity)
            if not progress and bars_were_on:
                hf_logging.enable_progress_bar()


def _load(source: str, dtype: torch.dtype, local_only: bool, name: str):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from sae_hacking.lm.arch import spec_for

    # A hub id's first attempt (cache only) must let OSError through: it means "not cached".
    keep = (OSError,) if local_only and not is_local_path(name) else ()
    with _failing_as(name, "its config", keep):
        config = AutoConfig.from_pretrained(source, local_files_only=local_only)
    spec_for(config)  # unsupported architectures fail before gigabytes of weights load
    with _failing_as(name, "its tokenizer", keep):
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    with _failing_as(name, "its weights", keep):
        model, info = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=dtype,
            local_files_only=local_only,
            output_loading_info=True,
            ignore_mismatched_sizes=True,  # reported below, with the shapes
        )
    _check_loading_info(info, name)
    return model, tokenizer


def _check_loading_info(info: dict, name: str) -> None:
    """transformers fills weights that are missing from the checkpoint, or have other shapes than
    the config gives, with random values and only warns; here that is an error."""
    mismatched = sorted(info.get("mismatched_keys") or ())
    if mismatched:
        key, in_file, in_config = mismatched[0][:3]
        raise FieldError(
            "model",
            f"{name}: {len(mismatched)} weight tensor(s) have other shapes than config.json "
            f"gives ({key}: {list(in_file)} in the weights, {list(in_config)} by the config).",
        )
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise FieldError(
            "model",
            f"{name}: the weights lack {len(missing)} tensor(s) its config needs "
            f"({missing[0]}{', ...' if len(missing) > 1 else ''}); the weights file does not "
            "match config.json.",
        )


@contextlib.contextmanager
def _failing_as(name: str, what: str, keep: tuple[type[BaseException], ...]) -> Iterator[None]:
    """What loading a broken model raises (a tokenizer file that does not parse, a weights file
    that is not what its name says, ...) as one :class:`FieldError`; ``keep`` passes through."""
    from safetensors import SafetensorError

    try:
        yield
    except UsageError:
        raise
    except keep:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as err:
        raise FieldError("model", f"{name}: {what} could not be loaded ({_summary(err)}).") from err


def load_model_and_tokenizer(
    name: str, device: torch.device, dtype: torch.dtype, progress: bool = False
):
    """``(model, tokenizer)`` on ``device`` in ``dtype``, eval mode, gradients off.

    A hub id is looked up in the local cache first; the network is used only when the cache
    misses and the hub answers a one-second probe, so offline use fails in about a second with
    a sentence saying how to supply the model. A local folder gets :func:`check_model_folder`
    first, and whatever else fails while loading it is one :class:`FieldError` naming it.
    ``progress`` shows transformers' progress bars (weights loading, downloads).
    """
    with transformers_output(progress):
        if is_local_path(name):
            folder = check_model_folder(name)
            model, tokenizer = _load(str(folder), dtype, local_only=True, name=name)
        else:
            model, tokenizer = _load_hub(name, dtype)
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer


def _load_hub(name: str, dtype: torch.dtype):
    check_repo_id(name, "model")
    try:
        return _load(name, dtype, local_only=True, name=name)
    except OSError:
        reason = hub_unreachable_reason()
        if reason is not None:
            raise _unreachable(name, reason) from None
    return _load(name, dtype, local_only=False, name=name)


def _summary(err: BaseException, limit: int = 300) -> str:
    """The error's message on one line, at most ``limit`` characters."""
    # Backticks would read as references to settings (sae_hacking.errors).
    text = " ".join(str(err).replace("`", "'").split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."
