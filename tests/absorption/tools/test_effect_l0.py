"""``effect-l0``: the streamed counts against a plain loop over the numbers, the histogram's
numbers against numpy's over the kept counts, and the command end to end (outputs, the
``output_path`` copy, labels, the legacy script, bad input)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sae_hacking.absorption.tools import effects as effects_module
from sae_hacking.absorption.tools.effect_l0 import effect_l0s
from sae_hacking.absorption.tools.effects import open_ablations
from tests.absorption.tools.cli_checks import refusal_checker, runner

OUTPUTS = ["args.yaml", "effect_l0.csv", "effect_l0.json", "effect_l0.png", "run.json"]


def l0_reference(mean_DE, latents_D, t: float) -> dict[int, int]:
    """latent -> how many of its row's numbers are above ``t`` in absolute value."""
    return {
        int(latent): sum(1 for v in row if abs(v) > t)
        for latent, row in zip(latents_D.tolist(), mean_DE.tolist(), strict=True)
    }


@pytest.mark.parametrize("t", [0.0, 0.1, 0.25, 1 / 3, 1.0, 100.0])
@pytest.mark.parametrize("rows_per_read", [1, 3, None])
def test_counts_equal_a_plain_loop(synthetic_ablations, monkeypatch, t, rows_per_read):
    folder, latents_D, counts_D, mean_DE = synthetic_ablations(D=14, E=11, seed=2)
    if rows_per_read:  # blocks of that many rows: the stream must see each row once
        monkeypatch.setattr(effects_module, "ROWS_PER_READ", 11 * rows_per_read)
    effects = open_ablations(folder)
    try:
        ids, l0s = effect_l0s(effects, t)
        assert dict(zip(ids, l0s, strict=True)) == l0_reference(mean_DE, latents_D, t)
        assert len(ids) == 14
        keep = counts_D >= 3
        ids, l0s = effect_l0s(effects, t, min_ablations=3)
        assert dict(zip(ids, l0s, strict=True)) == l0_reference(mean_DE[keep], latents_D[keep], t)
    finally:
        effects.close()


def test_a_threshold_that_is_no_float32():
    # float32(0.1) is above the double 0.1, so it counts at t = 0.1 (torch alone would say no).
    from sae_hacking.absorption.tools.threshold import float32_floor

    row = torch.tensor([0.1, -0.1, 0.05])
    assert sum(abs(v) > 0.1 for v in row.tolist()) == 2
    assert int((row.abs() > float32_floor(0.1)).sum()) == 2


run_cli = runner("effect-l0")
check_refused = refusal_checker(run_cli)


def read_run(folder: Path):
    result = json.loads((folder / "effect_l0.json").read_text())
    with open(folder / "effect_l0.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return result, rows


def check_run(folder: Path, result, rows, reference: dict[int, int], ablations: dict,
              exclude_over: float, bins: int) -> None:  # fmt: skip
    """The JSON and CSV hold every latent's count, and the histogram is numpy's over the kept."""
    assert sorted(p.name for p in folder.iterdir()) == OUTPUTS
    counts = result["counts"]
    assert [c["latent"] for c in counts] == sorted(reference)
    assert {c["latent"]: c["effect_l0"] for c in counts} == reference
    assert all(c["ablations"] == ablations[c["latent"]] for c in counts)
    assert all(c["excluded"] == (c["effect_l0"] > exclude_over) for c in counts)
    kept = [n for n in reference.values() if n <= exclude_over]
    hist, edges = np.histogram(kept, bins=bins)
    assert result["histogram"]["counts"] == hist.tolist()
    assert result["histogram"]["edges"] == pytest.approx(edges.tolist())
    meta = result["meta"]
    assert meta["n_latents"] == len(reference) and meta["n_excluded"] == len(reference) - len(kept)
    labels = result["labels"]
    assert set(labels) == {str(i) for i in reference}
    assert [
        (int(r["latent"]), int(r["ablations"]), int(r["effect_l0"]), r["excluded"] == "True",
         r["label"]) for r in rows
    ] == [
        (c["latent"], c["ablations"], c["effect_l0"], c["excluded"], labels[str(c["latent"])]["text"])
        for c in counts
    ]  # fmt: skip
    assert (folder / "effect_l0.png").read_bytes().startswith(b"\x89PNG")


def test_end_to_end(synthetic_ablations, tmp_path, capsys):
    folder, latents_D, counts_D, mean_DE = synthetic_ablations(D=30, E=16, seed=8)
    ablations = dict(zip(latents_D.tolist(), counts_D.tolist(), strict=True))
    out, png = tmp_path / "l0", tmp_path / "plots" / "l0.png"
    png.parent.mkdir()
    code, stdout, _ = run_cli(["--input-path", str(folder), "--output-dir", str(out),
                               "--threshold", "0.3", "--exclude-over", "9", "--bins", "4",
                               "--output-path", str(png), "--no-logit-lens"], capsys)  # fmt: skip
    assert code == 0 and str(out / "effect_l0.json") in stdout and str(png) in stdout
    result, rows = read_run(out)
    reference = l0_reference(mean_DE, latents_D, 0.3)
    assert any(n > 9 for n in reference.values()) and any(n <= 9 for n in reference.values())
    check_run(out, result, rows, reference, ablations, 9, 4)
    assert png.read_bytes() == (out / "effect_l0.png").read_bytes()
    assert result["meta"]["treat_as_zero"] == 0.3 and result["meta"]["output_path"] == str(png)

    # min_ablations and latents choose the rows; everything excluded still writes a picture.
    out = tmp_path / "some"
    chosen = sorted(i for i, n in ablations.items() if n >= 2)[:5]
    code, _, _ = run_cli(["--input-path", str(folder), "--output-dir", str(out),
                          "--min-ablations", "2", "--latents", *map(str, chosen),
                          "--exclude-over", "-1", "--no-logit-lens"], capsys)  # fmt: skip
    assert code == 0
    result, rows = read_run(out)
    rows_kept = torch.isin(latents_D, torch.tensor(chosen))
    reference = l0_reference(mean_DE[rows_kept], latents_D[rows_kept], 0.0)
    check_run(out, result, rows, reference, ablations, -1, 50)
    assert result["meta"]["n_excluded"] == 5 and sum(result["histogram"]["counts"]) == 0


@pytest.mark.slow
def test_legacy_script_on_a_real_ablate_run(tool_runs, tmp_path):
    from sae_hacking.runs.results import ResultsFile

    (path,) = [p for p in Path(tool_runs["ablate"]).glob("ablations.safetensors*")
               if not p.name.endswith(".json")]  # fmt: skip
    with ResultsFile(path) as file:
        latents_D = file.read("latents_D")
        counts_D = file.read("ablation_counts_D")
        mean_DE = file.read("effects_DE").float() / counts_D[:, None]
    out, png = tmp_path / "legacy", tmp_path / "out.png"
    done = subprocess.run(
        [sys.executable, "src/sae_hacking/plot_effect_l0.py", "--input-path",
         str(tool_runs["ablate"]), "--output-path", str(png), "--exclude-over", "5000",
         "--threshold", "0.01", "--bins", "20", "--output-dir", str(out),
         "--ablator-evidence", str(tool_runs["cooc"])],
        capture_output=True, text=True, cwd=Path(__file__).parents[3],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result, rows = read_run(out)
    reference = l0_reference(mean_DE, latents_D, 0.01)
    ablations = dict(zip(latents_D.tolist(), counts_D.tolist(), strict=True))
    check_run(out, result, rows, reference, ablations, 5000, 20)
    assert png.read_bytes() == (out / "effect_l0.png").read_bytes()
    assert "evidence" in {label["source"] for label in result["labels"].values()}
    assert result["meta"]["inputs"]["model"] == tool_runs["model"]


def test_refusals(synthetic_ablations, tmp_path, capsys):
    run, latents_D, *_ = synthetic_ablations(D=6, E=5)
    # --threshold is the legacy alias of --treat-as-zero; the error names the flag.
    check_refused(["--input-path", str(run), "--threshold", "-0.5"], capsys, tmp_path,
                  "--treat-as-zero", "negative")  # fmt: skip
    absent = next(i for i in range(100) if i not in set(latents_D.tolist()))
    check_refused(["--input-path", str(run), "--latents", str(absent)], capsys, tmp_path,
                  "--latents", str(absent))  # fmt: skip
    check_refused(["--input-path", str(run), "--min-ablations", "99"], capsys, tmp_path,
                  "--min-ablations")  # fmt: skip
    check_refused(["--input-path", str(run), "--bins", "0"], capsys, tmp_path, "--bins")
    check_refused(["--input-path", str(run), "--output-path", str(tmp_path / "no" / "x.png")],
                  capsys, tmp_path, "--output-path")  # fmt: skip
    check_refused(["--input-path", str(tmp_path / "absent")], capsys, tmp_path, "--input-path")


@pytest.mark.slow
def test_a_cooccurrences_run_is_refused(tool_runs, tmp_path, capsys):
    check_refused(["--input-path", str(tool_runs["cooc"])], capsys, tmp_path, "--input-path")
