"""``make_config(name="run", **changes)``: a small ``sae-hacking train`` config on the tiny model
(the settings in ``changes`` changed), writing to ``tmp_path/NAME``."""

from __future__ import annotations

import pytest

from sae_hacking.config import from_flat
from sae_hacking.train.config import TrainConfig
from tests.train.train_testkit import HOOK


@pytest.fixture
def make_config(tiny_model_path, prompts_path, tmp_path):
    def make(name: str = "run", **changes) -> TrainConfig:
        flat = {
            "model": str(tiny_model_path("gemma2")),
            "device": "cpu",
            "dataset_id": str(prompts_path(120, seed=3)),
            "max_tokens_in_prompt": 32,
            "batch_size": 8,
            "hook": HOOK,
            "architecture": "topk",
            "sae_hidden_dim": 128,
            "k": 16,
            "max_step": 200,
            "batch_tokens": 128,
            "buffer_tokens": 512,
            "lr": 3e-3,
            "eval_prompts": 8,
            "eval_every": 50,
            "log_every": 10,
            "checkpoint_every": 1000,
            "output_dir": str(tmp_path / name),
            "quiet": True,
            **changes,
        }
        return from_flat(TrainConfig, flat)

    return make
