"""The computation behind ``POST /api/activations``: a prompt's tokens as text, and an SAE's
latent activations on each of them, summarised as the API's JSON.

Pure functions of a model, an SAE and a prompt (no web framework), so the tests compare them
with ``sae.encode(lm.read(...))`` directly and the client can reuse the summaries. BOS is read
by the model (the SAE saw it in training) but never shown: it is not part of the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float

from sae_hacking.data.pieces import token_pieces
from sae_hacking.errors import UsageError
from sae_hacking.saes.base import SAE


class PromptTooLong(UsageError):
    """The prompt has more tokens than the server accepts."""


class NotFinite(UsageError):
    """The SAE's activations on the prompt hold NaN or infinity (corrupt weights): JSON has no
    such numbers, and a colour scale from them would be meaningless."""


@dataclass
class Highlight:
    """A prompt's real tokens (BOS excluded), as ids and text, and the SAE's activations."""

    token_ids: list[int]
    tokens: list[str]
    acts_SE: Float[torch.Tensor, "S E"]


def highlight(lm, sae: SAE, hook: str, prompt: str, max_tokens: int) -> Highlight:
    """Tokenise ``prompt`` (BOS added as the model expects), read ``hook`` and encode with
    ``sae``; a prompt over ``max_tokens`` tokens (BOS not counted) is :class:`PromptTooLong`."""
    batch = lm.tokenize([prompt], max_tokens + 2)  # BOS + one too many: detects the excess
    real_S = batch.real_token_mask_BS[0]
    if int(real_S.sum()) > max_tokens:
        raise PromptTooLong(
            f"The prompt is longer than this server's limit of {max_tokens} tokens."
        )
    acts_BSM = lm.read(batch.input_ids_BS, batch.attention_mask_BS, [hook])[hook]
    with torch.inference_mode():
        acts_SE = sae.encode(acts_BSM[0][real_S]).float().cpu()
    if not bool(torch.isfinite(acts_SE).all()):
        raise NotFinite(
            "The SAE's activations on this prompt are not finite (NaN or infinity); its "
            "weights may be corrupt."
        )
    # -0.0 (a ReLU of -0.0, a product with a negative zero) would reach the page as "-0".
    acts_SE = acts_SE + 0.0
    ids = batch.input_ids_BS[0][real_S].tolist()
    return Highlight(ids, token_pieces(lm.tokenizer, ids), acts_SE)


def top_per_token(acts_SE: Float[torch.Tensor, "S E"], k: int) -> list[list[dict]]:
    """Each token's ``k`` most active latents (active ones only), strongest first."""
    if acts_SE.shape[0] == 0:
        return []
    values_SK, indices_SK = acts_SE.topk(min(k, acts_SE.shape[1]), dim=1)
    return [
        [{"index": int(i), "value": float(v)} for v, i in zip(vs, ids, strict=True) if v > 0]
        for vs, ids in zip(values_SK.tolist(), indices_SK.tolist(), strict=True)
    ]


def top_latents(acts_SE: Float[torch.Tensor, "S E"], k: int) -> list[tuple[int, float]]:
    """The ``k`` latents with the highest activation anywhere in the prompt (active ones only),
    as ``(index, max)``."""
    if acts_SE.shape[0] == 0:
        return []
    max_E = acts_SE.amax(dim=0)  # (max with indices along dim 0 is ~30x slower on CPU)
    values_K, indices_K = max_E.topk(min(k, max_E.shape[0]))
    return [
        (int(i), float(v))
        for v, i in zip(values_K.tolist(), indices_K.tolist(), strict=True)
        if v > 0
    ]


def summary(
    result: Highlight,
    feature_idx: int | None,
    k: int,
    describe=lambda index: ("", None),
    evidence_url=lambda index: None,
) -> dict:
    """The API's answer without its ``sae`` part; ``describe(index)`` gives a latent's
    ``(explanation, url)``, ``evidence_url(index)`` the link to its evidence (or ``None``)."""
    acts_SE = result.acts_SE
    activations = None
    feature = None
    if feature_idx is not None:
        activations = [float(v) for v in acts_SE[:, feature_idx].tolist()]
        explanation, url = describe(feature_idx)
        feature = {"index": feature_idx, "explanation": explanation, "url": url}
        feature["evidence_url"] = evidence_url(feature_idx)
        peak = max(activations, default=0.0)
    else:
        peak = float(acts_SE.max()) if acts_SE.numel() else 0.0
    latents = []
    for index, value in top_latents(acts_SE, k):
        explanation, url = describe(index)
        latents.append(
            {
                "index": index,
                "max": value,
                "explanation": explanation,
                "url": url,
                "evidence_url": evidence_url(index),
            }
        )
    return {
        "tokens": result.tokens,
        "feature": feature,
        "activations": activations,
        "top_per_token": top_per_token(acts_SE, k),
        "top_latents": latents,
        "max_activation": max(peak, 0.0) + 0.0,  # max(-0.0, 0.0) is -0.0
    }
