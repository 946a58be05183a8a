"""``toy-compare``: flat TopK vs hierarchical TopK vs Matryoshka vs the tiered SAE on identical
data (the toy data, or SAELens's synthetic hierarchies with ``--data saelens``).

For each seed, the three SAEs see the same dataset and the same training batches (both are
functions of the seed alone). The latent budget is matched in decoder vectors: the hierarchical
SAE has E parents + 2E children, so the flat and Matryoshka SAEs get 3E latents (Matryoshka
groups: E outer, 2E inner); the tiered SAE has E parents with 2 children each, its defaults
otherwise (k parents and k children per input on average). Their k defaults to sae_k: the same number of top-k choices per
input as the hierarchical SAE's parents (each of which brings its winning child along). Pass
``--flat-k 2*sae_k`` to match decoder vectors used per input (L0) instead: with that slack a flat
SAE can spend two latents per feature and absorption largely disappears on this data.

The comparison's run directory holds its own ``run.json`` (kind ``toy-compare``) and one folder
per architecture and seed, ``ARCH-seedS/``: each a toy run of its own (``run.json`` of kind
``toy`` with that run's config), which ``sae-hacking toy --resume ARCH-seedS`` continues.
"""

from __future__ import annotations

import csv
import io
import math
import multiprocessing
import statistics
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

from sae_hacking.atomic import atomic_write, atomic_write_json, atomic_write_text
from sae_hacking.device import resolve_device
from sae_hacking.runs.options import RunDirOptions
from sae_hacking.runs.rundir import RunDir
from sae_hacking.toy.config import KIND as TOY_KIND
from sae_hacking.toy.config import ToyCompareConfig, ToyConfig

KIND = "toy-compare"
OUTPUTS = ("comparison.md", "comparison.csv", "comparison.json", "comparison.png")
ARCH_ORDER = ("topk", "hierarchical", "matryoshka", "tiered")
LABELS = {
    "topk": "flat TopK",
    "hierarchical": "hierarchical TopK",
    "matryoshka": "Matryoshka",
    "tiered": "tiered",
}
# Rows of the table, those of both data sources (a row no run has is left out): SAELens's own
# evaluation (`--data saelens`), then ours.
COLUMNS = (
    "saelens_mcc",
    "saelens_uniqueness",
    "saelens_f1_score",
    "saelens_precision",
    "saelens_recall",
    "feature_recovery_mean",
    "pair_detection_rate",
    "single_feature_detection_rate",
    "child_recovery_mean",
    "child_recovery_min",
    "parent_recovery_mean",
    "absorption_rate",
    "dead_parent_frac",
    "dead_child_frac",
    "dead_eval_frac",
    "l0",
    "fvu",
    "explained_variance",
)


def arch_config(base: ToyConfig, architecture: str, seed: int, flat_k: int) -> ToyConfig:
    E = base.sae_hidden_dim
    common = {"seed": seed, "plots": False, "handcode_sae": False, "run": RunDirOptions()}
    if architecture == "hierarchical":
        return replace(base, architecture="hierarchical", **common)
    if architecture == "tiered":  # E parents with 2 children each, k parents and k children
        return replace(base, architecture="tiered", aux_loss_coeff=0.0, **common)
    budget = 3 * E
    groups = (E, 2 * E) if architecture == "matryoshka" else None
    return replace(
        base,
        architecture=architecture,
        sae_hidden_dim=budget,
        sae_k=flat_k,
        matryoshka_groups=groups,
        aux_loss_coeff=0.0,
        **common,
    )


def _train_one(job: tuple[dict, str]) -> dict[str, float | int]:
    import torch

    from sae_hacking.toy.experiment import CHECKPOINT
    from sae_hacking.toy.experiment import OUTPUTS as TOY_OUTPUTS
    from sae_hacking.toy.train import ToyTrainer

    config_dict, run_dir = job
    torch.set_num_threads(1)
    config = ToyConfig.from_dict(config_dict)
    # A toy run as `sae-hacking toy` makes it, so `toy --resume` continues it; one that fails
    # before its first checkpoint leaves nothing.
    with RunDir.create(
        config,
        TOY_KIND,
        outputs=TOY_OUTPUTS,
        keep=lambda path: (path / CHECKPOINT).is_file(),
        output_dir=run_dir,
        resume=None,
    ) as rundir:
        return ToyTrainer(config, rundir.path, quiet=True).train()


def summarize(results: dict[str, list[dict[str, float | int]]]) -> dict[str, dict[str, tuple]]:
    """Per architecture and metric: (mean, std) over seeds; std is 0 for one seed."""
    table: dict[str, dict[str, tuple]] = {}
    for arch, runs in results.items():
        row = {}
        for col in COLUMNS:
            values = [r[col] for r in runs if col in r and not math.isnan(r[col])]
            if values:
                std = statistics.stdev(values) if len(values) > 1 else 0.0
                row[col] = (statistics.fmean(values), std)
        table[arch] = row
    return table


def present_columns(table: dict[str, dict[str, tuple]]) -> list[str]:
    return [c for c in COLUMNS if any(c in row for row in table.values())]


def markdown_table(table: dict[str, dict[str, tuple]]) -> str:
    lines = ["| metric | " + " | ".join(LABELS[a] for a in table) + " |"]
    lines.append("|---" * (len(table) + 1) + "|")
    for col in present_columns(table):
        cells = []
        for arch in table:
            cell = table[arch].get(col)
            cells.append("—" if cell is None else f"{cell[0]:.3f} ± {cell[1]:.3f}")
        lines.append(f"| {col} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_table(table: dict[str, dict[str, tuple]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["architecture", "metric", "mean", "std"])
    for arch, row in table.items():
        for col, (mean, std) in row.items():
            writer.writerow([arch, col, f"{mean:.6g}", f"{std:.6g}"])
    return buf.getvalue()


def comparison_plot(table: dict[str, dict[str, tuple]], path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure registry

    cols = [c for c in present_columns(table) if c not in ("l0",)]
    fig = Figure(figsize=(12, 4.5), layout="tight")
    ax = fig.subplots()
    width = 0.8 / len(table)
    for i, (arch, row) in enumerate(table.items()):
        xs = [j + (i - (len(table) - 1) / 2) * width for j in range(len(cols))]
        means = [row.get(c, (math.nan, 0))[0] for c in cols]
        stds = [row.get(c, (math.nan, 0))[1] for c in cols]
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=LABELS[arch])
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels([c.replace("_", "\n") for c in cols], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title("Hierarchical features: flat vs hierarchical vs Matryoshka vs tiered (mean ± std)")
    ax.legend()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=130, format="png"))


def run_comparison(config: ToyCompareConfig) -> dict:
    base = config.base
    seeds = list(config.seeds)
    flat_k = config.flat_k if config.flat_k is not None else base.sae_k
    configs = {
        (arch, seed): arch_config(base, arch, seed, flat_k) for arch in ARCH_ORDER for seed in seeds
    }
    resolve_device(base.device)
    # A failed start leaves no folder behind; one with finished runs in it is kept (no resume
    # of the comparison, but their metrics and SAEs are results, and each resumes as a toy run).
    with RunDir.create(
        config,
        KIND,
        f"toy-compare-E{base.sae_hidden_dim}",
        OUTPUTS,
        keep=lambda path: any(path.glob("*/metrics.json")),
        output_dir=base.run.output_dir,
        resume=None,
    ) as rundir:
        out_dir = rundir.path
        jobs = [(c.to_dict(), str(out_dir / f"{a}-seed{s}")) for (a, s), c in configs.items()]
        if config.jobs == 1:
            from tqdm import tqdm

            outputs = [_train_one(job) for job in tqdm(jobs, unit="run", disable=base.run.quiet)]
        else:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(config.jobs, mp_context=ctx) as pool:
                outputs = list(pool.map(_train_one, jobs))
    results: dict[str, list[dict[str, float | int]]] = {arch: [] for arch in ARCH_ORDER}
    for (arch, _seed), metrics in zip(configs, outputs, strict=True):
        results[arch].append(metrics)
    table = summarize(results)
    md = markdown_table(table)
    atomic_write_text(out_dir / "comparison.md", md)
    atomic_write_text(out_dir / "comparison.csv", csv_table(table))
    atomic_write_json(out_dir / "comparison.json", {"runs": results, "summary": table})
    comparison_plot(table, out_dir / "comparison.png")
    print(md)
    print(f"written to {out_dir}")
    return {"dir": out_dir, "summary": table, "runs": results}
