"""``sae-hacking ablate`` end to end: results file, resume after SIGKILL, shards, bad inputs."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sae_hacking.absorption.ablation.core import fast_effects, make_setup
from sae_hacking.absorption.ablation.effects import EffectSums
from sae_hacking.absorption.ablation.run import FREQUENCIES_FILE
from sae_hacking.absorption.ablation.stream import count_frequencies
from sae_hacking.cli import main
from sae_hacking.errors import EXIT_USAGE
from sae_hacking.lm.tiny import generate_texts
from sae_hacking.runs.results import ResultsFile, read_meta
from sae_hacking.saes.io import save_sae_checkpoint
from tests.absorption.ablation_testkit import (
    ABLATOR_HOOK,
    D_ABLATOR,
    D_READER,
    N_LAYERS,
    READER_HOOK,
)
from tests.random_saes import random_sae

N_PROMPTS = 24
SCRIPT = Path(__file__).parents[2] / "src" / "sae_hacking" / "gemma_selective_ablate.py"


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_lm):
    root = tmp_path_factory.mktemp("ablate-cli")
    lm = tiny_lm("gemma2", N_LAYERS)
    save_sae_checkpoint(random_sae(ABLATOR_HOOK, D_ABLATOR, 0), root / "ablator.safetensors")
    save_sae_checkpoint(random_sae(READER_HOOK, D_READER, 1), root / "reader.safetensors")
    # The same reader, not saying which hook it reads (so --reader-sae-hook applies).
    save_sae_checkpoint(random_sae(None, D_READER, 1), root / "reader-nohook.safetensors")
    texts = generate_texts(N_PROMPTS + 6, seed=9, min_words=1, max_words=16)
    (root / "prompts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    return {"root": root, "model": lm.name, "lm": lm, "texts": texts}


def ablate_argv(files, out, *extra):
    root = files["root"]
    return [
        "--model", str(files["model"]),
        "--ablator-sae-release", str(root / "ablator.safetensors"),
        "--reader-sae-release", str(root / "reader.safetensors"),
        "--dataset-id", str(root / "prompts.txt"),
        "--n-prompts", str(N_PROMPTS),
        "--max-tokens", "20",
        "--batch-size", "3",
        "--abridge-ablations-to", "4",
        "--device", "cpu",
        "--quiet",
        "--output-dir", str(out),
        *extra,
    ]  # fmt: skip


def read_results(path):
    with ResultsFile(path) as results:
        return {key: results.read(key) for key in results.keys()}


def assert_equal_results(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def single_run(files):
    out = files["root"] / "single"
    assert main(["ablate", *ablate_argv(files, out, "--save-frequency", "5")]) == 0
    return read_results(out / "ablations.safetensors.zst")


@pytest.mark.slow
def test_results_file_holds_the_documented_sums(files, single_run):
    out = files["root"] / "single"
    meta = read_meta(out / "ablations.json")
    assert meta["kind"] == "ablations" and meta["complete"]
    assert meta["settings"]["ablator_sae_hook"] == ABLATOR_HOOK
    assert meta["settings"]["reader_sae_hook"] == READER_HOOK
    assert {"effects_DE", "latents_D", "ablation_counts_D", "n_prompts"} <= set(meta["tensor_docs"])
    assert not (out / "checkpoint.safetensors").exists()
    # The same sums straight from the library, on the same prompts.
    lm = files["lm"]
    setup = make_setup(
        lm, random_sae(ABLATOR_HOOK, D_ABLATOR, 0), random_sae(READER_HOOK, D_READER, 1), 4
    )
    sums = EffectSums(D_READER)
    for prompt in fast_effects(setup, lm.tokenize(files["texts"][:N_PROMPTS], 20)):
        sums.add(prompt)
    assert_equal_results(single_run, sums.tensors())
    assert int(single_run["n_prompts"]) == N_PROMPTS
    assert single_run["effects_DE"].shape == (len(single_run["latents_D"]), D_READER)


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_uninterrupted_result(files, single_run):
    out = files["root"] / "killed"
    argv = ablate_argv(files, out, "--save-frequency", "3", "--batch-size", "1")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = out / "checkpoint.safetensors"
    deadline = time.monotonic() + 60
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists(), "the run must be killed after its first checkpoint"
    assert not (out / "ablations.safetensors.zst").exists(), "killed before the end"
    assert main(["ablate", "--resume", str(out), "--device", "cpu", "--quiet"]) == 0
    assert_equal_results(read_results(out / "ablations.safetensors.zst"), single_run)


@pytest.mark.slow
def test_shards_merge_to_the_single_run(files, single_run):
    root = files["root"]
    for index in range(3):
        argv = ablate_argv(files, root / f"shard{index}", "--shard", f"{index}/3", "--never-save")
        assert main(["ablate", *argv]) == 0
    shards = [str(root / f"shard{i}" / "ablations.safetensors.zst") for i in range(3)]
    assert main(["merge", str(root / "merged"), *shards]) == 0
    assert_equal_results(read_results(root / "merged.safetensors.zst"), single_run)
    assert read_meta(root / "merged.json")["covers_all_rows"]
    assert main(["merge", str(root / "twice"), shards[0], shards[0]]) == EXIT_USAGE


@pytest.mark.slow
def test_first_pass_frequencies_exclude_frequent_latents(files, single_run):
    out = files["root"] / "excluded"
    argv = ablate_argv(files, out, "--exclude-latent-threshold", "0.3")
    assert main(["ablate", *argv]) == 0
    results = read_results(out / "ablations.safetensors.zst")
    lm = files["lm"]
    batches = [lm.tokenize(files["texts"][:N_PROMPTS], 20)]
    active_e, tokens = count_frequencies(
        lm, random_sae(ABLATOR_HOOK, D_ABLATOR, 0), ABLATOR_HOOK, batches
    )
    frequent = set(torch.nonzero(active_e / tokens > 0.3).flatten().tolist())
    assert frequent & set(single_run["latents_D"].tolist()), "the threshold must bite"
    assert not frequent & set(results["latents_D"].tolist())
    assert (out / FREQUENCIES_FILE).is_file()
    # The saved frequencies give the same run.
    again = files["root"] / "excluded-again"
    argv = ablate_argv(
        files, again, "--exclude-latent-threshold", "0.3", "--frequencies-from",
        str(out / FREQUENCIES_FILE),
    )  # fmt: skip
    assert main(["ablate", *argv]) == 0
    assert_equal_results(read_results(again / "ablations.safetensors.zst"), results)
    # So do the frequencies of a co-occurrence run over the same prompts.
    root = files["root"]
    cooc = [
        "cooccurrences", "--model", str(files["model"]), "--device", "cpu", "--quiet",
        "--ablator-sae-release", str(root / "ablator.safetensors"), "--ablator-sae-id", "",
        "--dataset-id", str(root / "prompts.txt"), "--n-prompts", str(N_PROMPTS),
        "--max-tokens", "20", "--batch-size", "3", "--output-dir", str(root / "cooc"),
    ]  # fmt: skip
    assert main(cooc) == 0
    from_cooc = root / "excluded-cooc"
    argv = ablate_argv(
        files, from_cooc, "--exclude-latent-threshold", "0.3", "--frequencies-from",
        str(root / "cooc"),
    )  # fmt: skip
    assert main(["ablate", *argv]) == 0
    assert_equal_results(read_results(from_cooc / "ablations.safetensors.zst"), results)
    # The co-occurrences of another SAE are refused rather than excluding the wrong latents.
    other = [*cooc[:-1], str(root / "cooc-reader")]
    other[other.index(str(root / "ablator.safetensors"))] = str(root / "reader.safetensors")
    other += ["--ablator-sae-hook", READER_HOOK]
    assert main(other) == 0
    argv = ablate_argv(
        files, root / "excluded-wrong", "--exclude-latent-threshold", "0.3",
        "--frequencies-from", str(root / "cooc-reader"),
    )  # fmt: skip
    assert main(["ablate", *argv]) == EXIT_USAGE


NOHOOK = ["--reader-sae-release", "READER_NOHOOK"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--reader-sae-hook", "blocks.0.hook_resid_post", *NOHOOK], "comes before"),
        (["--selected-features", "3", str(D_ABLATOR)], f"--selected-features {D_ABLATOR}"),
        (["--reader-sae-hook", "blocks.7.hook_resid_post", *NOHOOK], "layers"),
        (["--reader-sae-hook", "blocks.0.hook_resid_post"], "--reader-sae-hook is blocks.0"),
        (["--exclude-latent-threshold", "1.5"], "fraction"),
        (["--abridge-ablations-to", "0"], "at least 1"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(files, capsys, extra, message):
    out = files["root"] / "bad"
    nohook = str(files["root"] / "reader-nohook.safetensors")
    extra = [nohook if flag == "READER_NOHOOK" else flag for flag in extra]
    assert main(["ablate", *ablate_argv(files, out, *extra)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (out / "run.json").exists(), "bad input must not leave a run behind"


def test_width_mismatch_exits_2(files, capsys):
    root = files["root"]
    save_sae_checkpoint(random_sae(READER_HOOK, D_READER, 1, d_in=32), root / "narrow.safetensors")
    argv = ablate_argv(
        files, root / "narrow", "--reader-sae-release", str(root / "narrow.safetensors")
    )
    assert main(["ablate", *argv]) == EXIT_USAGE
    assert "32-dimensional" in capsys.readouterr().err


def test_the_legacy_command_line_parses_with_its_defaults():
    from sae_hacking.absorption.configs import AblateConfig
    from sae_hacking.cli.ablate import KIND, standalone_parser
    from sae_hacking.cli.configargs import config_from

    legacy = (
        "--abridge-ablations-to 100 --max-tokens 100 --ablator-sae-release "
        "gemma-scope-2b-pt-mlp-canonical --reader-sae-release gemma-scope-2b-pt-res-canonical "
        "--n-prompts 1000000 --save-frequency 10000 --dataset-id monology/pile-uncopyrighted "
        "--selected-features 3000 9000 15000 21000 27000 33000 39000 45000 51000 57000 63000 "
        "--batch-size 5"
    )
    config = config_from(standalone_parser().parse_args(legacy.split()), AblateConfig, KIND)
    assert config.model.name == "google/gemma-2-2b"
    assert config.ablator.sae_id == "layer_20/width_65k/canonical"
    assert config.reader.sae_id == "layer_21/width_65k/canonical"
    text = config.text
    assert (config.abridge_ablations_to, text.max_tokens_in_prompt, text.batch_size) == (
        100,
        100,
        5,
    )
    assert config.selected_features[-1] == 63000 and config.method == "fast"
    assert not config.run.never_save and config.exclude_latent_threshold is None
