"""Evaluation of an SAE being trained, on held-out prompts, in the model's own activation space.

The SAE is evaluated as it will be exported (:func:`sae_hacking.train.scaling.exported`: the
input scaling folded into its weights), so what is measured is what users will load:

- reconstruction of the held-out activations: MSE, FVU, explained variance and L0, as every
  trainer reports them (:func:`sae_hacking.training.metrics.reconstruction_metrics`);
- next-token cross-entropy of the held-out prompts clean, with the hook zero-ablated, and with
  the SAE's reconstruction spliced in (error term dropped; :func:`sae_hacking.saes.splice.splice`),
  and the **CE loss recovered** ``(CE_zero − CE_spliced) / (CE_zero − CE_clean)``: 1 when the
  splice costs nothing, 0 when it is as bad as deleting the activation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float

from sae_hacking.data.text import TokenBatch
from sae_hacking.saes.base import SAE
from sae_hacking.saes.splice import splice
from sae_hacking.training.metrics import reconstruction_metrics

# Prompts per forward when computing the cross-entropy: logits are [B, S, V], and V is 256k for
# Gemma, so they are computed a few prompts at a time.
CE_PROMPTS = 4


@dataclass
class HeldOut:
    """Held-out prompts (in forward-sized chunks), their activations at the hook, and the CE
    of the clean and zero-ablated model (fixed for the run, computed once)."""

    batches: list[TokenBatch]
    acts_TM: Float[torch.Tensor, "T M"]
    ce_clean: float
    ce_zero: float


def split(batch: TokenBatch, size: int) -> list[TokenBatch]:
    n = batch.input_ids_BS.shape[0]
    return [
        TokenBatch(
            batch.input_ids_BS[i : i + size],
            batch.attention_mask_BS[i : i + size],
            batch.real_token_mask_BS[i : i + size],
            batch.texts[i : i + size],
        )
        for i in range(0, n, size)
    ]


def next_token_ce(lm, batches: list[TokenBatch], patches=None) -> float:
    """Mean next-token cross-entropy over every position whose target is a real token."""
    total, count = 0.0, 0
    for batch in batches:
        logits_BSV = lm.logits(batch.input_ids_BS, batch.attention_mask_BS, patches=patches)
        targets_BS = batch.input_ids_BS[:, 1:].to(logits_BSV.device)
        valid_BS = batch.attention_mask_BS[:, 1:].bool().to(logits_BSV.device)
        losses = F.cross_entropy(
            logits_BSV[:, :-1][valid_BS].float(), targets_BS[valid_BS], reduction="sum"
        )
        total += float(losses)
        count += int(valid_BS.sum())
    return total / max(count, 1)


def zero_patch(x_BSM: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x_BSM)


def held_out(lm, hook: str, batches: list[TokenBatch], read) -> HeldOut | None:
    """``read(batch)`` gives a batch's activations at its training tokens."""
    if not batches:
        return None
    acts_TM = torch.cat([read(batch) for batch in batches]).float()
    chunks = [part for batch in batches for part in split(batch, CE_PROMPTS)]
    return HeldOut(
        chunks,
        acts_TM,
        next_token_ce(lm, chunks),
        next_token_ce(lm, chunks, {hook: zero_patch}),
    )


def ce_loss_recovered(ce_clean: float, ce_zero: float, ce_spliced: float) -> float:
    """``(CE_zero − CE_spliced) / (CE_zero − CE_clean)``; NaN when zero-ablating the hook
    changes nothing (the ratio is undefined)."""
    gap = ce_zero - ce_clean
    return (ce_zero - ce_spliced) / gap if gap != 0 else float("nan")


@torch.no_grad()
def evaluate(lm, hook: str, sae: SAE, data: HeldOut) -> dict[str, float]:
    """Every held-out metric of ``sae`` (an exported SAE: it takes raw activations)."""
    metrics = reconstruction_metrics(sae, data.acts_TM)
    ce_spliced = next_token_ce(lm, data.batches, splice(lm, sae, hook_name=hook, keep_error=False))
    metrics.update(
        ce_clean=data.ce_clean,
        ce_zero_ablated=data.ce_zero,
        ce_spliced=ce_spliced,
        ce_loss_recovered=ce_loss_recovered(data.ce_clean, data.ce_zero, ce_spliced),
    )
    return metrics
