"""The ``effect-network`` run (legacy ``gemma_graph.py`` / ``graph_network.py``): the bipartite
graph of ablator latents ``A{i}`` and reader latents ``R{j}`` joined by the strongest mean
ablation effects of an ``ablate`` run, written as ``edges.csv``, ``network.graphml``,
``network.html`` and, last, ``network.json``.

Selection (:func:`select_edges`) is exact and streamed: the ``n_edges // 2`` largest strictly
positive mean effects and the ``n_edges - n_edges // 2`` most negative ones, kept as running
top sets while the effect rows stream from the file, so memory is one block plus the kept
edges, never the ablated x reader matrix. Ties are broken explicitly, not by ``torch.topk``'s
unspecified order: among equal values the smaller ``(ablator, reader)`` comes first, so the
output does not depend on the file's row order or on the block size. Zero and NaN effects are
never edges.

Layout (:func:`layout`): two columns, ablators left and readers right, which keeps the
direction of an edge readable (a spring layout of a bipartite graph mixes both kinds). Each
column is ordered by the |weight|-weighted barycentre of its neighbours in the other column,
a few alternating sweeps (Sugiyama's crossing reduction), and the shorter column is then
moved next to its neighbours. It is deterministic: ties keep the previous order, then index.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int

from sae_hacking.absorption.tools.configs import OUTPUTS, NetworkConfig

KIND = "effect-network"
SPACING = 16.0  # layout units between neighbouring nodes of the longer column
SWEEPS = 4  # barycentre sweeps of each column
CSV_COLUMNS = ("ablator", "reader", "mean_effect", "ablator_label", "reader_label")
LAYOUT = (
    "two columns (ablators left, readers right), each ordered by the |weight|-weighted "
    f"barycentre of its neighbours ({SWEEPS} sweeps)"
)


@dataclass
class Edges:
    """The selected edges, positive ones first (largest first), then negative ones (most
    negative first); ties by ``(ablator, reader)`` ascending. ``n_*``: what was read."""

    values_K: Float[torch.Tensor, " K"]
    ablators_K: Int[torch.Tensor, " K"]
    readers_K: Int[torch.Tensor, " K"]
    n_positive: int  # strictly positive mean effects among all read
    n_negative: int
    n_ablators: int  # ablated latents read

    def __len__(self) -> int:
        return int(self.values_K.numel())


def _best(values_N: Float[torch.Tensor, " N"], keys_N: Int[torch.Tensor, " N"], k: int):
    """Positions of the ``k`` largest ``values_N``, largest first, equal values by ``keys_N``
    ascending."""
    if values_N.numel() > k:
        # topk only finds the k-th value; every element tying with it stays a candidate, so
        # which of the tied ones survive is decided by the key below, not by topk.
        kth = torch.topk(values_N, k, sorted=False).values.min()
        candidates = torch.nonzero(values_N >= kth).squeeze(1)
    else:
        candidates = torch.arange(values_N.numel())
    candidates = candidates[torch.argsort(keys_N[candidates], stable=True)]
    by_value = torch.argsort(values_N[candidates], descending=True, stable=True)
    return candidates[by_value][:k]


class _Running:
    """The running top ``k`` of (value, key), sorted as :func:`_best` orders them."""

    def __init__(self, k: int):
        self.k = k
        self.values = torch.empty(0)
        self.keys = torch.empty(0, dtype=torch.long)

    def candidates(self, mean_RE, nonzero_RE, sign: float):
        """Where ``sign * mean_RE`` (``nonzero_RE``: where it is > 0) could still enter: at
        least the running ``k``-th value once there are ``k`` (a tie may win on its key)."""
        if self.k == 0:
            return torch.zeros_like(nonzero_RE)
        if self.values.numel() < self.k:
            return nonzero_RE
        floor = float(self.values[-1])
        return mean_RE >= floor if sign > 0 else mean_RE <= -floor

    def merge(self, values_N: torch.Tensor, keys_N: torch.Tensor) -> None:
        if self.k == 0 or values_N.numel() == 0:
            return
        values = torch.cat([self.values, values_N])
        keys = torch.cat([self.keys, keys_N])
        best = _best(values, keys, self.k)
        self.values, self.keys = values[best], keys[best]


def select_edges(blocks, d_reader: int, n_edges: int) -> Edges:
    """The strongest edges of the ``(latents_R, mean_RE)`` ``blocks`` (as
    :func:`~sae_hacking.absorption.tools.effects.mean_blocks` yields them): see the module
    docstring. Fewer edges when there are fewer nonzero effects."""
    E = d_reader
    n_pos = n_edges // 2
    sides = (_Running(n_pos), _Running(n_edges - n_pos))  # positive, then negated negative
    counts = [0, 0]
    n_ablators = 0
    columns_E = torch.arange(E)
    for latents_R, mean_RE in blocks:
        n_ablators += int(latents_R.numel())
        positive_RE, negative_RE = mean_RE > 0, mean_RE < 0  # NaN and zero are never edges
        counts[0] += int(torch.count_nonzero(positive_RE))
        counts[1] += int(torch.count_nonzero(negative_RE))
        # Only what can still enter a running set is gathered, both sides in one pass.
        wanted_RE = sides[0].candidates(mean_RE, positive_RE, 1.0) | sides[1].candidates(
            mean_RE, negative_RE, -1.0
        )
        rows, cols = torch.nonzero(wanted_RE, as_tuple=True)
        values = mean_RE[rows, cols]
        keys = latents_R.long()[rows] * E + columns_E[cols]
        up = values > 0
        sides[0].merge(values[up], keys[up])
        sides[1].merge(-values[~up], keys[~up])
    keys_K = torch.cat([sides[0].keys, sides[1].keys])
    return Edges(
        values_K=torch.cat([sides[0].values, -sides[1].values]),
        ablators_K=keys_K // max(E, 1),
        readers_K=keys_K % max(E, 1),
        n_positive=counts[0],
        n_negative=counts[1],
        n_ablators=n_ablators,
    )


def layout(ablators: list[int], readers: list[int], edges: list[tuple[int, int, float]]):
    """``{node id: (x, y)}`` of the two-column layout (module docstring)."""
    sides = {"A": sorted(set(ablators)), "R": sorted(set(readers))}
    neighbours: dict[str, list[tuple[str, float]]] = {}
    strength: dict[str, float] = {}
    for a, r, w in edges:
        neighbours.setdefault(f"A{a}", []).append((f"R{r}", abs(w)))
        neighbours.setdefault(f"R{r}", []).append((f"A{a}", abs(w)))
        for node in (f"A{a}", f"R{r}"):
            strength[node] = strength.get(node, 0.0) + abs(w)
    # Start from the strongest nodes on top, so the sweeps begin from a meaningful order.
    order = {
        kind: sorted((f"{kind}{i}" for i in ids), key=lambda n: (-strength.get(n, 0.0), int(n[1:])))
        for kind, ids in sides.items()
    }
    rank = {kind: _ranks(nodes) for kind, nodes in order.items()}
    short, long = ("A", "R") if len(order["A"]) <= len(order["R"]) else ("R", "A")
    for _ in range(SWEEPS):
        for kind, other in ((long, short), (short, long)):  # the shorter column last
            where = rank[other]
            centre = {n: _barycentre(neighbours.get(n, []), where, rank[kind][n])
                      for n in order[kind]}  # fmt: skip
            order[kind].sort(key=lambda n, c=centre, r=rank[kind]: (c[n], r[n]))
            rank[kind] = _ranks(order[kind])
    n_long = len(order[long])
    height = SPACING * max(n_long - 1, 1)
    y = {n: i * SPACING for i, n in enumerate(order[long])}
    y.update(_near_neighbours(order[short], neighbours, y, height))
    width = max(480.0, min(height * 0.3, 2400.0))  # a tall graph gets wider to fit a screen
    return {n: (0.0 if n[0] == "A" else width, y[n]) for n in y}


def _ranks(nodes: list[str]) -> dict[str, float]:
    """Positions along a column scaled to [0, 1], so columns of any length compare."""
    n = len(nodes)
    return {node: (i / (n - 1) if n > 1 else 0.5) for i, node in enumerate(nodes)}


def _barycentre(links: list[tuple[str, float]], where: dict[str, float], default: float):
    total = sum(w for _, w in links)
    if not links or total <= 0:
        return default
    return sum(where[n] * w for n, w in links) / total


def _near_neighbours(nodes, neighbours, y, height) -> dict[str, float]:
    """y of the shorter column's ``nodes`` (in order): each at the weighted mean y of its
    neighbours, pushed apart to :data:`SPACING` and kept within ``[0, height]``."""
    placed = []
    for i, n in enumerate(nodes):
        wanted = _barycentre(neighbours.get(n, []), y, i * SPACING)
        placed.append(max(wanted, placed[-1] + SPACING) if placed else max(wanted, 0.0))
    for i in range(len(placed) - 1, -1, -1):
        upper = height if i == len(placed) - 1 else placed[i + 1] - SPACING
        placed[i] = min(placed[i], upper)
    return dict(zip(nodes, placed, strict=True))


def build(config: NetworkConfig) -> dict[str, Any]:
    """The network.json document of ``config`` (nothing is written)."""
    from sae_hacking.absorption.tools.effects import (
        mean_blocks,
        open_ablations,
        require_kept,
        settings_of,
    )
    from sae_hacking.absorption.tools.labels import check_label_sources, label_latents
    from sae_hacking.config import to_flat
    from sae_hacking.runs.files import provenance

    effects = open_ablations(config.input_path, "input_path", config.allow_partial)
    try:
        require_kept(effects, config.min_ablations, config.latents)
        check_label_sources(settings_of(effects), config.labels)
        blocks = mean_blocks(effects, config.min_ablations, config.latents)
        edges = select_edges(blocks, effects.d_reader, config.n_edges)
        settings, path, E = settings_of(effects), str(effects.file.path), effects.d_reader
    finally:
        effects.close()
    triples = list(
        zip(edges.ablators_K.tolist(), edges.readers_K.tolist(), edges.values_K.tolist(),
            strict=True)
    )  # fmt: skip
    labels = {
        "ablator": label_latents(settings, config.labels, "ablator", [a for a, _, _ in triples]),
        "reader": label_latents(settings, config.labels, "reader", [r for _, r, _ in triples]),
    }
    nodes = _nodes(triples, labels)
    meta = {
        "kind": KIND,
        "settings": to_flat(config),
        "provenance": provenance(),
        "inputs": {
            "ablations": path,
            "model": settings.get("model"),
            **{
                f"{side}_{key}": settings.get(f"{side}_{key}")
                for side in ("ablator", "reader")
                for key in ("sae_release", "sae_id", "sae_hook")
            },
            "ablator_neuronpedia_id": labels["ablator"].np_id,
            "reader_neuronpedia_id": labels["reader"].np_id,
        },  # fmt: skip
        "d_reader": E,
        "n_ablators_read": edges.n_ablators,
        "n_positive_effects": edges.n_positive,
        "n_negative_effects": edges.n_negative,
        "n_edges": len(triples),
        "n_positive_edges": sum(w > 0 for _, _, w in triples),
        "n_negative_edges": sum(w < 0 for _, _, w in triples),
        "n_ablator_nodes": sum(n["kind"] == "ablator" for n in nodes),
        "n_reader_nodes": sum(n["kind"] == "reader" for n in nodes),
        "labels": {side: labels[side].how for side in labels},
        "layout": LAYOUT,
        "tie_break": "equal mean effects: (ablator, reader) ascending",
    }
    return {"meta": meta, "nodes": nodes, "edges": [_edge(a, r, w) for a, r, w in triples]}


def _edge(a: int, r: int, w: float) -> dict[str, Any]:
    return {"source": f"A{a}", "target": f"R{r}", "ablator": a, "reader": r, "weight": w,
            "abs_weight": abs(w), "sign": 1 if w > 0 else -1}  # fmt: skip


def _nodes(triples, labels) -> list[dict[str, Any]]:
    degree: dict[str, int] = {}
    for a, r, _ in triples:
        degree[f"A{a}"] = degree.get(f"A{a}", 0) + 1
        degree[f"R{r}"] = degree.get(f"R{r}", 0) + 1
    where = layout([a for a, _, _ in triples], [r for _, r, _ in triples], triples)
    nodes = []
    for node_id in sorted(where, key=lambda n: (n[0], int(n[1:]))):
        side = "ablator" if node_id[0] == "A" else "reader"
        label = labels[side][int(node_id[1:])]
        x, y = where[node_id]
        nodes.append({"id": node_id, "kind": side, "index": int(node_id[1:]),
                      "label": label["text"], "source": label["source"], "url": label["url"],
                      "degree": degree[node_id], "x": round(x, 2), "y": round(y, 2)})  # fmt: skip
    return nodes


# Characters XML 1.0 cannot hold, even escaped, and \r (a parser reads it back as \n); token
# strings (labels) can contain them.
_NOT_XML = re.compile("[\x00-\x08\x0b-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(text: str) -> str:
    """``text`` with each character XML cannot hold written as its escape (``\\x11``)."""
    return _NOT_XML.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)


def graph(doc: dict[str, Any]):
    """The networkx DiGraph of a network.json document. GraphML holds no nulls (a missing url
    is "") and no control characters (labels through :func:`xml_safe`)."""
    import networkx as nx

    g = nx.DiGraph()
    for n in doc["nodes"]:
        g.add_node(n["id"], label=xml_safe(n["label"]), source=n["source"], url=n["url"] or "",
                   kind=n["kind"], index=n["index"], degree=n["degree"], x=n["x"], y=n["y"])  # fmt: skip
    for e in doc["edges"]:
        g.add_edge(e["source"], e["target"], weight=e["weight"], abs_weight=e["abs_weight"],
                   sign=e["sign"])  # fmt: skip
    return g


def edges_csv(doc: dict[str, Any]) -> str:
    text = {n["id"]: n["label"] for n in doc["nodes"]}
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for e in doc["edges"]:
        writer.writerow([e["ablator"], e["reader"], e["weight"], text[e["source"]],
                         text[e["target"]]])  # fmt: skip
    return buffer.getvalue()


def run(config: NetworkConfig) -> Path:
    """Select the edges, label them and write the run directory; returns its path."""
    import networkx as nx

    from sae_hacking.atomic import atomic_write, atomic_write_json, atomic_write_text
    from sae_hacking.reports.network import write_page
    from sae_hacking.runs.rundir import RunDir

    config.check_inputs()
    rundir = RunDir.plan(config, KIND, KIND, OUTPUTS[KIND])  # a bad folder is refused first
    doc = build(config)
    with rundir.started():
        out = rundir.path
        atomic_write_text(out / "edges.csv", edges_csv(doc))
        g = graph(doc)
        atomic_write(out / "network.graphml", lambda tmp: nx.write_graphml(g, str(tmp)))
        page = write_page(out, doc)
        atomic_write_json(out / "network.json", doc)
    meta = doc["meta"]
    print(
        f"{meta['n_edges']} edges ({meta['n_positive_edges']} positive, "
        f"{meta['n_negative_edges']} negative) between {meta['n_ablator_nodes']} ablator and "
        f"{meta['n_reader_nodes']} reader latents; wrote {out / 'network.json'} and {page}"
    )
    return rundir.path
