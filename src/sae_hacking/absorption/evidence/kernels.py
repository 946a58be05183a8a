"""The CPU path of the example tables (:mod:`sae_hacking.absorption.evidence.tables`): one
compiled pass over a batch's active entries instead of sorts and scatters.

Each entry is compared with its latent's worst kept example (a full ``(key, place)``
comparison, so ties are decided as the torch path decides them); a better one takes the worst
one's slot (or the next empty slot), its context is copied in, and the latent's worst slot is
found again by a scan of its ``n`` slots. The kept set is then the ``n`` smallest offered,
whatever the order, so this path and the torch one (CUDA, and merges) hold the same examples;
:meth:`ExampleTable.state` puts them in the same canonical order.

Context activations are read from the batch's dense ``[T, e]`` activations, just written by
the encoder (measured: half the time of a binary search in the sparse lists, at e = 16,384).
Threads own the latents ``l % n_parts == k``, so they never write the same slot.
"""

from __future__ import annotations

import typing

import numpy as np
import torch


def _compile():
    import numba

    from sae_hacking.absorption.evidence.tables import _MASK31 as MASK31
    from sae_hacking.absorption.evidence.tables import _MIX as MIX

    # no_type_check: numba compiles these itself (jaxtyping's import hook skips them).
    @numba.njit(cache=True, nogil=True)
    @typing.no_type_check
    def worse(ka, pa, kb, pb):
        return ka > kb or (ka == kb and pa > pb)

    @numba.njit(cache=True, nogil=True)
    @typing.no_type_check
    def find_worst(keys, places, row):
        worst = 0
        for s in range(1, keys.shape[1]):
            if worse(keys[row, s], places[row, s], keys[row, worst], places[row, worst]):
                worst = s
        return worst

    @numba.njit(cache=True, nogil=True)
    @typing.no_type_check
    def mix31(h):
        for _ in range(2):
            h = h ^ (h >> 16)
            h = (h * MIX) & MASK31
        return h ^ (h >> 16)

    @numba.njit(cache=True, nogil=True)
    @typing.no_type_check
    def priority(seed, prompt, position, latent):  # tables.sample_priority, entry by entry
        h = mix31((prompt + seed) & MASK31)
        h = mix31(h ^ (prompt >> 31) ^ (position & MASK31))
        high = mix31(h ^ (latent & MASK31))
        return (high << 31) | mix31(high ^ 0x5BD1E995)

    @numba.njit(cache=True, nogil=True, parallel=True)
    @typing.no_type_check
    def offer(
        n_parts, seed, latent, key, place, value, prompt, position, token,
        keys, places, values, prompts, positions, filled, worst, worst_key, ctx_ids, ctx_acts,
        window, ids, dense,
    ):  # fmt: skip
        n, width = keys.shape[1], ctx_ids.shape[2]
        for part in numba.prange(n_parts):
            for i in range(latent.shape[0]):
                row = latent[i]
                if row % n_parts != part:
                    continue
                k = key[i] if seed < 0 else priority(seed, prompt[i], position[i], row)
                if filled[row] < n:
                    slot = filled[row]
                    filled[row] += 1
                else:
                    slot = worst[row]
                    if not worse(keys[row, slot], places[row, slot], k, place[i]):
                        continue
                keys[row, slot], places[row, slot] = k, place[i]
                values[row, slot], prompts[row, slot] = value[i], prompt[i]
                positions[row, slot] = position[i]
                t = token[i]
                for w in range(width):
                    ctx_ids[row, slot, w] = ids[t, w]
                    at = window[t, w]
                    act = 0.0
                    if at >= 0:
                        act = dense[at, row]
                    ctx_acts[row, slot, w] = act
                if filled[row] == n:
                    worst[row] = find_worst(keys, places, row)
                    worst_key[row] = keys[row, worst[row]]

    return offer


_OFFER = None


def offer_numba(
    table, batch, key_N: torch.Tensor | None, place_N: torch.Tensor, seed: int = -1
) -> None:
    """Offer a batch's entries (:class:`~sae_hacking.absorption.evidence.collect.Batch`) to a
    CPU ``table`` with the compiled kernel: ordered by ``key_N``, or (a sample, ``seed`` ≥ 0)
    by :func:`~sae_hacking.absorption.evidence.tables.sample_priority`, hashed here."""
    global _OFFER
    if _OFFER is None:
        _OFFER = _compile()
    import numba

    def arr(t: torch.Tensor) -> np.ndarray:
        return t.contiguous().numpy()

    _OFFER(
        numba.get_num_threads(), seed,
        arr(batch.latent_N), arr(batch.latent_N if key_N is None else key_N), arr(place_N),
        arr(batch.value_N), arr(batch.prompt_N), arr(batch.position_N), arr(batch.token_N),
        table.key_eX.numpy(), table.place_eX.numpy(), table.values_eX.numpy(),
        table.prompts_eX.numpy(), table.positions_eX.numpy(), table.filled_e.numpy(),
        table.worst_slot_e.numpy(), table.worst_e.numpy(), table.context_ids_eXW.numpy(),
        table.context_acts_eXW.numpy(), arr(batch.window_TW), arr(batch.ids_TW.int()),
        batch.acts_Te.numpy(),
    )  # fmt: skip
