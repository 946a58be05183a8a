"""The ``pairs`` run (stage 3): ``run(config)`` reads an ``ablate`` and a ``cooccurrences``
results file, finds the absorption candidates (:mod:`sae_hacking.absorption.pairs.search`) and
writes a new run directory: ``pairs.csv``, ``histogram.png``, ``effect_vs_decoder.png``, ``report.html``
and, last, ``pairs.json`` (``meta`` + ``pairs``, the legacy shape with more fields; ``meta``
records both inputs' datasets and shards).

Semantics, with the legacy script's defects fixed: only latents ablated at least ``min_ablations`` times
are compared (the legacy script compared every row of a dense matrix, so never-ablated latents flooded
the output); effects are mean effects (sum / ablation count); each pair also carries its
decoder cosine (effects may merely mirror decoder similarity), its expected co-occurrence under
independence and the chance of seeing none, activation and ablation counts, and Neuronpedia
explanations and links.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path
from typing import Any

from sae_hacking.absorption.configs import PairsConfig
from sae_hacking.absorption.pairs.identity import KIND, OUTPUTS
from sae_hacking.config import to_flat
from sae_hacking.errors import FieldError, SettingWarning, UsageError
from sae_hacking.runs.rundir import RunDir

CSV_COLUMNS = (
    "id1",
    "id2",
    "cosine_similarity",
    "decoder_cosine",
    "cooccurrence_count",
    "expected_cooccurrence",
    "p_no_cooccurrence",
    "activation_count1",
    "activation_count2",
    "ablation_count1",
    "ablation_count2",
    "explanation1",
    "explanation2",
    "url1",
    "url2",
)


def run(config: PairsConfig) -> Path:
    """Find the pairs and write the run directory; returns the run directory."""
    config.require_inputs()
    if config.run.resume is not None:
        raise FieldError("resume", "does not apply: a pairs run is quick and does not resume.")
    rundir = RunDir.plan(config, KIND, KIND, OUTPUTS)  # the folder is checked before the work
    from sae_hacking.absorption.pairs.evidence import open_evidence_from, pair_views

    given = open_evidence_from(config)  # a bad `evidence_from` is answered before the work too
    try:
        result = find(config)
    except BaseException:
        if given is not None:
            given.close()
        raise
    views = pair_views(config, result, given)
    with rundir.started():  # nothing resumes: a failed write leaves nothing
        write_outputs(rundir.path, config, result, views)
    return rundir.path


def find(config: PairsConfig) -> dict[str, Any]:
    """The pairs.json document of ``config`` (nothing is written)."""
    import torch

    from sae_hacking.absorption.cooccurrence.accumulator import Cooccurrences
    from sae_hacking.absorption.pairs.inputs import (
        CooccurrenceLookup,
        Effects,
        check_same_ablator,
        check_same_dataset,
        dataset_of,
        results_file,
    )
    from sae_hacking.absorption.pairs.search import PairFilter, comparable_rows, find_pairs
    from sae_hacking.device import resolve_device
    from sae_hacking.runs.files import provenance

    device = resolve_device(config.device)
    paths = (
        results_file(config.input_path, "ablations", "input_path"),
        results_file(config.cooccurrence_path, "cooccurrences", "cooccurrence_path"),
    )
    effects = Effects.open(paths[0])
    try:
        counts = Cooccurrences(paths[1], allow_partial=config.allow_partial)
    except BaseException:
        effects.close()
        raise
    try:
        check_same_ablator(effects.file.meta, counts.meta, paths, config.allow_partial)
        check_same_dataset(effects.file.meta, counts.meta, paths, config.allow_other_dataset)
        datasets = {
            "ablations": dataset_of(effects.file.meta),
            "cooccurrences": dataset_of(counts.meta),
        }
        settings = effects.file.meta["settings"]
        # Before the work: a bad explanations file is the user's error, answered at once.
        np_id, explanations, source, warning = _explanations(config, settings, counts.e)
        order = torch.argsort(effects.latents_D)
        positions = order[effects.counts_D[order] >= config.min_ablations]
        latents_D = effects.latents_D[positions]
        if latents_D.numel() < 2:
            raise FieldError(
                "min_ablations",
                f"leaves {latents_D.numel()} compared latent(s) in {paths[0]}; a pair needs two.",
            )
        focus_D = _focus(config, latents_D, counts.e)
        firsts_D = None
        if config.max_steps is not None:
            firsts_D = torch.arange(latents_D.numel()) < config.max_steps
        needed = latents_D if focus_D is None else latents_D[focus_D]
        lookup = CooccurrenceLookup(counts, needed, "cooccurrence_path")
        rows_DE, norms_D = comparable_rows(effects.rows(positions), config.compare == "sign")
        found = find_pairs(
            latents_D,
            rows_DE.to(device),
            norms_D.to(device),
            lookup.activations_e[latents_D],
            max(lookup.tokens, 1),
            lookup,
            PairFilter(
                config.cosine_rule()[0],
                config.cooccurrence_threshold,
                config.min_expected_cooccurrence,
                config.max_pairs,
                config.block_size,
                strict=config.cosine_rule()[1],
                max_share=config.max_cooccurrence_share,
            ),
            firsts_D,
            focus_D,
        )
        ablations_of = dict(zip(effects.latents_D.tolist(), effects.counts_D.tolist(), strict=True))
        decoder_K = _decoder_cosines(config, settings, found.first_K, found.second_K)
    finally:
        effects.close()
        counts.close()
    from sae_hacking.reports.pairs import as_flags
    from sae_hacking.saes.neuronpedia import latent_url

    if warning:
        warnings.warn(SettingWarning(warning), stacklevel=2)

    def latent(index: int) -> dict[str, Any]:
        return {
            "id": index,
            "explanation": explanations.get(index, ""),
            "activation_count": int(lookup.activations_e[index]),
            "ablation_count": int(ablations_of[index]),
            "url": latent_url(np_id, index),
        }

    pairs = []
    for k in range(found.first_K.numel()):
        expected = float(found.expected_K[k])
        pairs.append(
            {
                "ablator1": latent(int(found.first_K[k])),
                "ablator2": latent(int(found.second_K[k])),
                "cosine_similarity": float(found.cosine_K[k]),
                "cooccurrence_count": int(found.cooccurrence_K[k]),
                "decoder_cosine": float(decoder_K[k]),
                "expected_cooccurrence": expected,
                "p_no_cooccurrence": math.exp(-expected),
            }
        )
    meta = {
        "kind": KIND,
        "settings": to_flat(config),
        "provenance": provenance(),
        "inputs": {
            "ablations": str(paths[0]),
            "cooccurrences": str(paths[1]),
            "model": settings.get("model"),
            "ablator_sae_release": settings.get("ablator_sae_release"),
            "ablator_sae_id": settings.get("ablator_sae_id"),
            "hook": settings.get("ablator_sae_hook"),
            "neuronpedia_id": np_id,
            "tokens": lookup.tokens,
            "datasets": datasets,
        },
        "compare": config.compare,
        "n_compared": int(latents_D.numel()),
        "n_pairs_passing": found.n_passing,
        "n_pairs_kept": len(pairs),
        "histogram": {"edges": found.histogram_edges, "counts": found.histogram_counts},
        "explanations": {"source": source, "warning": as_flags(warning) if warning else None},
    }
    return {"meta": meta, "pairs": pairs}


def _focus(config: PairsConfig, latents_D, e: int):
    """Bool mask of the ``just_these`` latents among the compared ones (``None``: all)."""
    if config.just_these is None:
        return None
    compared = set(latents_D.tolist())
    for index in config.just_these:
        if not 0 <= index < e:
            raise FieldError("just_these", f"{index} is not a latent of the {e}-latent ablator.")
        if index not in compared:
            raise FieldError(
                "just_these",
                f"{index} was not ablated (at least `min_ablations` = {config.min_ablations} "
                "times), so it has no effect to compare.",
            )
    import torch

    return torch.isin(latents_D, torch.tensor(config.just_these))


def _decoder_cosines(config: PairsConfig, settings: dict, first_K, second_K):
    """Cosines of the two latents' decoder rows, from the ablator SAE the results name (or the
    one given, which must be the same SAE when the results recorded its content hash)."""
    import torch.nn.functional as F

    from sae_hacking.saes.fingerprint import sae_fingerprint
    from sae_hacking.saes.source import SAESource

    source = config.ablator
    given = source.release is not None
    if not given:
        source = SAESource(settings.get("ablator_sae_release"), settings.get("ablator_sae_id"))
    try:
        sae = source.load("cpu", "ablator_")
    except UsageError as err:
        hint = "" if given else " (give a local copy with `ablator_sae_release` PATH)"
        raise UsageError(
            f"the ablator SAE for decoder cosines cannot be loaded: {err}{hint}"
        ) from None
    recorded = settings.get("ablator_fingerprint")
    if given and recorded and sae_fingerprint(sae) != recorded:
        raise FieldError(
            "ablator_sae_release",
            f"{source.release} is not the SAE that was ablated (its content hash differs).",
        )
    W_dec_eM = F.normalize(sae.W_dec.detach().float(), dim=-1)
    return (W_dec_eM[first_K] * W_dec_eM[second_K]).sum(-1)


def _explanations(config: PairsConfig, settings: dict, n_latents: int):
    from sae_hacking.saes.neuronpedia import load_explanations, neuronpedia_id

    np_id = config.ablator_sae_neuronpedia_id or settings.get("neuronpedia_id")
    if np_id is None and config.ablator.release is None:
        np_id = neuronpedia_id(settings.get("ablator_sae_release"), settings.get("ablator_sae_id"))
    explanations, source, warning = load_explanations(np_id, config.explanations_file, n_latents)
    return np_id, explanations, source, warning


def write_outputs(
    run_dir: Path, config: PairsConfig, result: dict[str, Any], views: dict | None = None
) -> Path:
    """Into a run directory (``run.json`` listing :data:`OUTPUTS`): ``pairs.csv``, the plots,
    ``report.html`` (with the side-by-side ``views`` of :mod:`~sae_hacking.absorption.pairs.evidence`
    when given) and last ``pairs.json``, each atomically: the run is complete when
    ``pairs.json`` is there."""
    from sae_hacking.atomic import atomic_write_json, atomic_write_text
    from sae_hacking.reports.pairs import write_pair_plots, write_report

    atomic_write_text(run_dir / "pairs.csv", pairs_csv(result["pairs"]))
    write_pair_plots(run_dir, result, log_scale=not config.no_log_scale)
    report = write_report(run_dir, result, views)
    atomic_write_json(run_dir / "pairs.json", result)
    meta = result["meta"]
    print(
        f"{meta['n_compared']} latents compared, {meta['n_pairs_passing']} pairs pass, "
        f"{meta['n_pairs_kept']} kept; wrote {run_dir / 'pairs.json'} and {report}"
    )
    if views is not None:
        print(views["note"])
    return report


def pairs_csv(pairs: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for p in pairs:
        a, b = p["ablator1"], p["ablator2"]
        writer.writerow(
            [
                a["id"],
                b["id"],
                p["cosine_similarity"],
                p["decoder_cosine"],
                p["cooccurrence_count"],
                p["expected_cooccurrence"],
                p["p_no_cooccurrence"],
                a["activation_count"],
                b["activation_count"],
                a["ablation_count"],
                b["ablation_count"],
                a["explanation"],
                b["explanation"],
                a["url"] or "",
                b["url"] or "",
            ]
        )
    return buffer.getvalue()
