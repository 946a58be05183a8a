"""Co-occurrence counting: every kernel equals the brute-force loop; padding and BOS excluded;
the results reader returns the same counts, rows and frequencies."""

import numpy as np
import pytest
import torch

import sae_hacking.absorption.cooccurrence.kernels as kernels
from sae_hacking.absorption.cooccurrence.accumulator import (
    CooccurrenceAccumulator,
    Cooccurrences,
    PairCounter,
)
from sae_hacking.absorption.cooccurrence.kernels import active_lists, pair_index
from sae_hacking.data.text import tokenize_prompts
from sae_hacking.errors import FieldError, UsageError
from sae_hacking.lm.tiny import generate_texts
from sae_hacking.runs.results import write_results
from tests.oracles import count_pairs_reference, unpack_triangle
from tests.random_saes import random_sae

HOOK = "blocks.0.hook_resid_post"


def random_active(n_tokens, e, seed, density=0.3):
    gen = torch.Generator().manual_seed(seed)
    active = torch.rand(n_tokens, e, generator=gen) < density
    active[::7] = False  # tokens with nothing active
    return active


def as_sets(active):
    return [torch.nonzero(row).flatten().tolist() for row in active]


@pytest.mark.parametrize("kernel", ["numba", "torch"])
@pytest.mark.parametrize("seed", [0, 1])
def test_full_counts_equal_brute_force(kernel, seed, monkeypatch):
    monkeypatch.setattr(kernels, "PAIRS_PER_CHUNK", 50)  # exercise the torch kernel's chunks
    e = 17
    counter = PairCounter(e, kernel=kernel)
    sets = []
    for batch in range(3):
        active = random_active(23, e, seed * 10 + batch)
        counter.add_active(active)
        sets += as_sets(active)
    reference = count_pairs_reference(sets, e)
    assert counter.counts.dtype == torch.int32
    assert np.array_equal(unpack_triangle(counter.counts, e).numpy(), reference)
    assert np.array_equal(counter.activations_e.numpy(), reference.diagonal())
    assert counter.tokens == 69
    assert counter.counts[pair_index(5, 2, e)] == reference[2, 5]


@pytest.mark.parametrize("kernel", ["numba", "torch"])
def test_rows_mode_equals_brute_force(kernel):
    e, rows = 19, [11, 0, 18]
    counter = PairCounter(e, rows=rows, kernel=kernel)
    active = random_active(40, e, 5)
    counter.add_active(active)
    reference = count_pairs_reference(as_sets(active), e)
    assert np.array_equal(counter.counts.numpy(), reference[rows])
    assert np.array_equal(counter.activations_e.numpy(), reference.diagonal())


def test_bad_rows_are_usage_errors():
    for rows in ([], [3, 3], [20], [-1]):
        with pytest.raises(FieldError, match="`rows`"):
            PairCounter(20, rows=rows)


def test_int32_is_promoted_before_it_could_overflow(monkeypatch):
    import sae_hacking.absorption.cooccurrence.accumulator as co

    monkeypatch.setattr(co, "INT32_MAX", 30)
    counter = PairCounter(5)
    counter.add_active(torch.ones(20, 5, dtype=torch.bool))
    with pytest.warns(UserWarning, match="int64"):
        counter.add_active(torch.ones(20, 5, dtype=torch.bool))
    assert counter.counts.dtype == torch.int64 and int(counter.counts.max()) == 40


def test_active_lists():
    active = torch.tensor([[0, 1, 1], [0, 0, 0], [1, 0, 1]], dtype=torch.bool)
    latents, offsets = active_lists(active)
    assert latents.tolist() == [1, 2, 0, 2] and offsets.tolist() == [0, 2, 2, 4]


def test_model_counts_skip_padding_and_bos(tiny_lm):
    lm = tiny_lm("gemma2")
    sae = random_sae(HOOK, 24)
    texts = generate_texts(6, seed=4, min_words=1, max_words=15)
    batch = tokenize_prompts(lm.tokenizer, texts, 20)
    assert (batch.attention_mask_BS == 0).any(), "the batch must be ragged"
    acc = CooccurrenceAccumulator(lm, sae, HOOK)
    tokens = acc.add(batch)
    # Brute force, prompt by prompt without padding; BOS (position 0) skipped.
    sets = []
    for text in texts:
        one = tokenize_prompts(lm.tokenizer, [text], 20)
        acts = sae.encode(lm.read(one.input_ids_BS, None, [HOOK])[HOOK])[0]
        assert one.input_ids_BS[0, 0] == lm.tokenizer.bos_token_id
        sets += [torch.nonzero(acts[s] > 0).flatten().tolist() for s in range(1, acts.shape[0])]
    assert tokens == len(sets) == int(batch.real_token_mask_BS.sum())
    reference = count_pairs_reference(sets, sae.d_sae)
    assert np.count_nonzero(reference - np.diag(reference.diagonal())) > 10, "too few pairs"
    assert np.array_equal(unpack_triangle(acc.counter.counts, sae.d_sae).numpy(), reference)


@pytest.mark.parametrize("rows", [None, [3, 0, 21]])
def test_reader(tmp_path, rows):
    e = 21 + 1
    counter = PairCounter(e, rows=rows)
    active = random_active(60, e, 9, density=0.4)
    counter.add_active(active)
    reference = count_pairs_reference(as_sets(active), e)
    meta = {"kind": "cooccurrences", "complete": True}
    write_results(tmp_path / "cooccurrences", counter.state(), meta)
    with Cooccurrences(tmp_path) as co:
        assert co.e == e and co.tokens == 60 and co.rows == rows
        assert torch.equal(co.activations(), torch.from_numpy(reference.diagonal().copy()))
        assert torch.allclose(co.frequencies(), co.activations().double() / 60)
        for i in rows or range(e):
            assert co.row(i).tolist() == reference[i].tolist()
            for j in (0, 5, e - 1, i):
                assert co.count(i, j) == reference[i, j] == co.count(j, i)
        with pytest.raises(UsageError, match="out of range"):
            co.count(0, e)
        if rows:
            with pytest.raises(UsageError, match="no row"):
                co.row(1)


def test_reader_refuses_an_unfinished_run(tmp_path):
    counter = PairCounter(5)
    counter.add_active(random_active(10, 5, 0))
    write_results(tmp_path / "cooccurrences", counter.state(), {"kind": "cooccurrences"})
    with pytest.raises(UsageError, match="unfinished run"):
        Cooccurrences(tmp_path)
