"""Selective ablation: how zeroing one ablator-SAE latent changes a later reader SAE's latents.

Per prompt: splice the ablator SAE at its hook with the error term kept; rank its latents by
activation summed over the prompt's real tokens (padding and BOS excluded); take the top ``k``
latents that are active (activation > 0 on some real token, as in the co-occurrence counts) and
not excluded. With ``selected`` latents a prompt is used only if its top ``k`` contains one of
them. For each chosen latent ``i``: zero it
at every position and read the reader SAE's latents at the prompt's last real token; the effect
is ``baseline - ablated`` (a vector over the reader latents ``E``).

Two implementations of the same semantics:

- :func:`fast_effects` (``--method fast``): one forward per batch up to the ablator hook. With
  the error term kept, zeroing latent ``i`` turns the hook output ``x`` into exactly
  ``x - act_i(pos) * W_dec[i]`` at every position (the decoder is affine), so the ``k`` variants
  of every prompt are built directly and run as one batch (chunked by ``rows_per_chunk``)
  through only the layers between the two hooks. When the reader reads after the attention of
  its layer, everything after that attention is position-wise, so the rest of that layer runs on
  the last real token alone.
- :func:`naive_effects` (``--method naive``): the legacy method, written independently as the
  oracle: per prompt one full forward to rank, one full forward for the baseline and one full
  forward of the whole model per ablated latent (``k + 2``), with the SAE spliced by
  :func:`sae_hacking.saes.splice.splice` and the prompt alone (no padding).

Both return :class:`PromptEffects`, one per prompt of the batch, accumulated by
:class:`sae_hacking.absorption.ablation.effects.EffectSums`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int

from sae_hacking.absorption.ablation.identity import METHODS
from sae_hacking.errors import FieldError, UsageError
from sae_hacking.lm.hooked import HookedLM, RunContext
from sae_hacking.saes.base import SAE
from sae_hacking.saes.processing import InputTransform
from sae_hacking.saes.splice import ZeroLatents, check_sae_fits, splice


@dataclass
class AblationSetup:
    """What an ablation run needs besides the prompts; build it with :func:`make_setup`."""

    lm: HookedLM
    ablator: SAE
    reader: SAE
    ablator_hook: str
    reader_hook: str
    k: int
    selected_D: Int[torch.Tensor, " D"] | None = None  # latents a prompt must ablate to count
    excluded_e: Bool[torch.Tensor, " e"] | None = None  # latents never ablated
    rows_per_chunk: int = 256  # variant rows per partial forward (bounds memory)
    batch_prompts: bool = False  # fast: one padded prefix forward for all prompts of a batch


@dataclass
class PromptEffects:
    """One prompt's outcome: whether it was used, and the effect of each ablated latent."""

    used: bool
    latents_D: Int[torch.Tensor, " D"]  # ablated ablator latents, in rank order (on the CPU)
    # baseline - ablated reader acts at the last real token (on the reader's device)
    effects_DE: Float[torch.Tensor, "D E"]


def make_setup(
    lm: HookedLM,
    ablator: SAE,
    reader: SAE,
    k: int,
    *,
    selected: Sequence[int] | None = None,
    excluded_e: Bool[torch.Tensor, " e"] | None = None,
    ablator_hook: str | None = None,
    reader_hook: str | None = None,
    rows_per_chunk: int = 256,
    batch_prompts: bool = False,
) -> AblationSetup:
    """Check the inputs (hooks, widths, order, indices) and bundle them."""
    ablator_hook = check_sae_fits(lm, ablator, ablator_hook)
    reader_hook = check_sae_fits(lm, reader, reader_hook)
    start, end = lm.hook_point(ablator_hook), lm.hook_point(reader_hook)
    if end.stream_position() < start.stream_position():
        raise UsageError(
            f"the reader SAE reads {reader_hook}, which comes before the ablator SAE's hook "
            f"{ablator_hook}; ablations can only change later activations."
        )
    if k < 1:
        raise FieldError("abridge_ablations_to", f"must be at least 1, got {k}.")
    if rows_per_chunk < 1:
        raise FieldError("variants_per_batch", f"must be at least 1, got {rows_per_chunk}.")
    selected_D = None
    if selected is not None:
        for index in selected:
            if not 0 <= index < ablator.d_sae:
                raise FieldError(
                    "selected_features",
                    f"{index} is not a latent of the ablator SAE, which has {ablator.d_sae} "
                    f"latents (0..{ablator.d_sae - 1}).",
                )
        selected_D = torch.tensor(sorted(set(selected)), dtype=torch.long)
    if excluded_e is not None and excluded_e.shape != (ablator.d_sae,):
        raise UsageError(
            f"the latent exclusion mask has shape {tuple(excluded_e.shape)} but the ablator SAE "
            f"has {ablator.d_sae} latents; the frequencies belong to another SAE."
        )
    return AblationSetup(
        lm,
        ablator,
        reader,
        ablator_hook,
        reader_hook,
        k,
        selected_D,
        excluded_e,
        rows_per_chunk,
        batch_prompts,
    )


# -- the fast method ------------------------------------------------------------------------


def choose_ablations(
    acts_BSe: Float[torch.Tensor, "B S e"],
    real_BS: Bool[torch.Tensor, "B S"],
    k: int,
    excluded_e: Bool[torch.Tensor, " e"] | None = None,
) -> Int[torch.Tensor, "B K"]:
    """Per prompt, the ``k`` active (> 0) latents with the largest activation summed over real
    tokens (ties: lower index first); ``-1`` fills rows with fewer than ``k`` candidates."""
    real_acts_BSe = acts_BSe * real_BS[..., None].to(acts_BSe.dtype)
    score_Be = real_acts_BSe.sum(1)
    candidate_Be = (real_acts_BSe > 0).any(1)
    if excluded_e is not None:
        candidate_Be &= ~excluded_e.to(candidate_Be.device)
    score_Be = torch.where(candidate_Be, score_Be, -torch.inf)
    k = min(k, score_Be.shape[1])
    values_BK, latents_BK = torch.sort(score_Be, dim=1, descending=True, stable=True)
    values_BK, latents_BK = values_BK[:, :k], latents_BK[:, :k]
    return torch.where(values_BK > -torch.inf, latents_BK, -1)


def last_real_index(real_BS: Bool[torch.Tensor, "B S"]) -> Int[torch.Tensor, " B"]:
    """Position of each row's last real token (``-1`` for a row without one)."""
    positions_BS = torch.arange(real_BS.shape[1], device=real_BS.device).expand_as(real_BS)
    return torch.where(real_BS, positions_BS, -1).amax(1)


def is_used(latents_BK: Int[torch.Tensor, "B K"], selected_D) -> Bool[torch.Tensor, " B"]:
    """Prompts that count: all of them, or those whose chosen latents include a selected one."""
    if selected_D is None:
        return torch.ones(latents_BK.shape[0], dtype=torch.bool, device=latents_BK.device)
    return torch.isin(latents_BK, selected_D.to(latents_BK.device)).any(1)


def _rows(context: RunContext, rows_N: torch.Tensor) -> RunContext:
    """The context of the prompts ``rows_N``, one entry per variant row."""
    return RunContext(
        context.attention_mask_BS[rows_N],
        {name: t[rows_N] for name, t in context.residuals.items()},
    )


def reader_input_at(
    lm: HookedLM,
    start_hook: str,
    acts_NSM: Float[torch.Tensor, "N S M"],
    end_hook: str,
    context: RunContext,
    last_N: Int[torch.Tensor, " N"],
) -> Float[torch.Tensor, "N _"]:
    """The activation at ``end_hook`` (that hook's width), at position ``last_N[n]`` of each row,
    when the one at ``start_hook`` is ``acts_NSM`` (``context`` has one entry per row; M is the
    start hook's width, e.g. heads x head size for ``hook_z``).

    Only the layers in between run. Once the reader's layer has done its attention, the rest is
    position-wise: if ``end_hook`` lies after that attention, the layers up to it run on every
    position and the remainder on the last position alone.
    """
    start, end = lm.hook_point(start_hook), lm.hook_point(end_hook)
    take_N = torch.arange(acts_NSM.shape[0], device=acts_NSM.device)
    layer = end.layer
    attn_out = f"blocks.{layer}.hook_attn_out"
    attn_position = lm.hook_point(attn_out).stream_position()
    if end.stream_position() <= attn_position:  # the reader reads at or before an attention
        out_NSM = lm.run_between(start_hook, acts_NSM, end_hook, context)
        return out_NSM[take_N, last_N.to(out_NSM.device)]
    # No attention between the hooks: from hook_z of the reader's layer on, the layer works
    # token by token too (the output projection, then position-wise blocks).
    same_layer_z = start.kind == "z" and start.layer == layer
    if start.stream_position() >= attn_position or same_layer_z:
        last_N = last_N.to(acts_NSM.device)
        tail = RunContext(
            torch.ones_like(context.attention_mask_BS[:, :1]),
            {name: t[take_N, last_N][:, None] for name, t in context.residuals.items()},
        )
        return lm.run_between(start_hook, acts_NSM[take_N, last_N][:, None], end_hook, tail)[:, 0]
    resid_pre = f"blocks.{layer}.hook_resid_pre"
    pre_NSM = lm.run_between(start_hook, acts_NSM, resid_pre, context)
    attn_NSM = lm.run_between(resid_pre, pre_NSM, attn_out, RunContext(context.attention_mask_BS))
    last_N = last_N.to(attn_NSM.device)
    tail = RunContext(
        torch.ones_like(context.attention_mask_BS[:, :1]),
        {resid_pre: pre_NSM[take_N, last_N][:, None]},
    )
    return lm.run_between(attn_out, attn_NSM[take_N, last_N][:, None], end_hook, tail)[:, 0]


def ablation_variants(
    x_BSM: Float[torch.Tensor, "B S M"],
    acts_BSe: Float[torch.Tensor, "B S e"],
    W_dec_eM: Float[torch.Tensor, "e M"],
    rows_N: Int[torch.Tensor, " N"],
    latents_N: Int[torch.Tensor, " N"],
    transform: InputTransform | None = None,
) -> Float[torch.Tensor, "N S M"]:
    """Hook outputs with latent ``latents_N[n]`` of prompt ``rows_N[n]`` zeroed, the error term
    kept: ``x - act(pos) * W_dec[latent]`` at every position (latent ``-1``: ``x`` itself), the
    change mapped back through the SAE's input ``transform`` (a normalising SAE reconstructs in
    its own scale). The same arithmetic as the spliced SAE with
    :class:`~sae_hacking.saes.splice.ZeroLatents`."""
    latents_N = latents_N.to(acts_BSe.device)
    acts_NS = acts_BSe[rows_N, :, latents_N.clamp(min=0)] * (latents_N >= 0)[:, None]
    W_NM = W_dec_eM[latents_N.clamp(min=0)]
    x_NSM = x_BSM[rows_N]
    delta_NSM = -(acts_NS[..., None] * W_NM[:, None, :])
    if transform is not None and transform.normalize != "none":
        delta_NSM = transform.restore_delta(delta_NSM, x_NSM.to(delta_NSM.dtype))
    return x_NSM + delta_NSM.to(x_BSM.dtype)


def single_prompts(batch) -> list:
    """Each prompt of ``batch`` as a batch of its own, without padding."""
    from sae_hacking.data.text import TokenBatch

    out = []
    for b, length in enumerate(batch.attention_mask_BS.sum(1).tolist()):
        out.append(
            TokenBatch(
                batch.input_ids_BS[b : b + 1, :length],
                batch.attention_mask_BS[b : b + 1, :length],
                batch.real_token_mask_BS[b : b + 1, :length],
                batch.texts[b : b + 1],
            )
        )
    return out


def fast_effects(setup: AblationSetup, batch) -> list[PromptEffects]:
    """Effects for every prompt of ``batch`` (a :class:`sae_hacking.data.text.TokenBatch`).

    By default each prompt runs alone (its ``k + 1`` variants are the batch), so its effects do
    not depend on the other prompts or their padding: shards and resumed runs add up bit for
    bit to one uninterrupted run. With ``setup.batch_prompts`` the prompts' forwards up to the
    ablator hook run as one padded batch (fewer, larger kernels on a GPU), and a prompt's
    effects may differ at float rounding level with the batch it lands in.
    """
    if not setup.batch_prompts and batch.input_ids_BS.shape[0] > 1:
        return [out for one in single_prompts(batch) for out in _fast_batch(setup, one)]
    return _fast_batch(setup, batch)


def _fast_batch(setup: AblationSetup, batch) -> list[PromptEffects]:
    lm, ablator, reader = setup.lm, setup.ablator, setup.reader
    ids_BS, mask_BS = batch.input_ids_BS.to(lm.device), batch.attention_mask_BS.to(lm.device)
    real_BS = batch.real_token_mask_BS.to(lm.device)
    cache = lm.read(ids_BS, mask_BS, [setup.ablator_hook], context_for=setup.ablator_hook)
    x_BSM, context = cache[setup.ablator_hook], cache.context
    with torch.inference_mode():
        acts_BSe = ablator.encode(x_BSM.to(ablator.W_dec.dtype))
        latents_BK = choose_ablations(acts_BSe, real_BS, setup.k, setup.excluded_e)
        used_B = is_used(latents_BK, setup.selected_D) & (latents_BK[:, 0] >= 0)
        last_B = last_real_index(real_BS)
        prompts_U = torch.nonzero(used_B).flatten()  # U: the used prompts of the batch
        results = [_unused(reader.d_sae) for _ in range(len(used_B))]
        if not len(prompts_U):
            return results

        def reader_acts(rows_N, latents_N):
            """Reader latents at the last real token for the variant rows (latent -1 = none)."""
            variants_NSM = ablation_variants(
                x_BSM, acts_BSe, ablator.W_dec, rows_N, latents_N, ablator.input_transform
            )
            reader_in_NM = reader_input_at(
                lm,
                setup.ablator_hook,
                variants_NSM,
                setup.reader_hook,
                _rows(context, rows_N),
                last_B[rows_N],
            )
            return reader.encode(reader_in_NM.to(reader.W_dec.dtype)).float()

        baseline_UE = torch.cat(
            [
                reader_acts(chunk, torch.full_like(chunk, -1))
                for chunk in prompts_U.split(setup.rows_per_chunk)
            ]
        )
        kept_UK = latents_BK[prompts_U]
        # One variant row per kept (prompt, rank), row-major: prompt order.
        slot_N, rank_N = torch.nonzero(kept_UK >= 0, as_tuple=True)
        effects = []
        for chunk in torch.arange(len(slot_N), device=slot_N.device).split(setup.rows_per_chunk):
            rows_N, latents_N = prompts_U[slot_N[chunk]], kept_UK[slot_N[chunk], rank_N[chunk]]
            effects.append(baseline_UE[slot_N[chunk]] - reader_acts(rows_N, latents_N))
        effects_NE = torch.cat(effects)
        for slot, prompt in enumerate(prompts_U.tolist()):
            mine_N = slot_N == slot
            # The effects stay on the device: the sums are taken there.
            results[prompt] = PromptEffects(
                True, kept_UK[slot, rank_N[mine_N]].cpu(), effects_NE[mine_N]
            )
    return results


def _unused(d_reader: int) -> PromptEffects:
    return PromptEffects(False, torch.zeros(0, dtype=torch.long), torch.zeros(0, d_reader))


# -- the naive method (the oracle) ----------------------------------------------------------


def naive_effects(setup: AblationSetup, batch) -> list[PromptEffects]:
    """The legacy method: ``k + 2`` full forwards of the whole model per prompt, the prompt
    alone. Independent of :func:`fast_effects`; the tests compare the two."""
    return [
        _naive_prompt(setup, batch.input_ids_BS[b], batch.real_token_mask_BS[b], mask)
        for b, mask in enumerate(batch.attention_mask_BS)
    ]


def _naive_prompt(setup: AblationSetup, ids_S, real_S, mask_S) -> PromptEffects:
    lm, ablator, reader = setup.lm, setup.ablator, setup.reader
    length = int(mask_S.sum())  # right padding: the prompt is the first ``length`` tokens
    ids_1S = ids_S[:length][None].to(lm.device)
    real_S = real_S[:length].cpu()
    recorded: dict[str, torch.Tensor] = {}

    def full_forward(patches: dict, record_hook: str) -> torch.Tensor:
        inner = patches.get(record_hook)  # the splice, when the reader reads the same hook

        def record(x):
            out = x if inner is None else inner(x)
            recorded["x"] = out
            return out

        lm.logits(ids_1S, patches={**patches, record_hook: record})
        return recorded.pop("x")[0]

    with torch.inference_mode():
        x_SM = full_forward({}, setup.ablator_hook)
        acts_Se = ablator.encode(x_SM.to(ablator.W_dec.dtype)).cpu()
        chosen = _naive_choice(acts_Se, real_S, setup)
        selected = None if setup.selected_D is None else set(setup.selected_D.tolist())
        if not chosen or (selected is not None and not selected & set(chosen)):
            return _unused(reader.d_sae)
        last = max(i for i in range(length) if real_S[i])

        def reader_at_last(edit) -> torch.Tensor:
            patches = splice(lm, ablator, edit, setup.ablator_hook)
            x = full_forward(patches, setup.reader_hook)[last]
            return reader.encode(x.to(reader.W_dec.dtype)).float()

        baseline_E = reader_at_last(None)
        effects = [baseline_E - reader_at_last(ZeroLatents([latent])) for latent in chosen]
    return PromptEffects(True, torch.tensor(chosen, dtype=torch.long), torch.stack(effects))


def _naive_choice(acts_Se, real_S, setup: AblationSetup) -> list[int]:
    excluded = (
        set()
        if setup.excluded_e is None
        else set(torch.nonzero(setup.excluded_e).flatten().tolist())
    )
    real_acts_Se = acts_Se[real_S]
    active = torch.nonzero((real_acts_Se > 0).any(0)).flatten().tolist()
    totals = real_acts_Se.sum(0)
    ranked = sorted(
        (latent for latent in active if latent not in excluded),
        key=lambda latent: (-float(totals[latent]), latent),
    )
    return ranked[: setup.k]


def method_function(name: str):
    """``fast`` or ``naive``: the function computing a batch's :class:`PromptEffects`."""
    if name not in METHODS:
        raise FieldError("method", f"is {name!r}, expected one of {', '.join(METHODS)}.")
    return fast_effects if name == "fast" else naive_effects
