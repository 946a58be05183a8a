"""CE loss recovered on handcrafted SAEs: 1 for an exact reconstruction, 0 for a zero SAE."""

from __future__ import annotations

import pytest
import torch

from sae_hacking.saes.relu import ReLUSAE
from sae_hacking.train.evaluate import ce_loss_recovered, evaluate, held_out, next_token_ce

HOOK = "blocks.0.hook_resid_post"


def identity_sae(d_model: int) -> ReLUSAE:
    """relu(x) - relu(-x) = x: latents [x+, x-] with decoder rows [I; -I] reconstruct exactly."""
    sae = ReLUSAE(d_model, 2 * d_model)
    eye = torch.eye(d_model)
    with torch.no_grad():
        sae.W_enc_ME.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec_EM.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc_E.zero_()
        sae.b_dec_M.zero_()
    return sae


def zero_sae(d_model: int) -> ReLUSAE:
    sae = ReLUSAE(d_model, 8)
    with torch.no_grad():
        for p in sae.parameters():
            p.zero_()
    return sae


@pytest.fixture
def data(tiny_lm, prompts_path):
    lm = tiny_lm("gemma2")
    texts = prompts_path(12).read_text().splitlines()
    batch = lm.tokenize(texts, 24)

    def read(b):
        acts = lm.read(b.input_ids_BS, b.attention_mask_BS, [HOOK])[HOOK]
        return acts[b.real_token_mask_BS]

    return lm, held_out(lm, HOOK, [batch], read)


def test_identity_sae_recovers_everything(data):
    lm, held = data
    metrics = evaluate(lm, HOOK, identity_sae(lm.d_model), held)
    assert metrics["ce_spliced"] == pytest.approx(held.ce_clean, abs=1e-5)
    assert metrics["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-3)
    assert metrics["fvu"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["explained_variance"] == pytest.approx(1.0, abs=1e-6)


def test_zero_sae_recovers_nothing(data):
    lm, held = data
    assert held.ce_zero != pytest.approx(held.ce_clean)  # the hook matters in this model
    metrics = evaluate(lm, HOOK, zero_sae(lm.d_model), held)
    assert metrics["ce_spliced"] == pytest.approx(held.ce_zero, abs=1e-5)
    assert metrics["ce_loss_recovered"] == pytest.approx(0.0, abs=1e-3)
    assert metrics["l0"] == 0


def test_ce_is_the_mean_over_real_next_tokens(data):
    lm, held = data
    batch = held.batches[0]
    logits = lm.logits(batch.input_ids_BS, batch.attention_mask_BS)
    mask = batch.attention_mask_BS[:, 1:].bool()
    logp = torch.log_softmax(logits[:, :-1].double(), -1)
    nll = -logp.gather(-1, batch.input_ids_BS[:, 1:, None])[..., 0][mask]
    assert next_token_ce(lm, [batch]) == pytest.approx(float(nll.mean()), rel=1e-5)
    assert ce_loss_recovered(2.0, 3.0, 2.5) == 0.5
