"""``sae-hacking pairs`` on real (tiny) co-occurrence and ablation runs: the legacy command line,
the outputs, the semantics (only ablated latents, mean effects, the filters) and bad input."""

import csv
import json
import re

import pytest

from sae_hacking.cli import main
from sae_hacking.errors import EXIT_USAGE

pytestmark = pytest.mark.slow  # real runs of three commands first (about 10 s)

ABLATOR, READER = "blocks.1.hook_mlp_out", "blocks.2.hook_resid_post"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_path, random_sae_path, prompts_path):
    root = tmp_path_factory.mktemp("pairs")
    common = [
        "--model", str(tiny_model_path("gemma2", 3)), "--device", "cpu", "--quiet",
        "--ablator-sae-release", str(random_sae_path(ABLATOR, 48, seed=5, kind="topk", k=2)),
        "--dataset-id", str(prompts_path(30, seed=4)), "--max-tokens", "16", "--n-prompts", "30",
    ]  # fmt: skip
    assert main(["cooccurrences", *common, "--output-dir", str(root / "cooc")]) == 0
    reader = str(random_sae_path(READER, 40, seed=6))
    ablate = [*common, "--reader-sae-release", reader, "--abridge-ablations-to", "12"]
    assert main(["ablate", *ablate, "--output-dir", str(root / "ablate")]) == 0
    other = ["--ablator-sae-release", str(random_sae_path(ABLATOR, 48, seed=9, kind="topk", k=2))]
    assert main(["cooccurrences", *common, *other, "--output-dir", str(root / "other")]) == 0
    return root


def pairs(runs, out, *extra):
    return main(
        [
            "pairs", "--input-path", str(runs / "ablate" / "ablations.safetensors.zst"),
            "--cooccurrence-path", str(runs / "cooc" / "cooccurrences.safetensors"),
            "--output-dir", str(out), "--device", "cpu", *extra,
        ]
    )  # fmt: skip


def test_the_legacy_command_line_writes_every_output(runs, tmp_path, capsys):
    out = tmp_path / "pairs"
    assert (
        pairs(runs, out, "--cosine-sim-threshold", "-0.2", "--ablator-sae-neuronpedia-id", "x/y")
        == 0
    )
    for name in (
        "pairs.json",
        "pairs.csv",
        "histogram.png",
        "effect_vs_decoder.png",
        "report.html",
        "run.json",
    ):
        assert (out / name).is_file(), name
    err = capsys.readouterr().err
    assert "warning: no Neuronpedia explanations" in err and "--explanations-file" in err
    result = json.loads((out / "pairs.json").read_text())
    meta, found = result["meta"], result["pairs"]
    assert found and meta["n_pairs_kept"] == len(found) <= meta["n_pairs_passing"]
    assert sum(meta["histogram"]["counts"]) == meta["n_pairs_passing"]
    with (runs / "ablate" / "ablations.json").open() as handle:
        ablated = json.load(handle)
    # The defaults: raw effects, pairs that fire together on at most half the rarer one's tokens.
    assert meta["inputs"]["hook"] == ABLATOR and meta["compare"] == "raw"
    assert any(p["cooccurrence_count"] > 0 for p in found)
    for p in found:
        a, b = p["ablator1"], p["ablator2"]
        rarer = min(a["activation_count"], b["activation_count"])
        assert a["id"] < b["id"] and p["cooccurrence_count"] <= 0.5 * rarer
        assert p["cosine_similarity"] >= -0.2 and -1.0 <= p["decoder_cosine"] <= 1.0
        assert a["ablation_count"] >= 1 and b["ablation_count"] >= 1
        assert a["url"] == f"https://www.neuronpedia.org/x/y/{a['id']}"
        assert p["expected_cooccurrence"] == pytest.approx(
            a["activation_count"] * b["activation_count"] / meta["inputs"]["tokens"]
        )
    cosines = [p["cosine_similarity"] for p in found]
    assert cosines == sorted(cosines, reverse=True)
    assert ablated["tensors"]["latents_D"]["shape"][0] == meta["n_compared"]
    rows = list(csv.DictReader((out / "pairs.csv").open()))
    assert len(rows) == len(found) and int(rows[0]["id1"]) == found[0]["ablator1"]["id"]
    # The same pairs from the run directories and the sidecars.
    again = tmp_path / "again"
    argv = ["pairs", "--input-path", str(runs / "ablate"), "--cooccurrence-path",
            str(runs / "cooc" / "cooccurrences.json"), "--output-dir", str(again),
            "--cosine-sim-threshold", "-0.2", "--ablator-sae-neuronpedia-id", "x/y"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads((again / "pairs.json").read_text())["pairs"] == found


def test_filters_and_focus(runs, tmp_path):
    out = tmp_path / "all"
    assert (
        pairs(runs, out, "--cosine-sim-threshold", "-1", "--cooccurrence-threshold", "1000000") == 0
    )
    everything = json.loads((out / "pairs.json").read_text())
    n = everything["meta"]["n_compared"]
    assert everything["meta"]["n_pairs_passing"] == n * (n - 1) // 2
    ids = sorted({p["ablator1"]["id"] for p in everything["pairs"]})
    focus = ids[0]
    out = tmp_path / "focus"
    assert pairs(runs, out, "--cosine-sim-threshold", "-1", "--cooccurrence-threshold", "1000000",
                 "--just-these", str(focus), "--skip-torch-sign", "--max-pairs", "5") == 0  # fmt: skip
    focused = json.loads((out / "pairs.json").read_text())
    assert focused["meta"]["n_pairs_passing"] == n - 1 and len(focused["pairs"]) == 5
    assert all(focus in (p["ablator1"]["id"], p["ablator2"]["id"]) for p in focused["pairs"])
    assert focused["meta"]["compare"] == "raw"


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--cosine-sim-threshold", "1.5"], "--cosine-sim-threshold must be in [-1, 1]"),
        (["--just-these", "47000"], "--just-these 47000 is not a latent"),
        (["--input-path", "/no/such/ablations.safetensors.zst"], "--input-path"),
        (["--cooccurrence-path", "OTHER"], "describe different ablators"),
        (["--input-path", "COOC"], "not 'ablations'"),
    ],
)
def test_bad_input_is_one_line(runs, tmp_path, capsys, extra, words):
    extra = [
        str(runs / "other")
        if x == "OTHER"
        else str(runs / "cooc" / "cooccurrences.safetensors.zst")
        if x == "COOC"
        else x
        for x in extra
    ]
    assert pairs(runs, tmp_path / "bad", *extra) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert not (tmp_path / "bad").exists()


def test_a_latent_that_was_never_ablated_is_refused(runs, tmp_path, capsys):
    with (runs / "ablate" / "ablations.json").open() as handle:
        n = json.load(handle)["tensors"]["latents_D"]["shape"][0]
    from sae_hacking.runs.results import ResultsFile

    with ResultsFile(runs / "ablate" / "ablations.safetensors.zst") as f:
        ablated = set(f.read("latents_D").tolist())
    never = next(i for i in range(48) if i not in ablated)
    assert n == len(ablated)
    assert pairs(runs, tmp_path / "bad", "--just-these", str(never)) == EXIT_USAGE
    assert "was not ablated" in capsys.readouterr().err


def test_legacy_script_path(runs, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[2] / "src" / "sae_hacking" / "look_for_pairs.py"
    help_text = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, check=True
    ).stdout
    # Whole flags: a substring test would find a flag inside a longer one ("--lr" in "--min-lr").
    flags = set(re.findall(r"--[\w-]+", help_text))
    for flag in ("--input-path", "--cooccurrence-path", "--cooccurrence-threshold", "--cosine-sim-threshold",
                 "--ablator-sae-neuronpedia-id", "--just-these", "--skip-torch-sign", "--max-steps", "--no-log-scale"):  # fmt: skip
        assert flag in flags, flag
    words = "".join(help_text.split())  # the script's own defaults, not sae-hacking pairs'
    assert "(defaultsign)" in words and "(default0:only--cooccurrence-thresholdcounts" in words


def test_the_legacy_script_keeps_the_legacy_semantics(runs, tmp_path):
    from sae_hacking.cli import script_main

    common = ["--input-path", str(runs / "ablate"), "--cooccurrence-path", str(runs / "cooc"),
              "--cosine-sim-threshold", "-1", "--device", "cpu"]  # fmt: skip
    assert script_main("sae_hacking.cli.pairs", [*common, "--output-dir", str(tmp_path / "a")]) == 0
    legacy = json.loads((tmp_path / "a" / "pairs.json").read_text())
    assert legacy["meta"]["compare"] == "sign"
    assert legacy["pairs"] and all(p["cooccurrence_count"] == 0 for p in legacy["pairs"])
    # The same flags through sae-hacking: raw effects and rare co-occurrence (the new defaults).
    assert main(["pairs", *common, "--output-dir", str(tmp_path / "b")]) == 0
    default = json.loads((tmp_path / "b" / "pairs.json").read_text())
    assert default["meta"]["compare"] == "raw"
    assert default["meta"]["n_pairs_passing"] > legacy["meta"]["n_pairs_passing"]
    # --skip-torch-sign and explicit settings still win over the legacy script's defaults.
    argv = [*common, "--skip-torch-sign", "--max-cooccurrence-share", "0.5"]
    assert script_main("sae_hacking.cli.pairs", [*argv, "--output-dir", str(tmp_path / "c")]) == 0
    again = json.loads((tmp_path / "c" / "pairs.json").read_text())
    assert again["pairs"] == default["pairs"]


def test_explanations_from_a_file_reach_the_pairs_and_the_report(runs, tmp_path):
    out = tmp_path / "explained"
    notes = tmp_path / "explanations.json"
    notes.write_text(
        json.dumps([{"index": i, "description": f"<b>latent {i}</b>"} for i in range(48)])
    )
    assert pairs(runs, out, "--cosine-sim-threshold", "-1", "--explanations-file", str(notes)) == 0
    result = json.loads((out / "pairs.json").read_text())
    first = result["pairs"][0]["ablator1"]
    assert first["explanation"] == f"<b>latent {first['id']}</b>"
    assert result["meta"]["explanations"]["source"] == "file"
    html = (out / "report.html").read_text()
    assert "<b>latent" not in html  # untrusted text is escaped


def test_a_rows_mode_cooccurrence_file_serves_the_latents_it_covers(runs, tmp_path, capsys):
    with (runs / "cooc" / "run.json").open() as handle:
        flat = json.load(handle)["config"]
    from sae_hacking.runs.results import ResultsFile

    with ResultsFile(runs / "ablate" / "ablations.safetensors.zst") as f:
        ablated = sorted(f.read("latents_D").tolist())
    rows = [str(i) for i in ablated[:2]]
    argv = [
        "cooccurrences", "--model", flat["model"], "--device", "cpu", "--quiet",
        "--ablator-sae-release", flat["ablator_sae_release"], "--dataset-id", flat["dataset_id"],
        "--max-tokens", "16", "--n-prompts", "30", "--rows", *rows,
        "--output-dir", str(tmp_path / "rows"),
    ]  # fmt: skip
    assert main(argv) == 0
    out = tmp_path / "from-rows"
    rows_file = ["--cooccurrence-path", str(tmp_path / "rows"), "--cosine-sim-threshold", "-1"]
    assert pairs(runs, out, *rows_file, "--just-these", *rows) == 0
    from_rows = json.loads((out / "pairs.json").read_text())["pairs"]
    assert (
        pairs(runs, tmp_path / "full", "--cosine-sim-threshold", "-1", "--just-these", *rows) == 0
    )
    assert from_rows == json.loads((tmp_path / "full" / "pairs.json").read_text())["pairs"]
    assert pairs(runs, tmp_path / "bad", *rows_file) == EXIT_USAGE
    assert "count those rows too" in capsys.readouterr().err


def copy_results(runs, tmp_path, name, change):
    """A copy of the co-occurrence results whose metadata ``change(meta)`` alters."""
    from sae_hacking.runs.results import ResultsFile, write_results

    with ResultsFile(runs / "cooc" / "cooccurrences.safetensors.zst") as f:
        tensors = {key: f.read(key) for key in f.keys()}
        meta = json.loads(json.dumps(f.meta))
    change(meta)
    (tmp_path / name).mkdir()
    write_results(tmp_path / name / "cooccurrences", tensors, meta)
    return tmp_path / name


def test_results_of_some_shards_are_refused_unless_allowed(runs, tmp_path, capsys):
    def two_of_three(meta):
        meta["shards"] = [{"index": 0, "count": 3}, {"index": 2, "count": 3}]

    partial = str(copy_results(runs, tmp_path, "partial", two_of_three))
    assert pairs(runs, tmp_path / "bad", "--cooccurrence-path", partial) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "shards 0/3, 2/3 only (2 of 3" in err[0], err
    assert "--allow-partial" in err[0] and "`" not in err[0]
    assert not (tmp_path / "bad").exists()
    out = tmp_path / "allowed"
    assert pairs(runs, out, "--cooccurrence-path", partial, "--allow-partial") == 0
    inputs = json.loads((out / "pairs.json").read_text())["meta"]["inputs"]
    assert inputs["datasets"]["cooccurrences"]["partial"] is True
    assert inputs["datasets"]["cooccurrences"]["shards_present"] == {"present": [0, 2], "of": 3}
    # cooccurrences-show and ablate --frequencies-from (before any model loads) alike
    capsys.readouterr()
    assert main(["cooccurrences-show", partial, "1", "2"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--allow-partial" in err[0], err
    assert main(["cooccurrences-show", partial, "1", "2", "--allow-partial"]) == 0
    capsys.readouterr()
    with (runs / "ablate" / "run.json").open() as handle:
        flat = json.load(handle)["config"]
    ablate = [
        "ablate", "--model", flat["model"], "--dataset-id", flat["dataset_id"],
        "--ablator-sae-release", flat["ablator_sae_release"],
        "--reader-sae-release", flat["reader_sae_release"], "--exclude-latent-threshold", "0.5",
        "--frequencies-from", partial, "--output-dir", str(tmp_path / "ablate"),
    ]  # fmt: skip
    assert main(ablate) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --frequencies-from "), err
    assert "--allow-partial" in err[0] and not (tmp_path / "ablate").exists()


def test_cooccurrences_of_another_dataset_are_refused_unless_allowed(runs, tmp_path, capsys):
    def other_text(meta):
        meta["settings"]["dataset_id"] = "/elsewhere/prompts.txt"

    other = str(copy_results(runs, tmp_path, "other-text", other_text))
    assert pairs(runs, tmp_path / "bad", "--cooccurrence-path", other) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "counted on different text (dataset" in err[0], err
    assert "/elsewhere/prompts.txt" in err[0] and "--allow-other-dataset" in err[0]
    out = tmp_path / "allowed"
    assert pairs(runs, out, "--cooccurrence-path", other, "--allow-other-dataset") == 0
    meta = json.loads((out / "pairs.json").read_text())["meta"]
    datasets = meta["inputs"]["datasets"]
    assert datasets["cooccurrences"]["dataset_id"] == "/elsewhere/prompts.txt"
    assert datasets["ablations"]["dataset_id"].endswith(".txt")
    assert datasets["ablations"]["dataset_id"] != "/elsewhere/prompts.txt"
    assert datasets["ablations"]["prompts_done"] == 30
    assert meta["settings"]["allow_other_dataset"] is True


def test_a_bad_explanations_file_is_one_line(runs, tmp_path, capsys):
    notes = tmp_path / "explanations.json"
    notes.write_text(json.dumps([{"index": 1, "description": "a"}, {"index": 48}]))
    assert pairs(runs, tmp_path / "bad", "--explanations-file", str(notes)) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --explanations-file "), err
    assert "record 2: index 48 is out of range" in err[0]
    assert not (tmp_path / "bad").exists()


def test_a_bad_device_is_refused_before_torch_loads(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from sae_hacking.cli import main\n"
        "code = main(['pairs', '--device', 'tpu'])\n"
        "print(code, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["2", "False"], done.stderr
    err = done.stderr.strip().splitlines()
    assert err == ["error: --device is 'tpu', expected one of auto, cpu, cuda, cuda:N, mps."]
