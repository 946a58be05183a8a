"""Random SAEs calibrated to a tiny model, and `make-tiny-model --saes --prompts`."""

import torch

from sae_hacking.cli import main
from sae_hacking.lm.tiny import generate_texts
from sae_hacking.saes.io import load_sae_checkpoint
from sae_hacking.saes.tiny import calibrated_random_sae

HOOK = "blocks.0.hook_mlp_out"


def test_calibrated_sae_fires_on_about_the_asked_fraction_of_tokens(tiny_lm):
    lm = tiny_lm("gemma2")
    sae = calibrated_random_sae(lm, HOOK, 128, generate_texts(64, seed=3), active_fraction=0.1)
    held_out = lm.tokenize(generate_texts(64, seed=4), 64)
    acts = lm.read(held_out.input_ids_BS, held_out.attention_mask_BS, [HOOK])[HOOK]
    on_TE = sae.encode(acts[held_out.real_token_mask_BS]) > 0
    assert 0.05 < on_TE.float().mean().item() < 0.2
    assert on_TE.any(0).float().mean() > 0.9  # nearly every latent is alive
    assert sae.hook_name == HOOK


def test_make_tiny_model_writes_saes_and_prompts(tmp_path, capsys):
    path = tmp_path / "kit"
    hooks = ["blocks.0.hook_mlp_out", "blocks.1.hook_resid_post"]
    code = main(["make-tiny-model", str(path), "--saes", *hooks, "--sae-width", "64",
                 "--prompts", "30"])  # fmt: skip
    assert code == 0
    assert len((path / "prompts.txt").read_text().splitlines()) == 30
    for hook in hooks:
        sae = load_sae_checkpoint(path / "saes" / f"{hook}.safetensors")
        assert (sae.d_sae, sae.hook_name) == (64, hook)
        assert torch.all(sae.threshold_E >= 0)


def test_an_unknown_hook_is_refused_before_anything_is_written(tmp_path, capsys):
    path = tmp_path / "kit"
    assert main(["make-tiny-model", str(path), "--saes", "blocks.9.hook_mlp_out"]) == 2
    assert "layer 9" in capsys.readouterr().err
    assert not path.exists()
