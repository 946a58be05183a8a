"""Loading a Hugging Face causal LM and its tokenizer from a hub id or a local folder."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from sae_hacking.errors import UsageError
from sae_hacking.hub import hub_unreachable_reason, unreachable_message
from sae_hacking.lm.arch import spec_for

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_CHOICES = ("auto", *DTYPES)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` is bfloat16 on CUDA (what Gemma-2 and Gemma Scope use) and float32 elsewhere."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise UsageError(
            f"--dtype {name!r} is not supported; expected one of {', '.join(DTYPE_CHOICES)}."
        )
    return DTYPES[name]


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


def _load(source: str, dtype: torch.dtype, local_only: bool):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(source, local_files_only=local_only)
    spec_for(config)  # unsupported architectures fail before gigabytes of weights load
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=local_only)
    return model, tokenizer


def load_model_and_tokenizer(name: str, device: torch.device, dtype: torch.dtype):
    """``(model, tokenizer)`` on ``device`` in ``dtype``, eval mode, gradients off.

    A hub id is looked up in the local cache first; the network is used only when the cache
    misses and the hub answers a one-second probe, so offline use fails in about a second with
    a sentence saying how to supply the model.
    """
    if is_local_path(name):
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise UsageError(f"--model {name}: no such folder.")
        if not (folder / "config.json").is_file():
            raise UsageError(
                f"--model {name} is not a Hugging Face model folder (it has no config.json)."
            )
        model, tokenizer = _load(str(folder), dtype, local_only=True)
    else:
        try:
            model, tokenizer = _load(name, dtype, local_only=True)
        except OSError:
            reason = hub_unreachable_reason()
            if reason is not None:
                raise UsageError(
                    unreachable_message(
                        f"--model {name}",
                        reason,
                        "pass a local model folder instead (--model ./path/to/model, e.g. one "
                        "written by `sae-hacking make-tiny-model`), or run "
                        f"`hf download {name}` where there is network and copy the cache here.",
                    )
                ) from None
            try:
                model, tokenizer = _load(name, dtype, local_only=False)
            except OSError as err:
                first_line = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
                raise UsageError(f"--model {name} could not be loaded: {first_line}") from err
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer
