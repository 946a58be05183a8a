"""The shared language-model flags later commands build on (the seed's flag names)."""

import argparse

from sae_hacking.cli.lm import (
    add_dataset_args,
    add_model_args,
    add_sae_args,
    fill_default_sae_ids,
    load_lm,
    load_sae_from_args,
    text_batches,
)
from sae_hacking.saes.base import SAEInfo
from sae_hacking.saes.formats import save_saelens_folder
from sae_hacking.saes.relu import ReLUSAE


def parser():
    p = argparse.ArgumentParser()
    add_model_args(p)
    add_sae_args(
        p,
        "ablator",
        release="gemma-scope-2b-pt-mlp-canonical",
        sae_id="layer_20/width_65k/canonical",
    )
    add_sae_args(p, "reader")
    add_dataset_args(p)
    return p


def test_seed_defaults_and_aliases():
    args = parser().parse_args(["--reader-sae-release", "r", "--max-tokens", "64"])
    assert args.ablator_sae_id is None  # filled after parsing, once the release is known
    fill_default_sae_ids(args)
    assert args.model == "google/gemma-2-2b" and args.device == "auto" and args.dtype == "auto"
    assert args.ablator_sae_release == "gemma-scope-2b-pt-mlp-canonical"
    assert args.ablator_sae_id == "layer_20/width_65k/canonical"
    # The default id belongs to the default release: a local file gets none.
    local = parser().parse_args(["--reader-sae-release", "r", "--ablator-sae-release", "./a.npz"])
    assert fill_default_sae_ids(local).ablator_sae_id is None
    assert args.dataset_id == "monology/pile-uncopyrighted" and args.text_column == "text"
    assert args.max_tokens_in_prompt == 64 and args.n_prompts is None


def test_flags_to_objects(tiny_path, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(f"Kalo mine {i}." for i in range(7)), encoding="utf-8")
    sae = ReLUSAE(64, 32, info=SAEInfo("blocks.1.hook_resid_pre"))
    save_saelens_folder(sae, tmp_path / "sae")
    args = parser().parse_args(
        [
            "--model",
            str(tiny_path("gpt2")),
            "--device",
            "cpu",
            "--reader-sae-release",
            str(tmp_path / "sae"),
            "--dataset-id",
            str(corpus),
            "--batch-size",
            "3",
            "--n-prompts",
            "6",
            "--max-tokens-in-prompt",
            "5",
        ]
    )
    lm = load_lm(args)
    reader = load_sae_from_args(args, "reader", lm.device)
    assert reader.hook_name == "blocks.1.hook_resid_pre" and reader.d_in == lm.d_model
    batches = list(text_batches(args, lm.tokenizer, skip=2))
    assert [b.texts for b in batches] == [
        ["Kalo mine 2.", "Kalo mine 3.", "Kalo mine 4."],
        ["Kalo mine 5."],
    ]
    assert batches[-1].next_row == 6 and batches[0].input_ids_BS.shape[1] <= 5
