"""Ground-truth labels of an ablator SAE's latents in the absorption testbed: each group's parent
latent, its absorbing latents, the absorption rate, and the truth pairs the search is scored on.

Inputs are plain tensors (no world object): over ``T`` token occurrences, the SAE's activations
``acts_TL`` (its ``encode`` output, ``L`` latents), each occurrence's group ``group_T`` (``-1``:
the token is in no group) and token id ``token_T``; the decoder rows ``W_dec_LM`` and the group
("parent") directions ``g_GM``. A latent **fires** on an occurrence when its activation is above
``fire_threshold`` (0: any positive activation; SAEBench counts ``|act| < 1e-8`` as silent).

SAEBench (github.com/adamkarvonen/SAEBench, ``sae_bench/evals/absorption/``; Chanin et al.
2024, "A is for Absorption") measures absorption on first letters with a trained probe; the
definitions below follow it with the known directions in place of the probe.

Definitions, for a group ``X`` (the groups are ``0 .. G-1``, the rows of ``g_GM``):

- **Parent latent** ``p(X)``: the latent with the highest F1 score of "fires" against "the token
  is in X" over all occurrences, each occurrence weighted by ``1 / count(its token)`` so that
  every token *type* weighs the same (``weighting="type"``, the default); ties go to the lowest
  index; ``None`` when no latent fires on any occurrence of X (every F1 is 0). Why types:
  tokens follow a Zipf law inside each group, and the most frequent token's own latent (an
  absorber) may cover most of X's *occurrences*, so occurrence-level F1 can crown the absorber;
  weighted by type, the parent is the latent that covers the most distinct tokens of X, which
  is what a "starts with X" feature is. SAEBench does the same implicitly: its first-letter
  probe and k-sparse probes are fit on vocabulary words, each word once. ``weighting=
  "occurrence"`` gives the plain occurrence-level F1. SAEBench allows several "main" latents
  (k-sparse probing, a new one while F1 jumps by ≥ 0.03); we keep one, as the issue defines
  it, so a split parent shows up here as an absorbing latent.
- **Absorbing latents** of X: every latent ``l`` that fires on at least ``min_absorbed``
  occurrences of X's tokens on which ``p(X)`` is silent, and whose decoder row has cosine with
  ``g_X`` above ``cosine_threshold`` (default 0.1: SAEBench's
  ``absorption_fraction_probe_cos_sim_threshold``, with the known ``g_X`` in place of a
  trained probe). None when ``p(X)`` is ``None``. With ``min_projection_share`` > 0 (off by
  default; SAEBench uses 0.4) only the occurrences on which the firing latents that lean
  towards ``g_X`` carry at least that share of the reconstruction's projection on ``g_X``
  (``sum_l act_l W_dec_l · ĝ_X``, decoder bias left out; SAEBench: the input's projection on
  its probe, and the top 3 such latents) count, here and in the rate.
- **Absorption rate** of X: the share of X's occurrences on which ``p(X)`` is silent while an
  absorbing latent of X fires. This is SAEBench's ``full_absorption_rate`` per letter
  (``sae_bench/evals/absorption/feature_absorption_calculator.py``, ``_is_full_absorption``:
  main latents silent, the top probe-projecting latent aligned with the probe) with ground
  truth in place of the probe: the denominator is every occurrence of X (SAEBench: the words
  its probe classifies correctly; our structure probe is ≥ 0.99 accurate), and by default we
  do not require the absorbers to carry ≥ 40% of the projection (``min_projection_share``:
  the cosine threshold and the parent's silence are the test). ``type_rate`` is the same share with every token type of X
  weighted equally (SAEBench's per-word view). Overall, the **headline** is
  ``absorption_rate``: the mean of the groups' rates over the groups that occur (SAEBench's
  ``mean_full_absorption_score`` is a mean over letters); ``absorption_rate_weighted`` pools
  the occurrences of all groups (dominated by the frequent groups).
- **Truth pairs** ``(i, j)``, ``i < j``: *absorption* pairs ``{p(X), a}`` for every absorbing
  latent ``a`` of X; *sibling* pairs: two absorbing latents of one group (minus absorption
  pairs, which take precedence when a latent plays both roles for different groups);
  *unrelated*: every other pair of the ``L`` latents.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import cached_property
from itertools import combinations
from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int

Pair = tuple[int, int]
Weighting = Literal["type", "occurrence"]


@dataclass(frozen=True)
class GroupLabel:
    """One group's labels and absorption (``rate``/``type_rate`` are NaN when it never occurs)."""

    group: int
    occurrences: int
    parent: int | None
    parent_f1: float  # the parent's (weighted) F1 for membership of the group; 0 without one
    absorbing: tuple[int, ...]  # ascending latent ids
    absorbed: int  # occurrences on which the parent is silent while an absorbing latent fires
    rate: float  # absorbed / occurrences
    type_rate: float  # the same share, every token type of the group weighted equally


@dataclass(frozen=True)
class Labels:
    """Ground truth for one SAE. ``unrelated_pairs`` is computed on first use (``L²/2`` pairs)."""

    n_latents: int
    groups: tuple[GroupLabel, ...]
    absorption_pairs: frozenset[Pair]
    sibling_pairs: frozenset[Pair]
    absorption_rate: float  # headline: mean of the rates of the groups that occur (NaN: none)
    absorption_rate_weighted: float  # absorbed occurrences / occurrences, all groups pooled
    group_cosine_LG: Float[torch.Tensor, "L G"] = field(repr=False)  # decoder·g cosines

    @property
    def parent_of_group(self) -> dict[int, int]:
        """Group id -> parent latent, for the groups that have one."""
        return {g.group: g.parent for g in self.groups if g.parent is not None}

    @property
    def absorbing_of_group(self) -> dict[int, tuple[int, ...]]:
        """Group id -> its absorbing latents (empty tuple: none)."""
        return {g.group: g.absorbing for g in self.groups}

    @property
    def absorbing_latents(self) -> frozenset[int]:
        """Every latent that absorbs some group."""
        return frozenset(a for g in self.groups for a in g.absorbing)

    @property
    def n_absorbing(self) -> int:
        return len(self.absorbing_latents)

    @cached_property
    def unrelated_pairs(self) -> frozenset[Pair]:
        related = self.absorption_pairs | self.sibling_pairs
        return frozenset(p for p in combinations(range(self.n_latents), 2) if p not in related)

    def to_json(self) -> dict:
        """The labels for a JSON file (NaN rates as ``None``; unrelated pairs left out)."""

        def number(value: float) -> float | None:
            return None if math.isnan(value) else value

        return {
            "absorption_rate": number(self.absorption_rate),
            "absorption_rate_weighted": number(self.absorption_rate_weighted),
            "n_absorbing": self.n_absorbing,
            "n_latents": self.n_latents,
            "groups": [
                {
                    **asdict(g),
                    "absorbing": list(g.absorbing),
                    "rate": number(g.rate),
                    "type_rate": number(g.type_rate),
                }
                for g in self.groups
            ],
            "absorption_pairs": [list(p) for p in sorted(self.absorption_pairs)],
            "sibling_pairs": [list(p) for p in sorted(self.sibling_pairs)],
        }

    def kind(self, i: int, j: int) -> str:
        """``"absorption"``, ``"sibling"`` or ``"unrelated"`` for the pair of latents ``i, j``."""
        pair = (i, j) if i < j else (j, i)
        if pair in self.absorption_pairs:
            return "absorption"
        return "sibling" if pair in self.sibling_pairs else "unrelated"


def decoder_cosines(
    W_dec_LM: Float[torch.Tensor, "L M"], directions_NM: Float[torch.Tensor, "N M"]
) -> Float[torch.Tensor, "L N"]:
    """Cosine of every decoder row with every direction (a zero row has cosine 0)."""
    return F.normalize(W_dec_LM.double(), dim=-1) @ F.normalize(directions_NM.double(), dim=-1).T


def membership_f1(
    fires_TL: Bool[torch.Tensor, "T L"],
    group_T: Int[torch.Tensor, " T"],
    weight_T: Float[torch.Tensor, " T"],
    n_groups: int,
) -> Float[torch.Tensor, "G L"]:
    """Weighted F1 of "latent fires" against "occurrence is in group g", for every group and
    latent: ``2 TP / (2 TP + FP + FN)`` with each occurrence counted by its weight; 0 where the
    latent never fires on the group."""
    member_TG = F.one_hot(group_T.clamp(min=0), n_groups).bool() & (group_T >= 0)[:, None]
    weighted_TG = member_TG.double() * weight_T[:, None]
    fires = fires_TL.double()
    tp_GL = weighted_TG.T @ fires
    fired_L = weight_T @ fires  # TP + FP
    members_G = weighted_TG.sum(0)  # TP + FN
    denominator_GL = fired_L[None, :] + members_G[:, None]
    f1_GL = 2 * tp_GL / torch.where(denominator_GL > 0, denominator_GL, torch.ones_like(tp_GL))
    return torch.where(tp_GL > 0, f1_GL, torch.zeros_like(f1_GL))


def label_latents(
    acts_TL: Float[torch.Tensor, "T L"],
    group_T: Int[torch.Tensor, " T"],
    token_T: Int[torch.Tensor, " T"],
    W_dec_LM: Float[torch.Tensor, "L M"],
    g_GM: Float[torch.Tensor, "G M"],
    *,
    cosine_threshold: float = 0.1,
    fire_threshold: float = 0.0,
    min_absorbed: int = 1,
    weighting: Weighting = "type",
    min_projection_share: float = 0.0,
) -> Labels:
    """The ground-truth :class:`Labels` of the latents (definitions in the module docstring).
    A token's group is a property of the token (the same at every occurrence): the per-type
    weights count a token's occurrences over all of ``token_T``."""
    _check_inputs(acts_TL, group_T, token_T, W_dec_LM, g_GM, min_absorbed, weighting)
    if not 0.0 <= min_projection_share <= 1.0:
        raise ValueError(f"min_projection_share must lie in [0, 1], got {min_projection_share}.")
    n_groups, n_latents = g_GM.shape[0], acts_TL.shape[1]
    fires_TL = (acts_TL.detach() > fire_threshold).cpu()
    group_T, token_T = group_T.long().cpu(), token_T.long().cpu()
    _, type_T, count_T = torch.unique(token_T, return_inverse=True, return_counts=True)
    occurrences = _Occurrences(
        acts_TL.detach().cpu(), fires_TL, group_T, type_T, 1.0 / count_T[type_T].double()
    )
    weight_T = occurrences.per_type_T if weighting == "type" else torch.ones(len(group_T))
    f1_GL = membership_f1(fires_TL, group_T, weight_T.double(), n_groups)
    cosine_LG = decoder_cosines(W_dec_LM.detach().cpu(), g_GM.detach().cpu())
    # Each latent's unit of activation moves the reconstruction this far along g (unit g).
    projection_LG = W_dec_LM.detach().cpu().double() @ F.normalize(g_GM.detach().cpu().double()).T

    groups, absorption, siblings = [], set(), set()
    for x in range(n_groups):
        absorbs_L = cosine_LG[:, x] > cosine_threshold
        share = (projection_LG[:, x], min_projection_share)
        label = _label_group(x, occurrences, f1_GL[x], absorbs_L, min_absorbed, share)
        groups.append(label)
        if label.parent is not None:
            absorption.update(_ordered(label.parent, a) for a in label.absorbing)
        siblings.update(combinations(label.absorbing, 2))  # ascending ids: already i < j
    occurring = [g for g in groups if g.occurrences > 0]
    total = sum(g.occurrences for g in occurring)
    return Labels(
        n_latents=n_latents,
        groups=tuple(groups),
        absorption_pairs=frozenset(absorption),
        sibling_pairs=frozenset(siblings - absorption),
        absorption_rate=(
            sum(g.rate for g in occurring) / len(occurring) if occurring else float("nan")
        ),
        absorption_rate_weighted=(
            sum(g.absorbed for g in occurring) / total if total else float("nan")
        ),
        group_cosine_LG=cosine_LG.float(),
    )


@dataclass(frozen=True)
class _Occurrences:
    acts_TL: torch.Tensor
    fires_TL: torch.Tensor  # bool
    group_T: torch.Tensor
    type_T: torch.Tensor  # index of the occurrence's token among the distinct tokens
    per_type_T: torch.Tensor  # 1 / occurrences of that token


def _label_group(
    x: int,
    occ: _Occurrences,
    f1_L: torch.Tensor,
    leans_L: torch.Tensor,
    min_absorbed: int,
    share: tuple[torch.Tensor, float],
) -> GroupLabel:
    """Group ``x``'s label; ``leans_L``: the latents whose decoder's cosine with ``g_x`` is
    above the threshold; ``share``: each latent's projection on ``g_x`` per unit activation
    and the minimum share of the reconstruction's projection the leaning latents must carry."""
    fires_TL, type_T, per_type_T = occ.fires_TL, occ.type_T, occ.per_type_T
    member_T = occ.group_T == x
    n = int(member_T.sum())
    # Rounded so that F1s equal but for summation order (sums of 1/count) tie; argmax then
    # returns the first maximum, the lowest index.
    best = int(torch.argmax(torch.round(f1_L, decimals=12))) if f1_L.numel() else 0
    if n == 0 or f1_L.numel() == 0 or float(f1_L[best]) <= 0.0:
        nan = float("nan") if n == 0 else 0.0
        return GroupLabel(x, n, None, 0.0, (), 0, nan, nan)
    # Occurrences of X the parent misses; an absorber fires on them and leans towards g_X.
    orphan_T = member_T & ~fires_TL[:, best]
    projection_L, min_share = share
    if min_share > 0:  # SAEBench's guard: the leaning latents carry the parent's direction
        rows = orphan_T.nonzero().flatten()
        along_RL = occ.acts_TL[rows].double() * projection_L
        leaning = (along_RL * (fires_TL[rows] & leans_L)).sum(1)
        total = along_RL.sum(1)
        orphan_T = orphan_T.clone()
        orphan_T[rows[~((total > 0) & (leaning >= min_share * total))]] = False
    absorbed_L = fires_TL[orphan_T].sum(0)
    absorbing_L = (absorbed_L >= min_absorbed) & leans_L
    absorbed_T = orphan_T & fires_TL[:, absorbing_L].any(1)
    absorbed = int(absorbed_T.sum())
    # Per type: each token type of X weighs 1 / (number of X's types), split over its occurrences.
    n_types = int(torch.unique(type_T[member_T]).numel())
    type_rate = float((per_type_T * absorbed_T).sum()) / n_types
    return GroupLabel(
        group=x,
        occurrences=n,
        parent=best,
        parent_f1=float(f1_L[best]),
        absorbing=tuple(absorbing_L.nonzero().flatten().tolist()),
        absorbed=absorbed,
        rate=absorbed / n,
        type_rate=type_rate,
    )


def _ordered(i: int, j: int) -> Pair:
    return (i, j) if i < j else (j, i)


def _check_inputs(acts_TL, group_T, token_T, W_dec_LM, g_GM, min_absorbed, weighting) -> None:
    """Shape and range checks: these are the bench's own tensors, so a mismatch is a bug."""
    if acts_TL.ndim != 2 or W_dec_LM.ndim != 2 or g_GM.ndim != 2:
        raise ValueError("acts_TL, W_dec_LM and g_GM must be 2-D.")
    T, L = acts_TL.shape
    if group_T.shape != (T,) or token_T.shape != (T,):
        raise ValueError(f"group_T and token_T must have shape ({T},) like acts_TL's rows.")
    if W_dec_LM.shape[0] != L or W_dec_LM.shape[1] != g_GM.shape[1]:
        raise ValueError(
            f"W_dec_LM must be ({L}, M) with M = g_GM's width {g_GM.shape[1]}, got "
            f"{tuple(W_dec_LM.shape)}."
        )
    if T and (int(group_T.min()) < -1 or int(group_T.max()) >= g_GM.shape[0]):
        raise ValueError(f"group ids must lie in [-1, {g_GM.shape[0]}) (the rows of g_GM).")
    if g_GM.shape[0] == 0:
        raise ValueError("g_GM must have at least one group direction.")
    if min_absorbed < 1:
        raise ValueError(f"min_absorbed must be at least 1, got {min_absorbed}.")
    if weighting not in ("type", "occurrence"):
        raise ValueError(f"weighting must be 'type' or 'occurrence', got {weighting!r}.")
