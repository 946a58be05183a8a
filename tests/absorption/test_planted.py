"""Planted absorption: the planted SAE has the structure it claims, the check is right on
hand-made pairs files, and the whole search (cooccurrences -> ablate -> pairs) finds the planted
pairs end to end (``validate-absorption --quick``)."""

import json

import pytest
import torch

from sae_hacking.absorption.planted.run import ValidateConfig, evaluate, format_evaluation
from sae_hacking.absorption.planted.saes import (
    ABLATOR_HOOK,
    PlantedPlan,
    decoder_cosines,
    planted_sae,
    tilted_pair,
)
from sae_hacking.cli import main
from sae_hacking.config import from_flat
from sae_hacking.errors import FieldError
from sae_hacking.lm.tiny import generate_texts
from sae_hacking.saes.io import load_sae_checkpoint, save_sae_checkpoint

TEXTS = generate_texts(60, seed=3)
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def planted(tiny_lm):
    lm = tiny_lm("gemma2", layers=3)
    sae, plan = planted_sae(lm, ABLATOR_HOOK, 40, TEXTS, seed=1, max_tokens=MAX_TOKENS)
    batch = lm.tokenize(TEXTS, MAX_TOKENS)
    acts_BSM = lm.read(batch.input_ids_BS, batch.attention_mask_BS, [ABLATOR_HOOK])[ABLATOR_HOOK]
    active_TE = sae.encode(acts_BSM[batch.real_token_mask_BS]) > 0
    return sae, plan, active_TE


def test_tilted_pair_has_the_asked_cosine_and_stays_near_the_parent():
    gen = torch.Generator().manual_seed(0)
    d_M = torch.nn.functional.normalize(torch.randn(64, generator=gen), dim=0)
    pair_2M = tilted_pair(d_M, 0.93, gen)
    assert torch.allclose(pair_2M.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert float(pair_2M[0] @ pair_2M[1]) == pytest.approx(0.93, abs=1e-5)
    assert (pair_2M @ d_M).tolist() == pytest.approx([0.93**0.5] * 2, abs=1e-5)


def test_planted_pairs_have_similar_decoders_and_never_fire_together(planted):
    sae, plan, active_TE = planted
    assert len(plan.planted) == 4 and len(plan.cooccurring) == 3 and len(plan.exclusive) == 3
    latents = [
        i for kind in ("planted", "cooccurring", "exclusive") for p in plan.pairs(kind) for i in p
    ]
    assert len(set(latents)) == len(latents) and all(a < b for a, b in plan.planted)
    n_tokens = active_TE.shape[0]
    for (a, b), cosine in zip(plan.planted, decoder_cosines(sae, plan.planted), strict=True):
        assert 0.9 <= cosine <= 0.97 + 1e-6
        assert not (active_TE[:, a] & active_TE[:, b]).any()
        # Each child takes a real share of the parent's tokens (a zero count is then evidence).
        assert active_TE[:, a].sum() > 0.05 * n_tokens and active_TE[:, b].sum() > 0.05 * n_tokens


def test_controls_cooccur_or_have_unrelated_decoders(planted):
    sae, plan, active_TE = planted
    for (a, b), cosine in zip(
        plan.cooccurring, decoder_cosines(sae, plan.cooccurring), strict=True
    ):
        assert cosine >= 0.9
        both = (active_TE[:, a] & active_TE[:, b]).sum()
        assert both > 0.5 * active_TE[:, a].sum()
    for (a, b), cosine in zip(plan.exclusive, decoder_cosines(sae, plan.exclusive), strict=True):
        assert abs(cosine) < 0.5
        assert not (active_TE[:, a] & active_TE[:, b]).any()
        assert active_TE[:, a].any() and active_TE[:, b].any()


def test_the_planted_sae_saves_and_loads(planted, tmp_path):
    sae, plan, _ = planted
    path = save_sae_checkpoint(sae, tmp_path / "sae.safetensors", {"planted": plan.to_json()})
    loaded = load_sae_checkpoint(path)
    x_BM = torch.randn(5, 64)
    assert torch.equal(loaded.encode(x_BM), sae.encode(x_BM))
    assert PlantedPlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan
    labels = plan.labels()
    assert "planted absorption pair 0" in labels[plan.planted[0][0]]
    assert len(labels) == 20


# -- the check, on hand-made pairs.json dicts -------------------------------------------------


def pair(i, j, effect, decoder, count=0):
    side = {"explanation": "", "activation_count": 10, "ablation_count": 5, "url": None}
    return {
        "ablator1": {"id": i, **side},
        "ablator2": {"id": j, **side},
        "cosine_similarity": effect,
        "cooccurrence_count": count,
        "decoder_cosine": decoder,
        "expected_cooccurrence": 20.0,
        "p_no_cooccurrence": 2e-9,
    }


def result(*pairs, kept=None, passing=None):
    n = len(pairs)
    meta = {"n_pairs_kept": n if kept is None else kept, "n_pairs_passing": passing or n}
    return {"meta": meta, "pairs": sorted(pairs, key=lambda p: -p["cosine_similarity"])}


PLANTED = [(1, 2), (3, 4)]
COOCCURRING = [(5, 6)]


def test_evaluate_passes_and_ranks_by_effect_and_by_decoder():
    # The effect ranking finds both planted pairs; decoder cosine alone ranks (7, 8) second.
    doc = result(pair(1, 2, 0.9, 0.95), pair(3, 4, 0.8, 0.91), pair(7, 8, 0.3, 0.93))
    all_decoder = {(1, 2): 0.95, (3, 4): 0.91, (5, 6): 0.97, (7, 8): 0.93, (1, 7): 0.1}
    ev = evaluate(doc, PLANTED, COOCCURRING, [(7, 8)], all_decoder)
    assert ev.passed and ev.failures == [] and ev.n_candidates == 3
    effect, decoder, everything = ev.rankings
    assert (effect.hits, effect.precision, effect.recall) == (2, 1.0, 1.0)
    assert (decoder.hits, decoder.precision) == (1, 0.5)
    assert (everything.hits, everything.n_ranked) == (1, 5)  # (5, 6) ranks first
    assert ev.margin == (0.8, 0.3)
    rows = {tuple(r["pair"]): r for r in ev.rows}
    assert rows[(3, 4)]["effect_rank"] == 2 and rows[(3, 4)]["decoder_rank"] == 3
    assert not rows[(5, 6)]["in_output"] and rows[(5, 6)]["decoder_cosine"] == 0.97
    text = format_evaluation(ev)
    assert "PASS" in text and "not in output (co-occur)" in text and "precision@2" in text


def test_evaluate_fails_on_each_broken_criterion():
    missing = evaluate(result(pair(1, 2, 0.9, 0.95)), PLANTED, COOCCURRING)
    assert (
        not missing.passed and "missing" in missing.failures[0] and "(3, 4)" in missing.failures[0]
    )
    control = evaluate(
        result(pair(1, 2, 0.9, 0.95), pair(3, 4, 0.8, 0.9), pair(5, 6, 0.1, 0.97)),
        PLANTED,
        COOCCURRING,
    )
    assert not control.passed and "co-occurring controls" in control.failures[0]
    # An other pair level with a planted one is a failure (ties do not count as "above").
    tie = evaluate(
        result(pair(1, 2, 0.9, 0.95), pair(3, 4, 0.5, 0.9), pair(8, 9, 0.5, 0.1)), PLANTED
    )
    assert not tie.passed and "(8, 9)" in tie.failures[0]
    assert tie.rankings[0].hits in (1, 2)
    cut = evaluate(result(pair(1, 2, 0.9, 0.95), pair(3, 4, 0.8, 0.9), passing=10), PLANTED)
    assert not cut.passed and "max_pairs" in cut.failures[0]
    assert "FAIL" in format_evaluation(cut)


def test_evaluate_reads_pairs_in_either_id_order():
    swapped = pair(2, 1, 0.9, 0.95)
    ev = evaluate(result(swapped, pair(4, 3, 0.8, 0.9)), PLANTED)
    assert ev.passed


# -- settings and the command line ------------------------------------------------------------


def test_quick_sets_smaller_sizes_and_explicit_sizes_win():
    assert (ValidateConfig().n_prompts, ValidateConfig().d_sae) == (400, 64)
    quick = from_flat(ValidateConfig, {"quick": True, "d_sae": 50})
    assert (quick.n_prompts, quick.d_sae, quick.reader_d_sae) == (150, 50, 128)
    with pytest.raises(FieldError, match="d_sae"):
        from_flat(ValidateConfig, {"d_sae": 10})
    with pytest.raises(FieldError, match="min_decoder_cosine"):
        from_flat(ValidateConfig, {"min_decoder_cosine": 1.0})


@pytest.mark.parametrize("command", ["validate-absorption", "demo"])
def test_bad_settings_exit_2_with_one_line_and_write_nothing(command, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([command, "--d-sae", "8", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--d-sae" in err
    assert not out.exists()


# -- end to end -------------------------------------------------------------------------------


@pytest.mark.slow
def test_validate_absorption_finds_the_planted_pairs(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["validate-absorption", "--quick", "--quiet", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "PASS" in printed and "effect cosine (candidates)" in printed
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # nothing written outside it
    validation = json.loads((out / "validation.json").read_text())
    assert validation["passed"]
    plan = PlantedPlan.from_json(validation["plan"])
    doc = json.loads((out / "pairs" / "pairs.json").read_text())
    top = {tuple(sorted((p["ablator1"]["id"], p["ablator2"]["id"]))) for p in doc["pairs"][:4]}
    assert top == set(plan.planted)
    found = {tuple(sorted((p["ablator1"]["id"], p["ablator2"]["id"]))) for p in doc["pairs"]}
    assert not found & set(plan.cooccurring)
    assert all(p["cooccurrence_count"] == 0 for p in doc["pairs"])
    effect = validation["rankings"][0]
    assert (effect["precision"], effect["recall"]) == (1.0, 1.0)
    labels = {p["ablator1"]["id"]: p["ablator1"]["explanation"] for p in doc["pairs"][:4]}
    assert all("planted absorption pair" in text for text in labels.values())
    assert (out / "pairs" / "report.html").is_file() and (out / "run.json").is_file()


def test_an_existing_run_directory_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "kept.txt").write_text("mine")
    assert main(["demo", "--output-dir", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["kept.txt"]
