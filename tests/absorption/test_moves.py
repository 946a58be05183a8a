"""Reader moves of ablated latents: the top up / down reader latents of each ablated latent
equal a plain loop over the ablate results; the unembedding read from the weights file equals
the loaded model's; the reader logit lens equals a direct computation; a reader evidence run of
another SAE is refused."""

from __future__ import annotations

import pytest
import torch

from sae_hacking.absorption.evidence.logit_lens import logit_lens
from sae_hacking.absorption.evidence.moves import (
    check_reader_evidence,
    reader_logit_lens,
    reader_moves,
)
from sae_hacking.cli import main
from sae_hacking.errors import UsageError
from sae_hacking.lm.hooked import HookedLM
from sae_hacking.lm.unembedding import load_unembedding
from sae_hacking.runs.results import ResultsFile
from sae_hacking.saes.releases import load_sae

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ablated(tiny_model_path, prompts_path, random_sae_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("moves") / "ablate"
    argv = ["ablate", "--model", str(tiny_model_path("gemma2")), "--device", "cpu", "--quiet"]
    argv += ["--dataset-id", str(prompts_path(12, seed=3)), "--max-tokens", "12"]
    argv += ["--ablator-sae-release", str(random_sae_path("blocks.0.hook_mlp_out", 24, seed=1))]
    argv += ["--reader-sae-release", str(random_sae_path("blocks.1.hook_resid_post", 30, seed=2))]
    argv += ["--abridge-ablations-to", "4", "--output-dir", str(out)]
    assert main(argv) == 0
    return out


def test_moves_equal_a_plain_loop(ablated):
    moves, settings = reader_moves(ablated, k=5)
    with ResultsFile(ablated / "ablations.safetensors.zst") as f:
        latents, counts = f.read("latents_D").tolist(), f.read("ablation_counts_D").tolist()
        effects = f.read("effects_DE").double()
    assert sorted(moves) == sorted(latents) and settings["reader_d_sae"] == 30
    for d, latent in enumerate(latents):
        mean = [float(v) / counts[d] for v in effects[d]]
        up = sorted((j for j in range(30) if mean[j] > 0), key=lambda j: (-mean[j], j))[:5]
        down = sorted((j for j in range(30) if mean[j] < 0), key=lambda j: (mean[j], j))[:5]
        assert [j for j, _ in moves[latent]["up"]] == up
        assert [j for j, _ in moves[latent]["down"]] == down
        assert [v for _, v in moves[latent]["up"]] == pytest.approx([mean[j] for j in up], rel=1e-5)
        assert moves[latent]["ablations"] == counts[d]
    some = set(latents[:2])
    assert set(reader_moves(ablated, k=5, latents=some)[0]) == some


def test_unembedding_and_reader_logit_lens(ablated, tiny_model_path):
    folder = str(tiny_model_path("gemma2"))
    lm = HookedLM.from_pretrained(folder, device="cpu", dtype="float32")
    W_U = lm.model.get_output_embeddings().weight  # noqa: N806
    assert torch.equal(load_unembedding(folder), W_U)
    _, settings = reader_moves(ablated)
    lens = reader_logit_lens(settings, [7, 2], k=4)
    sae = load_sae(settings["reader_sae_release"], None, device="cpu")
    want = logit_lens(sae.W_dec.detach()[[2, 7]], W_U, 4)
    assert sorted(lens) == [2, 7]
    assert [t for t, _ in lens[7]["up"]] == want["logit_lens_top_ids_eK"][1].tolist()
    assert [t for t, _ in lens[2]["down"]] == want["logit_lens_bottom_ids_eK"][0].tolist()


def test_reader_evidence_of_another_sae_is_refused():
    class Other:
        settings = {"sae_fingerprint": "aaaa"}

    with pytest.raises(UsageError, match="another SAE"):
        check_reader_evidence(Other(), {"reader_fingerprint": "bbbb"}, "RUN")
    check_reader_evidence(Other(), {"reader_fingerprint": "aaaa"}, "RUN")
