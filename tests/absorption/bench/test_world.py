"""The absorption testbed's world: a tiny Gemma-2 whose ablator-hook activations are
``a·g_group + b·u_t + noise`` and whose block 1 maps each parent g to an output o."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
import torch

from sae_hacking.absorption.bench.world import (
    MARKER,
    World,
    make_world,
    probe_accuracy,
    read_real_tokens,
    word_tokens,
)
from sae_hacking.errors import FieldError
from sae_hacking.lm.source import ModelSource

PROMPTS = 200


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return make_world(tmp_path_factory.mktemp("bench") / "world", prompts=PROMPTS)


@pytest.fixture(scope="module")
def lm(world):
    source = ModelSource(name=str(world.path), device="cpu", dtype="float32")
    source.check_inputs()  # the folder passes the checks every run makes
    return source.load()


def _other_groups(world, group_N):
    """[N, G] mask: True where the group is not the token's own."""
    mask_NG = torch.ones(len(group_N), world.n_groups, dtype=torch.bool)
    mask_NG[torch.arange(len(group_N)), group_N] = False
    return mask_NG


def test_groups_are_the_most_populous_first_letters(world, lm):
    words = word_tokens(lm.tokenizer)
    assert all(
        lm.tokenizer.encode(" " + w, add_special_tokens=False) == [t] for t, w in words.items()
    )
    letters = Counter(word[0] for word in words.values())
    assert len(world.letters) == world.config.groups == 16
    fewest_in = min(letters[letter] for letter in world.letters)
    assert all(n <= fewest_in for letter, n in letters.items() if letter not in world.letters)
    for g, (letter, ids) in enumerate(zip(world.letters, world.group_tokens, strict=True)):
        assert len(ids) >= 2
        assert all(world.token_strings[t].startswith(MARKER + letter) for t in ids)
        assert world.group_V[ids].eq(g).all()
        assert world.zipf_rank_V[ids].tolist() == list(range(len(ids)))
    members = sum(len(ids) for ids in world.group_tokens)
    assert int((world.group_V >= 0).sum()) == members
    assert world.group_V[lm.tokenizer.bos_token_id] == -1
    assert world.probability_V.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_prompts_retokenize_to_the_sampled_tokens(world, lm):
    bos = lm.tokenizer.bos_token_id
    counts = Counter()
    for text in world.prompts():
        ids = lm.tokenizer(text)["input_ids"]
        assert ids[0] == bos
        tokens = ids[1:]
        # One token per word, each the word's marked token, spelling the text exactly.
        assert [world.token_strings[t] for t in tokens] == [MARKER + w for w in text.split()]
        assert "".join(world.token_strings[t] for t in tokens).replace(MARKER, " ") == text
        assert all(world.group_V[t] >= 0 for t in tokens)
        counts.update(tokens)
    assert len(world.prompts()) == PROMPTS
    assert dict(counts) == {t: int(c) for t, c in enumerate(world.count_V.tolist()) if c}


def test_token_frequencies_follow_zipf_inside_each_group(world):
    for ids in world.group_tokens:
        counts = world.count_V[ids].double()
        expected = world.probability_V[ids].double() * world.count_V.sum()
        assert counts[0] > 2 * counts[-1]  # rank 0 is clearly the most frequent
        assert torch.corrcoef(torch.stack([counts, expected]))[0, 1] > 0.9


def test_ablator_hook_holds_parent_plus_child_plus_noise(world, lm):
    acts_NM, ids_N, _ = read_real_tokens(world, lm, world.ablator_hook)
    clean_NM = world.activation_VM()[ids_N]
    noise_N = (acts_NM - clean_NM).norm(dim=1)
    assert torch.allclose(noise_N, torch.full_like(noise_N, world.config.noise), atol=1e-4)
    # The parent part: the token's own g with weight a, orthogonal to every token direction.
    parent_NG = clean_NM @ world.parents_GM.T
    group_N = world.group_V[ids_N]
    own_N = parent_NG[torch.arange(len(ids_N)), group_N]
    assert torch.allclose(own_N, torch.full_like(own_N, world.config.parent_scale), atol=1e-5)
    assert parent_NG[_other_groups(world, group_N)].abs().max() < 1e-5


def test_linear_probe_reads_the_group(world, lm):
    assert probe_accuracy(world, lm) >= 0.99
    # Control: labels that ignore the first letter (each token in a random group) are not
    # linearly readable, so the probe's score says something about the geometry.
    gen = torch.Generator().manual_seed(0)
    shuffled_V = world.group_V.clone()
    members = (world.group_V >= 0).nonzero().squeeze(1)
    shuffled_V[members] = world.group_V[members[torch.randperm(len(members), generator=gen)]]
    assert probe_accuracy(dataclasses.replace(world, group_V=shuffled_V), lm) < 0.9


def test_block_one_writes_the_parents_output_direction(world, lm):
    reader_NM, ids_N, _ = read_real_tokens(world, lm, world.reader_hook)
    group_N = world.group_V[ids_N]
    out_NG = reader_NM @ world.outputs_GM.T
    scale = world.config.output_scale
    assert out_NG[torch.arange(len(ids_N)), group_N].min() > 0.8 * scale
    assert out_NG[_other_groups(world, group_N)].abs().max() < 0.1 * scale
    # The token-identity path survives: the reader still holds b·u_t.
    child_N = (reader_NM * world.children_VM[ids_N]).sum(1)
    assert (child_N - world.config.child_scale).abs().max() < 0.2


def test_removing_the_parent_removes_the_output(world, lm):
    parents_GM = world.parents_GM

    def without_parents(acts_BSM):
        return acts_BSM - (acts_BSM @ parents_GM.T) @ parents_GM

    texts = world.prompts()[:16]
    batch = lm.tokenize(texts, world.config.max_words + 1)
    hooks = [world.reader_hook]
    real = batch.real_token_mask_BS
    clean = lm.read(batch.input_ids_BS, batch.attention_mask_BS, hooks)[world.reader_hook]
    patched = lm.read(
        batch.input_ids_BS,
        batch.attention_mask_BS,
        hooks,
        patches={world.ablator_hook: without_parents},
    )[world.reader_hook]
    outputs_GM = world.outputs_GM
    assert (clean[real] @ outputs_GM.T).abs().max(1).values.min() > 0.8
    assert (patched[real] @ outputs_GM.T).abs().max() < 0.05
    # The ablation stage runs only the layers between the hooks: same result on this model.
    cache = lm.read(
        batch.input_ids_BS[:1],
        batch.attention_mask_BS[:1],
        [world.ablator_hook],
        context_for=world.ablator_hook,
    )
    start = without_parents(cache[world.ablator_hook])
    between = lm.run_between(world.ablator_hook, start, world.reader_hook, cache.context)
    assert torch.allclose(between, patched[:1, : between.shape[1]], atol=1e-5)


def test_same_seed_same_bytes_other_seed_other_world(tmp_path):
    first = make_world(tmp_path / "a", prompts=20)
    again = make_world(tmp_path / "b", prompts=20)
    other = make_world(tmp_path / "c", prompts=20, seed=1)
    files = sorted(p.name for p in first.path.iterdir())
    assert {"model.safetensors", "world.safetensors", "world.json", "prompts.txt"} <= set(files)
    assert files == sorted(p.name for p in again.path.iterdir())
    for name in files:
        assert (first.path / name).read_bytes() == (again.path / name).read_bytes(), name
    for name in ("model.safetensors", "world.safetensors", "prompts.txt"):
        assert (first.path / name).read_bytes() != (other.path / name).read_bytes(), name


def test_load_gives_back_the_world(world):
    loaded = World.load(world.path)
    assert loaded.config == world.config
    assert loaded.letters == world.letters and loaded.group_tokens == world.group_tokens
    for field in ("parents_GM", "children_VM", "outputs_GM", "group_V", "count_V"):
        assert torch.equal(getattr(loaded, field), getattr(world, field)), field


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        (dict(groups=0), "groups"),
        (dict(groups=27), "groups"),
        (dict(groups=13, d_model=32), "groups"),
        (dict(noise=-0.1), "noise"),
        (dict(min_words=9, max_words=8), "min_words"),
        (dict(vocab_size=300, groups=20), "groups"),  # too few letters in a small vocabulary
    ],
)
def test_bad_settings_are_refused_and_leave_nothing(tmp_path, settings, field):
    with pytest.raises(FieldError) as err:
        make_world(tmp_path / "new" / "world", prompts=5, **settings)
    assert err.value.field == field
    assert not (tmp_path / "new").exists()
