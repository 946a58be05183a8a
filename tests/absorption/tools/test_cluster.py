"""``sae-hacking cluster``: scipy's linkage of our cosine distances against a plain O(n^3)
agglomerative clustering written here, then the command end to end (by effect on synthetic and
real ablate runs, by decoder on a local SAE, the legacy script) and its refusals."""

import csv
import json
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch

from sae_hacking.absorption.tools import cluster
from tests.absorption.tools.cli_checks import refusal_checker, runner
from tests.absorption.tools.conftest import write_ablations

METHODS = ("average", "complete", "single", "weighted")


def cosine_matrix(vectors_NM) -> np.ndarray:
    x = np.asarray(vectors_NM, dtype=np.float64)
    norms = np.sqrt((x * x).sum(1))
    return 1.0 - (x @ x.T) / np.outer(norms, norms)


def naive_linkage(distance_NN: np.ndarray, method: str) -> list[tuple[frozenset, float]]:
    """Agglomerative clustering by its definition: repeatedly join the two closest clusters,
    where a cluster distance is the mean / max / min over member pairs (average / complete /
    single) or, for WPGMA (weighted), the mean of the two joined clusters' distances."""
    n = distance_NN.shape[0]
    active = {i: frozenset([i]) for i in range(n)}
    wpgma = {(i, j): distance_NN[i, j] for i in range(n) for j in range(n)}

    def between(a: int, b: int) -> float:
        if method == "weighted":
            return wpgma[(a, b)]
        values = [distance_NN[i, j] for i in active[a] for j in active[b]]
        return {"average": np.mean, "complete": max, "single": min}[method](values)

    merges = []
    next_id = n
    while len(active) > 1:
        ids = sorted(active)
        height, a, b = min((between(a, b), a, b) for a in ids for b in ids if a < b)
        for c in ids:
            if c not in (a, b):
                value = (wpgma[(a, c)] + wpgma[(b, c)]) / 2
                wpgma[(next_id, c)] = wpgma[(c, next_id)] = value
        active[next_id] = active.pop(a) | active.pop(b)
        merges.append((active[next_id], float(height)))
        next_id += 1
    return merges


def members(merges, n: int) -> list[frozenset]:
    """The leaves of each merge of a scipy linkage matrix."""
    sets = [frozenset([i]) for i in range(n)]
    for a, b, *_ in merges:
        sets.append(sets[int(a)] | sets[int(b)])
    return sets[n:]


def cut(reference: list[tuple[frozenset, float]], n: int, k: int) -> set[frozenset]:
    """The k groups left after the first n - k merges (heights distinct, so no ties)."""
    groups = {i: frozenset([i]) for i in range(n)}
    for merged, _ in reference[: n - k]:
        for leaf in merged:
            groups[leaf] = merged
    return set(groups.values())


def check_tree(tree_or_result, vectors_NM, method: str, n_clusters: int, atol=1e-9) -> None:
    """The tree (a Tree, or cluster.json's dict) is the plain clustering of ``vectors_NM``."""
    if isinstance(tree_or_result, dict):
        merges, leaves = tree_or_result["linkage"], tree_or_result["leaves"]
        clusters = tree_or_result["clusters"]
    else:
        merges = tree_or_result.merges.tolist()
        leaves, clusters = tree_or_result.leaves_N.tolist(), tree_or_result.clusters_N.tolist()
    n = len(vectors_NM)
    reference = naive_linkage(cosine_matrix(vectors_NM), method)
    assert members(merges, n) == [m for m, _ in reference]
    assert [row[2] for row in merges] == pytest.approx([h for _, h in reference], abs=atol)
    assert [row[3] for row in merges] == [len(m) for m, _ in reference]
    # Leaf order: a permutation in which every merged set is one contiguous run.
    assert sorted(leaves) == list(range(n))
    rank = {leaf: r for r, leaf in enumerate(leaves)}
    for merged, _ in reference:
        spots = sorted(rank[i] for i in merged)
        assert spots[-1] - spots[0] == len(spots) - 1
    # Flat clusters: the reference cut, numbered 1, 2, ... from the left of the leaf order.
    k = min(n_clusters, n)
    got = {}
    for leaf, c in enumerate(clusters):
        got.setdefault(c, set()).add(leaf)
    assert {frozenset(s) for s in got.values()} == cut(reference, n, k)
    in_order = [clusters[leaf] for leaf in leaves]
    assert in_order[0] == 1 and all(b - a in (0, 1) for a, b in pairwise(in_order))


def test_cosine_distances_are_pdists(monkeypatch):
    from scipy.spatial.distance import pdist, squareform

    monkeypatch.setattr(cluster, "BLOCK_ROWS", 4)  # several blocks, one ragged
    vectors_NM = np.random.default_rng(0).normal(size=(11, 7))
    vectors_NM[4] = 2.5 * vectors_NM[2]  # the same direction: distance 0, never below
    got = cluster.cosine_distances(vectors_NM.astype(np.float32))
    reference = cosine_matrix(vectors_NM)
    np.testing.assert_allclose(
        squareform(got, checks=False), reference - np.diag(np.diag(reference)), atol=1e-7
    )
    np.testing.assert_allclose(got, pdist(vectors_NM, "cosine"), atol=1e-7)
    assert got.min() >= 0 and got[cluster_pair(2, 4, 11)] == pytest.approx(0, abs=1e-7)


def cluster_pair(i: int, j: int, n: int) -> int:
    return n * i - i * (i + 1) // 2 + (j - i - 1)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", [0, 1])
def test_tree_matches_plain_clustering(method, seed):
    rng = np.random.default_rng(seed)
    n = 9 + 4 * seed
    vectors_NM = rng.normal(size=(n, 5))
    latents_N = np.sort(rng.choice(1000, n, replace=False))
    tree = cluster.build_tree(latents_N, vectors_NM, method, n_clusters=4)
    assert tree.latents_N.tolist() == latents_N.tolist()
    check_tree(tree, vectors_NM, method, 4)
    # More flat clusters than latents: every latent alone.
    assert sorted(cluster.build_tree(latents_N, vectors_NM, method, n + 5).clusters_N) == list(
        range(1, n + 1)
    )


run_cli = runner("cluster")
check_refused = refusal_checker(run_cli)


def read_run(folder: Path):
    result = json.loads((folder / "cluster.json").read_text())
    with open(folder / "clusters.csv", newline="", encoding="utf-8") as handle:  # "\r" in labels
        rows = list(csv.DictReader(handle))
    return result, rows


def check_csv(result, rows) -> None:
    """clusters.csv is cluster.json's latents in leaf order, with their clusters and labels."""
    latents = result["latents"]
    assert [int(r["latent"]) for r in rows] == [latents[i] for i in result["leaves"]]
    assert [int(r["cluster"]) for r in rows] == [result["clusters"][i] for i in result["leaves"]]
    assert [r["label"] for r in rows] == [result["labels"][r["latent"]]["text"] for r in rows]


def test_effect_mode_end_to_end(tmp_path, capsys):
    g = torch.Generator().manual_seed(3)
    latents_D = torch.tensor([40, 3, 17, 8, 29, 11, 5, 23, 36, 14])
    counts_D = torch.tensor([2, 1, 3, 2, 4, 1, 2, 3, 1, 2])
    sums_DE = torch.randn(10, 16, generator=g) * counts_D[:, None]
    sums_DE[6] = 0.0  # latent 5 moved nothing: no cosine, left out
    run = write_ablations(tmp_path / "ablate", latents_D, counts_D, sums_DE)
    mean_of = {int(i): (sums_DE[k] / counts_D[k]).double().numpy() for k, i in enumerate(latents_D)}

    out = tmp_path / "all"
    code, stdout, _ = run_cli(["--input-path", str(run), "--output-dir", str(out),
                               "--n-clusters", "3"], capsys)  # fmt: skip
    assert code == 0 and str(out / "cluster.json") in stdout
    result, rows = read_run(out)
    kept = sorted(set(mean_of) - {5})
    assert result["latents"] == kept
    assert result["meta"]["left_out"] == {"zero_norm": [5], "non_finite": []}
    assert result["meta"]["mode"] == "effect" and result["meta"]["kind"] == "cluster"
    check_tree(result, np.stack([mean_of[i] for i in kept]), "average", 3)
    counts = dict(zip(latents_D.tolist(), counts_D.tolist(), strict=True))
    assert result["ablation_counts"] == [counts[i] for i in kept]
    assert set(result["labels"]) == {str(i) for i in sorted(mean_of)}  # left out too
    check_csv(result, rows)
    assert {"cluster.html", "cluster.json", "clusters.csv"} <= {p.name for p in out.iterdir()}

    # min_ablations, latents and abridge choose the rows; complete linkage.
    out = tmp_path / "some"
    code, _, _ = run_cli(["--input-path", str(run), "--output-dir", str(out), "--min-ablations",
                          "2", "--latents", "5", "8", "14", "17", "23", "29", "40",
                          "--abridge", "5", "--linkage", "complete"], capsys)  # fmt: skip
    assert code == 0
    result, rows = read_run(out)
    # The first five chosen are 5, 8, 14, 17 and 23, of which 5 has no cosine.
    assert result["latents"] == [8, 14, 17, 23]
    assert result["meta"]["left_out"]["zero_norm"] == [5]
    check_tree(result, np.stack([mean_of[i] for i in result["latents"]]), "complete", 20)
    check_csv(result, rows)


@pytest.mark.slow
def test_effect_mode_on_a_real_ablate_run(tool_runs, tmp_path, capsys):
    from sae_hacking.runs.results import ResultsFile

    (path,) = [p for p in Path(tool_runs["ablate"]).glob("ablations.safetensors*")
               if not p.name.endswith(".json")]  # fmt: skip
    with ResultsFile(path) as file:
        latents_D = file.read("latents_D")
        mean_DE = file.read("effects_DE").double() / file.read("ablation_counts_D")[:, None]
    order = torch.argsort(latents_D)
    rows_DE = mean_DE[order].numpy()
    nonzero = np.linalg.norm(rows_DE, axis=1) > 0
    out = tmp_path / "cluster"
    code, _, _ = run_cli(["--input-path", str(tool_runs["ablate"]), "--output-dir", str(out),
                          "--ablator-evidence", str(tool_runs["cooc"])], capsys)  # fmt: skip
    assert code == 0
    result, rows = read_run(out)
    assert result["latents"] == latents_D[order][nonzero].tolist()
    assert result["meta"]["left_out"]["zero_norm"] == latents_D[order][~nonzero].tolist()
    # The tool divides in float32, as the ablate run stores the sums.
    check_tree(result, rows_DE[nonzero], "average", 20, atol=1e-6)
    sources = {label["source"] for label in result["labels"].values()}
    assert "evidence" in sources and any("evidence" in h for h in result["meta"]["labels"]["how"])
    check_csv(result, rows)
    assert result["meta"]["inputs"]["model"] == tool_runs["model"]


@pytest.mark.slow
def test_decoder_mode_on_a_local_sae(tool_runs, tmp_path, capsys):
    from sae_hacking.saes.releases import load_sae

    W_dec = load_sae(tool_runs["ablator"]).W_dec.detach().double().numpy()  # noqa: N806
    out = tmp_path / "decoder"
    code, _, _ = run_cli(["--by", "decoder", "--sae-release", tool_runs["ablator"], "--model",
                          tool_runs["model"], "--output-dir", str(out), "--n-clusters", "6",
                          "--linkage", "weighted"], capsys)  # fmt: skip
    assert code == 0
    result, rows = read_run(out)
    assert result["latents"] == list(range(W_dec.shape[0]))
    check_tree(result, W_dec, "weighted", 6)
    assert {label["source"] for label in result["labels"].values()} == {"logit lens"}
    assert all(label["text"].startswith("promotes ") for label in result["labels"].values())
    assert result["meta"]["mode"] == "decoder" and "ablation_counts" not in result
    check_csv(result, rows)


@pytest.mark.slow
def test_legacy_script(tool_runs, tmp_path):
    out = tmp_path / "legacy"
    done = subprocess.run(
        [sys.executable, "src/sae_hacking/gemma_cluster.py", "--abridge", "5", "--sae-release",
         tool_runs["ablator"], "--output-dir", str(out)],
        capture_output=True, text=True, cwd=Path(__file__).parents[3],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result, rows = read_run(out)
    assert result["latents"] == [0, 1, 2, 3, 4] and len(rows) == 5
    # A local SAE without --model: no unembedding, so no logit lens; nothing else to label by.
    assert {label["source"] for label in result["labels"].values()} == {"none"}


def test_refusals(synthetic_ablations, tmp_path, capsys):
    run, *_ = synthetic_ablations(12, 8)
    check_refused(["--input-path", str(run), "--max-latents", "5"], capsys, tmp_path,
                  "--max-latents", "12 latents", "GiB")  # fmt: skip
    check_refused(["--by", "effect"], capsys, tmp_path, "--by", "--input-path")
    bad = tmp_path / "notes.txt"
    bad.write_text("not an ablate run")
    check_refused(["--input-path", str(bad)], capsys, tmp_path, "--input-path")
    check_refused(["--input-path", str(tmp_path / "absent")], capsys, tmp_path, "--input-path")
    check_refused(["--input-path", str(run), "--latents", "99999"], capsys, tmp_path,
                  "--latents")  # fmt: skip


def test_too_few_rows_with_a_cosine(tmp_path, capsys):
    sums_DE = torch.zeros(3, 4)
    sums_DE[1, 2] = 1.0
    run = write_ablations(tmp_path / "ablate", torch.tensor([1, 2, 3]), torch.ones(3), sums_DE)
    check_refused(["--input-path", str(run)], capsys, tmp_path, "--input-path", "two")


@pytest.mark.slow
def test_decoder_refusals(tool_runs, tmp_path, capsys):
    sae = tool_runs["ablator"]
    check_refused(["--sae-release", sae, "--max-latents", "10"], capsys, tmp_path,
                  "--max-latents", "48 latents")  # fmt: skip
    check_refused(["--sae-release", sae, "--latents", "3", "48"], capsys, tmp_path,
                  "--latents", "48")  # fmt: skip


def test_a_model_is_refused_where_the_ablate_run_names_it(tmp_path, capsys):
    from sae_hacking.absorption.tools.configs import ClusterConfig
    from sae_hacking.config import from_flat
    from sae_hacking.errors import FieldError

    with pytest.raises(FieldError) as caught:
        from_flat(ClusterConfig, {"input_path": str(tmp_path), "model": "gpt2"})
    assert caught.value.field == "model"
    assert from_flat(ClusterConfig, {"by": "decoder", "model": "gpt2"}).mode == "decoder"
