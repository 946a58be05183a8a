"""Every tiny model family as a fixture, plus a NeoX with attention and MLP in sequence."""

import pytest

from sae_hacking.lm.tiny import TINY_ARCHS, generate_texts

# Ragged prompt lengths, longer than the tiny Gemma-2's sliding window (6 tokens) and the tiny
# GPT-Neo's local window (4).
PROMPTS = generate_texts(5, seed=11, min_words=2, max_words=14)
MAX_TOKENS = 24
LM_VARIANTS = (*TINY_ARCHS, "neox-sequential")


def sequential_neox(tiny_model_path):
    """The tiny NeoX with attention and MLP in sequence (``use_parallel_residual=False``),
    random weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from sae_hacking.lm.hooked import HookedLM

    path = tiny_model_path("neox")
    config = AutoConfig.from_pretrained(path)
    config.use_parallel_residual = False
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    return HookedLM(model, AutoTokenizer.from_pretrained(path), "neox-sequential")


@pytest.fixture(scope="session", params=LM_VARIANTS)
def lm(request, tiny_lm, tiny_model_path):
    if request.param == "neox-sequential":
        return sequential_neox(tiny_model_path)
    return tiny_lm(request.param)


@pytest.fixture(scope="session")
def gemma_lm(tiny_lm):
    return tiny_lm("gemma2")


@pytest.fixture
def batch(lm):
    b = lm.tokenize(PROMPTS, MAX_TOKENS)
    assert (b.attention_mask_BS == 0).any(), "the test batch must be ragged"
    return b


@pytest.fixture(scope="session")
def wide_heads_path(tiny_model_path, tmp_path_factory):
    """Folder of a tiny Gemma-2 whose heads are wider than d_model / n_heads (4 x 24 = 96 vs
    d_model 64), as Gemma-2-2B's (8 x 256 = 2048 vs 2304): ``attn.hook_z`` is not d_model
    wide. Random weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = tiny_model_path("gemma2")
    config = AutoConfig.from_pretrained(path)
    config.head_dim = 24
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    folder = tmp_path_factory.mktemp("gemma2-wide-heads")
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(path).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def wide_lm(wide_heads_path):
    from sae_hacking.lm.hooked import HookedLM

    return HookedLM.from_pretrained(str(wide_heads_path), device="cpu", dtype="float32")
