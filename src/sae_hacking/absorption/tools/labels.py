"""Labels of ablator and reader latents for the analysis tools' outputs
(:mod:`sae_hacking.absorption.tools.options` says where each comes from, in order).

A label is ``{"text", "source", "url"}``: ``source`` is :data:`EXPLANATION`, :data:`EVIDENCE`,
:data:`LOGIT_LENS` or :data:`NONE`, so a report can show local labels apart from Neuronpedia's;
``url`` is the latent's Neuronpedia page when its SAE has a Neuronpedia id. Only the latents a
tool shows are labelled: evidence and logit lens are read for those rows only.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sae_hacking.errors import FieldError, SettingWarning, UsageError

EXPLANATION = "explanation"
EVIDENCE = "evidence"
LOGIT_LENS = "logit lens"
NONE = "none"
TOP_TOKENS = 3  # tokens of a latent's top examples in an evidence label
LENS_TOKENS = 5  # promoted tokens in a logit-lens label
# Latents the logit lens labels at most in one output: each costs a product with the whole
# unembedding and a sort over the vocabulary (Gemma-2: 256,000 tokens), seconds per hundred.
LENS_MAX = 2048
SIDES = ("ablator", "reader")


@dataclass
class SideLabels:
    """The labels of one SAE's latents (``side``: ablator or reader)."""

    side: str
    np_id: str | None
    labels: dict[int, dict[str, Any]]
    how: list[str] = field(default_factory=list)  # one line per source used, for the outputs

    def __getitem__(self, index: int) -> dict[str, Any]:
        from sae_hacking.saes.neuronpedia import latent_url

        return self.labels.get(index) or {
            "text": "",
            "source": NONE,
            "url": latent_url(self.np_id, index),
        }

    def text(self, index: int) -> str:
        return self[index]["text"]

    def as_json(self, indices) -> dict[str, dict[str, Any]]:
        """``{str(index): label}`` of ``indices``, as the outputs' JSON holds them."""
        return {str(i): self[i] for i in sorted(set(int(i) for i in indices))}


def quoted(tokens) -> str:
    return ", ".join(f"\u201c{t}\u201d" for t in tokens)


def label_latents(settings: dict[str, Any], options, side: str, indices) -> SideLabels:
    """The labels of ``indices`` (latents of the ablate run's ``side`` SAE; ``settings``: the
    run's recorded settings; ``options``: a
    :class:`~sae_hacking.absorption.tools.options.LabelOptions`). Missing explanations are one
    warning; an evidence run of another SAE or model is a :class:`FieldError`."""
    from sae_hacking.saes.neuronpedia import latent_url

    assert side in SIDES, side
    wanted = sorted({int(i) for i in indices})
    np_id, explanations = _explanations(settings, options, side)
    labels: dict[int, dict[str, Any]] = {}
    how = []
    for i in wanted:
        if explanations.get(i):
            labels[i] = {"text": explanations[i], "source": EXPLANATION}
    if labels:
        how.append(f"{EXPLANATION}s of {np_id or getattr(options, _file_key(side))}")
    missing = [i for i in wanted if i not in labels]
    evidence_path = getattr(options, f"{side}_evidence")
    decode = None
    lens_wanted = not options.no_logit_lens and len(missing) <= LENS_MAX
    if missing and (evidence_path is not None or lens_wanted):
        decode = _decoder(settings.get("model"), side)
    if missing and evidence_path is not None:
        found = _evidence_labels(settings, side, evidence_path, missing, decode)
        labels.update(found)
        how.append(f"{EVIDENCE} of {evidence_path}: the tokens of each latent's top examples")
        missing = [i for i in missing if i not in labels]
    if len(missing) > LENS_MAX and not options.no_logit_lens:
        warnings.warn(
            SettingWarning(
                f"{len(missing):,} {side} latents have no explanation or evidence: more than the "
                f"{LENS_MAX:,} the logit lens labels (a sort over the vocabulary per latent), so "
                f"they are unlabelled; give `{side}_evidence` (a latents run of the {side} SAE)."
            ),
            stacklevel=2,
        )
    elif missing and not options.no_logit_lens:
        found = _lens_labels(settings, side, missing, decode)
        labels.update(found)
        if found:
            how.append(f"{LOGIT_LENS}: the tokens each latent's decoder row promotes most")
    for i, label in labels.items():
        label["url"] = latent_url(np_id, i)
    return SideLabels(side, np_id, labels, how)


def check_label_sources(settings: dict[str, Any], options, sides=SIDES) -> None:
    """Before a tool's work: each evidence run given must be usable evidence of the ablate
    run's SAE on that side (headers only), so a wrong one costs nothing."""
    from sae_hacking.absorption.evidence.read import Evidence

    for side in sides:
        path = getattr(options, f"{side}_evidence")
        if path is None:
            continue
        try:
            evidence = Evidence(path)
        except UsageError as err:
            raise FieldError(
                f"{side}_evidence", f"names no usable latent evidence: {err}"
            ) from None
        with evidence:
            check_evidence_of(evidence, settings, side, str(path))


def _file_key(side: str) -> str:
    return "explanations_file" if side == "ablator" else "reader_explanations_file"


def _explanations(settings, options, side: str) -> tuple[str | None, dict[int, str]]:
    from sae_hacking.saes.neuronpedia import load_explanations, neuronpedia_id

    np_id = getattr(options, f"{side}_sae_neuronpedia_id")
    if np_id is None and side == "ablator":
        np_id = settings.get("neuronpedia_id")
    if np_id is None:
        np_id = neuronpedia_id(settings.get(f"{side}_sae_release"), settings.get(f"{side}_sae_id"))
    path = getattr(options, _file_key(side))
    if np_id is None and path is None:
        return None, {}
    try:
        explanations, _, warning = load_explanations(np_id, path, settings.get(f"{side}_d_sae"))
    except FieldError as err:
        raise FieldError(_file_key(side), err.message) from None
    if warning:
        if side == "reader":  # the reader's own file setting is the one to suggest
            warning = warning.replace("`explanations_file`", "`reader_explanations_file`")
        warnings.warn(SettingWarning(f"{side} SAE: {warning}"), stacklevel=3)
    return np_id, explanations


def _decoder(model: str | None, side: str):
    """Token ids -> texts of the run's model, or ``None`` (with a warning) when its tokenizer
    cannot be loaded: labels then show token ids."""
    from sae_hacking.absorption.evidence.read import token_decoder
    from sae_hacking.train.run import load_tokenizer

    if not model:
        return None
    try:
        return token_decoder(load_tokenizer(model))
    except (OSError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        warnings.warn(
            SettingWarning(
                f"{side} labels show token ids: the tokenizer of {model} cannot be "
                f"loaded ({first})."
            ),  # fmt: skip
            stacklevel=3,
        )
        return None


def _ids(ids) -> list[str]:
    return [f"#{int(i)}" for i in ids]


def _evidence_labels(settings, side, path, latents, decode) -> dict[int, dict[str, Any]]:
    from sae_hacking.absorption.evidence.read import Evidence
    from sae_hacking.absorption.evidence.report_moves import evidence_labels

    key = f"{side}_evidence"
    try:
        evidence = Evidence(path)
    except UsageError as err:
        raise FieldError(key, f"names no usable latent evidence: {err}") from None
    with evidence:
        check_evidence_of(evidence, settings, side, str(path))
        found = evidence_labels(evidence, latents, decode or _ids)
    out = {}
    for i, e in found.items():
        if e["tops"]:
            tokens = Counter(e["tops"][:TOP_TOKENS])  # insertion order: the strongest first
            shown = ", ".join(
                f"\u201c{t}\u201d" + (f" \u00d7{n}" if n > 1 else "") for t, n in tokens.items()
            )
            text = f"fires on {shown} (density {e['density']:.3g})"
            out[i] = {"text": text, "source": EVIDENCE}
    return out


def check_evidence_of(evidence, settings: dict[str, Any], side: str, where: str) -> None:
    """Refuse evidence of another SAE than the ablate run's ``side`` SAE (by content hash when
    both recorded one, else by release and id), of another width, or of another model."""
    key = f"{side}_evidence"
    identity = evidence.sae_identity()
    ours, theirs = settings.get(f"{side}_fingerprint"), identity.get("sae_fingerprint")
    if ours and theirs:
        same = ours == theirs
    else:
        same = (identity.get("sae_release"), identity.get("sae_id") or None) == (
            settings.get(f"{side}_sae_release"),
            settings.get(f"{side}_sae_id") or None,
        )
    width = settings.get(f"{side}_d_sae")
    if not same or (width is not None and evidence.e != width):
        raise FieldError(
            key,
            f"{where} is evidence of another SAE than the ablate run's {side} SAE "
            f"({settings.get(f'{side}_sae_release')}); give a latents run of that SAE.",
        )
    model = settings.get("model")
    if model and evidence.model and model != evidence.model:
        raise FieldError(key, f"{where} ran model {evidence.model}, the ablate run {model}.")


def _lens_labels(settings, side, latents, decode) -> dict[int, dict[str, Any]]:
    from sae_hacking.absorption.evidence.moves import reader_logit_lens

    try:
        lens = reader_logit_lens(settings, latents, LENS_TOKENS, decode, side=side)
    except (UsageError, OSError, ValueError, KeyError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        warnings.warn(
            SettingWarning(f"no logit-lens labels for the {side} SAE ({first})."), stacklevel=3
        )
        return {}
    return {
        i: {"text": f"promotes {quoted(str(t) for t, _ in v['up'])}", "source": LOGIT_LENS}
        for i, v in lens.items()
    }
