"""``sae-hacking cooccurrences`` end to end on a tiny model: the file matches a direct count,
a SIGKILLed run resumes to identical counts, shards merge to the unsharded counts, and bad
inputs exit with code 2."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from sae_hacking.absorption.cooccurrence.accumulator import Cooccurrences
from sae_hacking.cli import main
from sae_hacking.data.text import tokenize_prompts
from sae_hacking.lm.hooked import HookedLM
from sae_hacking.lm.tiny import generate_texts
from sae_hacking.runs.results import ResultsFile
from sae_hacking.saes.base import SAEInfo
from sae_hacking.saes.io import save_sae_checkpoint
from sae_hacking.saes.jumprelu import JumpReLUSAE
from tests.absorption.evidence_checks import assert_same_evidence, evidence_keys
from tests.oracles import count_pairs_reference

HOOK = "blocks.0.hook_resid_post"
E = 32


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_path):
    root = tmp_path_factory.mktemp("co-cli")
    model = tiny_model_path("gemma2")
    sae = JumpReLUSAE(64, E, info=SAEInfo(hook_name=HOOK))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in sae.parameters():
            param.copy_(0.3 * torch.randn(param.shape, generator=gen))
        sae.threshold_E.abs_()
    sae.requires_grad_(False)
    sae_path = save_sae_checkpoint(sae, root / "sae.safetensors")
    texts = generate_texts(200, seed=5, min_words=2, max_words=16)
    data = root / "data.txt"
    data.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return {"model": model, "sae": sae, "sae_path": sae_path, "data": data, "texts": texts}


def flags(setup, out, n_prompts=30, *extra):
    return [
        "--model",
        str(setup["model"]),
        "--device",
        "cpu",
        "--ablator-sae-release",
        str(setup["sae_path"]),
        "--dataset-id",
        str(setup["data"]),
        "--max-tokens",
        "16",
        "--n-prompts",
        str(n_prompts),
        "--output-dir",
        str(out),
        "--quiet",
        *extra,
    ]


def counts(run_dir):
    with ResultsFile(run_dir / "cooccurrences.safetensors.zst") as f:
        return {k: f.read(k) for k in f.keys()}, f.meta


@pytest.mark.slow
def test_cli_counts_match_a_direct_computation(setup, tmp_path):
    assert main(["cooccurrences", *flags(setup, tmp_path / "run", 30, "--batch-size", "4")]) == 0
    lm = HookedLM.from_pretrained(str(setup["model"]), device="cpu", dtype="float32")
    sets = []
    for text in setup["texts"][:30]:
        one = tokenize_prompts(lm.tokenizer, [text], 16)
        acts = setup["sae"].encode(lm.read(one.input_ids_BS, None, [HOOK])[HOOK])[0]
        sets += [torch.nonzero(acts[s] > 0).flatten().tolist() for s in range(1, acts.shape[0])]
    reference = count_pairs_reference(sets, E)
    with Cooccurrences(tmp_path / "run") as co:
        assert co.tokens == len(sets)
        dense = np.stack([co.row(i).numpy() for i in range(E)])
        assert np.array_equal(dense, reference)
    sidecar = json.loads((tmp_path / "run" / "cooccurrences.json").read_text())
    assert sidecar["settings"]["hook"] == HOOK and sidecar["prompts_done"] == 30
    assert sidecar["tokens_done"] == len(sets) and sidecar["complete"]
    assert sidecar["settings"]["dataset_id"] == str(setup["data"])
    assert sidecar["provenance"]["sae_hacking_version"]
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()

    # rows mode gives the same rows
    rows = ["--rows", "5", "0", "31"]
    assert (
        main(["cooccurrences", *flags(setup, tmp_path / "rows", 30, "--batch-size", "4", *rows)])
        == 0
    )
    with Cooccurrences(tmp_path / "rows") as co:
        assert co.rows == [5, 0, 31]
        assert all(co.row(i).tolist() == reference[i].tolist() for i in (5, 0, 31))


@pytest.mark.slow
def test_resume_after_sigkill_gives_identical_counts(setup, tmp_path):
    n = 200
    args = flags(setup, tmp_path / "killed", n, "--batch-size", "1", "--save-frequency", "3")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sae_hacking.cli", "cooccurrences", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = tmp_path / "killed" / "checkpoint.safetensors"
    deadline = time.monotonic() + 60
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists(), "the run ended before its first checkpoint"
    assert not (tmp_path / "killed" / "cooccurrences.safetensors.zst").exists()
    with ResultsFile(checkpoint) as f:
        assert 0 < f.meta["rows_done"] < n
    # resume takes the settings from the run directory
    assert main(["cooccurrences", "--resume", str(tmp_path / "killed"), "--quiet"]) == 0
    assert (
        main(
            [
                "cooccurrences",
                *flags(setup, tmp_path / "whole", n, "--batch-size", "1", "--never-save"),
            ]
        )
        == 0
    )
    resumed, meta_r = counts(tmp_path / "killed")
    whole, meta_w = counts(tmp_path / "whole")
    assert resumed.keys() == whole.keys()
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)
    assert meta_r["tokens_done"] == meta_w["tokens_done"] and meta_r["prompts_done"] == n


@pytest.mark.slow
def test_shards_merge_to_the_unsharded_counts(setup, tmp_path, capsys):
    n = 25
    for shard in ("0/2", "1/2"):
        out = tmp_path / shard.replace("/", "of")
        assert (
            main(["cooccurrences", *flags(setup, out, n, "--batch-size", "3", "--shard", shard)])
            == 0
        )
    assert main(["cooccurrences", *flags(setup, tmp_path / "all", n, "--batch-size", "2")]) == 0
    parts = [str(tmp_path / s / "cooccurrences.safetensors.zst") for s in ("0of2", "1of2")]
    assert main(["merge", str(tmp_path / "merged"), *parts]) == 0
    with ResultsFile(tmp_path / "merged.safetensors.zst") as f:
        merged, meta = {k: f.read(k) for k in f.keys()}, f.meta
    whole, meta_w = counts(tmp_path / "all")
    assert merged.keys() == whole.keys()
    # Counts are exact; activation values of differently batched prompts differ by float noise.
    assert all(torch.equal(merged[k], whole[k]) for k in whole if k not in evidence_keys(whole))
    assert_same_evidence(merged, whole, exact=False)
    assert meta["covers_all_rows"] and meta["prompts_done"] == n
    assert meta["tokens_done"] == meta_w["tokens_done"]
    # the same shard twice, or a different dataset, is refused
    assert main(["merge", str(tmp_path / "bad"), parts[0], parts[0]]) == 2
    assert "share prompts" in capsys.readouterr().err
    assert main(["cooccurrences", *flags(setup, tmp_path / "other", 10, "--shard", "1/2")]) == 0
    other = str(tmp_path / "other" / "cooccurrences.safetensors.zst")
    assert main(["merge", str(tmp_path / "bad"), parts[0], other]) == 2
    assert "n_prompts" in capsys.readouterr().err


@pytest.mark.slow
def test_bad_inputs_exit_2(setup, tmp_path, capsys):
    def fails(argv, message):
        assert main(argv) == 2
        assert message in capsys.readouterr().err

    fails(["cooccurrences", *flags(setup, tmp_path / "a", 0)], "--n-prompts must be positive")
    fails(["cooccurrences", *flags(setup, tmp_path / "b", -3)], "--n-prompts must be positive")
    wrong_hook = [*flags(setup, tmp_path / "c"), "--ablator-sae-hook", "blocks.9.hook_resid_post"]
    fails(["cooccurrences", *wrong_hook], "blocks.9")
    narrow = JumpReLUSAE(48, E, info=SAEInfo(hook_name=HOOK))
    narrow_path = save_sae_checkpoint(narrow, tmp_path / "narrow.safetensors")
    wide = [*flags(setup, tmp_path / "d"), "--ablator-sae-release", str(narrow_path)]
    fails(["cooccurrences", *wide], "48-dimensional")
    missing = [*flags(setup, tmp_path / "e"), "--dataset-id", str(tmp_path / "none.txt")]
    fails(["cooccurrences", *missing], "no such file")
    fails(["cooccurrences", "--resume", str(tmp_path / "nowhere")], "not a run directory")
    # a corrupt checkpoint given to --resume, a corrupt file given to merge
    run = tmp_path / "corrupt"
    plain = ["--save-frequency", "2", "--top-examples", "0"]  # counts only: half cuts them
    assert main(["cooccurrences", *flags(setup, run, 6, *plain)]) == 0
    results = run / "cooccurrences.safetensors.zst"
    good = results.read_bytes()
    (run / "cooccurrences.safetensors.zst").unlink()
    (run / "cooccurrences.json").unlink()
    (run / "checkpoint.safetensors").write_bytes(b"\x00" * 40)
    fails(["cooccurrences", "--resume", str(run)], "checkpoint.safetensors")
    broken = tmp_path / "broken.safetensors.zst"
    broken.write_bytes(good[: len(good) // 2])
    good_copy = tmp_path / "good.safetensors.zst"
    good_copy.write_bytes(good)
    fails(["merge", str(tmp_path / "m"), str(good_copy), str(broken)], "broken.safetensors.zst")
    fails(["cooccurrences-show", str(broken), "1", "2"], "broken.safetensors.zst")
    fails(["cooccurrences", "--resume", str(tmp_path / "f")], "not a run directory")


@pytest.mark.slow
def test_legacy_script_path_and_defaults():
    from sae_hacking.absorption.configs import CooccurrenceConfig
    from sae_hacking.cli.configargs import config_from
    from sae_hacking.cli.cooccurrence import KIND, standalone_parser

    args = standalone_parser().parse_args(
        "--max-tokens 100 --ablator-sae-release gemma-scope-2b-pt-mlp-canonical --n-prompts "
        "2000000 --save-frequency 30000 --dataset-id monology/pile-uncopyrighted "
        "--batch-size 5".split()
    )
    config = config_from(args, CooccurrenceConfig, KIND)
    assert config.model.name == "google/gemma-2-2b"
    assert config.ablator.sae_id == "layer_20/width_65k/canonical"
    text = config.text
    assert (text.max_tokens_in_prompt, text.n_prompts, config.run.save_frequency) == (
        100,
        2000000,
        30000,
    )
    assert config.run.shard == "0/1" and not config.run.never_save and config.run.resume is None
    script = os.path.join(os.path.dirname(__file__), "../../src/sae_hacking/gemma_cooccurrences.py")
    help_text = subprocess.run(
        [sys.executable, script, "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--never-save" in help_text and "--ablator-sae-id" in help_text
