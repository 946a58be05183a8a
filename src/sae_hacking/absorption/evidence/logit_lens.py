"""The logit lens of SAE latents: the tokens whose logits a latent's decoder direction raises and
lowers most, ``W_dec[i] · W_U`` (letters: E latents, M model dimension, V vocabulary, K tokens
kept). As SAEDashboard computes it for Neuronpedia's feature pages, the final norm is **not**
applied: the direction is read as written into the residual stream (the norm's per-dimension
gain would reweight it; its division by the norm of the whole residual is not a property of
one latent). Meaningful for SAEs on the residual stream and on what writes into it
(``hook_embed``, ``resid_*``, ``attn_out``, ``mlp_out``); not for ``attn.hook_z``."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int

LOGIT_LENS_K = 10
CHUNK = 256  # latents per matmul: CHUNK x V float32 logits at a time (256 MB at V = 256,000)
NO_LOGIT_LENS_KINDS = ("z",)

DOCS = {
    "logit_lens_top_ids_eK": "tokens whose logits latent i's decoder direction raises most "
    "(W_dec[i] . W_U, no final norm)",
    "logit_lens_top_values_eK": "those logit contributions, largest first",
    "logit_lens_bottom_ids_eK": "tokens whose logits it lowers most",
    "logit_lens_bottom_values_eK": "those logit contributions, most negative first",
}


def unembedding(model: torch.nn.Module) -> Float[torch.Tensor, "V M"]:
    """The model's unembedding matrix (``lm_head``; tied to the embedding in Gemma)."""
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embedding")
    return head.weight


@torch.no_grad()
def logit_lens(
    W_dec_EM: Float[torch.Tensor, "E M"],  # noqa: N803
    W_U_VM: Float[torch.Tensor, "V M"],  # noqa: N803
    k: int = LOGIT_LENS_K,
) -> dict[str, torch.Tensor]:
    """``logit_lens_{top,bottom}_{ids,values}_eK`` (top: descending, bottom: ascending; ties:
    the smaller token id first), computed in float32, ``CHUNK`` latents at a time."""
    k = min(k, W_U_VM.shape[0])
    W_U_MV = W_U_VM.float().T  # noqa: N806
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in DOCS}
    for start in range(0, W_dec_EM.shape[0], CHUNK):
        logits_DV = W_dec_EM[start : start + CHUNK].to(W_U_MV.device).float() @ W_U_MV
        for side, sign in (("top", 1.0), ("bottom", -1.0)):
            ids_DK, values_DK = top_tokens(sign * logits_DV, k)
            parts[f"logit_lens_{side}_ids_eK"].append(ids_DK.cpu())
            parts[f"logit_lens_{side}_values_eK"].append((sign * values_DK).cpu())
    return {name: torch.cat(chunks) for name, chunks in parts.items()}


def top_tokens(
    scores_DV: Float[torch.Tensor, "D V"], k: int
) -> tuple[Int[torch.Tensor, "D K"], Float[torch.Tensor, "D K"]]:
    """The ``k`` largest scores of each row, ties broken by the smaller index (a stable sort,
    so the answer does not depend on the device's top-k algorithm)."""
    order_DV = torch.sort(scores_DV, dim=1, descending=True, stable=True).indices[:, :k]
    return order_DV, scores_DV.gather(1, order_DV)


def has_logit_lens(hook: str) -> bool:
    """Whether an SAE at ``hook`` reads a space the unembedding applies to."""
    return not hook.endswith("attn.hook_z")


def sae_logit_lens(lm, sae, k: int = LOGIT_LENS_K) -> dict[str, torch.Tensor]:
    """:func:`logit_lens` of ``sae``'s decoder through ``lm``'s unembedding, on ``lm``'s device."""
    W_U_VM = unembedding(lm.model)  # noqa: N806
    return logit_lens(sae.W_dec.detach().to(W_U_VM.device), W_U_VM.detach(), k)
