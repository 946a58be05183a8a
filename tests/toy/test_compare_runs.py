"""``toy-compare``'s folders: its own run.json, and one toy run per architecture and seed that
``sae-hacking toy --resume`` continues."""

import json
from dataclasses import replace

from sae_hacking.cli import main
from sae_hacking.config import from_flat, to_flat
from sae_hacking.errors import EXIT_USAGE
from sae_hacking.runs.options import RunDirOptions
from sae_hacking.runs.record import read_record
from sae_hacking.toy.compare import ARCH_ORDER, arch_config
from sae_hacking.toy.config import ToyCompareConfig, ToyConfig

SMALL = [
    "--max-step", "8", "--eval-every", "4", "--dataset-num-features", "4",
    "--sae-hidden-dim", "4", "--model-dim", "8", "--dataset-k", "2", "--sae-k", "2",
    "--val-size", "64", "--batch-size", "16", "--jobs", "1", "--quiet",
]  # fmt: skip


def test_each_sub_run_is_a_toy_run_that_resumes(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["toy-compare", "--seeds", "1", *SMALL, "--output-dir", str(out)]) == 0
    top = read_record(out, "toy-compare")
    assert top.is_complete()
    base = from_flat(ToyCompareConfig, top.config).base
    assert (base.max_step, base.sae_hidden_dim) == (8, 4)
    for arch in ARCH_ORDER:
        sub = out / f"{arch}-seed1"
        record = read_record(sub, "toy")
        expected = arch_config(base, arch, 1, base.sae_k)
        assert (expected.architecture, expected.seed) == (arch, 1)
        assert expected.sae_hidden_dim == (4 if arch in ("hierarchical", "tiered") else 12)
        # The sub-run's own config, naming its folder: what `toy --resume` starts from.
        saved = from_flat(ToyConfig, record.config)
        assert saved == replace(expected, run=RunDirOptions(output_dir=str(sub)))
        assert record.is_complete() and record.outputs == ("metrics.json", "sae.safetensors")
        args = (sub / "args.yaml").read_text()
        assert f"sae_hidden_dim: {expected.sae_hidden_dim}\n" in args
        assert json.loads((sub / "metrics.json").read_text())["step"] == 8
    sub = out / "hierarchical-seed1"
    capsys.readouterr()
    assert main(["toy", "--resume", str(sub), "--quiet"]) == 0
    assert "is complete" in capsys.readouterr().err
    assert main(["toy", "--resume", str(sub), "--max-step", "12", "--quiet"]) == 0
    assert json.loads((sub / "metrics.json").read_text())["step"] == 12
    assert read_record(sub, "toy").config["max_step"] == 12
    assert main(["toy", "--resume", str(out)]) == EXIT_USAGE  # the comparison is no toy run
    assert "is a 'toy-compare' run, not a 'toy' run" in capsys.readouterr().err


def test_a_sub_run_that_fails_goes_and_the_finished_ones_stay(tmp_path, monkeypatch):
    from sae_hacking.toy.train import ToyTrainer

    train = ToyTrainer.train
    calls = []

    def second_is_interrupted(self):
        calls.append(self.config.architecture)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the second run, before any checkpoint
        return train(self)

    monkeypatch.setattr(ToyTrainer, "train", second_is_interrupted)
    out = tmp_path / "cmp"
    assert main(["toy-compare", "--seeds", "1", *SMALL, "--output-dir", str(out)]) == 130
    first, second = (f"{arch}-seed1" for arch in calls)
    assert sorted(p.name for p in out.iterdir()) == sorted(["args.yaml", "run.json", first])
    assert read_record(out / first, "toy").is_complete()
    assert not (out / second).exists() and not read_record(out, "toy-compare").is_complete()
    assert to_flat(from_flat(ToyCompareConfig, read_record(out, "toy-compare").config))["jobs"] == 1
