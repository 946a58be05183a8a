"""`sae-hacking absorption-bench`: its settings, and a quick run end to end."""

from __future__ import annotations

import json
import math

import pytest

from sae_hacking.absorption.bench.config import BenchConfig
from sae_hacking.cli import main
from sae_hacking.config import from_flat
from sae_hacking.errors import FieldError


def test_presets_and_refused_settings():
    quick = BenchConfig(quick=True)
    assert quick.widths == (60,) and quick.architectures == ("topk", "hierarchical")
    assert BenchConfig().architectures == (
        "topk",
        "hierarchical",
        "matryoshka",
        "batchtopk",
        "relu",
        "tiered",
    )
    with pytest.raises(FieldError, match="widths.*multiple of 3"):
        BenchConfig(widths=(32,))
    # Through from_flat, as every interface builds it (the tests' type checker would refuse the
    # direct construction before the config's own check).
    with pytest.raises(FieldError, match="architectures.*jumprelu"):
        from_flat(BenchConfig, {"architectures": ["topk", "jumprelu"]})
    with pytest.raises(FieldError, match="k.*even"):
        BenchConfig(k=3)
    with pytest.raises(FieldError, match="seeds"):
        BenchConfig(seeds=())


def test_a_bad_flag_is_one_line_before_torch(capsys):
    assert main(["absorption-bench", "--widths", "31"]) == 2
    assert "--widths has 31" in capsys.readouterr().err


def numbers(value):
    """Every leaf of a JSON value."""
    if isinstance(value, dict):
        for v in value.values():
            yield from numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from numbers(v)
    else:
        yield value


@pytest.mark.slow
def test_a_quick_bench_runs_end_to_end(tmp_path):
    out = tmp_path / "bench"
    assert main(["absorption-bench", "--quick", "--seeds", "0", "--output-dir", str(out)]) == 0
    bench = json.loads((out / "bench.json").read_text())
    runs = {r["architecture"]: r for r in bench["runs"]}
    assert set(runs) == {"topk", "hierarchical"}
    assert all(r["probe_accuracy"] >= 0.99 for r in runs.values())
    assert runs["topk"]["absorption_rate"] > 0.1  # training produces absorption
    for run in runs.values():
        assert set(run["rankings"]) == {
            "effect_sign",
            "effect_raw",
            "decoder",
            "cooccurrence",
            "combined",
        }
        for score in run["rankings"].values():
            assert score["n_candidates"] > 0 and score["n_truth"] == run["n_absorption_pairs"]
        rules = run["rules"]
        for name in run["rankings"]:  # each rule keeps a superset of the one before
            kept = [rules[r][name]["n_candidates"] for r in ("never", "rare", "all")]
            assert kept == sorted(kept) and rules["rare"][name] == {
                k: run["rankings"][name][k] for k in rules["rare"][name]
            }
        returned = run["returned"]
        assert returned["pairs"] > 0 and 0 <= returned["truth"] <= run["n_absorption_pairs"]
    # What pairs returns with its defaults is the default rule's candidates with effect cosine > 0.
    folder = out / "seed0" / "topk-w60"
    every = json.loads((folder / "pairs-raw" / "pairs.json").read_text())["pairs"]
    rarer = [
        min(p["ablator1"]["activation_count"], p["ablator2"]["activation_count"]) for p in every
    ]
    expected = {
        (p["ablator1"]["id"], p["ablator2"]["id"])
        for p, r in zip(every, rarer, strict=True)
        if p["cosine_similarity"] > 0 and p["cooccurrence_count"] <= 0.5 * r
    }
    found = json.loads((folder / "pairs" / "pairs.json").read_text())["pairs"]
    assert {(p["ablator1"]["id"], p["ablator2"]["id"]) for p in found} == expected
    # Every cell of the tables is a number computed by the run (no placeholder).
    for entry in bench["table"]:
        for key in ("absorption_rate", "fvu", "l0"):
            assert all(math.isfinite(v) for v in entry[key])
    assert all(v is None or isinstance(v, (int, float, str)) for v in numbers(bench["table"]))
    table = (out / "bench.md").read_text()
    assert "| topk | 60 |" in table and "—" not in table.split("Average precision")[0]
    for name in ("world", "reader", "topk-w60", "hierarchical-w60"):
        assert (out / "seed0" / name).is_dir()
    assert (out / "seed0" / "topk-w60" / "pairs-sign" / "pairs.json").is_file()
    assert (out / "bench.html").is_file() and (out / "absorption_by_group.png").is_file()
