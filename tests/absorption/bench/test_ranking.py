"""Ranking metrics against a brute-force reference (random scores with many ties, truth pairs
partly outside the candidates), against sklearn where installed, and the four rankings read
from a pairs.json document."""

import math
import random

import pytest
import torch

from sae_hacking.absorption.bench.ranking import (
    PairColumns,
    average_precision,
    candidate_rules,
    combined_score,
    cooccurrence_score,
    percentile_rank,
    ranking_order,
    rankings,
    score_ranking,
)

KS = (1, 3, 10, 25, 200)


def reference(candidates, scores, truth, siblings, ks):
    """Sort by (score desc, i, j) in plain Python and count."""
    finite = [-math.inf if math.isnan(s) else s for s in scores]
    key = {p: (-s, p) for p, s in zip(candidates, finite, strict=True)}
    ranked = sorted(candidates, key=key.__getitem__)
    hits = [p in truth for p in ranked]
    precision = [sum(hits[:k]) / k for k in ks]
    recall = [sum(hits[:k]) / len(truth) for k in ks]
    sibling_counts = [sum(p in siblings for p in ranked[:k]) for k in ks]
    ap = sum(sum(hits[: r + 1]) / (r + 1) for r, h in enumerate(hits) if h) / len(truth)
    return precision, recall, sibling_counts, ap


def problem(seed: int, n_latents: int = 20, n_candidates: int = 60, levels: int = 5):
    rng = random.Random(seed)
    every = [(i, j) for i in range(n_latents) for j in range(i + 1, n_latents)]
    candidates = rng.sample(every, n_candidates)
    scores = [rng.randrange(levels) / (levels - 1) for _ in candidates]  # many ties
    scores[rng.randrange(n_candidates)] = math.nan
    truth = set(rng.sample(candidates, 8)) | set(rng.sample(every, 4))  # some never candidates
    siblings = set(rng.sample(candidates, 10)) - truth
    return candidates, scores, truth, siblings


def tensors(candidates, scores):
    first = torch.tensor([a for a, _ in candidates], dtype=torch.long)
    second = torch.tensor([b for _, b in candidates], dtype=torch.long)
    return first, second, torch.tensor(scores, dtype=torch.float64)


@pytest.mark.parametrize("seed", range(6))
def test_metrics_equal_the_brute_force_reference(seed):
    candidates, scores, truth, siblings = problem(seed)
    got = score_ranking(*tensors(candidates, scores), truth, KS, siblings)
    precision, recall, sibling_counts, ap = reference(candidates, scores, truth, siblings, KS)
    assert got.precision == pytest.approx(precision)
    assert got.recall == pytest.approx(recall)
    assert list(got.siblings) == sibling_counts
    assert got.average_precision == pytest.approx(ap)
    assert got.n_truth == len(truth) and got.n_candidates == len(candidates)
    assert got.n_truth_candidates == len(truth & set(candidates)) < len(truth)
    assert got.precision[-1] == pytest.approx(got.n_truth_candidates / 200)  # k > K: misses


def test_ties_do_not_depend_on_input_order():
    candidates, scores, truth, siblings = problem(11, levels=2)
    base = score_ranking(*tensors(candidates, scores), truth, KS, siblings)
    perm = list(range(len(candidates)))
    random.Random(0).shuffle(perm)
    shuffled = score_ranking(
        *tensors([candidates[p] for p in perm], [scores[p] for p in perm]), truth, KS, siblings
    )
    assert shuffled == base
    first, second, score = tensors(candidates, scores)
    order = ranking_order(first, second, score)
    ranked = list(
        zip(score[order].tolist(), first[order].tolist(), second[order].tolist(), strict=True)
    )
    assert math.isnan(ranked[-1][0])  # NaN last
    finite = [(-s, a, b) for s, a, b in ranked[:-1]]
    assert finite == sorted(finite)


def test_perfect_and_empty_rankings():
    candidates, _, _, _ = problem(2)
    truth = set(candidates[:5])
    scores = [1.0 if p in truth else 0.0 for p in candidates]
    perfect = score_ranking(*tensors(candidates, scores), truth, (5, 10))
    assert perfect.average_precision == 1.0
    assert perfect.precision == (1.0, 0.5) and perfect.recall == (1.0, 1.0)
    nothing = score_ranking(*tensors([], []), truth, (5,))
    assert nothing.precision == (0.0,) and nothing.average_precision == 0.0
    assert nothing.siblings == (0,)
    no_truth = score_ranking(*tensors(candidates, scores), set(), (5,))
    assert math.isnan(no_truth.average_precision) and math.isnan(no_truth.recall[0])
    assert average_precision(torch.tensor([False, True, True]), 4) == pytest.approx(
        (1 / 2 + 2 / 3) / 4
    )


def test_average_precision_equals_sklearn_without_ties():
    metrics = pytest.importorskip("sklearn.metrics")
    for seed in range(5):
        candidates, _, _, _ = problem(seed)
        rng = random.Random(seed)
        scores = [rng.random() for _ in candidates]  # distinct: sklearn groups ties
        truth = set(rng.sample(candidates, 9))  # all among the candidates
        got = score_ranking(*tensors(candidates, scores), truth, (1,))
        expected = metrics.average_precision_score([p in truth for p in candidates], scores)
        assert got.average_precision == pytest.approx(expected)


def test_bad_inputs_are_named():
    first, second, score = tensors([(1, 2), (3, 4)], [0.1, 0.2])
    with pytest.raises(ValueError, match="i < j"):
        score_ranking(second, first, score, set(), (1,))
    with pytest.raises(ValueError, match="every k"):
        score_ranking(first, second, score, set(), (0,))


def test_percentile_rank_averages_ties():
    ranks = percentile_rank(torch.tensor([0.3, -1.0, 0.3, 2.0, math.nan]))
    assert ranks.tolist() == pytest.approx([2.5 / 4, 1 / 4, 2.5 / 4, 1.0, 0.0])
    assert percentile_rank(torch.tensor([5.0])).tolist() == [0.5]
    assert percentile_rank(torch.zeros(0)).numel() == 0


def pairs_result(compare="sign"):
    """A pairs.json document: (ids, effect cosine, decoder cosine, expected co-occurrence)."""
    rows = [((7, 2), 0.9, 0.1, 3.0), ((1, 5), 0.5, 0.8, 900.0), ((3, 4), 0.1, 0.6, 0.5)]

    def latent(i):
        return {"id": i, "explanation": "", "activation_count": 1, "ablation_count": 1}

    pairs = [
        {
            "ablator1": latent(a),
            "ablator2": latent(b),
            "cosine_similarity": e,
            "cooccurrence_count": 0,
            "decoder_cosine": d,
            "expected_cooccurrence": x,
            "p_no_cooccurrence": math.exp(-x),
        }
        for (a, b), e, d, x in rows
    ]
    return {"meta": {"compare": compare}, "pairs": pairs}


def test_rankings_from_a_pairs_result():
    columns = PairColumns.from_result(pairs_result("raw"))
    assert columns.first_K.tolist() == [2, 1, 3] and columns.second_K.tolist() == [7, 5, 4]
    scores = rankings(columns)
    assert list(scores) == ["effect_raw", "decoder", "cooccurrence", "combined"]
    assert scores["effect_raw"].tolist() == pytest.approx([0.9, 0.5, 0.1])
    assert scores["decoder"].tolist() == pytest.approx([0.1, 0.8, 0.6])
    # Effect ranks (1, 0.5, 0) and decoder ranks (0, 1, 0.5): means 0.5, 0.75, 0.25.
    assert combined_score(columns).tolist() == pytest.approx([0.5, 0.75, 0.25])
    # Evidence 1 - exp(-expected): exp(-900) is 0, yet the ranking still orders 900 first.
    order = ranking_order(columns.first_K, columns.second_K, cooccurrence_score(columns))
    assert order.tolist() == [1, 0, 2]
    assert list(rankings(PairColumns.from_result(pairs_result())))[0] == "effect_sign"
    empty = PairColumns.from_result({"meta": {}, "pairs": []})
    assert all(s.numel() == 0 for s in rankings(empty).values())


def test_candidate_rules_and_subsets():
    result = pairs_result("raw")
    for p, count in zip(result["pairs"], (0, 3, 6), strict=True):
        p["cooccurrence_count"] = count
        p["ablator1"]["activation_count"], p["ablator2"]["activation_count"] = 10, 40
    columns = PairColumns.from_result(result)
    assert columns.rarer_K.tolist() == [10, 10, 10]
    kept = {name: rule(columns).tolist() for name, rule in candidate_rules(0.5).items()}
    assert kept == {
        "never": [True, False, False],
        "rare": [True, True, False],
        "all": [True, True, True],
    }
    rare = columns.subset(candidate_rules(0.5)["rare"](columns))
    assert rare.first_K.tolist() == [2, 1] and rare.compare == "raw"
    assert rare.effect_cosine_K.tolist() == pytest.approx([0.9, 0.5])
