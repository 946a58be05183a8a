"""The ``decoder-pairs`` run (legacy ``look_for_cosine_sim_pairs.py``): the ``top_k`` latent
pairs of one SAE whose decoder rows are most alike (cosine), optionally only pairs that
(almost) never fire together, written as a new run directory: ``pairs.csv``, ``report.html``
and, last, ``pairs.json`` in the pairs stage's shape (``cosine_similarity`` is the decoder
cosine; ``ablation_count`` is 0; counts are the co-occurrence run's, else 0 / null).

The search is :func:`sae_hacking.absorption.tools.decoder_search.top_decoder_pairs` (blocked,
never ``e × e``). The co-occurrence run must count the same SAE (content hash, else release and
id; and width). Labels: the SAE stands in for an ablate run's ablator (:func:`_label_settings`);
its model is ``model``, else the co-occurrence run's, else the ablator evidence run's, else the
SAELens registry's (a local SAE with none gets no logit lens).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path
from typing import Any

from sae_hacking.absorption.tools.configs import OUTPUTS, DecoderPairsConfig
from sae_hacking.errors import FieldError, SettingWarning, UsageError

KIND = "decoder-pairs"


def run(config: DecoderPairsConfig) -> Path:
    """Find the pairs and write the run directory; returns the run directory."""
    from sae_hacking.runs.rundir import RunDir

    config.check_inputs()
    rundir = RunDir.plan(config, KIND, KIND, OUTPUTS[KIND])  # a bad folder is refused first
    result = find(config)
    with rundir.started():
        write_outputs(rundir.path, result)
    return rundir.path


def find(config: DecoderPairsConfig) -> dict[str, Any]:
    """The pairs.json document of ``config`` (nothing is written)."""
    import torch
    import torch.nn.functional as F

    from sae_hacking.absorption.pairs.inputs import CooccurrenceLookup
    from sae_hacking.absorption.tools.decoder_search import top_decoder_pairs
    from sae_hacking.absorption.tools.labels import check_label_sources
    from sae_hacking.device import resolve_device
    from sae_hacking.saes.fingerprint import sae_fingerprint

    device = resolve_device(config.device)
    counts, path = _open_cooccurrences(config)  # before the SAE: a bad file is answered fast
    try:
        sae = config.sae.load(device, "")
        fingerprint = sae_fingerprint(sae)
        if counts is not None:
            _check_same_sae(counts, path, config, fingerprint, sae.d_sae)
        focus_e = _focus(config.latents, sae.d_sae)
        settings = _label_settings(config, sae, fingerprint, counts)
        check_label_sources(settings, config.labels, ("ablator",))  # before the search
        lookup = None
        if counts is not None:
            needed = torch.arange(sae.d_sae) if focus_e is None else focus_e.nonzero().flatten()
            lookup = CooccurrenceLookup(counts, needed, "cooccurrence_path")
        found = top_decoder_pairs(
            F.normalize(sae.W_dec.detach().float(), dim=-1),
            config.top_k,
            config.block_size,
            lookup,
            config.cooccurrence_threshold,
            config.min_decoder_cosine,
            focus_e,
        )
        cooc_meta = counts.meta if counts is not None else None
    finally:
        if counts is not None:
            counts.close()
    del sae
    labels = _labels(config, settings, torch.cat([found.first_K, found.second_K]).tolist())
    return {
        "meta": _meta(config, settings, found, lookup, labels, path, cooc_meta),
        "pairs": _pairs(found, lookup, labels),
    }


def _open_cooccurrences(config: DecoderPairsConfig):
    """The co-occurrence counts (kind, completeness and shards checked) and their path."""
    if not config.cooccurrence_path:
        return None, None
    from sae_hacking.absorption.cooccurrence.accumulator import Cooccurrences
    from sae_hacking.absorption.pairs.inputs import results_file

    path = results_file(config.cooccurrence_path, "cooccurrences", "cooccurrence_path")
    try:
        return Cooccurrences(path, allow_partial=config.allow_partial), path
    except FieldError:
        raise
    except UsageError as err:
        raise FieldError("cooccurrence_path", f"is unusable: {err}") from None


def _check_same_sae(counts, path, config: DecoderPairsConfig, fingerprint: str, e: int) -> None:
    """The counts must be of the loaded SAE: by content hash when the run recorded one, else
    by release and id; and of its width."""
    recorded = counts.meta.get("settings", {})
    theirs = recorded.get("sae_fingerprint")
    if theirs:
        same = theirs == fingerprint
    else:
        same = (recorded.get("ablator_sae_release"), recorded.get("ablator_sae_id") or None) == (
            config.sae.release,
            config.sae.sae_id,
        )
    if not same or counts.e != e:
        raise FieldError(
            "cooccurrence_path",
            f"{path} holds the co-occurrences of another SAE "
            f"({recorded.get('ablator_sae_release')}, {counts.e} latents), not of "
            f"{config.sae.release} ({e} latents); give a cooccurrences run of this SAE.",
        )


def _focus(latents: tuple[int, ...] | None, e: int):
    """Bool mask of the ``latents`` (``None``: every pair)."""
    if latents is None:
        return None
    import torch

    for index in latents:
        if not 0 <= index < e:
            raise FieldError("latents", f"{index} is not a latent of the {e}-latent SAE.")
    focus_e = torch.zeros(e, dtype=torch.bool)
    focus_e[torch.tensor(latents)] = True
    return focus_e


def _label_settings(config: DecoderPairsConfig, sae, fingerprint: str, counts) -> dict[str, Any]:
    """What labels.py reads from an ablate run's settings, for this SAE (as the ablator)."""
    recorded = counts.meta.get("settings", {}) if counts is not None else {}
    return {
        "model": config.model or recorded.get("model") or _other_model(config),
        "ablator_sae_release": config.sae.release,
        "ablator_sae_id": config.sae.sae_id,
        "ablator_sae_hook": sae.hook_name or recorded.get("hook"),
        "ablator_d_sae": sae.d_sae,
        "ablator_fingerprint": fingerprint,
        "neuronpedia_id": sae.neuronpedia_id,
    }


def _other_model(config: DecoderPairsConfig) -> str | None:
    """The ablator evidence run's model, else the SAELens registry's model of the release."""
    from sae_hacking.saes.releases import hub_model

    if config.labels.ablator_evidence:
        from sae_hacking.absorption.evidence.read import Evidence

        # An unusable evidence run falls through here; check_label_sources then says why.
        try:
            with Evidence(config.labels.ablator_evidence) as evidence:
                model = evidence.model
        except UsageError:
            model = None
        if model:
            return model
    return hub_model(config.sae.release, config.sae.sae_id)


def _labels(config: DecoderPairsConfig, settings: dict[str, Any], indices: list[int]):
    from sae_hacking.absorption.tools.labels import NONE, label_latents

    options = config.labels
    if settings["model"] is None:  # no unembedding to read: a local SAE that names no model
        options = dataclasses.replace(options, no_logit_lens=True)
    labels = label_latents(settings, options, "ablator", indices)
    unlabelled = any(labels[i]["source"] == NONE for i in indices)
    if settings["model"] is None and unlabelled and not config.labels.no_logit_lens:
        warnings.warn(
            SettingWarning(
                "no logit-lens labels: the SAE names no model; give `model` to have them."
            ),
            stacklevel=3,
        )
    return labels


def _pairs(found, lookup, labels) -> list[dict[str, Any]]:
    activations_e = lookup.activations_e if lookup is not None else None
    tokens = max(lookup.tokens, 1) if lookup is not None else 1

    def latent(index: int) -> dict[str, Any]:
        label = labels[index]
        return {
            "id": index,
            "explanation": label["text"],
            "activation_count": int(activations_e[index]) if activations_e is not None else 0,
            "ablation_count": 0,
            "url": label["url"],
            "label": label,
        }

    pairs = []
    for k in range(found.first_K.numel()):
        i, j = int(found.first_K[k]), int(found.second_K[k])
        cosine = float(found.cosine_K[k])
        expected = None
        if activations_e is not None:  # under independence: N f_i f_j
            expected = float(activations_e[i]) * float(activations_e[j]) / tokens
        pairs.append(
            {
                "ablator1": latent(i),
                "ablator2": latent(j),
                "cosine_similarity": cosine,
                "cooccurrence_count": (
                    int(found.counts_K[k]) if found.counts_K is not None else None
                ),
                "decoder_cosine": cosine,
                "expected_cooccurrence": expected,
                "p_no_cooccurrence": math.exp(-expected) if expected is not None else None,
            }
        )
    return pairs


def _meta(config, settings, found, lookup, labels, path, cooc_meta) -> dict[str, Any]:
    from sae_hacking.absorption.pairs.inputs import dataset_of
    from sae_hacking.absorption.tools.decoder_search import histogram_edges
    from sae_hacking.config import to_flat
    from sae_hacking.runs.files import provenance

    how = labels.how
    return {
        "kind": KIND,
        "settings": to_flat(config),
        "provenance": provenance(),
        "inputs": {
            "cooccurrences": str(path) if path is not None else None,
            "model": settings["model"],
            "ablator_sae_release": settings["ablator_sae_release"],
            "ablator_sae_id": settings["ablator_sae_id"],
            "hook": settings["ablator_sae_hook"],
            "d_sae": settings["ablator_d_sae"],
            "sae_fingerprint": settings["ablator_fingerprint"],
            "neuronpedia_id": labels.np_id,
            "tokens": lookup.tokens if lookup is not None else None,
            "datasets": {"cooccurrences": dataset_of(cooc_meta)} if cooc_meta else {},
        },
        "compare": "decoder",  # the report names its cosine accordingly
        "n_compared": settings["ablator_d_sae"],
        "n_pairs_passing": found.n_passing,
        "n_pairs_kept": int(found.first_K.numel()),
        "histogram": {"edges": histogram_edges(), "counts": found.histogram_counts},
        "labels": {"how": how},
        "explanations": {"source": "; ".join(how) if how else "none", "warning": None},
    }


def write_outputs(run_dir: Path, result: dict[str, Any]) -> Path:
    """``pairs.csv``, ``report.html`` and last ``pairs.json``, each atomically."""
    from sae_hacking.absorption.pairs.run import pairs_csv
    from sae_hacking.atomic import atomic_write_json, atomic_write_text
    from sae_hacking.reports.pairs import write_report

    atomic_write_text(run_dir / "pairs.csv", pairs_csv(result["pairs"]))
    report = write_report(run_dir, result)
    atomic_write_json(run_dir / "pairs.json", result)
    meta = result["meta"]
    print(
        f"{meta['n_compared']} latents compared, {meta['n_pairs_passing']} pairs pass, "
        f"{meta['n_pairs_kept']} kept; wrote {run_dir / 'pairs.json'} and {report}"
    )
    return report
