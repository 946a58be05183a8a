"""Random SAEs for tests, benchmarks and offline end-to-end runs.

:func:`randomise_` draws every parameter of an SAE of any architecture from N(0, 0.3^2)
(JumpReLU thresholds made non-negative); :func:`random_jumprelu` is that for a JumpReLU SAE.

:func:`calibrated_random_sae`: the weights are random (unit decoder rows, encoder = decoder
transpose, ``b_dec`` = the mean activation), but each latent's threshold is set to a quantile
of its pre-activations on sample prompts, so about ``active_fraction`` of the latents fire per
token: the sparsity of a trained SAE, which is what the co-occurrence and ablation pipelines
need to behave realistically.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sae_hacking.lm.hooked import HookedLM
from sae_hacking.saes.base import SAE, SAEInfo
from sae_hacking.saes.jumprelu import JumpReLUSAE


@torch.no_grad()
def randomise_(sae: SAE, seed: int, scale: float = 0.3) -> SAE:
    """``sae`` with every parameter drawn N(0, scale^2) in place, in ``parameters()`` order
    (a JumpReLU threshold made non-negative); inference-only."""
    gen = torch.Generator().manual_seed(seed)
    for param in sae.parameters():
        param.copy_(scale * torch.randn(param.shape, generator=gen))
    if isinstance(sae, JumpReLUSAE):
        sae.threshold_E.abs_()
    return sae.requires_grad_(False)


def random_jumprelu(d_in: int, d_sae: int, hook: str, seed: int) -> JumpReLUSAE:
    """Every parameter N(0, 0.3^2), thresholds made non-negative; inference-only."""
    return randomise_(JumpReLUSAE(d_in, d_sae, info=SAEInfo(hook_name=hook)), seed)


@torch.no_grad()
def calibrated_random_sae(
    lm: HookedLM,
    hook_name: str,
    d_sae: int,
    texts: Sequence[str],
    active_fraction: float = 0.05,
    seed: int = 0,
    max_tokens: int = 64,
) -> JumpReLUSAE:
    """A random JumpReLU SAE at ``hook_name`` whose latents fire on ~``active_fraction`` of the
    real tokens of ``texts``."""
    if not 0 < active_fraction < 1:
        raise ValueError(f"active_fraction must be in (0, 1), got {active_fraction}")
    batch = lm.tokenize(list(texts), max_tokens)
    acts_BSM = lm.read(batch.input_ids_BS, batch.attention_mask_BS, [hook_name])[hook_name]
    acts_TM = acts_BSM[batch.real_token_mask_BS].float().cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sae = JumpReLUSAE(
            lm.hook_width(hook_name),
            d_sae,
            apply_b_dec_to_input=True,
            info=SAEInfo(hook_name=hook_name),
        )
    sae.requires_grad_(False)
    sae.b_dec_M.copy_(acts_TM.mean(0))
    pre_TE = sae.pre_acts(acts_TM)
    sae.threshold_E.copy_(torch.quantile(pre_TE, 1 - active_fraction, dim=0).clamp_min(0))
    return sae.eval()
