"""What ablating a latent does downstream, per ablated latent: the reader latents its ablation
moves most, up and down (mean effect = summed effect / times ablated, as ``pairs`` compares
them), read from ``ablate`` results in one streamed pass; and labels for those reader latents:
their own evidence when a ``latents`` / ``cooccurrences`` run of the reader SAE is given (the
tokens its top examples fire on), else the logit lens of their decoder rows, computed from the
reader SAE's and the model's weights (letters: D ablated latents, E reader latents, K kept)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sae_hacking.absorption.evidence.logit_lens import top_tokens
from sae_hacking.errors import UsageError

MOVES_K = 10
ROWS_PER_READ = 2**22  # effect elements decompressed at a time


def reader_moves(
    ablations: str | Path, k: int = MOVES_K, latents: set[int] | None = None
) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
    """``({ablated latent: {"ablations": n, "up": [[reader, mean effect], ...],
    "down": [...]}}, the ablate run's settings)``; ``up`` holds only positive means, largest
    first, ``down`` only negative ones, most negative first (ties: the smaller reader index).
    Only ``latents`` when given. The effects are streamed: never more than
    :data:`ROWS_PER_READ` elements in memory."""
    from sae_hacking.absorption.pairs.inputs import Effects, results_file

    effects = Effects.open(results_file(ablations, "ablations", "ablations"))
    try:
        e_reader = effects.d_reader
        latents_D, counts_D = effects.latents_D.tolist(), effects.counts_D.tolist()
        k = min(k, e_reader)
        moves: dict[int, dict[str, Any]] = {}
        per_read = max(1, ROWS_PER_READ // max(e_reader, 1))
        for start, chunk in effects.file.iter_ranges("effects_DE", per_read * e_reader):
            first = start // e_reader
            block_DE = chunk.view(-1, e_reader).float()
            rows = range(first, first + block_DE.shape[0])
            wanted = [r for r in rows if latents is None or latents_D[r] in latents]
            if not wanted:
                continue
            local = torch.tensor([r - first for r in wanted])
            mean_DE = block_DE[local] / torch.tensor([max(counts_D[r], 1) for r in wanted])[:, None]
            up_ids, up_values = top_tokens(mean_DE, k)
            down_ids, down_values = top_tokens(-mean_DE, k)
            for d, r in enumerate(wanted):
                moves[latents_D[r]] = {
                    "ablations": counts_D[r],
                    "up": _signed(up_ids[d], up_values[d], 1.0),
                    "down": _signed(down_ids[d], down_values[d], -1.0),
                }
        return moves, dict(effects.file.meta.get("settings", {}))
    finally:
        effects.close()


def _signed(ids: torch.Tensor, values: torch.Tensor, sign: float) -> list[list]:
    return [[int(i), sign * float(v)] for i, v in zip(ids, values, strict=True) if v > 0]


def reader_logit_lens(
    settings: dict[str, Any], readers: list[int], k: int = 10, decode=None, side: str = "reader"
):
    """``{reader latent: {"up": [[token, value], ...], "down": [...]}}`` from the weights of the
    ablate run's reader SAE (``side="ablator"``: its ablator SAE) and model (``settings``: its
    recorded settings)."""
    from sae_hacking.absorption.evidence.logit_lens import has_logit_lens, logit_lens
    from sae_hacking.lm.unembedding import load_unembedding
    from sae_hacking.saes.releases import load_sae

    hook = settings.get(f"{side}_sae_hook") or ""
    if not readers or not has_logit_lens(hook):
        return {}
    sae = load_sae(settings[f"{side}_sae_release"], settings.get(f"{side}_sae_id"), device="cpu")
    W_U = load_unembedding(settings["model"])  # noqa: N806
    if W_U.shape[1] != sae.W_dec.shape[1]:
        raise UsageError(
            f"the {side} SAE writes {sae.W_dec.shape[1]} dimensions but {settings['model']}'s "
            f"unembedding reads {W_U.shape[1]}."
        )
    index = torch.tensor(sorted(readers))
    lens = logit_lens(sae.W_dec.detach()[index].float(), W_U, k)
    out = {}
    for row, latent in enumerate(index.tolist()):
        out[latent] = {
            direction: [
                [decode([int(t)])[0] if decode else int(t), float(v)]
                for t, v in zip(
                    lens[f"logit_lens_{name}_ids_eK"][row],
                    lens[f"logit_lens_{name}_values_eK"][row],
                    strict=True,
                )
            ]
            for direction, name in (("up", "top"), ("down", "bottom"))
        }
    return out


def check_reader_evidence(evidence, settings: dict[str, Any], given: str) -> None:
    """The reader evidence run must be of the ablate run's reader SAE (same fingerprint)."""
    mine, theirs = evidence.settings.get("sae_fingerprint"), settings.get("reader_fingerprint")
    if mine is not None and theirs is not None and mine != theirs:
        raise UsageError(
            f"{given} holds the evidence of another SAE (fingerprint {mine}) than the ablate "
            f"run's reader ({theirs}); give a latents run of the reader SAE."
        )
