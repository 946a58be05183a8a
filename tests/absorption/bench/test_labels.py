"""Ground-truth labels on a handcoded SAE: known parents and absorbers get exactly those labels,
the absorption rates are the hand-counted shares, and the edge cases (a group that never occurs,
one on which nothing fires, one without absorbers, a dead latent) come out as documented."""

import json
import math
from itertools import combinations

import pytest
import torch
from jaxtyping import TypeCheckError

from sae_hacking.absorption.bench.labels import decoder_cosines, label_latents, membership_f1

M = 10  # e0..e2: the group directions g; e3..e9: token directions u
G = 4
L = 8


def unit(i: int) -> torch.Tensor:
    return torch.eye(M)[i]


def decoder() -> torch.Tensor:
    """Latent 0: parent of group 0 (g0); 1: absorbs token 0 (cos 0.6 with g0); 2: token 1's own
    latent, always beside the parent (cos 0.5); 3: token 2's direction only (cos 0); 4: a weak
    absorber (cos 0.3); 5: parent of group 1 (g1); 6: the "other" token; 7: dead."""
    rows = [
        unit(0),
        0.6 * unit(0) + 0.8 * unit(3),
        0.5 * unit(0) + math.sqrt(0.75) * unit(4),
        unit(5),
        0.3 * unit(0) + math.sqrt(0.91) * unit(6),
        unit(1),
        unit(7),
        unit(8),
    ]
    return torch.stack(rows) * 3.0  # the scale of a decoder row does not matter


def occurrences():
    """(token, group, firing latents) per occurrence. Group 0: token 0 x6 (Zipf: the frequent
    one, absorbed by latent 1), token 1 x3, token 2 x2 (the parent misses the second one,
    latent 4 takes it); group 1: tokens 3 x4 and 4 x1, its parent always fires; group 2 never
    occurs; group 3: token 7 x2, nothing fires; token 6 x2 in no group."""
    rows = [(0, 0, [1])] * 6
    rows += [(1, 0, [0, 2])] * 3
    rows += [(2, 0, [0, 3]), (2, 0, [3, 4])]
    rows += [(3, 1, [5])] * 4 + [(4, 1, [5])]
    rows += [(7, 3, [])] * 2
    rows += [(6, -1, [6])] * 2
    return rows


def tensors(rows, value: float = 2.0):
    acts = torch.zeros(len(rows), L)
    for t, (_, _, firing) in enumerate(rows):
        acts[t, firing] = value
    token = torch.tensor([r[0] for r in rows])
    group = torch.tensor([r[1] for r in rows])
    g = torch.stack([unit(0), unit(1), unit(2), unit(9)])
    return acts, group, token, decoder(), g


def test_handcoded_sae_gets_exactly_the_expected_labels():
    labels = label_latents(*tensors(occurrences()))
    assert labels.parent_of_group == {0: 0, 1: 5}
    assert labels.absorbing_of_group == {0: (1, 4), 1: (), 2: (), 3: ()}
    assert labels.absorbing_latents == {1, 4} and labels.n_absorbing == 2
    assert labels.absorption_pairs == {(0, 1), (0, 4)}
    assert labels.sibling_pairs == {(1, 4)}
    assert len(labels.unrelated_pairs) == L * (L - 1) // 2 - 3
    assert labels.unrelated_pairs.isdisjoint(labels.absorption_pairs | labels.sibling_pairs)
    assert labels.kind(4, 0) == "absorption"
    assert labels.kind(4, 1) == "sibling"
    assert labels.kind(2, 0) == "unrelated"  # always fires beside the parent: not absorbing

    g0, g1, g2, g3 = labels.groups
    # Group 0: 6 absorbed by latent 1 + 1 by latent 4, of 11 occurrences; per token type
    # (token 0: all, token 1: none, token 2: half) the mean is 0.5.
    assert (g0.occurrences, g0.absorbed) == (11, 7)
    assert g0.rate == pytest.approx(7 / 11) and g0.type_rate == pytest.approx(0.5)
    # Type-weighted F1 of latent 0: TP 1.5 (token 1, half of token 2) of 3 types, nothing else.
    assert g0.parent_f1 == pytest.approx(2 * 1.5 / (1.5 + 3))
    assert (g1.parent, g1.absorbed, g1.rate, g1.type_rate) == (5, 0, 0.0, 0.0)
    assert g1.parent_f1 == pytest.approx(1.0)
    # Group 2 never occurs: no parent, NaN rates, and it does not enter the overall mean.
    assert g2.occurrences == 0 and g2.parent is None and math.isnan(g2.rate)
    # Group 3 occurs but nothing fires on it: no parent, nothing absorbed, rate 0.
    assert (g3.occurrences, g3.parent, g3.absorbing, g3.rate) == (2, None, (), 0.0)
    assert labels.absorption_rate == pytest.approx((7 / 11 + 0 + 0) / 3)
    assert labels.absorption_rate_weighted == pytest.approx(7 / (11 + 5 + 2))
    assert labels.group_cosine_LG.shape == (L, G)
    assert labels.group_cosine_LG[1, 0] == pytest.approx(0.6)


def test_labels_serialise_to_strict_json():
    document = json.loads(
        json.dumps(label_latents(*tensors(occurrences())).to_json(), allow_nan=False)
    )
    assert document["absorption_pairs"] == [[0, 1], [0, 4]]
    assert document["sibling_pairs"] == [[1, 4]]
    assert document["n_absorbing"] == 2
    assert document["groups"][0]["absorbing"] == [1, 4]
    assert document["groups"][2]["rate"] is None  # never occurs: NaN becomes null
    assert document["absorption_rate"] == pytest.approx(7 / 33)


def test_occurrence_weighting_crowns_the_frequent_tokens_absorber():
    """Why type weighting is the default: by occurrences latent 1 (6 of group 0's 11) beats the
    parent (4 of 11), and the absorption it does becomes invisible."""
    labels = label_latents(*tensors(occurrences()), weighting="occurrence")
    g0 = labels.groups[0]
    assert g0.parent == 1
    assert g0.parent_f1 == pytest.approx(2 * 6 / (6 + 11))
    # Latent 0 (the true parent) then "absorbs" where latent 1 is silent: the labels invert.
    assert g0.absorbing == (0, 2, 4)
    assert g0.absorbed == 5


@pytest.mark.parametrize(
    ("settings", "absorbing", "absorbed"),
    [
        ({"cosine_threshold": 0.35}, (1,), 6),  # latent 4's cosine 0.3 is too small
        ({"cosine_threshold": 0.6 + 1e-6}, (), 0),  # latent 1's 0.6 must be above the threshold
        ({"min_absorbed": 2}, (1,), 6),  # latent 4 fires on one orphaned occurrence only
        ({"fire_threshold": 2.0}, (), 0),  # nothing is above 2.0: no latent fires at all
    ],
)
def test_settings_change_the_labels_as_documented(settings, absorbing, absorbed):
    labels = label_latents(*tensors(occurrences()), **settings)
    assert labels.groups[0].absorbing == absorbing
    assert labels.groups[0].absorbed == absorbed
    assert len(labels.absorption_pairs) == len(absorbing)


@pytest.mark.parametrize(
    ("share", "absorbing", "absorbed"), [(0.0, (1, 4), 7), (0.25, (1, 4), 7), (0.4, (1,), 6)]
)
def test_projection_share_drops_occurrences_the_leaning_latents_do_not_explain(
    share, absorbing, absorbed
):
    """On token 2's orphaned occurrence latent 3 (cosine 0.08, below the threshold: not
    leaning) fires hard: along g0 it moves the reconstruction 20·3·0.08 = 4.8, latent 4 only
    2·3·0.3 = 1.8, a share of 1.8 / 6.6 ≈ 0.27."""
    acts, group, token, W_dec, g = tensors(occurrences())
    W_dec[3] = 3.0 * (0.08 * unit(0) + math.sqrt(1 - 0.08**2) * unit(5))
    acts[10, 3] = 20.0  # the second occurrence of token 2: latents 3 and 4 fire
    labels = label_latents(acts, group, token, W_dec, g, min_projection_share=share)
    assert labels.groups[0].absorbing == absorbing
    assert labels.groups[0].absorbed == absorbed


def test_a_dead_parent_direction_hands_the_parent_role_to_the_best_tracker():
    """If the g-direction latent never fires, the latent that best tracks the group is its
    parent and there is nothing left for it to lose: rate 0 (documented, not absorption)."""
    rows = [(token, group, [f for f in firing if f != 0]) for token, group, firing in occurrences()]
    labels = label_latents(*tensors(rows))
    g0 = labels.groups[0]
    # Type-weighted F1: latents 1, 2 and 3 each cover one type of three (ties -> lowest index).
    assert g0.parent == 1
    assert g0.absorbing == (2, 4)  # they fire where latent 1 is silent and lean towards g0
    assert labels.absorption_pairs == {(1, 2), (1, 4)}


def test_ties_go_to_the_lowest_index_and_order_does_not_matter():
    acts, group, token, W_dec, g = tensors(occurrences())
    acts[:, 7] = acts[:, 0]  # latent 7 duplicates the parent
    W_dec[7] = W_dec[0]
    labels = label_latents(acts, group, token, W_dec, g)
    assert labels.parent_of_group[0] == 0
    perm = torch.randperm(len(token), generator=torch.Generator().manual_seed(0))
    shuffled = label_latents(acts[perm], group[perm], token[perm], W_dec, g)
    for a, b in zip(shuffled.groups, labels.groups, strict=True):  # floats: summation order
        facts = ("parent", "absorbing", "absorbed", "occurrences")
        assert [getattr(a, f) for f in facts] == [getattr(b, f) for f in facts]
        assert (a.parent_f1, a.type_rate) == pytest.approx((b.parent_f1, b.type_rate), nan_ok=True)
    assert shuffled.absorption_pairs == labels.absorption_pairs


def test_membership_f1_matches_a_brute_force_count():
    gen = torch.Generator().manual_seed(3)
    fires = torch.rand(50, 6, generator=gen) < 0.3
    group = torch.randint(-1, 3, (50,), generator=gen)
    weight = torch.rand(50, generator=gen).double()
    f1 = membership_f1(fires, group, weight, 3)
    for x, latent in [(x, latent) for x in range(3) for latent in range(6)]:
        member, fired = group == x, fires[:, latent]
        tp = float(weight[member & fired].sum())
        fp = float(weight[~member & fired].sum())
        fn = float(weight[member & ~fired].sum())
        expected = 2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0
        assert float(f1[x, latent]) == pytest.approx(expected)


def test_sibling_pairs_are_every_pair_of_one_groups_absorbers():
    """Three absorbers of one group (one token each), the parent on the two other tokens."""
    rows = [(0, 0, [1])] * 3 + [(1, 0, [2])] * 2 + [(2, 0, [4])] + [(5, 0, [0])] * 4
    rows += [(8, 0, [0])] * 2
    labels = label_latents(*tensors(rows))
    assert labels.groups[0].parent == 0
    assert labels.groups[0].absorbing == (1, 2, 4)
    assert labels.absorption_pairs == {(0, 1), (0, 2), (0, 4)}
    assert labels.sibling_pairs == set(combinations((1, 2, 4), 2))
    assert labels.groups[0].rate == pytest.approx(6 / 12)
    assert labels.groups[0].type_rate == pytest.approx(3 / 5)


def test_decoder_cosines_ignore_scale():
    cos = decoder_cosines(decoder(), torch.stack([unit(0), 5 * unit(3)]))
    assert cos[1].tolist() == pytest.approx([0.6, 0.8])
    assert cos[5].tolist() == pytest.approx([0.0, 0.0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: {**a, "group_T": a["group_T"][:-1]}, "group_T"),
        (lambda a: {**a, "W_dec_LM": a["W_dec_LM"][:, :-1]}, "W_dec_LM"),
        (lambda a: {**a, "group_T": a["group_T"] + 4}, "group ids"),
        (lambda a: {**a, "min_absorbed": 0}, "min_absorbed"),
        (lambda a: {**a, "weighting": "word"}, "weighting"),
        (lambda a: {**a, "min_projection_share": 1.5}, "min_projection_share"),
    ],
)
def test_bad_inputs_are_named(change, message):
    acts, group, token, W_dec, g = tensors(occurrences())
    args = {"acts_TL": acts, "group_T": group, "token_T": token, "W_dec_LM": W_dec, "g_GM": g}
    # Under the tests' jaxtyping hook a shape or Literal mismatch fails at the annotation;
    # without it (the package as installed) at the function's own check.
    typed = message in ("group_T", "W_dec_LM", "weighting")
    with pytest.raises((ValueError, TypeCheckError) if typed else ValueError, match=message):
        label_latents(**change(args))
