"""Rankings of candidate pairs and their scores against ground truth (the absorption testbed).

A **ranking** is a score per candidate pair ``(i, j)``, ``i < j`` (higher: more likely an
absorption pair). Its **order** is score descending, then ``i`` ascending, then ``j`` ascending
(the order of ``pairs.json``), so ties never depend on the input order; a NaN score ranks last.
Against a truth set (e.g. :attr:`Labels.absorption_pairs`) of ``n_truth`` pairs, with
``hits(k)`` the truth pairs among the first ``k`` candidates:

- ``precision@k = hits(k) / k``: a ranking with fewer than ``k`` candidates is not rescued (the
  missing places count as misses);
- ``recall@k = hits(k) / n_truth`` (NaN when the truth set is empty);
- **average precision** ``AP = sum over the ranks r of the hits of precision@r, / n_truth``:
  truth pairs that are not candidates at all (e.g. they co-occur, so the search drops them)
  count as never found, so AP is against the whole truth set. With every truth pair among the
  candidates and no tied scores this is sklearn's ``average_precision_score``; with ties sklearn
  scores a tied block as one threshold, we break them by ``(i, j)``;
- ``siblings@k``: sibling pairs among the first ``k`` (a "never co-occur + similar effect"
  search finds them too; they are not absorption pairs).

The rankings, as functions of a ``pairs`` result's columns (``pairs.json``'s per-pair fields
``cosine_similarity``, ``decoder_cosine``, ``cooccurrence_count``, ``expected_cooccurrence``,
``p_no_cooccurrence``; ``meta.compare`` says whether effects were compared as signs or raw):

- ``effect_sign`` / ``effect_raw``: the effect cosine, from a result run with signs or raw
  (two ``pairs`` runs; to rank the same candidates both keep every pair,
  ``cosine_sim_threshold`` -1 and ``max_cooccurrence_share`` 1, and a candidate rule chooses);
- ``decoder``: the decoder cosine;
- ``cooccurrence``: the evidence that the two never fire together by more than chance,
  ``1 - exp(-expected)`` (``p_no_cooccurrence = exp(-expected)`` is the chance of seeing no
  co-occurrence if they were independent); ranked by ``expected`` itself, the same order
  without the ties ``exp`` makes when it underflows to 0 (``expected`` > 745);
**Candidate rules** (:data:`CANDIDATE_RULES`): which pairs are ranked at all, from the counts
``c`` (tokens both fired on) and the rarer latent's firings ``r = min(a_i, a_j)``: ``never``
(``c = 0``, the legacy search), ``rare`` (``c ≤ s·r`` with ``s`` the ``pairs`` default
``max_cooccurrence_share``, what ``pairs`` keeps by default) and ``all`` (no co-occurrence test).

- ``combined``: the mean of the effect cosine's and the decoder cosine's percentile ranks among
  the candidates (ties share their average rank). Why: the two signals fail on different pairs.
  The decoder cosine separates a parent from its child (child decoder ≈ ``c g_X + …``, cosine
  ``c`` with the parent) from two siblings (cosine ``≈ c²``) but sees no use downstream; the
  effect cosine sees the shared downstream use (the group's circuit) but cannot tell a parent
  pair from a sibling pair. Ranks, not raw values, because the scales differ (sign-mode effect
  cosines of sparse sign vectors are small and discrete, decoder cosines continuous), so a sum
  would follow whichever spreads more; a mean of ranks needs no weight or threshold to tune.
  It is a function of the candidate set (not of one pair alone), hence not a ``pairs`` filter.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int

Pair = tuple[int, int]


@dataclass(frozen=True)
class PairColumns:
    """A ``pairs`` result's columns, one entry per candidate pair (``first < second``)."""

    first_K: Int[torch.Tensor, " K"]
    second_K: Int[torch.Tensor, " K"]
    effect_cosine_K: Float[torch.Tensor, " K"]  # "cosine_similarity"
    decoder_cosine_K: Float[torch.Tensor, " K"]
    cooccurrence_K: Int[torch.Tensor, " K"]
    expected_K: Float[torch.Tensor, " K"]  # "expected_cooccurrence"
    rarer_K: Int[torch.Tensor, " K"]  # the rarer latent's activation count
    compare: str = "sign"  # meta.compare: how the effect cosines were computed

    def subset(self, keep_K: Bool[torch.Tensor, " K"]) -> PairColumns:
        """The candidates marked by ``keep_K``."""
        tensors = {
            name: getattr(self, name)[keep_K]
            for name in self.__dataclass_fields__
            if name != "compare"
        }
        return PairColumns(**tensors, compare=self.compare)

    @classmethod
    def from_result(cls, result: Mapping) -> PairColumns:
        """The columns of a ``pairs.json`` document (``{"meta": ..., "pairs": [...]}``)."""
        pairs = result.get("pairs") or []
        ids = [(int(p["ablator1"]["id"]), int(p["ablator2"]["id"])) for p in pairs]
        ids = [(a, b) if a < b else (b, a) for a, b in ids]

        def column(key: str, dtype: torch.dtype) -> torch.Tensor:
            return torch.tensor([p[key] for p in pairs], dtype=dtype)

        return cls(
            first_K=torch.tensor([a for a, _ in ids], dtype=torch.long),
            second_K=torch.tensor([b for _, b in ids], dtype=torch.long),
            effect_cosine_K=column("cosine_similarity", torch.float64),
            decoder_cosine_K=column("decoder_cosine", torch.float64),
            cooccurrence_K=column("cooccurrence_count", torch.long),
            expected_K=column("expected_cooccurrence", torch.float64),
            rarer_K=torch.tensor(
                [
                    min(
                        int(p["ablator1"]["activation_count"]),
                        int(p["ablator2"]["activation_count"]),
                    )
                    for p in pairs
                ],
                dtype=torch.long,
            ),
            compare=str((result.get("meta") or {}).get("compare", "sign")),
        )


def candidate_rules(share: float) -> dict[str, Callable[[PairColumns], torch.Tensor]]:
    """The candidate rules (module docstring), ``rare`` with the co-occurrence share ``share``."""
    return {
        "never": lambda c: c.cooccurrence_K == 0,
        "rare": lambda c: c.cooccurrence_K.double() <= share * c.rarer_K.double(),
        "all": lambda c: torch.ones_like(c.cooccurrence_K, dtype=torch.bool),
    }


def effect_score(columns: PairColumns) -> Float[torch.Tensor, " K"]:
    return columns.effect_cosine_K.double()


def decoder_score(columns: PairColumns) -> Float[torch.Tensor, " K"]:
    return columns.decoder_cosine_K.double()


def cooccurrence_score(columns: PairColumns) -> Float[torch.Tensor, " K"]:
    """``expected``: ranks like the evidence ``1 - exp(-expected)`` (see the module docstring)."""
    return columns.expected_K.double()


def percentile_rank(values_K: Float[torch.Tensor, " K"]) -> Float[torch.Tensor, " K"]:
    """Each value's rank among ``values_K`` scaled to [0, 1] (0: lowest; ties share their
    average rank; NaN ranks lowest; a single value gets 0.5)."""
    K = values_K.numel()
    if K == 0:
        return torch.zeros(0, dtype=torch.float64)
    values = torch.nan_to_num(values_K.double(), nan=-torch.inf)
    _, inverse, counts = torch.unique(values, sorted=True, return_inverse=True, return_counts=True)
    start = counts.cumsum(0) - counts  # 0-based rank of each distinct value's first member
    average = start.double() + (counts.double() - 1) / 2
    return average[inverse] / (K - 1) if K > 1 else torch.full((1,), 0.5, dtype=torch.float64)


def combined_score(columns: PairColumns) -> Float[torch.Tensor, " K"]:
    """Mean of the effect and decoder cosines' percentile ranks (why: the module docstring)."""
    return (
        percentile_rank(columns.effect_cosine_K) + percentile_rank(columns.decoder_cosine_K)
    ) / 2


RANKINGS: dict[str, Callable[[PairColumns], torch.Tensor]] = {
    "effect": effect_score,
    "decoder": decoder_score,
    "cooccurrence": cooccurrence_score,
    "combined": combined_score,
}


def rankings(columns: PairColumns) -> dict[str, Float[torch.Tensor, " K"]]:
    """Every ranking's scores; the effect ranking is named ``effect_sign`` or ``effect_raw``."""
    return {
        (f"effect_{columns.compare}" if name == "effect" else name): score(columns)
        for name, score in RANKINGS.items()
    }


def ranking_order(
    first_K: Int[torch.Tensor, " K"],
    second_K: Int[torch.Tensor, " K"],
    score_K: Float[torch.Tensor, " K"],
) -> Int[torch.Tensor, " K"]:
    """Candidate indices in ranking order: score descending (NaN last), then first, then second."""
    score = torch.nan_to_num(score_K.double(), nan=-torch.inf)
    order = torch.argsort(second_K, stable=True)
    order = order[torch.argsort(first_K[order], stable=True)]
    return order[torch.argsort(-score[order], stable=True)]


def in_set(
    first_K: Int[torch.Tensor, " K"], second_K: Int[torch.Tensor, " K"], pairs: Collection[Pair]
) -> Bool[torch.Tensor, " K"]:
    """Which candidates are in ``pairs`` (given as ``(i, j)``, ``i < j``)."""
    return torch.tensor(
        [(a, b) in pairs for a, b in zip(first_K.tolist(), second_K.tolist(), strict=True)],
        dtype=torch.bool,
    )


def precision_at_k(hits_K: Bool[torch.Tensor, " K"], ks: Sequence[int]) -> list[float]:
    """``hits(k) / k`` for each ``k`` (``hits_K`` in ranking order)."""
    cumulative = torch.cat([torch.zeros(1, dtype=torch.long), hits_K.long().cumsum(0)])
    return [int(cumulative[min(k, hits_K.numel())]) / k for k in _checked(ks)]


def recall_at_k(hits_K: Bool[torch.Tensor, " K"], n_truth: int, ks: Sequence[int]) -> list[float]:
    """``hits(k) / n_truth`` for each ``k`` (NaN when ``n_truth`` is 0)."""
    cumulative = torch.cat([torch.zeros(1, dtype=torch.long), hits_K.long().cumsum(0)])
    return [
        int(cumulative[min(k, hits_K.numel())]) / n_truth if n_truth else float("nan")
        for k in _checked(ks)
    ]


def average_precision(hits_K: Bool[torch.Tensor, " K"], n_truth: int) -> float:
    """Sum of ``precision@r`` over the ranks ``r`` of the hits, divided by ``n_truth``."""
    if n_truth == 0:
        return float("nan")
    if n_truth < int(hits_K.sum()):
        raise ValueError(f"n_truth ({n_truth}) is below the number of hits ({int(hits_K.sum())}).")
    ranks = torch.arange(1, hits_K.numel() + 1, dtype=torch.float64)
    precision = hits_K.long().cumsum(0).double() / ranks
    return float(precision[hits_K].sum()) / n_truth


@dataclass(frozen=True)
class RankingScore:
    """One ranking scored against a truth set (lists follow ``ks``)."""

    ks: tuple[int, ...]
    precision: tuple[float, ...]
    recall: tuple[float, ...]
    siblings: tuple[int, ...]  # sibling pairs among the first k
    average_precision: float
    n_candidates: int
    n_truth: int
    n_truth_candidates: int  # truth pairs among the candidates: the most any ranking can find

    def to_json(self) -> dict:
        return {
            **{name: getattr(self, name) for name in self.__dataclass_fields__},
            "ks": list(self.ks),
            "precision": list(self.precision),
            "recall": list(self.recall),
            "siblings": list(self.siblings),
        }


def score_ranking(
    first_K: Int[torch.Tensor, " K"],
    second_K: Int[torch.Tensor, " K"],
    score_K: Float[torch.Tensor, " K"],
    truth: Collection[Pair],
    ks: Sequence[int],
    siblings: Collection[Pair] = frozenset(),
) -> RankingScore:
    """Precision@k, recall@k, siblings@k and AP of the ranking ``score_K`` of the candidates."""
    if not first_K.shape == second_K.shape == score_K.shape or first_K.ndim != 1:
        raise ValueError("first_K, second_K and score_K must be 1-D tensors of one length.")
    if bool((first_K >= second_K).any()):
        raise ValueError("every candidate pair must be given as (i, j) with i < j.")
    truth, siblings = _normalised(truth), _normalised(siblings)
    order = ranking_order(first_K, second_K, score_K)
    first, second = first_K[order], second_K[order]
    hits = in_set(first, second, truth)
    sibling_hits = in_set(first, second, siblings).long().cumsum(0)
    return RankingScore(
        ks=tuple(_checked(ks)),
        precision=tuple(precision_at_k(hits, ks)),
        recall=tuple(recall_at_k(hits, len(truth), ks)),
        siblings=tuple(int(sibling_hits[min(k, len(order)) - 1]) if len(order) else 0 for k in ks),
        average_precision=average_precision(hits, len(truth)),
        n_candidates=len(order),
        n_truth=len(truth),
        n_truth_candidates=int(hits.sum()),
    )


def _normalised(pairs: Collection[Pair]) -> set[Pair]:
    """The pairs as a set of ``(i, j)``, ``i < j`` (duplicates would inflate ``n_truth``)."""
    return {(int(a), int(b)) if a < b else (int(b), int(a)) for a, b in pairs}


def _checked(ks: Sequence[int]) -> list[int]:
    if any(int(k) < 1 for k in ks):
        raise ValueError(f"every k must be at least 1, got {list(ks)}.")
    return [int(k) for k in ks]
