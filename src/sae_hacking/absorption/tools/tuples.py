"""The ``four-tuples`` run (legacy ``find_4tuples.py``): ``run(config)`` reads an ``ablate``
run's mean effects and writes a new run directory: ``tuples.csv``, ``tuples.html`` and, last,
``tuples.json``.

A 4-tuple (A, B, C, D) is two ablator latents ``A != C`` and two reader latents B, D with mean
effects ``AB``, ``AD``, ``CB`` above ``treat_as_zero`` and ``CD`` below ``-treat_as_zero``
(strictly, as the original script; then ``B != D`` by itself): A and C both move B the same way,
while on D they disagree. The original listed every tuple as Python sets; here they are counted
exactly with sign matrices and only the ``max_results`` strongest (strength: the smallest of
``AB``, ``AD``, ``CB``, ``-CD``) are listed, found by bisecting the strength
(:mod:`~sae_hacking.absorption.tools.tuple_search`). Latents ablated fewer than
``min_ablations`` times are left out (never-ablated rows would add nothing but noise); every
latent shown is labelled (explanation, evidence or logit lens).

This module is torch-free at import: the CLI imports it before a usage error is answered.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from sae_hacking.absorption.tools.configs import OUTPUTS, TuplesConfig
from sae_hacking.config import to_flat
from sae_hacking.runs.rundir import RunDir

KIND = "four-tuples"
FIELDS = ("A", "B", "C", "D", "AB", "AD", "CB", "CD", "strength")
LABEL_COLUMNS = ("A_label", "B_label", "C_label", "D_label")


def run(config: TuplesConfig) -> Path:
    """Find the tuples and write the run directory; returns it."""
    config.check_inputs()
    rundir = RunDir.plan(config, KIND, KIND, OUTPUTS[KIND])  # the folder is checked first
    result = find(config)
    with rundir.started():  # a failed write leaves no folder
        write_outputs(rundir.path, result)
    return rundir.path


def find(config: TuplesConfig) -> dict[str, Any]:
    """The tuples.json document of ``config`` (nothing is written)."""
    from sae_hacking.absorption.tools.effects import (
        ablate_inputs,
        dense_means,
        open_ablations,
        settings_of,
    )
    from sae_hacking.absorption.tools.labels import check_label_sources, label_latents
    from sae_hacking.absorption.tools.tuple_search import strongest_tuples
    from sae_hacking.device import resolve_device
    from sae_hacking.runs.files import provenance

    device = resolve_device(config.device)
    effects = open_ablations(config.input_path, "input_path", config.allow_partial)
    try:
        where = str(effects.file.path)
        settings = settings_of(effects)
        check_label_sources(settings, config.labels)
        latents_D, _, mean_DE = dense_means(
            effects, config.min_ablations, config.max_elements, "max_elements",
            "finding 4-tuples", config.latents,
        )  # fmt: skip
    finally:
        effects.close()
    D, E = mean_DE.shape
    found = strongest_tuples(mean_DE.to(device), config.treat_as_zero, config.max_results)
    del mean_DE
    ids_D = latents_D.tolist()
    tuples = []
    for (a, b, c, d), effects_4, strength in zip(
        found.abcd_K4.tolist(), found.effects_K4.tolist(), found.strength_K.tolist(), strict=True
    ):
        ab, ad, cb, cd = effects_4
        tuples.append({"A": ids_D[a], "B": b, "C": ids_D[c], "D": d,
                       "AB": ab, "AD": ad, "CB": cb, "CD": cd, "strength": strength})  # fmt: skip
    ablators = label_latents(settings, config.labels, "ablator", _ids(tuples, "A", "C"))
    readers = label_latents(settings, config.labels, "reader", _ids(tuples, "B", "D"))
    meta = {
        "kind": KIND,
        "settings": to_flat(config),
        "provenance": provenance(),
        "inputs": {
            **ablate_inputs(settings, where),
            "ablator_neuronpedia_id": ablators.np_id,
            "reader_neuronpedia_id": readers.np_id,
        },
        "treat_as_zero": config.treat_as_zero,
        "n_ablators": D,
        "n_readers": E,
        "total": found.total,
        "kept": len(tuples),
        # Every kept tuple is stronger than this; the bisection's answer (treat_as_zero, as a
        # float32, when every tuple is kept).
        "strength_threshold": found.threshold,
        "tuples_listed": found.listed,
        "counts_computed": found.counts,
        "labels": {"ablator": ablators.how, "reader": readers.how},
    }
    return {
        "meta": meta,
        "labels": {
            "ablator": ablators.as_json(_ids(tuples, "A", "C")),
            "reader": readers.as_json(_ids(tuples, "B", "D")),
        },
        "tuples": tuples,
    }


def _ids(tuples: list[dict], *keys: str) -> list[int]:
    return sorted({t[k] for t in tuples for k in keys})


def write_outputs(run_dir: Path, result: dict[str, Any]) -> None:
    """``tuples.csv``, ``tuples.html`` and last ``tuples.json``, each atomically."""
    from sae_hacking.atomic import atomic_write_json, atomic_write_text
    from sae_hacking.reports.tuples import write_report

    atomic_write_text(run_dir / "tuples.csv", tuples_csv(result))
    page = write_report(run_dir, result)
    atomic_write_json(run_dir / "tuples.json", result)
    meta = result["meta"]
    print(
        f"{meta['total']:,} 4-tuples at treat_as_zero {meta['treat_as_zero']} among "
        f"{meta['n_ablators']:,} ablated latents, the {meta['kept']:,} strongest kept; wrote "
        f"{run_dir / 'tuples.json'}, {run_dir / 'tuples.csv'} and {page}"
    )


def tuples_csv(result: dict[str, Any]) -> str:
    labels = result["labels"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(FIELDS + LABEL_COLUMNS)
    for t in result["tuples"]:
        texts = [
            labels[side].get(str(t[key]), {}).get("text", "")
            for key, side in (("A", "ablator"), ("B", "reader"), ("C", "ablator"), ("D", "reader"))
        ]
        writer.writerow([t[k] for k in FIELDS] + texts)
    return buffer.getvalue()
