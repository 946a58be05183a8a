"""``cluster`` (the legacy ``gemma_cluster.py``): hierarchical clustering of latents on cosine
distances, written to a new run directory: ``clusters.csv`` (each latent's flat cluster when
the tree is cut into ``n_clusters``), ``cluster.html`` (a collapsible dendrogram,
:mod:`sae_hacking.reports.cluster`) and, last, ``cluster.json`` (``meta``, the linkage matrix,
leaf order, flat clusters, labels).

What is compared: with ``by`` effect, the mean effect rows of the latents an ablate run ablated
(:func:`~sae_hacking.absorption.tools.effects.dense_means`); with ``by`` decoder, one SAE's
``W_dec`` rows (the legacy script clustered Gemma Scope's 16k residual SAE at layer 20 this way,
with Euclidean complete linkage; here the distance is the cosine, the method ``linkage``).
A row of zero norm (a latent whose ablation moved nothing) has no cosine with anything: it is
left out and listed in ``meta.left_out``, as is a row holding a non-finite value.

Letters: N clustered latents, M compared dimensions (reader latents, or the model width),
P = N(N-1)/2 latent pairs.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float, Int

from sae_hacking.absorption.tools.configs import OUTPUTS, ClusterConfig
from sae_hacking.errors import FieldError

KIND = "cluster"
BLOCK_ROWS = 1024  # rows of unit vectors multiplied at a time (BLOCK_ROWS x N doubles)
BYTES_PER_PAIR = 16  # the condensed distances, and scipy's working copy of them
CSV_COLUMNS = ("latent", "cluster", "label")


@dataclass
class Tree:
    """A clustering: leaf ``i`` of ``merges`` (scipy's linkage matrix) is ``latents_N[i]``."""

    latents_N: Int[np.ndarray, " N"]
    merges: Float[np.ndarray, "N-1 4"]  # left, right, height (cosine distance), size
    leaves_N: Int[np.ndarray, " N"]  # leaf positions in dendrogram order
    clusters_N: Int[np.ndarray, " N"]  # flat cluster of each leaf, 1.. in dendrogram order


@dataclass
class Vectors:
    """What is clustered, before rows without a cosine are left out."""

    latents_N: Int[np.ndarray, " N"]
    vectors_NM: Float[np.ndarray, "N M"]
    settings: dict[str, Any]  # an ablate run's (or a synthesized) settings, for the labels
    inputs: dict[str, Any]  # for meta.inputs
    counts_N: Int[np.ndarray, " N"] | None = None  # ablations of each latent (by effect)


def cosine_distances(vectors_NM: Float[np.ndarray, "N M"]) -> Float[np.ndarray, " P"]:
    """``scipy.spatial.distance.pdist(vectors_NM, "cosine")`` (condensed: pairs i < j in row
    order), from blocked products of unit rows: BLAS on every core instead of scipy's one pair
    at a time, ~10x faster for 16k decoder rows. Every row needs a nonzero norm."""
    N = vectors_NM.shape[0]
    unit_NM = np.asarray(vectors_NM, dtype=np.float64)
    unit_NM = unit_NM / np.linalg.norm(unit_NM, axis=1, keepdims=True)
    out_P = np.empty(N * (N - 1) // 2)
    for start in range(0, N, BLOCK_ROWS):
        stop = min(N, start + BLOCK_ROWS)
        cos_BN = unit_NM[start:stop] @ unit_NM[start:].T
        for i in range(start, stop):
            first = i * N - i * (i + 1) // 2  # condensed position of pair (i, i + 1)
            out_P[first : first + N - 1 - i] = 1.0 - cos_BN[i - start, i - start + 1 :]
    # Rounding can put identical directions a hair below 0 (or opposite ones above 2).
    return np.clip(out_P, 0.0, 2.0, out=out_P)


def build_tree(
    latents_N: Int[np.ndarray, " N"], vectors_NM: Float[np.ndarray, "N M"], method: str,
    n_clusters: int,
) -> Tree:  # fmt: skip
    """The ``method`` linkage of the rows' cosine distances, its leaf order and its cut into at
    most ``n_clusters`` flat clusters (numbered by first appearance in leaf order)."""
    from scipy.cluster.hierarchy import fcluster, leaves_list, linkage

    distances_P = cosine_distances(vectors_NM)
    merges = linkage(distances_P, method=method)
    del distances_P
    leaves_N = leaves_list(merges)
    flat_N = fcluster(merges, n_clusters, "maxclust")
    renumber: dict[int, int] = {}
    for leaf in leaves_N:
        renumber.setdefault(int(flat_N[leaf]), len(renumber) + 1)
    clusters_N = np.array([renumber[int(c)] for c in flat_N], dtype=np.int64)
    return Tree(np.asarray(latents_N, dtype=np.int64), merges, leaves_N, clusters_N)


def run(config: ClusterConfig) -> Path:
    """Cluster, label and write the run directory; returns it."""
    from sae_hacking.runs.rundir import RunDir

    config.check_inputs()
    rundir = RunDir.plan(config, KIND, KIND, OUTPUTS[KIND])  # a bad folder is refused first
    got = _effect_vectors(config) if config.mode == "effect" else _decoder_vectors(config)
    norms_N = np.linalg.norm(got.vectors_NM, axis=1)
    finite_N = np.isfinite(norms_N)
    keep_N = finite_N & (norms_N > 0)
    if int(keep_N.sum()) < 2:
        raise FieldError(
            "input_path" if config.mode == "effect" else "sae_release",
            f"leaves {int(keep_N.sum())} latent(s) with a nonzero, finite "
            f"{'mean effect' if config.mode == 'effect' else 'decoder row'}; clustering needs "
            "at least two.",
        )
    vectors_NM = got.vectors_NM if keep_N.all() else got.vectors_NM[keep_N]  # no copy if all
    tree = build_tree(got.latents_N[keep_N], vectors_NM, config.linkage, config.n_clusters)
    del vectors_NM
    left_out = {
        "zero_norm": got.latents_N[finite_N & ~keep_N].tolist(),
        "non_finite": got.latents_N[~finite_N].tolist(),
    }
    labels = _labels(config, got)
    result = _result(config, got, tree, left_out, labels)
    from sae_hacking.atomic import atomic_write_json, atomic_write_text
    from sae_hacking.reports.cluster import write_page

    with rundir.started():  # nothing resumes: a failed write leaves nothing
        table = atomic_write_text(rundir.path / OUTPUTS[KIND][0], clusters_csv(result))
        page = write_page(rundir.path / OUTPUTS[KIND][1], result)
        last = atomic_write_json(rundir.path / OUTPUTS[KIND][2], result)
    print(
        f"clustered {len(tree.latents_N)} latents by {config.mode} ({config.linkage} linkage, "
        f"{int(tree.clusters_N.max())} flat clusters); wrote {table}, {page} and {last}"
    )
    return rundir.path


def _chosen(candidates: list[int], config: ClusterConfig, where: str) -> list[int]:
    """The first ``abridge`` of the candidate latents (sorted), refused when fewer than two or
    more than ``max_latents`` — before any distance is computed."""
    chosen = sorted(candidates)[: config.abridge] if config.abridge else sorted(candidates)
    if len(chosen) < 2:
        key = "latents" if config.latents is not None else "min_ablations"
        raise FieldError(
            key, f"leaves {len(chosen)} latent(s) of {where} to cluster; it needs at least two."
        )
    n = len(chosen)
    if n > config.max_latents:
        pairs = n * (n - 1) // 2
        raise FieldError(
            "max_latents",
            f"is {config.max_latents:,}, but clustering {n:,} latents of {where} needs their "
            f"{pairs:,} pairwise distances in memory (about "
            f"{pairs * BYTES_PER_PAIR / 2**30:.1f} GiB), so raise it if that fits or keep fewer "
            "latents (`abridge`, `latents`).",
        )
    return chosen


def _effect_vectors(config: ClusterConfig) -> Vectors:
    from sae_hacking.absorption.tools.effects import (
        dense_means,
        kept_rows,
        open_ablations,
        settings_of,
    )
    from sae_hacking.absorption.tools.labels import check_label_sources

    effects = open_ablations(config.input_path, "input_path", config.allow_partial)
    try:
        where = str(effects.file.path)
        check_label_sources(settings_of(effects), config.labels, ("ablator",))
        positions = kept_rows(effects, config.min_ablations, config.latents)
        chosen = _chosen(effects.latents_D[positions].tolist(), config, where)
        latents_D, counts_D, mean_DE = dense_means(
            effects, config.min_ablations, config.max_latents * effects.d_reader,
            "max_latents", "clustering", tuple(chosen),
        )  # fmt: skip
        settings = settings_of(effects)
        d_reader = effects.d_reader
    finally:
        effects.close()
    inputs = {
        "ablations": where,
        "model": settings.get("model"),
        "sae_release": settings.get("ablator_sae_release"),
        "sae_id": settings.get("ablator_sae_id"),
        "hook": settings.get("ablator_sae_hook"),
        "reader_sae_release": settings.get("reader_sae_release"),
        "reader_sae_id": settings.get("reader_sae_id"),
        "dimensions": d_reader,
    }
    return Vectors(latents_D.numpy(), mean_DE.double().numpy(), settings, inputs, counts_D.numpy())


def _decoder_vectors(config: ClusterConfig) -> Vectors:
    import torch

    sae = config.sae.load("cpu", "")
    where = f"the {sae.d_sae}-latent SAE {config.sae.release}"
    if config.latents is not None:
        outside = [i for i in config.latents if i >= sae.d_sae]
        if outside:
            raise FieldError("latents", f"has {outside[0]}, not a latent of {where}.")
    candidates = range(sae.d_sae) if config.latents is None else set(config.latents)
    chosen = _chosen(list(candidates), config, where)
    W_dec_NM = sae.W_dec.detach()[torch.tensor(chosen)].double().numpy()  # noqa: N806
    model = config.model or _registry_model(config)
    settings = {
        "model": model,
        "ablator_sae_release": config.sae.release,
        "ablator_sae_id": config.sae.sae_id,
        "ablator_sae_hook": sae.hook_name or config.sae.hook,
        "ablator_d_sae": sae.d_sae,
        "neuronpedia_id": sae.neuronpedia_id,
    }
    inputs = {
        "model": model,
        "sae_release": config.sae.release,
        "sae_id": config.sae.sae_id,
        "hook": settings["ablator_sae_hook"],
        "d_sae": sae.d_sae,
        "dimensions": int(W_dec_NM.shape[1]),
    }
    return Vectors(np.array(chosen, dtype=np.int64), W_dec_NM, settings, inputs)


# SAELens's registry names models as TransformerLens does; the tokenizer and unembedding come
# from the Hugging Face hub, where these families live under an organisation.
def _registry_model(config: ClusterConfig) -> str | None:
    """The hub id of the model the SAELens registry gives the release (``None`` for a local
    SAE: it then gets no logit-lens labels without ``model``)."""
    from sae_hacking.saes.releases import hub_model

    return hub_model(config.sae.release, config.sae.sae_id)


def _labels(config: ClusterConfig, got: Vectors):
    from sae_hacking.absorption.tools.labels import label_latents

    options = config.labels
    if not got.settings.get("model"):  # no model: no unembedding to read a logit lens from
        options = replace(options, no_logit_lens=True)
    return label_latents(got.settings, options, "ablator", got.latents_N.tolist())


def _result(config: ClusterConfig, got: Vectors, tree: Tree, left_out, labels) -> dict:
    from collections import Counter

    from sae_hacking.config import to_flat
    from sae_hacking.runs.files import provenance

    sources = Counter(labels[int(i)]["source"] for i in tree.latents_N)
    meta = {
        "kind": KIND,
        "settings": to_flat(config),
        "provenance": provenance(),
        "mode": config.mode,
        "inputs": got.inputs | {"neuronpedia_id": labels.np_id},
        "distance": "cosine",
        "linkage": config.linkage,
        "n_latents": len(tree.latents_N),
        "n_clusters": int(tree.clusters_N.max()),
        "left_out": left_out,
        "labels": {"how": labels.how, "sources": dict(sources)},
    }
    result = {
        "meta": meta,
        "latents": tree.latents_N.tolist(),
        "linkage": [[int(a), int(b), float(h), int(s)] for a, b, h, s in tree.merges.tolist()],
        "leaves": tree.leaves_N.tolist(),
        "clusters": tree.clusters_N.tolist(),
        "labels": labels.as_json(got.latents_N.tolist()),
    }
    if got.counts_N is not None:
        kept = set(tree.latents_N.tolist())
        result["ablation_counts"] = [
            int(c) for i, c in zip(got.latents_N.tolist(), got.counts_N, strict=True) if i in kept
        ]
    return result


def clusters_csv(result: dict) -> str:
    """``latent, cluster, label`` of every clustered latent, in dendrogram order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    latents, clusters = result["latents"], result["clusters"]
    for leaf in result["leaves"]:
        latent = latents[leaf]
        writer.writerow([latent, clusters[leaf], result["labels"][str(latent)]["text"]])
    return buffer.getvalue()
