"""Typed configs: flat keys, nested errors, the one resume rule, and the flags generated from
them (the CLI is the only place that knows flags)."""

import argparse
import json
import re
import subprocess
import sys

import pytest

from sae_hacking.absorption.configs import AblateConfig, CooccurrenceConfig
from sae_hacking.cli.ablate import add_ablate_args
from sae_hacking.cli.configargs import Flags, OneLineParser, add_config_args, given
from sae_hacking.config import (
    free_keys,
    from_flat,
    leaves,
    recorded_settings,
    replace_flat,
    resume_config,
    to_flat,
)
from sae_hacking.errors import FieldError, UsageError
from sae_hacking.toy.config import ToyConfig


def test_flat_keys_are_the_legacy_settings_and_round_trip():
    config = AblateConfig()
    flat = to_flat(config)
    for key in ("model", "ablator_sae_release", "reader_sae_id", "max_tokens_in_prompt", "shard"):
        assert key in flat
    assert flat["ablator_sae_id"] == "layer_20/width_65k/canonical"
    assert from_flat(AblateConfig, json.loads(json.dumps(flat))) == config
    assert len({leaf.key for leaf in leaves(AblateConfig)}) == len(leaves(AblateConfig))
    # The device and the run options are not what a run computes.
    assert "device" not in recorded_settings(config) and "output_dir" not in recorded_settings(
        config
    )
    assert set(free_keys(config)) == {"batch_size", "variants_per_batch"}
    assert "batch_size" not in free_keys(replace_flat(config, {"batch_prompts": True}))


def test_the_default_sae_id_belongs_to_the_default_release(tmp_path):
    sae = tmp_path / "sae.safetensors"
    sae.write_bytes(b"")
    local = from_flat(CooccurrenceConfig, {"ablator_sae_release": str(sae)})
    assert local.ablator.sae_id is None and local.ablator.release == str(sae.resolve())
    other = from_flat(CooccurrenceConfig, {"ablator_sae_release": "some-release"})
    assert other.ablator.sae_id == "layer_20/width_65k/canonical"


@pytest.mark.parametrize(
    "flat, key, words",
    [
        ({"n_prompts": 0}, "n_prompts", "must be positive"),
        ({"batch_size": -1}, "batch_size", "must be positive"),
        ({"shard": "2/2"}, "shard", "expected i/n"),
        ({"exclude_latent_threshold": 1.5}, "exclude_latent_threshold", "fraction"),
        ({"frequencies_from": "x"}, "frequencies_from", "only used with"),
        ({"exclude_latent_threshold": 0.1}, "exclude_latent_threshold", "`n_prompts`"),
        ({"method": "slow"}, "method", "fast, naive"),
        ({"device": "tpu"}, "device", "cuda:N"),
        ({"selected_features": [3, -1]}, "selected_features", "negative"),
    ],
)
def test_errors_name_the_flat_key(flat, key, words):
    with pytest.raises(FieldError) as err:
        from_flat(AblateConfig, flat)
    assert err.value.field == key and words in str(err.value)


def test_nested_errors_and_renamed_keys():
    with pytest.raises(FieldError) as err:
        ToyConfig(dataset_k=40)
    # The toy dataset's own field "k" is this config's "dataset_k", in the message too.
    assert err.value.field == "dataset_k" and "`dataset_num_features`" in err.value.message
    flags = {"dataset_k": "--dataset-k", "dataset_num_features": "--dataset-num-features"}
    assert err.value.render(flags.get).startswith("--dataset-k (40) must be at most --dataset-num")
    with pytest.raises(UsageError, match="unknown settings"):
        from_flat(ToyConfig, {"no_such_setting": 1})


def test_resume_changes_only_what_may_change():
    saved = from_flat(CooccurrenceConfig, {"n_prompts": 10, "batch_size": 4})
    resumed = resume_config(saved, {"n_prompts": 20, "batch_size": 2, "quiet": True})
    assert (resumed.text.n_prompts, resumed.text.batch_size, resumed.run.quiet) == (20, 2, True)
    assert resume_config(saved, {"model": "google/gemma-2-2b"}) == saved  # the same value
    with pytest.raises(FieldError) as err:
        resume_config(saved, {"model": "other/model"})
    assert err.value.field == "model" and "other/model" in err.value.message
    with pytest.raises(FieldError, match="finished run"):
        resume_config(saved, {"n_prompts": 20}, complete=True)
    with pytest.raises(FieldError) as err:
        resume_config(saved, {"shard": "1/2"})
    assert err.value.field == "shard"
    # With batch_prompts the batch size is part of the results.
    batched = replace_flat(AblateConfig(), {"batch_prompts": True, "n_prompts": 5})
    with pytest.raises(FieldError, match="batch_size"):
        resume_config(batched, {"batch_size": 3})
    # Frequencies of a first pass cover exactly the prompts of the run.
    first_pass = replace_flat(AblateConfig(), {"exclude_latent_threshold": 0.1, "n_prompts": 5})
    with pytest.raises(FieldError, match="n_prompts"):
        resume_config(first_pass, {"n_prompts": 6})


def test_configs_are_frozen():
    config = ToyConfig()
    with pytest.raises(AttributeError):
        config.lr = 1.0  # type: ignore[misc]


def parse(cls, argv, **kwargs):
    parser, flags = OneLineParser(prog="t"), Flags()
    add_config_args(parser, cls, flags, **kwargs)
    return given(parser.parse_args(argv), cls), flags


def test_generated_flags_record_only_what_was_given():
    values, flags = parse(AblateConfig, ["--n-prompts", "7", "--selected-features", "3", "9"])
    assert values == {"n_prompts": 7, "selected_features": [3, 9]}
    assert flags.name("reader_sae_release") == "--reader-sae-release"
    values, _ = parse(ToyConfig, ["--no-plots", "--magnitude-range", "0.5", "2"])
    assert values == {"plots": False, "magnitude_range": [0.5, 2.0]}
    assert from_flat(ToyConfig, values).magnitude_range == (0.5, 2.0)
    values, _ = parse(
        AblateConfig, ["--max-tokens", "64"], aliases={"max_tokens_in_prompt": ["--max-tokens"]}
    )
    assert values == {"max_tokens_in_prompt": 64}


def test_help_names_settings_by_their_flags():
    parser = argparse.ArgumentParser()
    add_ablate_args(parser)
    text = parser.format_help()
    assert "--exclude-latent-threshold" in text
    assert not re.search(r"`[a-z_]+`", text), "a setting named by its key, not its flag"


@pytest.mark.slow
def test_usage_errors_are_one_line():
    proc = subprocess.run(
        [sys.executable, "-m", "sae_hacking.cli", "cooccurrences", "--n-prompts", "x"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--n-prompts" in lines[0] and "--help" in lines[0], proc.stderr


def _config_classes():
    from sae_hacking.absorption.configs import PairsConfig
    from sae_hacking.absorption.planted.run import ValidateConfig
    from sae_hacking.toy.config import ToyCompareConfig
    from sae_hacking.train.config import TrainConfig

    return (ToyConfig, ToyCompareConfig, CooccurrenceConfig, AblateConfig, PairsConfig) + (
        TrainConfig,
        ValidateConfig,
    )


def _float_leaves():
    for cls in _config_classes():
        for leaf in leaves(cls):
            if "float" in str(leaf.type):
                yield cls, leaf


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_every_float_setting_refuses_non_finite_values(bad):
    checked = 0
    for cls, leaf in _float_leaves():
        value = [bad, bad] if "tuple" in str(leaf.type) else bad
        with pytest.raises(FieldError) as err:
            from_flat(cls, {leaf.key: value})
        assert err.value.field == leaf.key and "finite" in err.value.message, (cls, leaf.key)
        checked += 1
    assert checked >= 15  # the learning rates, coefficients and thresholds of every command


@pytest.mark.slow
def test_a_nan_threshold_is_one_line_naming_the_flag(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sae_hacking.cli",
            "pairs",
            "--input-path",
            str(tmp_path),
            "--cooccurrence-path",
            str(tmp_path),
            "--min-expected-cooccurrence",
            "nan",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        "error: --min-expected-cooccurrence must be a finite number, got nan."
    )


def test_resume_compares_paths_as_the_config_resolves_them(tmp_path, monkeypatch):
    data = tmp_path / "prompts.txt"
    data.write_text("a b c\n")
    saved = from_flat(CooccurrenceConfig, {"dataset_id": str(data), "n_prompts": 1})
    monkeypatch.chdir(tmp_path)
    # The saved path is absolute; the same file named from its folder is the same setting.
    assert resume_config(saved, {"dataset_id": "prompts.txt"}) == saved
    other = tmp_path / "other.txt"
    other.write_text("d\n")
    with pytest.raises(FieldError, match="in the run being resumed"):
        resume_config(saved, {"dataset_id": "other.txt"})


def test_a_prompt_needs_bos_and_a_token():
    with pytest.raises(FieldError, match="at least 2"):
        from_flat(CooccurrenceConfig, {"max_tokens_in_prompt": 1})


@pytest.mark.slow
def test_toy_settings_need_neither_torch_nor_the_lm_layer():
    code = (
        "import sys, sae_hacking.cli.toy, sae_hacking.device;"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('sae_hacking.lm')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.slow
def test_the_public_api_loads_on_first_use():
    code = (
        "import sys, sae_hacking; assert 'torch' not in sys.modules; "
        "from sae_hacking import HookedLM, ZeroLatents, load_sae, make_tiny_model, splice; "
        "from sae_hacking.lm.hooked import HookedLM as H; assert HookedLM is H; "
        "assert set(sae_hacking.__all__) == set(sae_hacking._PUBLIC) | {'__version__'}"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
