"""``decoder-pairs``: the blocked top-k search against a dense cosine matrix + mask + sort, the
CLI end to end on real co-occurrences of a tiny model, the legacy script, the page, and bad
input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sae_hacking.absorption.pairs.search import histogram_bins
from sae_hacking.absorption.tools.decoder_search import top_decoder_pairs
from sae_hacking.cli import main
from tests.absorption.tools.conftest import ABLATOR

HOSTILE = '<img src=x onerror="window.pwned=1"><b>bold</b> & "quotes"'


def exact_unit_rows(e: int, seed: int) -> torch.Tensor:
    """Unit rows of ±1/8 over 64 dimensions: every cosine is an exact multiple of 1/64 in
    float32 whatever the summation order, so ties are exact; rows 0-2, 9 and 17 recur (also
    negated), and cosines repeat across many pairs."""
    g = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (e, 64), generator=g).float() * 2 - 1
    signs[[5, 11, 30]] = signs[0].clone()
    signs[[6, 23]] = signs[1].clone()
    signs[12] = -signs[2]
    signs[[18, 33]] = signs[9].clone()
    signs[34] = signs[17]
    return signs / 8.0


def reference(unit_eM, top_k, counts_ee=None, max_cooc=0, min_cosine=None, focus=None):
    """Every pair i < j of the dense cosine matrix that passes, sorted by (-cosine, i, j)."""
    e = unit_eM.shape[0]
    cosine_ee = (unit_eM @ unit_eM.T).clamp(-1, 1)
    mask_ee = torch.ones(e, e, dtype=torch.bool).triu(1)
    if counts_ee is not None:
        mask_ee &= counts_ee <= max_cooc
    if min_cosine is not None:
        mask_ee &= cosine_ee >= min_cosine
    if focus is not None:
        mark = torch.zeros(e, dtype=torch.bool)
        mark[list(focus)] = True
        mask_ee &= mark[:, None] | mark[None, :]
    i, j = mask_ee.nonzero(as_tuple=True)
    pairs = sorted(zip((-cosine_ee[i, j]).tolist(), i.tolist(), j.tolist(), strict=True))
    hist = torch.bincount(histogram_bins(cosine_ee[i, j]), minlength=100).tolist()
    return [(a, b, -c) for c, a, b in pairs[:top_k]], len(pairs), hist


def as_list(found):
    return list(
        zip(found.first_K.tolist(), found.second_K.tolist(), found.cosine_K.tolist(), strict=True)
    )


def random_counts(e: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 4, (e, e), generator=g)
    counts[torch.rand(e, e, generator=g) < 0.5] = 0
    return counts.triu() + counts.triu(1).T


@pytest.mark.parametrize("block_size", [1, 4, 7, 16, 40, 4096])
@pytest.mark.parametrize(
    "top_k, max_cooc, min_cosine, focus",
    [(25, None, None, None), (12, 0, None, None), (500, 1, 0.1, None), (9, 2, None, (2, 17))],
)
def test_blocked_search_equals_the_dense_reference(block_size, top_k, max_cooc, min_cosine, focus):
    e = 37
    unit_eM = exact_unit_rows(e, seed=3)
    counts_ee = random_counts(e, seed=4) if max_cooc is not None else None
    lookups = []

    def count_pairs(a, b):
        lookups.append(a.numel())
        return counts_ee[a.cpu(), b.cpu()]

    focus_e = None
    if focus is not None:
        focus_e = torch.zeros(e, dtype=torch.bool)
        focus_e[list(focus)] = True
    found = top_decoder_pairs(
        unit_eM,
        top_k,
        block_size,
        count_pairs if counts_ee is not None else None,
        max_cooc or 0,
        min_cosine,
        focus_e,
    )
    expected, n_passing, hist = reference(unit_eM, top_k, counts_ee, max_cooc, min_cosine, focus)
    assert as_list(found) == expected  # pairs, order and exact cosines
    assert found.n_passing == n_passing and found.histogram_counts == hist
    # The exact ties are there: the duplicated rows make cosine-1 pairs, ordered by (i, j).
    assert top_k < 25 or expected[0] == (0, 5, 1.0)
    if counts_ee is None:
        assert found.counts_K is None
    else:
        assert found.counts_K.tolist() == [int(counts_ee[i, j]) for i, j, _ in expected]
        assert max(lookups) <= block_size * block_size  # looked up per block, never e x e


def test_gaussian_decoder_with_duplicates_matches_the_reference():
    g = torch.Generator().manual_seed(8)
    W_eM = torch.randn(50, 24, generator=g)
    W_eM[[7, 40]] = W_eM[3].clone()  # exact duplicates: ties at the top
    W_eM[41] = 2.5 * W_eM[3]
    unit_eM = F.normalize(W_eM, dim=-1)
    found = top_decoder_pairs(unit_eM, 30, 8)
    expected, n_passing, _ = reference(unit_eM, 30)
    assert [(i, j) for i, j, _ in as_list(found)] == [(i, j) for i, j, _ in expected]
    assert found.cosine_K.tolist() == pytest.approx([c for *_, c in expected], abs=1e-6)
    same = {(3, 7), (3, 40), (3, 41), (7, 40), (7, 41), (40, 41)}
    assert {(i, j) for i, j, _ in as_list(found)[:6]} == same
    assert n_passing == 50 * 49 // 2


def test_nothing_passes():
    unit_eM = F.normalize(torch.randn(10, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    found = top_decoder_pairs(unit_eM, 5, 3, min_cosine=0.999)
    assert found.first_K.numel() == 0 and found.n_passing == 0
    assert sum(found.histogram_counts) == 0


# --- end to end ---------------------------------------------------------------------------


def _read(run: Path) -> dict:
    return json.loads((run / "pairs.json").read_text())


def _dense_counts(cooc: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from sae_hacking.absorption.cooccurrence.accumulator import Cooccurrences

    with Cooccurrences(cooc) as co:
        counts_ee = torch.stack([co.row(i) for i in range(co.e)])
        return counts_ee, co.activations()


def _unit_rows(sae_path) -> torch.Tensor:
    from sae_hacking.saes.releases import load_sae

    return F.normalize(load_sae(str(sae_path), None, device="cpu").W_dec.detach().float(), dim=-1)


def _shown_count(capsys, cooc, i, j) -> int:
    capsys.readouterr()
    assert main(["cooccurrences-show", str(cooc), str(i), str(j)]) == 0
    return int(re.search(r"both active on (\d+) tokens", capsys.readouterr().out).group(1))


@pytest.mark.slow
def test_cli_end_to_end(tool_runs, tmp_path, capsys):
    out = tmp_path / "pairs"
    cooc = tool_runs["cooc"]
    code = main(["decoder-pairs", "--sae-release", tool_runs["ablator"], "--cooccurrence-path",
                 str(cooc), "--cooccurrence-threshold", "2", "--top-k", "40", "--block-size",
                 "16", "--device", "cpu", "--ablator-evidence", str(cooc),
                 "--output-dir", str(out)])  # fmt: skip
    assert code == 0
    assert {p.name for p in out.iterdir()} >= {"pairs.csv", "pairs.json", "report.html"}
    result = _read(out)
    counts_ee, activations_e = _dense_counts(cooc)
    expected, n_passing, hist = reference(_unit_rows(tool_runs["ablator"]), 40, counts_ee, 2)
    pairs = result["pairs"]
    got = [(p["ablator1"]["id"], p["ablator2"]["id"], p["decoder_cosine"]) for p in pairs]
    assert [g[:2] for g in got] == [x[:2] for x in expected]
    assert [g[2] for g in got] == pytest.approx([x[2] for x in expected], abs=1e-6)
    meta = result["meta"]
    assert meta["kind"] == "decoder-pairs" and meta["compare"] == "decoder"
    assert meta["n_pairs_passing"] == n_passing and meta["n_pairs_kept"] == len(pairs) == 40
    assert meta["n_compared"] == 48 and meta["histogram"]["counts"] == hist
    tokens = meta["inputs"]["tokens"]
    assert meta["inputs"]["model"] == tool_runs["model"]  # the co-occurrence run's
    for p in pairs:
        i, j = p["ablator1"]["id"], p["ablator2"]["id"]
        assert i < j and p["cosine_similarity"] == p["decoder_cosine"]
        assert p["cooccurrence_count"] == int(counts_ee[i, j]) <= 2
        assert p["ablator1"]["activation_count"] == int(activations_e[i])
        assert p["ablator1"]["ablation_count"] == 0
        expected_cooc = int(activations_e[i]) * int(activations_e[j]) / tokens
        assert p["expected_cooccurrence"] == pytest.approx(expected_cooc)
        for side in ("ablator1", "ablator2"):
            label = p[side]["label"]
            assert label["source"] in ("evidence", "logit lens")
            assert p[side]["explanation"] == label["text"]
    for p in pairs[:6]:  # the counts are the file's, as cooccurrences-show reads them
        i, j = p["ablator1"]["id"], p["ablator2"]["id"]
        assert p["cooccurrence_count"] == _shown_count(capsys, cooc, i, j)
    sources = {p[s]["label"]["source"] for p in pairs for s in ("ablator1", "ablator2")}
    assert "evidence" in sources
    assert any("evidence of" in line for line in meta["labels"]["how"])
    page = (out / "report.html").read_text()
    assert "Latent pairs with similar decoder directions" in page
    assert 'data-sort-key="decoder_cosine"' in page and 'data-key="effect_cosine"' not in page
    assert "effect_vs_decoder.png" not in page
    header = (out / "pairs.csv").read_text().splitlines()[0]
    assert header.startswith("id1,id2,cosine_similarity,decoder_cosine,cooccurrence_count")


def test_without_cooccurrences_with_latents(tool_runs, tmp_path, capsys):
    """No counts: every pair may pass (counts null, activations 0); `latents` keeps the pairs
    containing one of them; a local SAE with no model gets no logit lens."""
    out = tmp_path / "pairs"
    code = main(["decoder-pairs", "--sae-release", tool_runs["ablator"], "--latents", "3", "40",
                 "--top-k", "100", "--min-decoder-cosine", "-0.2",
                 "--device", "cpu", "--output-dir", str(out)])  # fmt: skip
    assert code == 0
    assert "no logit-lens labels: the SAE names no model; give --model" in capsys.readouterr().err
    result = _read(out)
    expected, n_passing, _ = reference(
        _unit_rows(tool_runs["ablator"]), 100, min_cosine=-0.2, focus=(3, 40)
    )
    pairs = result["pairs"]
    assert [(p["ablator1"]["id"], p["ablator2"]["id"]) for p in pairs] == [x[:2] for x in expected]
    assert result["meta"]["n_pairs_passing"] == n_passing < 2 * 47
    assert all(p["cooccurrence_count"] is None and p["expected_cooccurrence"] is None
               for p in pairs)  # fmt: skip
    assert {p["ablator1"]["activation_count"] for p in pairs} == {0}
    assert {p[s]["label"]["source"] for p in pairs for s in ("ablator1", "ablator2")} == {"none"}
    assert result["meta"]["inputs"]["model"] is None


@pytest.mark.slow
def test_legacy_script(tool_runs, tmp_path):
    out = tmp_path / "legacy"
    done = subprocess.run(
        [sys.executable, "src/sae_hacking/look_for_cosine_sim_pairs.py", "--sae-release",
         str(tool_runs["ablator"]), "--cooccurrence-path", str(tool_runs["cooc"]),
         "--top-k", "5", "--device", "cpu", "--output-dir", str(out)],
        capture_output=True, text=True, cwd=Path(__file__).parents[3], timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    pairs = _read(out)["pairs"]
    assert len(pairs) == 5 and all(p["cooccurrence_count"] == 0 for p in pairs)
    cosines = [p["decoder_cosine"] for p in pairs]
    assert cosines == sorted(cosines, reverse=True)
    assert {p["ablator1"]["label"]["source"] for p in pairs} <= {"logit lens", "none"}


@pytest.mark.slow
def test_page_in_chromium(chromium, tool_runs, tmp_path):
    """Hostile label text shows as text, the Neuronpedia link is a plain href, and loading the
    page requests nothing."""
    from tests.browser import guard

    explanations = tmp_path / "explanations.json"
    explanations.write_text(json.dumps([{"index": i, "description": HOSTILE} for i in range(48)]))
    out = tmp_path / "pairs"
    assert main(["decoder-pairs", "--sae-release", tool_runs["ablator"], "--top-k", "7",
                 "--explanations-file", str(explanations), "--ablator-sae-neuronpedia-id",
                 "gemma-2-2b/20-gemmascope-res-65k", "--device", "cpu",
                 "--output-dir", str(out)]) == 0  # fmt: skip
    page = chromium.new_page()
    try:
        url = (out / "report.html").resolve().as_uri()
        refused, errors = guard(page, lambda u: u == url)
        page.goto(url)
        rows = page.locator("#pairs-table tbody tr")
        assert rows.count() == 7 and refused == [] and errors == []
        assert page.evaluate("typeof window.pwned") == "undefined"
        assert page.locator("#pairs-table b, #pairs-table img").count() == 0
        headers = page.locator("#pairs-table thead th").all_text_contents()
        assert "Decoder cos" in headers and "Effect cos" not in headers
        assert "Label 1" in headers and "Ablated 1" not in headers
        first = _read(out)["pairs"][0]
        cells = rows.nth(0).locator("td")
        assert cells.nth(2).text_content() == HOSTILE
        link = cells.nth(1).locator("a")
        assert link.get_attribute("href") == first["ablator1"]["url"]
        assert first["ablator1"]["url"].startswith("https://www.neuronpedia.org/gemma-2-2b/")
        assert not page.locator("#min-effect").is_visible()
        assert page.locator("#min-decoder").is_visible()
        decoder = [float(t) for t in page.locator("#pairs-table tbody tr td:nth-child(8)")
                   .all_text_contents()]  # fmt: skip
        assert decoder == sorted(decoder, reverse=True)
        assert page.locator("h1").text_content() == "Latent pairs with similar decoder directions"
    finally:
        page.close()


# --- bad input ----------------------------------------------------------------------------


def _refused(capsys, tmp_path, *flags) -> str:
    out = tmp_path / "refused"
    capsys.readouterr()
    code = main(["decoder-pairs", *flags, "--device", "cpu", "--output-dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert not out.exists()
    return err[0]


def test_bad_input(tool_runs, tmp_path, capsys, random_sae_path):
    ablator, cooc = str(tool_runs["ablator"]), str(tool_runs["cooc"])
    other = str(random_sae_path(ABLATOR, 48, seed=77, kind="topk", k=2))
    line = _refused(capsys, tmp_path, "--sae-release", other, "--cooccurrence-path", cooc)
    assert "--cooccurrence-path" in line and "another SAE" in line
    line = _refused(capsys, tmp_path, "--sae-release", ablator, "--top-k", "0")
    assert "--top-k" in line
    line = _refused(capsys, tmp_path, "--sae-release", ablator, "--cooccurrence-path",
                    str(tmp_path / "missing"))  # fmt: skip
    assert "--cooccurrence-path" in line and "no such file" in line
    line = _refused(capsys, tmp_path, "--sae-release", ablator, "--cooccurrence-path",
                    str(tool_runs["ablate"]))  # fmt: skip
    assert "--cooccurrence-path" in line
    line = _refused(capsys, tmp_path, "--sae-release", ablator, "--latents", "48")
    assert "--latents" in line and "48" in line
    line = _refused(capsys, tmp_path, "--sae-release", str(tmp_path / "no-sae.safetensors"))
    assert "--sae-release" in line
