"""Tiny local language models: random weights and a BPE tokenizer trained on generated text.

``make_tiny_model`` writes an ordinary Hugging Face model folder (``config.json``,
``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``) that
``AutoModelForCausalLM`` / ``AutoTokenizer`` load like any hub model, so every pipeline can run
end to end offline and the tests exercise the real loading path. Output is a pure function of the
arguments: the same seed gives byte-identical files.

Tokenizer conventions copy the real families, because the batcher's BOS rule depends on them:
Gemma-2 and Llama tokenizers add BOS themselves; GPT-2, GPT-Neo (TinyStories), Pythia (NeoX) and
Qwen2 tokenizers do not, and their BOS is the ``<|endoftext|>`` token, which is also EOS.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sae_hacking.errors import FieldError, UsageError
from sae_hacking.folders import check_new_folder

TINY_ARCHS = ("gemma2", "gpt2", "gpt_neo", "neox", "llama", "qwen2")
# Bounds that keep a build to seconds and a few hundred MB (100M float32 parameters take about
# 10 s to build and write on a 2-core machine).
MAX_LAYERS = 64
MAX_D_MODEL = 2048
MIN_VOCAB, MAX_VOCAB = 300, 65536  # 256 byte tokens + specials + merges
MAX_PARAMETERS = 100_000_000
MAX_PROMPTS = 1_000_000
GPT_NEO_WINDOW = 4  # tokens a tiny GPT-Neo's local layers see (TinyStories-33M's see 256)

_SYLLABLES = (
    "ka lo mi ne ru sa ti vo ze po da fi gu he ja ko le mu ni ro "
    "su ta ve zi pa de fo gi hu jo ba ce xi qu wy"
).split()
_PUNCTUATION = (".", ".", ".", "?", "!", ",")


@dataclass(frozen=True)
class _Specials:
    bos: str
    eos: str
    pad: str
    unk: str
    tokenizer_adds_bos: bool

    def ordered(self) -> list[str]:
        """Distinct special tokens, in the order they get the first vocabulary ids."""
        seen: list[str] = []
        for token in (self.pad, self.eos, self.bos, self.unk):
            if token not in seen:
                seen.append(token)
        return seen


_GEMMA_SPECIALS = _Specials("<bos>", "<eos>", "<pad>", "<unk>", tokenizer_adds_bos=True)
_LLAMA_SPECIALS = _Specials("<s>", "</s>", "<pad>", "<unk>", tokenizer_adds_bos=True)
_GPT_SPECIALS = _Specials(
    "<|endoftext|>", "<|endoftext|>", "<|padding|>", "<|unk|>", tokenizer_adds_bos=False
)
_SPECIALS = {
    "gemma2": _GEMMA_SPECIALS,
    "llama": _LLAMA_SPECIALS,
    "gpt2": _GPT_SPECIALS,
    "gpt_neo": _GPT_SPECIALS,
    "neox": _GPT_SPECIALS,
    "qwen2": _GPT_SPECIALS,
}


def generate_texts(n: int, seed: int = 0, min_words: int = 3, max_words: int = 24) -> list[str]:
    """``n`` sentences of word-like strings; a Zipf-ish word distribution gives BPE merges."""
    if n < 0:
        raise FieldError("prompts", f"must not be negative, got {n}.")
    rng = random.Random(seed)
    words = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(400)]
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    texts = []
    for _ in range(n):
        count = rng.randint(min_words, max_words)
        sentence = " ".join(rng.choices(words, weights=weights, k=count))
        texts.append(sentence[0].upper() + sentence[1:] + rng.choice(_PUNCTUATION))
    return texts


def train_tokenizer(arch: str, vocab_size: int, seed: int = 0):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with the family's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = _SPECIALS[arch]
    tokenizer = Tokenizer(models.BPE(unk_token=specials.unk))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials.ordered(),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(generate_texts(3000, seed=seed), trainer)
    if specials.tokenizer_adds_bos:
        bos_id = tokenizer.token_to_id(specials.bos)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{specials.bos} $A",
            pair=f"{specials.bos} $A {specials.bos} $B",
            special_tokens=[(specials.bos, bos_id)],
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=specials.bos,
        eos_token=specials.eos,
        pad_token=specials.pad,
        unk_token=specials.unk,
    )


def tiny_config(arch: str, vocab_size: int, n_layers: int, d_model: int, token_ids: dict):
    """A small config of the family; shapes are chosen so every code path is exercised
    (grouped-query attention, partial rotary, sliding windows shorter than test prompts)."""
    import transformers

    heads = 4
    common = dict(vocab_size=vocab_size, initializer_range=0.1, **token_ids)
    if arch == "gemma2":
        return transformers.Gemma2Config(
            hidden_size=d_model,
            intermediate_size=2 * d_model,
            num_hidden_layers=n_layers,
            num_attention_heads=heads,
            num_key_value_heads=2,
            head_dim=d_model // heads,
            query_pre_attn_scalar=d_model // heads,
            sliding_window=6,
            max_position_embeddings=512,
            **common,
        )
    if arch == "gpt2":
        return transformers.GPT2Config(
            n_embd=d_model, n_layer=n_layers, n_head=heads, n_positions=512, **common
        )
    if arch == "gpt_neo":
        # TinyStories-33M's layout: global and local layers alternating, tied embeddings, an MLP
        # of 4 * d_model; its window is 256 tokens, this one is shorter than the test prompts.
        layer_types = [("global", "local")[layer % 2] for layer in range(n_layers)]
        return transformers.GPTNeoConfig(
            hidden_size=d_model,
            num_layers=n_layers,
            num_heads=heads,
            attention_types=[[layer_types, 1]],
            window_size=GPT_NEO_WINDOW,
            max_position_embeddings=512,
            **common,
        )
    if arch == "neox":
        return transformers.GPTNeoXConfig(
            hidden_size=d_model,
            intermediate_size=4 * d_model,
            num_hidden_layers=n_layers,
            num_attention_heads=heads,
            max_position_embeddings=512,
            use_parallel_residual=True,
            **common,
        )
    config_cls = transformers.LlamaConfig if arch == "llama" else transformers.Qwen2Config
    return config_cls(
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=2,
        max_position_embeddings=512,
        **common,
    )


def estimated_parameters(n_layers: int, d_model: int, vocab_size: int) -> int:
    """An upper bound on a tiny model's parameter count, any family: per layer at most 4 d² of
    attention and 8 d² of MLP; untied input and output embeddings; 512 learnt positions."""
    return n_layers * 12 * d_model**2 + (2 * vocab_size + 512) * d_model


def check_tiny_model_args(
    path: str | Path,
    arch: str = "gemma2",
    n_layers: int = 2,
    d_model: int = 64,
    vocab_size: int = 512,
    prompts: int = 0,
    sae_width: int | None = None,
) -> Path:
    """Refuse arguments :func:`make_tiny_model` cannot build from, before any work (no torch).

    Returns ``path`` as a :class:`Path`. Sizes: ``n_layers`` 1..64, ``d_model`` a multiple of 16
    in 16..2048, ``vocab_size`` 300..65536, at most 100M parameters in all; ``prompts``
    0..1,000,000; ``sae_width`` (when given) 1..65536. ``path`` must be a new or empty folder
    whose parent can be created and written (not under /proc, /sys or /dev).
    """
    if arch not in TINY_ARCHS:
        raise FieldError("arch", f"is {arch!r}, expected one of {', '.join(TINY_ARCHS)}.")
    _check_range("n_layers", n_layers, 1, MAX_LAYERS)
    _check_range("d_model", d_model, 16, MAX_D_MODEL)
    if d_model % 16:
        raise FieldError(
            "d_model", f"must be a multiple of 16 (4 heads of even size), got {d_model}."
        )
    _check_range("vocab_size", vocab_size, MIN_VOCAB, MAX_VOCAB)
    n_params = estimated_parameters(n_layers, d_model, vocab_size)
    if n_params > MAX_PARAMETERS:
        raise UsageError(
            f"a tiny model with {n_layers} layers of width {d_model} would have about "
            f"{n_params / 1e6:.0f}M parameters, over the limit of {MAX_PARAMETERS // 1_000_000}M "
            "for tiny models; use fewer layers or a smaller width."
        )
    _check_range("prompts", prompts, 0, MAX_PROMPTS)
    if sae_width is not None:
        _check_range("sae_width", sae_width, 1, 65536)
    return check_new_folder(path, "path")


def _check_range(field: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(field, f"must be a whole number, got {value!r}.")
    if not low <= value <= high:
        raise FieldError(field, f"must be between {low} and {high}, got {value}.")


def make_tiny_model(
    path: str | Path,
    arch: str = "gemma2",
    n_layers: int = 2,
    d_model: int = 64,
    vocab_size: int = 512,
    seed: int = 0,
    prompts: int = 0,
    finish: Callable[[Path], None] | None = None,
) -> Path:
    """Write a tiny ``arch`` model folder (float32 weights) with a trained tokenizer to ``path``.

    With ``prompts``, also ``prompts.txt``: that many generated prompts (seed ``seed + 1``), one
    a line. ``finish(folder)``, if given, may add files to the folder before it is published.
    Everything is written to a temporary folder next to ``path`` and renamed into place at the
    end, so a failure or an interruption leaves nothing behind (not even created parents).
    """
    path = check_tiny_model_args(path, arch, n_layers, d_model, vocab_size, prompts)
    created = _make_parents(path.parent)
    staging = None
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        staging.chmod(0o755)  # mkdtemp's 0700 would make the finished folder private
        _write_model(staging, arch, n_layers, d_model, vocab_size, seed)
        if prompts:
            texts = generate_texts(prompts, seed=seed + 1)
            (staging / "prompts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
        if finish is not None:
            finish(staging)
        if path.exists():
            path.rmdir()
        os.replace(staging, path)
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return path


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; the ones created, outermost first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    missing.reverse()
    for folder in missing:
        folder.mkdir()
    return missing


def _write_model(
    folder: Path, arch: str, n_layers: int, d_model: int, vocab_size: int, seed: int
) -> None:
    import torch
    import transformers

    from sae_hacking.lm.loading import transformers_output

    with transformers_output(progress=False):
        tokenizer = train_tokenizer(arch, vocab_size, seed)
        token_ids = dict(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        config = tiny_config(arch, len(tokenizer), n_layers, d_model, token_ids)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    # The weights are written through a private temporary file (mode 0600); give every file the
    # mode an ordinary write gets under this umask, as config.json has.
    mode = (folder / "config.json").stat().st_mode & 0o777
    for file in folder.iterdir():
        file.chmod(mode)


def tiny_model_once(root: str | Path, arch: str, **kwargs) -> Path:
    """``make_tiny_model`` into ``root``, reusing the folder when one with these arguments exists
    (test fixtures of several packages share one build per session)."""
    options = {"n_layers": 2, "d_model": 64, "vocab_size": 512, "seed": 0, **kwargs}
    path = Path(root) / "-".join([arch, *(f"{k}{v}" for k, v in sorted(options.items()))])
    if not (path / "config.json").is_file():
        make_tiny_model(path, arch, **options)
    return path
