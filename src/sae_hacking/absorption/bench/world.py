"""A tiny Gemma-2 model whose features are known: the world of the absorption testbed.

:func:`make_world` writes an ordinary tiny-model folder (:func:`sae_hacking.lm.tiny.make_tiny_model`,
loads like any tiny model) and then rewrites some of its weights so that:

- **Groups.** The vocabulary's whole-word tokens (``Ġ`` + lowercase letters, and only those
  the tokenizer gives back as that one token for ``" " + word``) are grouped by first letter;
  the ``groups`` most populous letters are the groups, every other token is "other" (-1).
- **Ablator hook** ``blocks.0.hook_resid_post``: block 0's MLP writes nothing (``down_proj``
  zero) and its attention's output norm is set to ``noise``, so the activation of token ``t`` is
  ``a·g_group(t) + b·u_t + ε`` with ``|ε| = noise`` depending on the context (which tokens the
  random attention reads). The embedding row is that target divided by Gemma-2's embedding scale
  ``sqrt(d_model)``. Parents ``g`` are orthonormal, token directions ``u`` are random unit vectors
  orthogonal to every ``g`` and ``o`` (so a latent's ``g`` component means it carries the
  parent, and a reader's ``o`` component comes from the circuit alone); "other" tokens get
  ``b·u_t`` only.
- **Reader hook** ``blocks.1.hook_resid_post``: block 1's attention writes nothing; its MLP has
  one neuron per group reading ``g`` (gate and up both ``g``: ``gelu(p)·p``, about ``relu(p)²``
  with ``p`` the normalised input's ``g`` component) and writing an output direction ``o``
  (orthonormal, orthogonal to every ``g``). Gemma-2 normalises the MLP's output
  (``post_feedforward_layernorm``); the MLP's raw output is kept a thousand times below that
  norm's ``eps``, where the norm is linear (a plain gain), so a group member's reader activation
  is ``x + output_scale·(act / act_ref)·o_group``: removing the parent removes the output, rather
  than the norm blowing a tiny remainder up to full size.
- **Prompts** (``prompts.txt``): each position picks a group uniformly, then a token of it by
  a Zipf law over the group's tokens (ranks a seeded permutation). Words are joined by spaces
  after a leading space, so every word is its ``Ġ`` token and re-tokenising gives back exactly
  the sampled tokens.

Everything the labelling needs is saved next to the model: ``world.safetensors`` (directions,
group and Zipf rank per token id, sampling probabilities, counts in the prompts) and
``world.json`` (settings, hooks, letters, token strings per group). Same seed, same bytes.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from jaxtyping import Float, Int

from sae_hacking.absorption.bench.world_config import WorldConfig
from sae_hacking.errors import FieldError

ABLATOR_HOOK = "blocks.0.hook_resid_post"
READER_HOOK = "blocks.1.hook_resid_post"
WORLD_TENSORS = "world.safetensors"
WORLD_JSON = "world.json"
PROMPTS = "prompts.txt"
MARKER = "Ġ"  # the byte-level BPE's word-boundary marker (a leading space)
OTHER = -1
# The MLP's raw output norm for a typical member, far below sqrt(eps · d) of the norm after it
# (Gemma-2's rms_norm_eps 1e-6, d = 64: 8e-3), so that norm acts as a linear gain.
RAW_OUTPUT_NORM = 1e-5
_FORMAT = 1


@dataclass
class World:
    """A written world: its folder (a model folder), settings and ground truth."""

    path: Path
    config: WorldConfig
    letters: list[str]  # group G's first letter
    group_tokens: list[list[int]]  # group G's token ids, Zipf rank 0 first
    token_strings: list[str]  # by token id, as the tokenizer spells them
    parents_GM: Float[torch.Tensor, "G M"]
    children_VM: Float[torch.Tensor, "V M"]
    outputs_GM: Float[torch.Tensor, "G M"]
    group_V: Int[torch.Tensor, " V"]  # group of each token id, -1 = other
    zipf_rank_V: Int[torch.Tensor, " V"]  # rank inside its group (0 = most frequent), -1 = other
    probability_V: Float[torch.Tensor, " V"]  # chance a prompt position is this token
    count_V: Int[torch.Tensor, " V"]  # occurrences in prompts.txt
    ablator_hook: str = ABLATOR_HOOK
    reader_hook: str = READER_HOOK

    @property
    def n_groups(self) -> int:
        return len(self.letters)

    def prompts(self) -> list[str]:
        return (self.path / PROMPTS).read_text(encoding="utf-8").splitlines()

    def activation_VM(self) -> Float[torch.Tensor, "V M"]:
        """Each token's noiseless ablator-hook activation ``a·g_group(t) + b·u_t``."""
        cfg = self.config
        parent_VM = torch.zeros_like(self.children_VM)
        member = self.group_V >= 0
        parent_VM[member] = self.parents_GM[self.group_V[member]]
        return cfg.parent_scale * parent_VM + cfg.child_scale * self.children_VM

    @classmethod
    def load(cls, path: str | Path) -> World:
        from safetensors.torch import load_file

        path = Path(path)
        for name in (WORLD_JSON, WORLD_TENSORS, PROMPTS):
            if not (path / name).is_file():
                raise FieldError("world", f"{path} is not a world folder: it has no {name}.")
        meta = json.loads((path / WORLD_JSON).read_text(encoding="utf-8"))
        tensors = load_file(path / WORLD_TENSORS)
        return cls(
            path=path,
            config=WorldConfig(**meta["config"]),
            letters=meta["letters"],
            group_tokens=[group["ids"] for group in meta["groups"]],
            token_strings=meta["token_strings"],
            ablator_hook=meta["ablator_hook"],
            reader_hook=meta["reader_hook"],
            **tensors,
        )


def make_world(path: str | Path, **settings) -> World:
    """Write a world to the new folder ``path``; ``settings`` are :class:`WorldConfig`'s
    (``groups=16, seed=0, d_model=64, vocab_size=1024, prompts=1000, ...``)."""
    from sae_hacking.lm.tiny import make_tiny_model

    config = WorldConfig(**settings)

    def finish(folder: Path) -> None:
        _write_world(folder, config)

    path = make_tiny_model(
        path,
        "gemma2",
        n_layers=2,
        d_model=config.d_model,
        vocab_size=config.vocab_size,
        seed=config.seed,
        finish=finish,
    )
    return World.load(path)


def word_tokens(tokenizer) -> dict[int, str]:
    """Token id -> word for the tokens that are a whole lowercase word after the boundary
    marker and that the tokenizer gives back alone for ``" " + word`` (so prompts round-trip)."""
    words = {}
    for string, token_id in tokenizer.get_vocab().items():
        word = string[len(MARKER) :]
        if not (string.startswith(MARKER) and word.isascii() and word.isalpha()):
            continue
        if word.islower() and tokenizer.encode(" " + word, add_special_tokens=False) == [token_id]:
            words[token_id] = word
    return words


def choose_groups(words: dict[int, str], n_groups: int) -> list[tuple[str, list[int]]]:
    """The ``n_groups`` letters most words start with (ties: alphabetical), each with its word
    token ids in id order."""
    by_letter: dict[str, list[int]] = {}
    for token_id in sorted(words):
        by_letter.setdefault(words[token_id][0], []).append(token_id)
    ranked = sorted(by_letter, key=lambda letter: (-len(by_letter[letter]), letter))
    if len(ranked) < n_groups:
        raise FieldError(
            "groups",
            f"asks for {n_groups} groups but this vocabulary's words start with only "
            f"{len(ranked)} letters; use fewer groups or a larger vocab_size.",
        )
    return [(letter, by_letter[letter]) for letter in sorted(ranked[:n_groups])]


def _write_world(folder: Path, config: WorldConfig) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model_config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    vocab = int(model_config["vocab_size"])
    eps = float(model_config["rms_norm_eps"])
    words = word_tokens(tokenizer)
    groups = choose_groups(words, config.groups)
    gen = torch.Generator().manual_seed(config.seed)
    group_tokens = []
    for _, ids in groups:  # rank 0 = most frequent: a seeded order, not the BPE's
        order = torch.randperm(len(ids), generator=gen).tolist()
        group_tokens.append([ids[i] for i in order])
    group_V = torch.full((vocab,), OTHER, dtype=torch.long)
    zipf_rank_V = torch.full((vocab,), OTHER, dtype=torch.long)
    probability_V = torch.zeros(vocab, dtype=torch.float64)
    for g, ids in enumerate(group_tokens):
        weights = torch.tensor([(r + 1.0) ** -config.zipf_exponent for r in range(len(ids))])
        group_V[ids] = g
        zipf_rank_V[ids] = torch.arange(len(ids))
        probability_V[ids] = weights.double() / weights.sum() / len(group_tokens)
    parents_GM, children_VM, outputs_GM = _directions(config, vocab, group_V, gen)
    texts, count_V = _prompts(config, group_tokens, probability_V, words, vocab)
    world = World(
        folder,
        config,
        [letter for letter, _ in groups],
        group_tokens,
        tokenizer.convert_ids_to_tokens(list(range(vocab))),
        parents_GM,
        children_VM,
        outputs_GM,
        group_V,
        zipf_rank_V,
        probability_V.float(),
        count_V,
    )
    _rewrite_weights(folder, world, eps)
    (folder / PROMPTS).write_text("\n".join(texts) + "\n", encoding="utf-8")
    _save(folder, world)


def _directions(config: WorldConfig, vocab: int, group_V, gen):
    """Orthonormal parents and outputs; unit token directions orthogonal to all of them."""
    d, n = config.d_model, config.groups
    basis_MM, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    parents_GM = basis_MM[:, :n].T.contiguous()
    outputs_GM = basis_MM[:, n : 2 * n].T.contiguous()
    rest_MR = basis_MM[:, 2 * n :]  # the complement of the parents' and outputs' span
    children_VM = torch.randn(vocab, d - 2 * n, generator=gen, dtype=torch.float64) @ rest_MR.T
    children_VM /= children_VM.norm(dim=1, keepdim=True)
    return parents_GM.float(), children_VM.float(), outputs_GM.float()


def _prompts(config: WorldConfig, group_tokens, probability_V, words, vocab: int):
    rng = random.Random(config.seed + 1)
    weights = [[float(probability_V[t]) for t in ids] for ids in group_tokens]
    texts, counts = [], Counter()
    for _ in range(config.prompts):
        length = rng.randint(config.min_words, config.max_words)
        tokens = []
        for _ in range(length):
            g = rng.randrange(len(group_tokens))
            tokens.append(rng.choices(group_tokens[g], weights=weights[g])[0])
        counts.update(tokens)
        # The leading space makes the first word a marked word token like the others.
        texts.append("".join(" " + words[t] for t in tokens))
    count_V = torch.zeros(vocab, dtype=torch.long)
    for token_id, count in counts.items():
        count_V[token_id] = count
    return texts, count_V


def _rewrite_weights(folder: Path, world: World, eps: float) -> None:
    from safetensors.torch import load_file, save_file

    cfg = world.config
    d, n = cfg.d_model, cfg.groups
    file = folder / "model.safetensors"
    weights = load_file(file)
    # Block 0: the residual after it is the scaled embedding plus the attention's noise.
    target_VM = world.activation_VM()
    weights["model.embed_tokens.weight"] = (target_VM / math.sqrt(d)).contiguous()
    weights["model.layers.0.mlp.down_proj.weight"].zero_()
    # Gemma-2 normalises the attention output to RMS (1 + w): a vector of norm (1 + w) sqrt(d).
    weights["model.layers.0.post_attention_layernorm.weight"].fill_(cfg.noise / math.sqrt(d) - 1)
    # Block 1: no attention; the MLP's group neurons read g and write o.
    weights["model.layers.1.self_attn.o_proj.weight"].zero_()
    weights["model.layers.1.pre_feedforward_layernorm.weight"].zero_()
    gate_IM = weights["model.layers.1.mlp.gate_proj.weight"].zero_()
    up_IM = weights["model.layers.1.mlp.up_proj.weight"].zero_()
    down_MI = weights["model.layers.1.mlp.down_proj.weight"].zero_()
    gate_IM[:n] = world.parents_GM
    up_IM[:n] = world.parents_GM
    # A member's g component after the (unit-gain) pre-norm, and its neuron's activation.
    p_ref = cfg.parent_scale * math.sqrt(d) / math.hypot(cfg.parent_scale, cfg.child_scale)
    act_ref = torch.nn.functional.gelu(torch.tensor(p_ref), approximate="tanh").item() * p_ref
    raw_scale = RAW_OUTPUT_NORM / act_ref
    down_MI[:, :n] = raw_scale * world.outputs_GM.T
    # Linear regime: norm(m) = m (1 + w) / sqrt(eps), so this gain gives |out| = output_scale.
    gain = cfg.output_scale * math.sqrt(eps) / RAW_OUTPUT_NORM
    weights["model.layers.1.post_feedforward_layernorm.weight"].fill_(gain - 1)
    save_file(weights, file, metadata={"format": "pt"})


def _save(folder: Path, world: World) -> None:
    from safetensors.torch import save_file

    tensors = {
        "parents_GM": world.parents_GM,
        "children_VM": world.children_VM,
        "outputs_GM": world.outputs_GM,
        "group_V": world.group_V,
        "zipf_rank_V": world.zipf_rank_V,
        "probability_V": world.probability_V,
        "count_V": world.count_V,
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, folder / WORLD_TENSORS)
    meta = {
        "format": _FORMAT,
        "config": asdict(world.config),
        "ablator_hook": world.ablator_hook,
        "reader_hook": world.reader_hook,
        "letters": world.letters,
        "groups": [
            {
                "letter": letter,
                "ids": ids,
                "tokens": [world.token_strings[t] for t in ids],
                "counts": [int(world.count_V[t]) for t in ids],
            }
            for letter, ids in zip(world.letters, world.group_tokens, strict=True)
        ],
        "token_strings": world.token_strings,
    }
    (folder / WORLD_JSON).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")


# -- reading the world's hooks ------------------------------------------------------------------


def read_real_tokens(
    world: World, lm, hook: str, max_prompts: int | None = None, batch_size: int = 64
) -> tuple[Float[torch.Tensor, "N M"], Int[torch.Tensor, " N"], Int[torch.Tensor, " N"]]:
    """Activations at ``hook`` on the world's prompts, real tokens only (no BOS, no padding):
    ``(acts_NM, token_ids_N, prompt_N)`` in prompt order, float32 on the CPU."""
    from sae_hacking.data.text import tokenize_prompts

    texts = world.prompts()[:max_prompts]
    acts, ids, prompts = [], [], []
    for start in range(0, len(texts), batch_size):
        batch = tokenize_prompts(
            lm.tokenizer, texts[start : start + batch_size], world.config.max_words + 1
        ).to(lm.device)
        acts_BSM = lm.read(batch.input_ids_BS, batch.attention_mask_BS, [hook])[hook]
        real_BS = batch.real_token_mask_BS
        acts.append(acts_BSM[real_BS].float().cpu())
        ids.append(batch.input_ids_BS[real_BS].cpu())
        rows_BS = torch.arange(start, start + len(real_BS), device=real_BS.device)[:, None]
        prompts.append(rows_BS.expand_as(real_BS)[real_BS].cpu())
    return torch.cat(acts), torch.cat(ids), torch.cat(prompts)


def probe_accuracy(
    world: World, lm, max_prompts: int | None = None, train_fraction: float = 0.5
) -> float:
    """Held-out accuracy of a linear probe for the group of each token occurrence, from the
    ablator hook's activations: least squares onto one-hot groups (with a bias) on the first
    ``train_fraction`` of the prompts, argmax scored on the rest (whole prompts held out)."""
    acts_NM, ids_N, prompt_N = read_real_tokens(world, lm, world.ablator_hook, max_prompts)
    group_N = world.group_V[ids_N]
    keep_N = group_N >= 0
    acts_NM, group_N, prompt_N = acts_NM[keep_N], group_N[keep_N], prompt_N[keep_N]
    train_N = prompt_N < int(train_fraction * (int(prompt_N.max()) + 1))
    if train_N.all() or not train_N.any():
        raise ValueError("probe_accuracy needs prompts on both sides of the split")
    inputs_NK = torch.cat([acts_NM, torch.ones(len(acts_NM), 1)], dim=1).double()
    targets_NG = torch.nn.functional.one_hot(group_N, world.n_groups).double()
    weights_KG = torch.linalg.lstsq(inputs_NK[train_N], targets_NG[train_N]).solution
    predicted_N = (inputs_NK[~train_N] @ weights_KG).argmax(dim=1)
    return float((predicted_N == group_N[~train_N]).double().mean())
