"""``effect-network``: the streamed edge selection against a plain flatten-and-sort reference,
the layout, and the command end to end (outputs, GraphML read back, labels, bad input, the
legacy script)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest
import torch

from sae_hacking.absorption.tools.effects import mean_blocks, open_ablations
from sae_hacking.absorption.tools.network import graph, layout, select_edges, xml_safe
from sae_hacking.cli import main
from tests.absorption.tools.conftest import write_ablations

OUTPUTS = ("edges.csv", "network.graphml", "network.html", "network.json")


def select_edges_reference(mean_DE, latents_D, n_edges):
    """``[(ablator, reader, mean effect)]``: every element flattened, the ``n_edges // 2``
    largest positive ones, then the rest most negative ones, ties by (ablator, reader)."""
    entries = [
        (float(mean_DE[d, r]), int(latents_D[d]), r)
        for d in range(mean_DE.shape[0])
        for r in range(mean_DE.shape[1])
    ]
    n_pos = n_edges // 2
    positive = sorted((-v, a, r) for v, a, r in entries if v > 0)[:n_pos]
    negative = sorted((v, a, r) for v, a, r in entries if v < 0)[: n_edges - n_pos]
    return [(a, r, -v) for v, a, r in positive] + [(a, r, v) for v, a, r in negative]


def _selected(folder, n_edges, rows_per_read=None, min_ablations=1, latents=None):
    effects = open_ablations(folder)
    try:
        blocks = mean_blocks(effects, min_ablations, latents, rows_per_read=rows_per_read)
        edges = select_edges(blocks, effects.d_reader, n_edges)
    finally:
        effects.close()
    triples = list(
        zip(edges.ablators_K.tolist(), edges.readers_K.tolist(), edges.values_K.tolist(),
            strict=True)
    )  # fmt: skip
    return edges, triples


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rows_per_read", [1, 3, 7, None])
@pytest.mark.parametrize("n_edges", [1, 2, 9, 40, 10_000])
def test_selection_equals_the_reference(synthetic_ablations, seed, rows_per_read, n_edges):
    # Values are multiples of 0.25 with many exact zeros: ties everywhere, across blocks.
    folder, latents_D, _, mean_DE = synthetic_ablations(D=13, E=17, seed=seed)
    edges, triples = _selected(folder, n_edges, rows_per_read)
    assert triples == select_edges_reference(mean_DE, latents_D, n_edges)
    assert edges.n_positive == int((mean_DE > 0).sum())
    assert edges.n_negative == int((mean_DE < 0).sum())
    assert edges.n_ablators == 13


def test_selection_with_min_ablations_and_latents(synthetic_ablations):
    folder, latents_D, counts_D, mean_DE = synthetic_ablations(D=20, E=9, seed=5)
    keep = counts_D >= 2
    _, triples = _selected(folder, 25, rows_per_read=2, min_ablations=2)
    assert triples == select_edges_reference(mean_DE[keep], latents_D[keep], 25)
    chosen = tuple(sorted(latents_D[keep].tolist())[:3])
    rows = torch.isin(latents_D, torch.tensor(chosen))
    _, triples = _selected(folder, 12, rows_per_read=1, min_ablations=2, latents=chosen)
    assert triples == select_edges_reference(mean_DE[rows], latents_D[rows], 12)


@pytest.mark.parametrize("rows_per_read", [1, 4, None])
def test_all_equal_effects_keep_the_smallest_ids(tmp_path, rows_per_read):
    # Every effect ties: the kept edges are decided by (ablator, reader) alone, whatever the
    # file's row order and block size.
    latents_D = torch.tensor([9, 2, 7, 4, 0])
    counts_D = torch.tensor([1, 2, 3, 1, 2])
    mean_DE = torch.full((5, 6), -0.5)
    mean_DE[:, :3] = 0.5
    folder = write_ablations(tmp_path / "a", latents_D, counts_D, mean_DE * counts_D[:, None])
    _, triples = _selected(folder, 8, rows_per_read)
    assert triples == select_edges_reference(mean_DE, latents_D, 8)
    assert [(a, r) for a, r, _ in triples[:4]] == [(0, 0), (0, 1), (0, 2), (2, 0)]


def test_too_few_effects_give_fewer_edges(tmp_path):
    mean_DE = torch.zeros(3, 4)
    mean_DE[1, 2] = 1.5
    folder = write_ablations(tmp_path / "a", torch.tensor([5, 1, 3]), torch.ones(3), mean_DE)
    edges, triples = _selected(folder, 10, rows_per_read=1)
    assert triples == [(1, 2, 1.5)] and (edges.n_positive, edges.n_negative) == (1, 0)


def _crossings(where, edges):
    count = 0
    for i, (a1, r1, _) in enumerate(edges):
        for a2, r2, _ in edges[i + 1 :]:
            da = where[f"A{a1}"][1] - where[f"A{a2}"][1]
            dr = where[f"R{r1}"][1] - where[f"R{r2}"][1]
            count += da * dr < 0
    return count


def test_layout_untangles_a_matching():
    # A perfect matching drawn in the worst order has n(n-1)/2 crossings; the barycentre
    # ordering removes all of them. Ablators left, readers right, everything deterministic.
    edges = [(a, 20 - a, 1.0 + a / 10) for a in range(10)]
    where = layout([a for a, _, _ in edges], [r for _, r, _ in edges], edges)
    assert _crossings(where, edges) == 0
    assert {x for n, (x, _) in where.items() if n[0] == "A"} == {0.0}
    assert len({x for n, (x, _) in where.items() if n[0] == "R"}) == 1
    assert where == layout([a for a, _, _ in edges], [r for _, r, _ in edges], edges)
    ys = sorted(y for _, y in where.values())
    assert ys[0] >= 0


def test_layout_spaces_the_shorter_column_within_the_longer():
    edges = [(0, r, 1.0) for r in range(12)] + [(1, r, -0.5) for r in range(10, 14)]
    where = layout([0, 1], list(range(14)), edges)
    readers = sorted(y for n, (_, y) in where.items() if n[0] == "R")
    ablators = [where["A0"][1], where["A1"][1]]
    assert readers[0] <= min(ablators) and max(ablators) <= readers[-1]
    assert abs(ablators[0] - ablators[1]) >= 16 - 1e-9


def test_graphml_holds_labels_with_control_characters(tmp_path):
    # Token strings can hold characters XML cannot; they are written as their escapes.
    label = 'promotes \u201c\x11\u201d, <b>&amp;</b> \x00 "q"\ttab\r\nline'
    doc = {
        "nodes": [
            {"id": "A1", "kind": "ablator", "index": 1, "label": label, "source": "logit lens",
             "url": None, "degree": 1, "x": 0.0, "y": 0.0},
            {"id": "R2", "kind": "reader", "index": 2, "label": "", "source": "none",
             "url": "https://www.neuronpedia.org/x/z/2", "degree": 1, "x": 360.0, "y": 0.0},
        ],
        "edges": [{"source": "A1", "target": "R2", "weight": -0.1, "abs_weight": 0.1, "sign": -1}],
    }  # fmt: skip
    nx.write_graphml(graph(doc), tmp_path / "g.graphml")
    g = nx.read_graphml(tmp_path / "g.graphml")
    assert (
        g.nodes["A1"]["label"] == 'promotes \u201c\\x11\u201d, <b>&amp;</b> \\x00 "q"\ttab\\r\nline'
    )
    assert g.nodes["A1"]["url"] == "" and g.nodes["R2"]["url"].endswith("/x/z/2")
    assert g.edges["A1", "R2"]["weight"] == -0.1 and g.edges["A1", "R2"]["sign"] == -1


def _run(args, capsys):
    code = main(["effect-network", *args])
    out = capsys.readouterr()
    return code, out


def _check_outputs(out_dir: Path, n_edges: int) -> dict:
    for name in OUTPUTS:
        assert (out_dir / name).is_file(), name
    doc = json.loads((out_dir / "network.json").read_text())
    assert doc["meta"]["kind"] == "effect-network" and len(doc["edges"]) <= n_edges
    g = nx.read_graphml(out_dir / "network.graphml")
    assert g.is_directed()
    read_back = sorted(
        (u, v, d["weight"], d["abs_weight"], d["sign"]) for u, v, d in g.edges(data=True)
    )
    assert read_back == sorted(
        (e["source"], e["target"], e["weight"], e["abs_weight"], e["sign"]) for e in doc["edges"]
    )
    for n in doc["nodes"]:
        attrs = g.nodes[n["id"]]
        assert (attrs["label"], attrs["kind"], attrs["url"]) == (
            xml_safe(n["label"]),
            n["kind"],
            n["url"] or "",
        )
        assert n["degree"] == sum(n["id"] in (e["source"], e["target"]) for e in doc["edges"])
    with open(out_dir / "edges.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["ablator", "reader", "mean_effect", "ablator_label", "reader_label"]
    label = {n["id"]: n["label"] for n in doc["nodes"]}
    assert rows[1:] == [
        [str(e["ablator"]), str(e["reader"]), repr(e["weight"]), label[e["source"]],
         label[e["target"]]]
        for e in doc["edges"]
    ]  # fmt: skip
    return doc


@pytest.mark.slow
def test_command_on_real_runs(tool_runs, tmp_path, capsys):
    out_dir = tmp_path / "net"
    code, out = _run(["--input-path", str(tool_runs["ablate"]), "--n-edges", "30",
                      "--output-dir", str(out_dir)], capsys)  # fmt: skip
    assert code == 0, out.err
    assert "wrote" in out.out and str(out_dir / "network.json") in out.out
    doc = _check_outputs(out_dir, 30)
    # The edges are the reference's over the run's dense mean effects.
    effects = open_ablations(tool_runs["ablate"])
    try:
        mean_DE = effects.rows(torch.arange(effects.latents_D.numel()))
        latents_D = effects.latents_D
    finally:
        effects.close()
    expected = select_edges_reference(mean_DE, latents_D, 30)
    assert [(e["ablator"], e["reader"], e["weight"]) for e in doc["edges"]] == expected
    # Every node is labelled: no explanations offline, so by the logit lens.
    assert all(n["label"] and n["source"] == "logit lens" for n in doc["nodes"])
    assert doc["meta"]["labels"]["ablator"] and doc["meta"]["labels"]["reader"]

    out_dir = tmp_path / "evidence"
    code, out = _run(["--input-path", str(tool_runs["ablate"]), "--n-edges", "30",
                      "--ablator-evidence", str(tool_runs["cooc"]),
                      "--reader-evidence", str(tool_runs["reader_evidence"]),
                      "--output-dir", str(out_dir)], capsys)  # fmt: skip
    assert code == 0, out.err
    doc = _check_outputs(out_dir, 30)
    # Every latent drawn fired in its evidence run, so none falls back to the logit lens.
    assert {n["source"] for n in doc["nodes"]} == {"evidence"}
    assert {n["kind"] for n in doc["nodes"]} == {"ablator", "reader"}
    assert all(n["label"].startswith("fires on") for n in doc["nodes"])
    assert any("evidence of" in line for line in doc["meta"]["labels"]["reader"])

    # A real run of another kind is no ablate run: one line, exit 2, no folder.
    out_dir = tmp_path / "wrong"
    code, out = _run(["--input-path", str(tool_runs["cooc"]), "--output-dir", str(out_dir)],
                     capsys)  # fmt: skip
    assert code == 2 and len(out.err.strip().splitlines()) == 1
    assert out.err.startswith("error: --input-path") and not out_dir.exists()


@pytest.mark.parametrize("which", ["n_edges", "not_ablate"])
def test_bad_input_exits_2_with_one_line_and_no_folder(
    synthetic_ablations, tmp_path, capsys, which
):
    folder, *_ = synthetic_ablations(D=4, E=5)
    if which == "n_edges":
        args = ["--input-path", str(folder), "--n-edges", "0"]
    else:  # a folder that is no ablate run
        other = tmp_path / "other"
        other.mkdir()
        (other / "run.json").write_text(json.dumps({"kind": "latents", "results_name": "latents"}))
        args = ["--input-path", str(other)]
    out_dir = tmp_path / "out"
    code, out = _run([*args, "--no-logit-lens", "--output-dir", str(out_dir)], capsys)
    assert code == 2
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert ("--n-edges" if which == "n_edges" else "--input-path") in lines[0]
    assert not out_dir.exists()


def test_min_ablations_leaving_nothing_is_refused(synthetic_ablations, tmp_path, capsys):
    folder, *_ = synthetic_ablations(D=4, E=5)
    out_dir = tmp_path / "out"
    code, out = _run(["--input-path", str(folder), "--min-ablations", "99", "--no-logit-lens",
                      "--output-dir", str(out_dir)], capsys)  # fmt: skip
    assert code == 2 and out.err.startswith("error: --min-ablations") and not out_dir.exists()


@pytest.mark.slow
def test_legacy_script(tool_runs, tmp_path):
    out_dir = tmp_path / "legacy"
    done = subprocess.run(
        [sys.executable, "src/sae_hacking/gemma_graph.py", "--input-path",
         str(tool_runs["ablate"]), "--ablator-sae-neuronpedia-id", "x/y",
         "--reader-sae-neuronpedia-id", "x/z", "--n-edges", "10", "--output-dir", str(out_dir)],
        capture_output=True, text=True, cwd=Path(__file__).parents[3], timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = _check_outputs(out_dir, 10)
    assert len(doc["edges"]) == 10
    for n in doc["nodes"]:
        side = "y" if n["kind"] == "ablator" else "z"
        assert n["url"] == f"https://www.neuronpedia.org/x/{side}/{n['index']}"
    assert doc["meta"]["inputs"]["ablator_neuronpedia_id"] == "x/y"
