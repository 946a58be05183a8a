"""The ``effect-l0`` run (legacy ``plot_effect_l0.py``): ``run(config)`` reads an ``ablate`` run
row by row and writes a new run directory: ``effect_l0.csv``, ``effect_l0.png`` and, last,
``effect_l0.json`` (with ``output_path``, the PNG there too: the legacy script's only output).

An ablated latent's effect L0 is the number of reader latents whose mean effect (summed effect
/ ablation count) is above ``treat_as_zero`` in absolute value: how widely its ablation spreads
downstream. The histogram leaves out latents with an effect L0 over ``exclude_over``, as the
original did; the CSV and JSON keep every latent, marked ``excluded``. Latents ablated fewer
than ``min_ablations`` times are left out: they have no effect to count (the original counted
the never-ablated rows of a dense matrix as zeros).

This module is torch-free at import: the CLI imports it before a usage error is answered.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from sae_hacking.absorption.tools.configs import OUTPUTS, EffectL0Config
from sae_hacking.config import to_flat
from sae_hacking.runs.rundir import RunDir

KIND = "effect-l0"
CSV_COLUMNS = ("latent", "ablations", "effect_l0", "excluded", "label")
DPI = 120


def run(config: EffectL0Config) -> Path:
    """Count, draw and write the run directory; returns it."""
    config.check_inputs()
    rundir = RunDir.plan(config, KIND, KIND, OUTPUTS[KIND])  # the folder is checked first
    result = measure(config)
    png = histogram_png(result)
    with rundir.started():  # a failed write leaves no folder
        write_outputs(rundir.path, config, result, png)
    return rundir.path


def effect_l0s(effects, treat_as_zero: float, min_ablations: int = 1, latents=None):
    """``(latents, effect_l0s)`` of the ablated latents, in file order, streamed by rows."""
    from sae_hacking.absorption.tools.effects import mean_blocks
    from sae_hacking.absorption.tools.threshold import float32_floor

    t = float32_floor(treat_as_zero)  # so `|mean| > t` is the numbers' `>` (threshold.py)
    ids, l0s = [], []
    for latents_R, mean_RE in mean_blocks(effects, min_ablations, latents):
        ids += latents_R.tolist()
        l0s += (mean_RE.abs() > t).sum(1).tolist()
    return ids, l0s


def measure(config: EffectL0Config) -> dict[str, Any]:
    """The effect_l0.json document of ``config`` (nothing is written)."""
    import numpy as np

    from sae_hacking.absorption.tools.effects import (
        ablate_inputs,
        open_ablations,
        require_kept,
        settings_of,
    )
    from sae_hacking.absorption.tools.labels import check_label_sources, label_latents
    from sae_hacking.runs.files import provenance

    effects = open_ablations(config.input_path, "input_path", config.allow_partial)
    try:
        where = str(effects.file.path)
        settings = settings_of(effects)
        check_label_sources(settings, config.labels, ("ablator",))
        require_kept(effects, config.min_ablations, config.latents)
        ablations = dict(zip(effects.latents_D.tolist(), effects.counts_D.tolist(), strict=True))
        ids, l0s = effect_l0s(effects, config.treat_as_zero, config.min_ablations, config.latents)
        n_readers = effects.d_reader
    finally:
        effects.close()
    order = sorted(range(len(ids)), key=ids.__getitem__)
    counts = [
        {
            "latent": ids[i],
            "ablations": ablations[ids[i]],
            "effect_l0": l0s[i],
            "excluded": l0s[i] > config.exclude_over,
        }
        for i in order
    ]
    shown = [c["effect_l0"] for c in counts if not c["excluded"]]
    hist_counts, edges = np.histogram(np.asarray(shown, dtype=np.float64), bins=config.bins)
    labels = label_latents(settings, config.labels, "ablator", [c["latent"] for c in counts])
    meta = {
        "kind": KIND,
        "settings": to_flat(config),
        "provenance": provenance(),
        "inputs": {**ablate_inputs(settings, where), "neuronpedia_id": labels.np_id},
        "treat_as_zero": config.treat_as_zero,
        "exclude_over": config.exclude_over,
        "n_readers": n_readers,
        "n_latents": len(counts),
        "n_excluded": len(counts) - len(shown),
        "output_path": config.output_path,
        "labels": labels.how,
    }
    return {
        "meta": meta,
        "counts": counts,
        "histogram": {"edges": edges.tolist(), "counts": hist_counts.tolist()},
        "labels": labels.as_json([c["latent"] for c in counts]),
    }


def histogram_png(result: dict[str, Any]) -> bytes:
    """The histogram of ``result["histogram"]`` (the JSON's numbers are the picture's)."""
    from matplotlib.ticker import MaxNLocator

    from sae_hacking.reports.figures import figure, png_bytes

    meta, histogram = result["meta"], result["histogram"]
    edges, counts = histogram["edges"], histogram["counts"]
    fig = figure(8.0, 4.8, DPI)
    ax = fig.add_subplot()
    shown = meta["n_latents"] - meta["n_excluded"]
    if shown:
        widths = [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]
        ax.bar(edges[:-1], counts, width=widths, align="edge", color="#2459a6",
               edgecolor="black", linewidth=0.5)  # fmt: skip
        ax.set_xlim(edges[0], edges[-1])
    else:
        ax.text(0.5, 0.5, "every latent is over --exclude-over", ha="center", va="center",
                transform=ax.transAxes)  # fmt: skip
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    ax.set_xlabel(f"effect L0: reader latents with |mean effect| > {meta['treat_as_zero']:g}")
    ax.set_ylabel("ablated latents")
    left_out = (
        f"{meta['n_excluded']:,} with effect L0 over {meta['exclude_over']:g} left out"
        if meta["n_excluded"]
        else f"none over {meta['exclude_over']:g} left out"
    )
    ax.set_title(
        f"Effect L0 of {shown:,} ablated latents (t = {meta['treat_as_zero']:g}; {left_out})"
    )
    return png_bytes(fig)


def write_outputs(run_dir: Path, config: EffectL0Config, result: dict[str, Any], png: bytes):
    """``effect_l0.csv``, ``effect_l0.png`` (and the ``output_path`` copy), last
    ``effect_l0.json``, each atomically."""
    from sae_hacking.atomic import atomic_write, atomic_write_json, atomic_write_text

    atomic_write_text(run_dir / "effect_l0.csv", l0_csv(result))
    written = [atomic_write(run_dir / "effect_l0.png", lambda p: p.write_bytes(png))]
    if config.output_path is not None:
        written.append(atomic_write(config.output_path, lambda p: p.write_bytes(png)))
    atomic_write_json(run_dir / "effect_l0.json", result)
    meta = result["meta"]
    print(
        f"effect L0 of {meta['n_latents']:,} ablated latents ({meta['n_excluded']:,} over "
        f"{meta['exclude_over']:g} left out of the histogram); wrote "
        f"{run_dir / 'effect_l0.json'}, {run_dir / 'effect_l0.csv'} and "
        + " and ".join(str(p) for p in written)
    )


def l0_csv(result: dict[str, Any]) -> str:
    labels = result["labels"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for c in result["counts"]:
        text = labels.get(str(c["latent"]), {}).get("text", "")
        writer.writerow([c["latent"], c["ablations"], c["effect_l0"], c["excluded"], text])
    return buffer.getvalue()
