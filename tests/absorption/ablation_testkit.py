"""Shared pieces of the ablation tests: tiny models with enough layers, small random SAEs."""

from __future__ import annotations

from sae_hacking.lm.hooked import HookedLM
from sae_hacking.lm.tiny import generate_texts, tiny_model_once
from sae_hacking.saes.jumprelu import JumpReLUSAE
from sae_hacking.saes.tiny import random_jumprelu

N_LAYERS = 3
ABLATOR_HOOK = "blocks.1.hook_mlp_out"
READER_HOOK = "blocks.2.hook_resid_post"
D_ABLATOR = 96
D_READER = 80
# Ragged prompts: lengths from 3 to 16 words, cut at 20 tokens, so the batch is padded.
PROMPTS = generate_texts(6, seed=5, min_words=1, max_words=16)
MAX_TOKENS = 20


def tiny_lm(root, arch: str) -> HookedLM:
    path = tiny_model_once(root, arch, n_layers=N_LAYERS)
    return HookedLM.from_pretrained(str(path), device="cpu", dtype="float32")


def random_sae(hook: str, d_sae: int, seed: int, d_in: int = 64) -> JumpReLUSAE:
    """A JumpReLU SAE with random weights and thresholds that leave tens of latents active."""
    return random_jumprelu(d_in, d_sae, hook, seed)
