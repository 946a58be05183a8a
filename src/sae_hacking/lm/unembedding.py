"""A model's unembedding matrix ``W_U [V, M]`` without loading the model: the one tensor read
from its safetensors weights (``lm_head.weight``, ``embed_out.weight``, or the input embedding
when the config ties them, as Gemma's does). For the logit lens of SAEs a run did not compute
it for (a reader SAE); a model without safetensors weights is loaded whole instead."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from jaxtyping import Float

from sae_hacking.errors import FieldError

HEADS = ("lm_head.weight", "embed_out.weight")
TIED = ("model.embed_tokens.weight", "transformer.wte.weight", "gpt_neox.embed_in.weight")
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


def load_unembedding(name: str) -> Float[torch.Tensor, "V M"]:
    """``W_U`` of model ``name`` (local folder or hub id), float32 on the CPU."""
    from sae_hacking.lm.loading import is_local_path

    file_of = _local_files(name) if is_local_path(name) else _hub_files(name)
    config = json.loads(file_of("config.json").read_text(encoding="utf-8"))
    weight_map = _weight_map(file_of)
    if weight_map is not None:
        tied = config.get("tie_word_embeddings", True)
        for key in HEADS + (TIED if tied else ()):
            if key in weight_map:
                from safetensors import safe_open

                with safe_open(str(file_of(weight_map[key])), "pt") as weights:
                    return weights.get_tensor(key).float()
    from sae_hacking.lm.loading import load_model_and_tokenizer

    model, _ = load_model_and_tokenizer(name, torch.device("cpu"), torch.float32)
    return model.get_output_embeddings().weight.detach()


def _weight_map(file_of) -> dict[str, str] | None:
    """Tensor name -> file, from the safetensors index or the single file (None: neither)."""
    try:
        index = json.loads(file_of(INDEX).read_text(encoding="utf-8"))
        return dict(index["weight_map"])
    except (FileNotFoundError, OSError, KeyError, ValueError):
        pass
    try:
        single = file_of(SINGLE)
    except (FileNotFoundError, OSError):
        return None
    from safetensors import safe_open

    with safe_open(str(single), "pt") as weights:
        return dict.fromkeys(weights.keys(), SINGLE)


def _local_files(name: str):
    folder = Path(name)

    def file_of(filename: str) -> Path:
        path = folder / filename
        if not path.is_file():
            if filename == "config.json":
                raise FieldError("model", f"{name} has no config.json.")
            raise FileNotFoundError(path)
        return path

    return file_of


def _hub_files(name: str):
    from sae_hacking.hub import hub_file

    def file_of(filename: str) -> Path:
        from huggingface_hub.errors import EntryNotFoundError

        try:
            return hub_file(name, filename, what=f"the model {name}")
        except EntryNotFoundError:
            raise FileNotFoundError(filename) from None

    return file_of
