"""Labels of the analysis tools: the explanation where there is one, else the latent's local
evidence (the tokens of its top examples), else its logit lens, else nothing; evidence of
another SAE is refused."""

import json
import warnings

import pytest

from sae_hacking.absorption.tools.effects import open_ablations, settings_of
from sae_hacking.absorption.tools.labels import (
    EVIDENCE,
    EXPLANATION,
    LOGIT_LENS,
    NONE,
    label_latents,
)
from sae_hacking.absorption.tools.options import LabelOptions
from sae_hacking.errors import FieldError


@pytest.fixture(scope="module")
def settings(tool_runs):
    effects = open_ablations(tool_runs["ablate"])
    try:
        return settings_of(effects)
    finally:
        effects.close()


def centre_tokens(run, latent, n=3):
    """The centre tokens of ``latent``'s first ``n`` top examples, read the reports' way."""
    from sae_hacking.absorption.evidence.read import Evidence, token_decoder
    from sae_hacking.train.run import load_tokenizer

    with Evidence(run) as evidence:
        decode = token_decoder(load_tokenizer(evidence.model))
        (full,) = evidence.latents(latent, latent + 1, decode)
    return [example["tokens"][example["center"]] for example in full["top"][:n]]


def test_explanations_then_evidence_then_nothing(tool_runs, settings, tmp_path):
    path = tmp_path / "explanations.json"
    path.write_text(json.dumps([{"index": 3, "description": "<b>three</b>"}]))
    options = LabelOptions(
        explanations_file=str(path), ablator_evidence=str(tool_runs["cooc"]), no_logit_lens=True
    )
    labels = label_latents(settings, options, "ablator", [3, 5, 7])
    assert labels[3] == {"text": "<b>three</b>", "source": EXPLANATION, "url": None}
    for latent in (5, 7):
        label = labels[latent]
        tokens = centre_tokens(tool_runs["cooc"], latent)
        if not tokens:  # never active: no evidence, and no logit lens asked for
            assert label["source"] == NONE and label["text"] == ""
            continue
        assert label["source"] == EVIDENCE
        for token in tokens:
            assert f"\u201c{token}\u201d" in label["text"]
    assert any(line.startswith(EVIDENCE) for line in labels.how)
    assert labels.as_json([7, 3]).keys() == {"3", "7"}


def test_the_logit_lens_labels_latents_without_explanation_or_evidence(settings):
    from sae_hacking.absorption.evidence.moves import reader_logit_lens
    from sae_hacking.absorption.evidence.read import token_decoder
    from sae_hacking.train.run import load_tokenizer

    labels = label_latents(settings, LabelOptions(), "reader", [0, 9])
    decode = token_decoder(load_tokenizer(settings["model"]))
    lens = reader_logit_lens(settings, [0, 9], 5, decode)
    for latent in (0, 9):
        assert labels[latent]["source"] == LOGIT_LENS
        words = [f"\u201c{token}\u201d" for token, _ in lens[latent]["up"]]
        assert labels[latent]["text"] == "promotes " + ", ".join(words)


def test_evidence_of_another_sae_is_refused(tool_runs, settings):
    options = LabelOptions(ablator_evidence=str(tool_runs["reader_evidence"]))
    with pytest.raises(FieldError) as caught:
        label_latents(settings, options, "ablator", [1])
    assert caught.value.field == "ablator_evidence"
    assert "another SAE" in caught.value.message
    # the reader's own evidence is accepted for the reader
    options = LabelOptions(reader_evidence=str(tool_runs["reader_evidence"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labels = label_latents(settings, options, "reader", range(40))
    assert {labels[i]["source"] for i in range(40)} <= {EVIDENCE, LOGIT_LENS}
    assert any(labels[i]["source"] == EVIDENCE for i in range(40))


def test_a_neuronpedia_id_gives_links_even_without_explanations(settings, monkeypatch, tmp_path):
    monkeypatch.setenv("SAE_HACKING_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from sae_hacking.saes.neuronpedia import cache_path

    cache = cache_path("x/y")
    cache.parent.mkdir(parents=True)
    cache.write_text(json.dumps([{"index": 2, "description": "two"}]))
    options = LabelOptions(ablator_sae_neuronpedia_id="x/y", no_logit_lens=True)
    labels = label_latents(settings, options, "ablator", [2, 4])
    assert labels[2]["text"] == "two" and labels[2]["url"].endswith("/x/y/2")
    assert labels[4] == {"text": "", "source": NONE, "url": labels[4]["url"]}
    assert labels[4]["url"].endswith("/x/y/4")


def test_the_logit_lens_labels_a_bounded_number_of_latents(settings, monkeypatch):
    from sae_hacking.absorption.tools import labels as labels_module
    from sae_hacking.errors import SettingWarning

    monkeypatch.setattr(labels_module, "LENS_MAX", 2)
    with pytest.warns(SettingWarning, match="3 reader latents have no explanation or evidence"):
        labels = label_latents(settings, LabelOptions(), "reader", [0, 1, 2])
    assert {labels[i]["source"] for i in range(3)} == {NONE}
    labels = label_latents(settings, LabelOptions(), "reader", [0, 1])
    assert {labels[i]["source"] for i in (0, 1)} == {LOGIT_LENS}
