"""An ``ablate`` run's mean effects as the analysis tools read them: streamed in blocks of whole
rows (:func:`mean_blocks`, never more than :data:`ROWS_PER_READ` elements in memory), or
dense for the ablated latents when that fits a stated bound (:func:`dense_means`).

A mean effect is the summed effect over the prompts a latent was ablated in divided by that
count, as ``pairs`` compares them; latents ablated fewer than ``min_ablations`` times are
left out. Letters: D ablated latents (rows of the file), E reader latents, R rows of one read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from jaxtyping import Float, Int

from sae_hacking.absorption.pairs.inputs import Effects, results_file
from sae_hacking.errors import FieldError, UsageError

ROWS_PER_READ = 2**22  # effect elements decompressed at a time


def open_ablations(path: str | Path, key: str = "input_path", allow_partial: bool = False):
    """The :class:`~sae_hacking.absorption.pairs.inputs.Effects` of the finished ``ablate`` run
    ``path`` names (run directory, sidecar or results file); anything else is one
    :class:`FieldError` of ``key``."""
    from sae_hacking.runs.shards import check_all_shards

    file = results_file(path, "ablations", key)
    try:
        effects = Effects.open(file)
    except UsageError as err:
        raise FieldError(key, str(err)) from None
    try:
        if not effects.file.meta.get("complete"):
            raise FieldError(
                key, f"{file} is the checkpoint of an unfinished run; finish it first."
            )
        try:
            check_all_shards(effects.file.meta, file, allow_partial)
        except UsageError as err:
            raise FieldError(key, str(err)) from None
    except BaseException:
        effects.close()
        raise
    return effects


def settings_of(effects: Effects) -> dict:
    """The ablate run's recorded settings (model, SAEs, hooks, fingerprints)."""
    return dict(effects.file.meta.get("settings", {}))


def ablate_inputs(settings: dict, where: str) -> dict:
    """What an output's ``meta.inputs`` says of the ablate run it read (the tool adds the
    Neuronpedia ids its labels used)."""
    return {
        "ablations": where,
        "model": settings.get("model"),
        "ablator_sae_release": settings.get("ablator_sae_release"),
        "ablator_sae_id": settings.get("ablator_sae_id"),
        "hook": settings.get("ablator_sae_hook"),
        "reader_sae_release": settings.get("reader_sae_release"),
        "reader_sae_id": settings.get("reader_sae_id"),
    }


def kept_rows(
    effects: Effects, min_ablations: int = 1, latents: tuple[int, ...] | None = None
) -> Int[torch.Tensor, " D"]:
    """File rows of the latents ablated at least ``min_ablations`` times (and among
    ``latents`` when given: each must have been ablated that often, else a
    :class:`FieldError` of ``latents``), in latent order."""
    order = torch.argsort(effects.latents_D)
    keep = effects.counts_D[order] >= min_ablations
    if latents is not None:
        ablated = dict(zip(effects.latents_D.tolist(), effects.counts_D.tolist(), strict=True))
        for i in latents:
            if ablated.get(i, 0) < min_ablations:
                raise FieldError(
                    "latents",
                    f"{i} was not ablated (at least `min_ablations` = {min_ablations} times) in "
                    f"{effects.file.path}, so it has no effects.",
                )
        keep &= torch.isin(effects.latents_D[order], torch.tensor(latents))
    return order[keep]


def require_kept(effects: Effects, min_ablations: int, latents: tuple[int, ...] | None) -> None:
    """Refuse settings that leave no latent of ``effects`` (before the tool's work)."""
    if kept_rows(effects, min_ablations, latents).numel() == 0:
        raise FieldError(
            "min_ablations",
            f"leaves no latent of {effects.file.path}: none was ablated that often.",
        )


def mean_blocks(
    effects: Effects,
    min_ablations: int = 1,
    latents: tuple[int, ...] | None = None,
    rows_per_read: int | None = None,
) -> Iterator[tuple[Int[torch.Tensor, " R"], Float[torch.Tensor, "R E"]]]:
    """``(latents_R, mean_RE)`` blocks of whole rows in file order: every latent
    :func:`kept_rows` keeps, exactly once."""
    E = effects.d_reader
    per_read = rows_per_read or max(1, ROWS_PER_READ // max(E, 1))
    counts_D = effects.counts_D
    wanted_D = torch.zeros(counts_D.shape[0], dtype=torch.bool)
    wanted_D[kept_rows(effects, min_ablations, latents)] = True
    for start, chunk in effects.file.iter_ranges("effects_DE", per_read * E):
        first = start // E
        block_RE = chunk.view(-1, E).float()
        rows = torch.arange(first, first + block_RE.shape[0])
        keep = wanted_D[rows]
        if not bool(keep.any()):
            continue
        rows = rows[keep]
        yield effects.latents_D[rows], block_RE[keep] / counts_D[rows, None].float()


def dense_means(
    effects: Effects,
    min_ablations: int,
    max_elements: int,
    key: str,
    what: str,
    latents: tuple[int, ...] | None = None,
) -> tuple[Int[torch.Tensor, " D"], Int[torch.Tensor, " D"], Float[torch.Tensor, "D E"]]:
    """``(latents_D, counts_D, mean_DE)`` of the latents :func:`kept_rows` keeps, in latent
    order; refused (a :class:`FieldError` of ``key``) when ``D x E`` is over ``max_elements``
    — ``what`` says what needs them dense."""
    require_kept(effects, min_ablations, latents)
    positions_D = kept_rows(effects, min_ablations, latents)
    D, E = int(positions_D.numel()), effects.d_reader
    if D * E > max_elements:
        raise FieldError(
            key,
            f"is {max_elements:,} elements, but {what} needs the {D:,} x {E:,} = {D * E:,} mean "
            f"effects in memory (about {D * E * 4 / 2**30:.1f} GiB); raise it if that fits, or "
            "keep fewer latents (min_ablations, or an ablate run with fewer selected latents).",
        )
    return effects.latents_D[positions_D], effects.counts_D[positions_D], effects.rows(positions_D)
