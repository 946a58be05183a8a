"""Inputs of the analysis-tool tests: ``synthetic_ablations`` writes an ablate results file of
given effects in seconds (for the comparisons with plain references on random inputs), and
``tool_runs`` makes real cooccurrences + ablate runs on a tiny model (once per session)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

ABLATOR, READER = "blocks.1.hook_mlp_out", "blocks.2.hook_resid_post"


def write_ablations(
    folder: Path,
    latents_D: torch.Tensor,
    counts_D: torch.Tensor,
    sums_DE: torch.Tensor,
    settings: dict | None = None,
    complete: bool = True,
) -> Path:
    """An ablate run directory holding ``effects_DE`` = ``sums_DE`` (summed effects; the tools
    divide by ``counts_D``) for the ablated ``latents_D``; returns the folder."""
    from sae_hacking.runs.results import write_results

    folder.mkdir(parents=True, exist_ok=True)
    D, E = sums_DE.shape
    meta = {
        "kind": "ablations",
        "complete": complete,
        "settings": {
            "model": None,
            "ablator_sae_release": "synthetic-ablator",
            "ablator_sae_id": None,
            "reader_sae_release": "synthetic-reader",
            "reader_sae_id": None,
            "ablator_d_sae": int(latents_D.max()) + 1 if D else 1,
            "reader_d_sae": E,
            **(settings or {}),
        },
    }
    tensors = {
        "latents_D": latents_D.long(),
        "ablation_counts_D": counts_D.long(),
        "effects_DE": sums_DE.float(),
        "n_prompts": torch.tensor(int(counts_D.max()) if D else 0),
    }
    write_results(folder / "ablations", tensors, meta)
    (folder / "run.json").write_text(json.dumps({"kind": "ablations", "results_name": "ablations"}))
    return folder


@pytest.fixture
def synthetic_ablations(tmp_path):
    """``make(D, E, seed, ...)``: an ablate run of D ablated latents (random ids, shuffled
    order, ablation counts 1..4) with random summed effects, many exactly zero and some exact
    ties; returns ``(folder, latents_D, counts_D, mean_DE)``."""

    def make(D: int = 12, E: int = 20, seed: int = 0, name: str = "ablate", e: int | None = None):
        g = torch.Generator().manual_seed(seed)
        e = e or 3 * D
        latents_D = torch.randperm(e, generator=g)[:D]
        counts_D = torch.randint(1, 5, (D,), generator=g)
        values = torch.randint(-6, 7, (D, E), generator=g).float() * 0.25
        values[torch.rand(D, E, generator=g) < 0.3] = 0.0
        sums_DE = values * counts_D[:, None]
        folder = write_ablations(tmp_path / name, latents_D, counts_D, sums_DE)
        return folder, latents_D, counts_D, sums_DE / counts_D[:, None]

    return make


@pytest.fixture(scope="session")
def tool_runs(tmp_path_factory, tiny_model_path, random_sae_path, prompts_path):
    """Real runs on a tiny 3-layer Gemma-2: ``cooc`` (cooccurrences with evidence of the
    ablator SAE), ``ablate`` (top 12 ablator latents -> reader), ``reader`` (latents run of the
    reader SAE), plus the paths of the model and both SAEs."""
    from sae_hacking.cli import main

    root = tmp_path_factory.mktemp("tool-runs")
    model = str(tiny_model_path("gemma2", 3))
    ablator = str(random_sae_path(ABLATOR, 48, seed=5, kind="topk", k=2))
    reader = str(random_sae_path(READER, 40, seed=6))
    data = str(prompts_path(30, seed=4))
    common = [
        "--model", model, "--device", "cpu", "--quiet", "--dataset-id", data,
        "--max-tokens", "16", "--n-prompts", "30",
    ]  # fmt: skip
    assert main(["cooccurrences", *common, "--ablator-sae-release", ablator,
                 "--output-dir", str(root / "cooc")]) == 0  # fmt: skip
    assert main(["ablate", *common, "--ablator-sae-release", ablator, "--reader-sae-release",
                 reader, "--abridge-ablations-to", "12", "--output-dir", str(root / "ablate")]) == 0  # fmt: skip
    assert main(["latents", *common, "--sae-release", reader,
                 "--output-dir", str(root / "reader")]) == 0  # fmt: skip
    return {"root": root, "model": model, "ablator": ablator, "reader": reader,
            "cooc": root / "cooc", "ablate": root / "ablate", "reader_evidence": root / "reader"}  # fmt: skip
