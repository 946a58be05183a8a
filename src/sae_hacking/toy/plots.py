"""The toy experiment's figures (matplotlib, written once at the end of a run).

- ``feature_vs_feature_similarity.png``: cosine between the 2A true children (siblings adjacent);
- ``decoder_vs_feature.png``: cosine of every decoder vector with every true child (hierarchical:
  rows grouped per parent latent as parent, child 1, child 2, adjusted 1, adjusted 2);
- ``decoder_vs_feature_sorted.png``: the same with parent latents ordered by their best-matching
  parent feature, so a good SAE shows a block diagonal;
- ``latent_vs_latent_similarity.png``: cosine between effective decoder vectors;
- ``decoder_norms.png``: decoder row norms per parent latent (and its children), coloured by
  whether pair detection succeeded for it;
- ``training_curves.png``: the evaluation metrics over steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from matplotlib.figure import Figure  # no pyplot: no global backend or figure registry

from sae_hacking.data.toy import ToyDataset
from sae_hacking.saes.trainable import PARENT, TrainableSAE
from sae_hacking.toy.metrics import (
    cosine_matrix,
    effective_vectors,
    pair_success_E,
    parent_level_vectors,
)

DPI = 130


def _heatmap(matrix: torch.Tensor, path: Path, title: str, xlabel: str, ylabel: str, hlines=0):
    rows, cols = matrix.shape
    width = min(16.0, 3.0 + 0.12 * cols)
    height = min(24.0, 2.5 + 0.12 * rows)
    fig = Figure(figsize=(width, height), layout="tight")
    ax = fig.subplots()
    image = ax.imshow(
        matrix.cpu().numpy(), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto", interpolation="nearest"
    )
    for x in range(2, cols, 2):
        ax.axvline(x - 0.5, color="black", linewidth=0.3)
    if hlines:
        for y in range(hlines, rows, hlines):
            ax.axhline(y - 0.5, color="black", linewidth=0.6)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(image, ax=ax, fraction=0.03, label="cosine similarity")
    fig.savefig(path, dpi=DPI)


def decoder_rows(sae: TrainableSAE) -> tuple[torch.Tensor, int]:
    """Rows to show against the true features, and the group size for separator lines: per
    parent latent its decoder row, its children's rows and their effective vectors, when the
    SAE has children per parent latent."""
    C = sae.children_per_parent
    if not C:
        return sae.W_dec, 0
    E = sae.levels()[PARENT]
    W_dec_LM, features_LM = sae.W_dec, sae.feature_vectors()
    children_ECM = W_dec_LM[E:].view(E, C, -1)
    adjusted_ECM = features_LM[E:].view(E, C, -1)
    grouped = torch.cat([W_dec_LM[:E, None], children_ECM, adjusted_ECM], dim=1)
    return grouped.reshape(-1, sae.d_in), 1 + 2 * C


def _row_names(C: int) -> str:
    children = [f"child {j + 1}" for j in range(C)] + [f"adjusted {j + 1}" for j in range(C)]
    return " / ".join(["parent", *children])


@torch.no_grad()
def save_all_plots(
    sae: TrainableSAE, dataset: ToyDataset, out_dir: Path, metrics_jsonl: Path | None = None
):
    out_dir = Path(out_dir)
    truth = dataset.all_children_DM
    _heatmap(
        cosine_matrix(truth, truth),
        out_dir / "feature_vs_feature_similarity.png",
        "Cosine similarity between true child features",
        "child feature (siblings adjacent)",
        "child feature",
    )
    rows, group = decoder_rows(sae)
    ylabel = (
        f"decoder vectors: per parent latent, {_row_names(sae.children_per_parent)}"
        if group
        else "decoder vectors"
    )
    sims = cosine_matrix(rows, truth)
    _heatmap(
        sims,
        out_dir / "decoder_vs_feature.png",
        "Decoder vectors vs true child features",
        "true child feature (siblings adjacent)",
        ylabel,
        hlines=group,
    )
    match = cosine_matrix(parent_level_vectors(sae), dataset.parents_AM).argmax(-1)
    order = torch.argsort(match, stable=True)
    if group:
        sorted_rows = sims.view(-1, group, sims.shape[1])[order].reshape(-1, sims.shape[1])
    else:
        sorted_rows = sims[torch.argsort(sims.argmax(-1), stable=True)]
    _heatmap(
        sorted_rows,
        out_dir / "decoder_vs_feature_sorted.png",
        "Decoder vectors vs true features, sorted by matched feature",
        "true child feature (siblings adjacent)",
        ylabel,
        hlines=group,
    )
    eff = effective_vectors(sae)
    _heatmap(
        cosine_matrix(eff, eff),
        out_dir / "latent_vs_latent_similarity.png",
        "Cosine similarity between effective decoder vectors",
        "latent",
        "latent",
    )
    _decoder_norms(sae, dataset, out_dir / "decoder_norms.png")
    if metrics_jsonl is not None and Path(metrics_jsonl).is_file():
        _curves(Path(metrics_jsonl), out_dir / "training_curves.png")


@torch.no_grad()
def save_synthetic_plots(sae: TrainableSAE, data, out_dir: Path, metrics_jsonl: Path | None = None):
    """The plots that apply to SAELens's synthetic data (``data``: a
    :class:`~sae_hacking.data.synthetic.SyntheticData`): true features against each other and
    against the SAE's effective decoder vectors (sorted by best-matching feature), and the
    training curves."""
    out_dir = Path(out_dir)
    truth = data.features_FM.to(sae.W_dec.device)
    _heatmap(
        cosine_matrix(truth, truth),
        out_dir / "feature_vs_feature_similarity.png",
        "Cosine similarity between true features",
        "feature (SAELens order)",
        "feature",
    )
    sims = cosine_matrix(effective_vectors(sae), truth)
    _heatmap(
        sims[torch.argsort(sims.argmax(-1), stable=True)],
        out_dir / "decoder_vs_feature_sorted.png",
        "Effective decoder vectors vs true features, sorted by matched feature",
        "true feature",
        "effective decoder vector",
    )
    if metrics_jsonl is not None and Path(metrics_jsonl).is_file():
        _curves(Path(metrics_jsonl), out_dir / "training_curves.png")


def _decoder_norms(sae: TrainableSAE, dataset: ToyDataset, path: Path) -> None:
    fig = Figure(figsize=(max(6.0, 0.25 * sae.W_dec.shape[0] ** 0.9), 4), layout="tight")
    ax = fig.subplots()
    C = sae.children_per_parent
    if C:
        E = sae.levels()[PARENT]
        ok = pair_success_E(sae, dataset).cpu().tolist()
        e = torch.arange(E).numpy()
        colors = ["tab:green" if s else "tab:red" for s in ok]
        width = 0.75 / (C + 1)
        norms_L = sae.W_dec.norm(dim=-1)
        ax.bar(e - width * C / 2, norms_L[:E].cpu().numpy(), width, color=colors, label="parent")
        child_EC = norms_L[E:].view(E, C).cpu().numpy()
        for j in range(C):
            alpha = 0.6 - 0.25 * j / max(C - 1, 1)
            x = e + width * (j + 1 - C / 2)
            ax.bar(x, child_EC[:, j], width, color=colors, alpha=alpha, label=f"child {j + 1}")
        ax.set_title("Decoder norms per parent latent (green: pair detected, red: not)")
        ax.set_xlabel("parent latent")
        ax.legend()
    else:
        norms = sae.W_dec.norm(dim=-1).cpu().numpy()
        ax.bar(range(len(norms)), norms, color="tab:blue")
        ax.set_title("Decoder norms")
        ax.set_xlabel("latent")
    ax.set_ylabel("L2 norm")
    fig.savefig(path, dpi=DPI)


def _curves(metrics_jsonl: Path, path: Path) -> None:
    rows = (json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line)
    records = [r for r in rows if r.get("split", "eval") == "eval"]
    if not records:
        return
    keys = [
        k
        for k in (
            "fvu",
            "pair_detection_rate",
            "feature_recovery_mean",
            "child_recovery_mean",
            "absorption_rate",
            "dead_parent_frac",
            "dead_child_frac",
            "lr",
        )
        if k in records[0]
    ]
    fig = Figure(figsize=(3.2 * len(keys), 3), layout="tight")
    axes = fig.subplots(1, len(keys), squeeze=False)
    steps = [r["step"] for r in records]
    for ax, key in zip(axes[0], keys, strict=True):
        ax.plot(steps, [r[key] for r in records])
        ax.set_title(key)
        ax.set_xlabel("step")
        if key in ("fvu", "lr"):
            ax.set_yscale("log")
    fig.savefig(path, dpi=DPI)
