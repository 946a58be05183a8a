"""``four-tuples``: the sign-matrix count and the bisected top-N against four nested loops over
small random matrices (ties, exact zeros, thresholds that are not float32s), and the command end
to end (outputs, labels, the legacy script, bad input)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sae_hacking.absorption.tools import tuple_search
from sae_hacking.absorption.tools.threshold import float32_floor
from sae_hacking.absorption.tools.tuple_search import count_tuples, strongest_tuples
from tests.absorption.tools.cli_checks import refusal_checker, runner
from tests.absorption.tools.conftest import write_ablations

OUTPUTS = ["args.yaml", "run.json", "tuples.csv", "tuples.html", "tuples.json"]


def tuples_reference(mean_DE, latents_D, t: float, max_results: int):
    """``(total, kept)``: every (A, B, C, D) by four loops over Python floats (the numbers'
    ``>``), kept: ``(A, B, C, D, strength)`` by strength descending, then (A, B, C, D)."""
    rows = mean_DE.tolist()
    ids = latents_D.tolist()
    found = []
    for a, row_a in enumerate(rows):
        for c, row_c in enumerate(rows):
            if a == c:
                continue
            for b, (ab, cb) in enumerate(zip(row_a, row_c, strict=True)):
                for d, (ad, cd) in enumerate(zip(row_a, row_c, strict=True)):
                    if b != d and ab > t and ad > t and cb > t and cd < -t:
                        found.append((ids[a], b, ids[c], d, min(ab, ad, cb, -cd)))
    found.sort(key=lambda x: (-x[4], x[:4]))
    return len(found), found[:max_results]


def random_means(D: int, E: int, seed: int) -> torch.Tensor:
    """Multiples of 1/12 (many exact ties), a third exact zeros, float32 like the tool's."""
    g = torch.Generator().manual_seed(seed)
    sums = torch.randint(-6, 7, (D, E), generator=g).float() * 0.25
    sums[torch.rand(D, E, generator=g) < 0.3] = 0.0
    return sums / torch.randint(1, 4, (D, 1), generator=g).float()


def kept_of(found, latents_D):
    ids = latents_D.tolist()
    return [
        (ids[a], b, ids[c], d, s)
        for (a, b, c, d), s in zip(found.abcd_K4.tolist(), found.strength_K.tolist(), strict=True)
    ]


@pytest.fixture(params=["dense", "sparse"])
def counts_way(request, monkeypatch):
    """Both ways to the pair counts: dense products, or scipy's sparse ones (on the CPU the
    share of set sign entries chooses; here it is forced)."""
    monkeypatch.setattr(tuple_search, "SPARSE_BELOW", 1.0 if request.param == "sparse" else -1.0)
    return request.param


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("t", [0.0, 0.1, 0.25, 1 / 3, 0.7, 5.0])
def test_total_and_kept_equal_four_loops(seed, t, counts_way):
    mean_DE = random_means(8, 10, seed)
    latents_D = torch.arange(8) * 3 + 1
    total, everything = tuples_reference(mean_DE, latents_D, t, 10**9)
    for max_results in (1, 2, 7, 40, total, total + 1, 10**6):
        if max_results < 1:
            continue
        found = strongest_tuples(mean_DE, t, max_results)
        assert found.total == total
        assert kept_of(found, latents_D) == everything[:max_results]
        # Every kept tuple is above the threshold, and so are at least max_results (or all).
        assert found.listed >= min(max_results, total)
        assert all(s > found.threshold for *_, s in kept_of(found, latents_D))
        for (a, b, c, d), (ab, ad, cb, cd) in zip(
            found.abcd_K4.tolist(), found.effects_K4.tolist(), strict=True
        ):
            assert (ab, ad, cb, cd) == tuple(mean_DE[[a, a, c, c], [b, d, b, d]].tolist())


def test_the_sparse_and_dense_counts_agree_on_sparse_effects():
    g = torch.Generator().manual_seed(7)
    mean_DE = torch.randn(60, 300, generator=g)
    mean_DE[torch.rand(60, 300, generator=g) < 0.97] = 0.0  # 3% set: the CPU takes sparse
    for s in (0.0, 0.3, 1.0):
        assert count_tuples(mean_DE, s, sparse=True) == count_tuples(mean_DE, s, sparse=False)
    assert count_tuples(mean_DE, 0.0) > 0


def test_small_blocks_and_chunks(monkeypatch, counts_way):
    # Blocks of one A row and chunks of a few tuples: the splits must lose or repeat nothing.
    mean_DE = random_means(9, 12, seed=7)
    latents_D = torch.arange(9)
    total, everything = tuples_reference(mean_DE, latents_D, 0.0, 10**9)
    monkeypatch.setattr(tuple_search, "BLOCK_ELEMENTS", 5)
    monkeypatch.setattr(tuple_search, "TUPLE_BUDGET", 3)
    assert count_tuples(mean_DE, 0.0) == total
    listed = sorted(tuple(r) for chunk in tuple_search.list_tuples(mean_DE, 0.0)
                    for r in chunk.tolist())  # fmt: skip
    assert listed == sorted(x[:4] for x in everything)
    for max_results in (1, 13, total):
        found = strongest_tuples(mean_DE, 0.0, max_results)
        assert kept_of(found, latents_D) == everything[:max_results]


def test_all_ties_are_ordered_by_latents():
    # Two sign patterns, every |effect| 1: all tuples tie, so (A, B, C, D) alone decide.
    mean_DE = torch.tensor([[1.0, 1.0, 1.0, -1.0], [1.0, 1.0, -1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    latents_D = torch.arange(3)
    total, everything = tuples_reference(mean_DE, latents_D, 0.0, 10**9)
    assert total == 10
    for max_results in (1, 5, total):
        found = strongest_tuples(mean_DE, 0.0, max_results)
        assert found.total == total
        assert kept_of(found, latents_D) == everything[:max_results]
        assert found.threshold < 1.0 and found.listed == total  # ties cannot be separated


def test_thresholds_mean_the_numbers():
    # float32(0.1) is above the double 0.1: it counts at t = 0.1, as four loops over the
    # numbers say (torch's `x > 0.1` would round 0.1 to float32 and say no).
    mean_DE = torch.tensor([[0.1, 0.1, 0.0], [0.1, -0.1, 0.0]])
    assert float(mean_DE[0, 0]) > 0.1 and float32_floor(0.1) < float(mean_DE[0, 0])
    assert count_tuples(mean_DE, float32_floor(0.1)) == 1
    assert strongest_tuples(mean_DE, 0.1, 5).total == tuples_reference(
        mean_DE, torch.arange(2), 0.1, 5
    )[0] == 1  # fmt: skip
    assert strongest_tuples(mean_DE, 0.10000001, 5).total == 0
    assert float32_floor(0.25) == 0.25 and float32_floor(1e40) < 1e40


def test_counts_past_float32_and_int32():
    # Rows a (all positive) and c (positive, then negative), twice each, over E = 2^16 readers:
    # A in {a rows} with C in {c rows} has h^2 = 2^30 tuples (B over the first half, D over
    # the second); no other pair has any. 4 * 2^30 passes int32, h^2 passes float32's 2^24.
    E, h = 2**16, 2**15
    ramp = 1 + torch.arange(E) * 2.0**-18  # distinct, exact in float32
    a = 1 + ramp
    c = torch.cat([ramp[:h], -ramp[h:]])
    mean_DE = torch.stack([a, c, a, c])
    assert count_tuples(mean_DE, 0.0) == 4 * h * h
    # Strength: min(a_B, a_D, c_B, -c_D) = c_B, so the strongest have B = h - 1 with any D;
    # the ties go by (A, B, C, D).
    found = strongest_tuples(mean_DE, 0.0, 3)
    assert found.total == 4 * h * h
    assert found.abcd_K4.tolist() == [[0, h - 1, 1, h], [0, h - 1, 1, h + 1], [0, h - 1, 1, h + 2]]
    assert found.strength_K.tolist() == [float(ramp[h - 1])] * 3
    assert found.listed == 4 * h  # only the ties at the top were listed


# -- the command --


run_cli = runner("four-tuples")
check_refused = refusal_checker(run_cli)


def read_run(folder: Path):
    result = json.loads((folder / "tuples.json").read_text())
    with open(folder / "tuples.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))  # labels may hold "\r": no newline translation
    return result, rows


def check_outputs(folder: Path, result, rows) -> None:
    """The CSV holds the JSON's tuples with their labels; every latent shown is labelled."""
    assert sorted(p.name for p in folder.iterdir()) == OUTPUTS
    keys = ("A", "B", "C", "D", "AB", "AD", "CB", "CD", "strength")
    assert [[float(r[k]) for k in keys] for r in rows] == [
        [float(t[k]) for k in keys] for t in result["tuples"]
    ]
    labels = result["labels"]
    assert set(labels["ablator"]) == {str(t[k]) for t in result["tuples"] for k in "AC"}
    assert set(labels["reader"]) == {str(t[k]) for t in result["tuples"] for k in "BD"}
    for row, t in zip(rows, result["tuples"], strict=True):
        for key, side in (("A", "ablator"), ("B", "reader"), ("C", "ablator"), ("D", "reader")):
            assert row[f"{key}_label"] == labels[side][str(t[key])]["text"]
    meta = result["meta"]
    assert meta["kind"] == "four-tuples" and meta["kept"] == len(result["tuples"])
    page = (folder / "tuples.html").read_text()
    assert "Content-Security-Policy" in page and "tuples-data" in page


def as_reference(result):
    return [(t["A"], t["B"], t["C"], t["D"], t["strength"]) for t in result["tuples"]]


def test_end_to_end(synthetic_ablations, tmp_path, capsys):
    folder, latents_D, counts_D, mean_DE = synthetic_ablations(D=11, E=9, seed=4)
    order = torch.argsort(latents_D)
    out = tmp_path / "all"
    code, stdout, _ = run_cli(["--input-path", str(folder), "--output-dir", str(out),
                               "--max-results", "25", "--no-logit-lens"], capsys)  # fmt: skip
    assert code == 0 and str(out / "tuples.json") in stdout
    result, rows = read_run(out)
    total, kept = tuples_reference(mean_DE[order], latents_D[order], 0.0, 25)
    assert result["meta"]["total"] == total and f"{total:,} 4-tuples" in stdout
    assert as_reference(result) == kept
    check_outputs(out, result, rows)
    assert result["meta"]["n_ablators"] == 11 and result["meta"]["n_readers"] == 9

    # min_ablations, latents and a threshold choose the rows.
    out = tmp_path / "some"
    keep = (counts_D >= 2)[order]
    chosen = sorted(latents_D[order][keep].tolist())[1:]
    code, _, _ = run_cli(["--input-path", str(folder), "--output-dir", str(out),
                          "--treat-as-zero", "0.3", "--min-ablations", "2", "--latents",
                          *map(str, chosen), "--max-results", "4", "--no-logit-lens"],
                         capsys)  # fmt: skip
    assert code == 0
    result, rows = read_run(out)
    rows_kept = torch.isin(latents_D[order], torch.tensor(chosen))
    total, kept = tuples_reference(mean_DE[order][rows_kept], latents_D[order][rows_kept], 0.3, 4)
    assert result["meta"]["total"] == total and as_reference(result) == kept
    check_outputs(out, result, rows)


@pytest.mark.slow
def test_on_a_real_ablate_run(tool_runs, tmp_path, capsys):
    from sae_hacking.absorption.tools.effects import dense_means, open_ablations

    effects = open_ablations(tool_runs["ablate"])
    try:
        latents_D, _, mean_DE = dense_means(effects, 1, 10**9, "max_elements", "the test")
    finally:
        effects.close()
    out = tmp_path / "real"
    code, _, _ = run_cli(["--input-path", str(tool_runs["ablate"]), "--output-dir", str(out),
                          "--max-results", "30", "--ablator-evidence", str(tool_runs["cooc"]),
                          "--reader-evidence", str(tool_runs["reader_evidence"]),
                          "--device", "cpu"], capsys)  # fmt: skip
    assert code == 0
    result, rows = read_run(out)
    total, kept = tuples_reference(mean_DE, latents_D, 0.0, 30)
    assert total > 0 and result["meta"]["total"] == total and as_reference(result) == kept
    check_outputs(out, result, rows)
    for side in ("ablator", "reader"):
        sources = {label["source"] for label in result["labels"][side].values()}
        assert "evidence" in sources, side
        assert any("evidence" in how for how in result["meta"]["labels"][side])
    assert result["meta"]["inputs"]["model"] == tool_runs["model"]


@pytest.mark.slow
def test_legacy_script(tool_runs, tmp_path):
    out = tmp_path / "legacy"
    done = subprocess.run(
        [sys.executable, "src/sae_hacking/find_4tuples.py", "--input-path",
         str(tool_runs["ablate"]), "--treat-as-zero", "0.0", "--ablator-sae-neuronpedia-id",
         "a/b", "--reader-sae-neuronpedia-id", "c/d", "--output-dir", str(out)],
        capture_output=True, text=True, cwd=Path(__file__).parents[3],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result, rows = read_run(out)
    check_outputs(out, result, rows)
    assert result["meta"]["settings"]["treat_as_zero"] == 0.0 and result["tuples"]
    t = result["tuples"][0]
    assert result["labels"]["ablator"][str(t["A"])]["url"].endswith(f"/a/b/{t['A']}")
    assert result["labels"]["reader"][str(t["B"])]["url"].endswith(f"/c/d/{t['B']}")


def test_refusals(synthetic_ablations, tmp_path, capsys):
    run, latents_D, *_ = synthetic_ablations(D=6, E=5)
    check_refused(["--input-path", str(run), "--treat-as-zero", "-0.1"], capsys, tmp_path,
                  "--treat-as-zero")  # fmt: skip
    absent = next(i for i in range(100) if i not in set(latents_D.tolist()))
    check_refused(["--input-path", str(run), "--latents", str(absent)], capsys, tmp_path,
                  "--latents", str(absent))  # fmt: skip
    check_refused(["--input-path", str(run), "--max-elements", "29"], capsys, tmp_path,
                  "--max-elements", "6 x 5")  # fmt: skip
    check_refused(["--input-path", str(run), "--min-ablations", "99"], capsys, tmp_path,
                  "--min-ablations")  # fmt: skip
    check_refused(["--input-path", str(tmp_path / "absent")], capsys, tmp_path, "--input-path")
    check_refused(["--input-path", str(run), "--max-results", "0"], capsys, tmp_path,
                  "--max-results")  # fmt: skip
    unfinished = write_ablations(tmp_path / "unfinished", torch.tensor([1]), torch.ones(1),
                                 torch.ones(1, 3), complete=False)  # fmt: skip
    check_refused(["--input-path", str(unfinished)], capsys, tmp_path, "--input-path", "finish")


@pytest.mark.slow
def test_a_cooccurrences_run_is_refused(tool_runs, tmp_path, capsys):
    check_refused(["--input-path", str(tool_runs["cooc"])], capsys, tmp_path, "--input-path")
