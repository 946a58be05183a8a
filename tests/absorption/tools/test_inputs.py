"""What every analysis tool says of an input that is another kind of run: which kind it is,
and where the wanted results are when the folder holds them."""

import json

from sae_hacking.cli import main
from sae_hacking.errors import EXIT_USAGE


def test_another_kind_of_run_is_named(tool_runs, tmp_path, capsys):
    for command in ("effect-network", "four-tuples", "effect-l0", "cluster"):
        argv = [
            command,
            "--input-path",
            str(tool_runs["cooc"]),
            "--output-dir",
            str(tmp_path / command),
        ]
        assert main(argv) == EXIT_USAGE
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [
            f"error: --input-path {tool_runs['cooc']} is a cooccurrences run, where ablations "
            "results were expected."
        ], err
        assert not (tmp_path / command).exists()


def test_a_pipeline_folder_points_at_its_ablate_run(synthetic_ablations, tmp_path, capsys):
    folder, *_ = synthetic_ablations(name="pipeline/ablations")
    (tmp_path / "pipeline" / "run.json").write_text(json.dumps({"kind": "demo"}))
    assert main(["effect-l0", "--input-path", str(tmp_path / "pipeline")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert (
        f"is a demo run, where ablations results were expected (its ablations run is {folder})"
        in err
    )
