"""Shared settings of the ablation tests: a tiny model with enough layers, two SAE hooks."""

from __future__ import annotations

from sae_hacking.lm.tiny import generate_texts

N_LAYERS = 3
ABLATOR_HOOK = "blocks.1.hook_mlp_out"
READER_HOOK = "blocks.2.hook_resid_post"
D_ABLATOR = 96
D_READER = 80
# Ragged prompts: lengths from 3 to 16 words, cut at 20 tokens, so the batch is padded.
PROMPTS = generate_texts(6, seed=5, min_words=1, max_words=16)
MAX_TOKENS = 20
