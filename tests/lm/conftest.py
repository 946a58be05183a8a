"""Tiny local models, built once per session (a few seconds in all)."""

import pytest

from sae_hacking.lm.tiny import TINY_ARCHS, generate_texts, tiny_model_once

# Ragged prompt lengths, longer than the tiny Gemma-2's sliding window (6 tokens).
PROMPTS = generate_texts(5, seed=11, min_words=2, max_words=14)
MAX_TOKENS = 24
LM_VARIANTS = (*TINY_ARCHS, "neox-sequential")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tiny_path(tiny_root):
    """``tiny_path(arch, **kwargs)``: folder of a tiny model, built on first use."""
    return lambda arch, **kwargs: tiny_model_once(tiny_root, arch, **kwargs)


def load_variant(variant, tiny_path):
    """A :class:`HookedLM` of a tiny model; ``neox-sequential`` is the tiny NeoX with
    attention and MLP in sequence (``use_parallel_residual=False``), random weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from sae_hacking.lm.hooked import HookedLM

    if variant != "neox-sequential":
        return HookedLM.from_pretrained(str(tiny_path(variant)), device="cpu", dtype="float32")
    path = tiny_path("neox")
    config = AutoConfig.from_pretrained(path)
    config.use_parallel_residual = False
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    return HookedLM(model, AutoTokenizer.from_pretrained(path), variant)


@pytest.fixture(scope="session", params=LM_VARIANTS)
def lm(request, tiny_path):
    return load_variant(request.param, tiny_path)


@pytest.fixture(scope="session")
def gemma_lm(tiny_path):
    return load_variant("gemma2", tiny_path)


@pytest.fixture
def batch(lm):
    b = lm.tokenize(PROMPTS, MAX_TOKENS)
    assert (b.attention_mask_BS == 0).any(), "the test batch must be ragged"
    return b
