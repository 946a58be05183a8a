"""The reader moves of ablated latents in ``sae-hacking latents-report RUN --ablations ABLATE``
(issue 21): for each latent of the report that the ``ablate`` run ablated, the reader latents
its ablation moves most, up and down (:func:`~sae_hacking.absorption.evidence.moves.reader_moves`),
each reader labelled by

- its own evidence, when ``--reader-evidence`` names a ``latents`` / ``cooccurrences`` run of the
  reader SAE: its count, density and the tokens its first :data:`READER_TOPS` top examples fire
  on, read for the readers that appear only (their rows of the top-example tables, gathered
  :data:`READERS_PER_READ` readers at a time);
- else the tokens its decoder row promotes most through the unembedding (the first
  :data:`LENS_TOKENS` of :func:`~sae_hacking.absorption.evidence.moves.reader_logit_lens`,
  computed once for every reader that appears);

and, both ways, its Neuronpedia page when the reader SAE has a Neuronpedia id. The ablate run
must be of this report's SAE and model, and the reader run of the ablate run's reader SAE and
model: checked before any work (:func:`check_ablations`, :func:`open_reader_evidence`).
Letters: R readers, T top examples kept per reader, W context-window tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sae_hacking.errors import FieldError, UsageError

READER_TOPS = 3  # tokens of a reader's top examples shown (as the index shows a latent's)
LENS_TOKENS = 5  # promoted tokens shown for a reader without evidence
READERS_PER_READ = 4096  # readers whose top-example rows are gathered at a time
EVIDENCE = "evidence"
LOGIT_LENS = "logit lens"


@dataclass
class ReportMoves:
    """The moves of the report's ablated latents and the labels of the readers they move."""

    moves: dict[int, dict[str, Any]]  # ablated latent -> {"ablations", "up", "down"}
    labels: dict[int, dict[str, Any]]  # reader -> {"count", "density", "tops"} | {"lens"}, "url"
    kind: str  # EVIDENCE or LOGIT_LENS: what labels the readers
    facts: list[tuple[str, Any]] = field(default_factory=list)

    def of(self, latent: int) -> dict[str, Any] | None:
        """What ``latent``'s page section shows (``None``: never ablated): the moves as
        :func:`reader_moves` gives them plus ``readers``, the labels of those readers (keyed by
        the reader's index as a string, as JSON has it)."""
        found = self.moves.get(latent)
        if found is None:
            return None
        readers = [r for r, _ in found["up"] + found["down"]]
        return {**found, "readers": {str(r): self.labels.get(r, {}) for r in readers}}

    def ablations_of(self, latent: int) -> int | None:
        found = self.moves.get(latent)
        return None if found is None else found["ablations"]


def _names(release: Any, sae_id: Any) -> str:
    return " / ".join(str(p) for p in (release, sae_id) if p) or "?"


def check_ablations(
    path: str | Path, identity: dict[str, Any], model: str | None, allow_partial: bool = False
) -> tuple[Path, dict[str, Any]]:
    """``(results file, settings)`` of the ablate run ``path`` names; refused (one
    :class:`FieldError` of ``ablations``) when it is no finished ablate run, or one that
    ablated another SAE than ``identity`` (by content hash when both runs recorded one, else by
    release and id) or ran another model. Reads the file's header only."""
    from sae_hacking.runs.locate import results_file_of
    from sae_hacking.runs.results import read_meta
    from sae_hacking.runs.shards import check_all_shards

    file = results_file_of(path, "ablations")
    if not file.is_file():
        raise FieldError(
            "ablations",
            f"{path} holds no ablate results ({file.name}); give a finished ablate run.",
        )
    meta = read_meta(file)
    if meta.get("kind") != "ablations":
        raise FieldError(
            "ablations", f"{path} holds {meta.get('kind')!r} results, not an ablate run's."
        )
    if not meta.get("complete"):
        raise FieldError("ablations", f"{file} is a checkpoint; finish the ablate run first.")
    check_all_shards(meta, file, allow_partial)
    settings = dict(meta.get("settings", {}))
    ours, theirs = identity.get("sae_fingerprint"), settings.get("ablator_fingerprint")
    if ours and theirs:
        same = ours == theirs
    else:
        mine = (identity.get("sae_release"), identity.get("sae_id") or None)
        same = mine == (settings.get("ablator_sae_release"), settings.get("ablator_sae_id") or None)
    if not same:
        theirs_name = _names(settings.get("ablator_sae_release"), settings.get("ablator_sae_id"))
        ours_name = _names(identity.get("sae_release"), identity.get("sae_id"))
        raise FieldError(
            "ablations",
            f"{path} ablated another SAE ({theirs_name}, fingerprint {theirs}) than this "
            f"report's ({ours_name}, fingerprint {ours}); give an ablate run of this SAE.",
        )
    if model and settings.get("model") and model != settings["model"]:
        raise FieldError(
            "ablations", f"{path} ran model {settings['model']}, this report's run {model}."
        )
    return file, settings


def open_reader_evidence(path: str | Path, settings: dict[str, Any], allow_partial: bool = False):
    """The :class:`~sae_hacking.absorption.evidence.read.Evidence` of ``path``, refused unless
    it is evidence of the ablate run's reader SAE (``settings``) on its model."""
    from sae_hacking.absorption.evidence.moves import check_reader_evidence
    from sae_hacking.absorption.evidence.read import Evidence

    try:
        evidence = Evidence(path, allow_partial)
    except UsageError as err:
        raise FieldError("reader_evidence", f"names no usable latent evidence: {err}") from None
    try:
        try:
            check_reader_evidence(evidence, settings, str(path))
        except UsageError as err:
            raise FieldError("reader_evidence", str(err)) from None
        width = settings.get("reader_d_sae")
        if width is not None and evidence.e != width:
            raise FieldError(
                "reader_evidence",
                f"{path} holds {evidence.e} latents, the ablate run's reader SAE {width}; give "
                "a latents run of the reader SAE.",
            )
        model = settings.get("model")
        if model and evidence.model and model != evidence.model:
            raise FieldError(
                "reader_evidence",
                f"{path} ran model {evidence.model}, the ablate run {model}.",
            )
    except BaseException:
        evidence.close()
        raise
    return evidence


def gather_moves(
    ablations_file: Path,
    settings: dict[str, Any],
    latents: set[int] | None,
    decode,
    reader_evidence=None,
    k: int | None = None,
) -> ReportMoves:
    """The moves of ``latents`` (all ablated latents when ``None``) and their readers' labels:
    from ``reader_evidence`` when given, else the reader logit lens. ``decode``: token ids ->
    texts of the reader's model (the ablate run's)."""
    from sae_hacking.absorption.evidence.moves import MOVES_K, reader_logit_lens, reader_moves
    from sae_hacking.saes.neuronpedia import latent_url, neuronpedia_id

    moves, _ = reader_moves(ablations_file, MOVES_K if k is None else k, latents)
    readers = sorted({r for m in moves.values() for r, _ in m["up"] + m["down"]})
    if reader_evidence is not None:
        labels = evidence_labels(reader_evidence, readers, decode)
        kind = EVIDENCE
        how = (
            f"{EVIDENCE} of {reader_evidence.path}: count, density, the tokens of its top "
            f"{READER_TOPS} examples"
        )
    else:
        lens = reader_logit_lens(settings, readers, LENS_TOKENS, decode)
        labels = {r: {"lens": [text for text, _ in lens[r]["up"]]} for r in lens}
        kind = LOGIT_LENS
        how = f"{LOGIT_LENS} of the reader SAE: the {LENS_TOKENS} tokens each promotes most"
        if not lens and readers:
            how += f" (none: no logit lens at {settings.get('reader_sae_hook')})"
    reader_np = neuronpedia_id(settings.get("reader_sae_release"), settings.get("reader_sae_id"))
    for r in readers:
        labels.setdefault(r, {})["url"] = latent_url(reader_np, r)
    reader_sae = _names(settings.get("reader_sae_release"), settings.get("reader_sae_id"))
    facts = [
        ("ablations", str(ablations_file)),
        ("ablated latents in this report", len(moves)),
        ("reader SAE", f"{reader_sae} \u00b7 {settings.get('reader_sae_hook') or '?'}"),
        ("reader Neuronpedia id", reader_np),
        ("reader labels", how),
    ]
    return ReportMoves(moves, labels, kind, facts)


def evidence_labels(evidence, readers: list[int], decode) -> dict[int, dict[str, Any]]:
    """``{reader: {"count", "density", "tops"}}`` for ``readers`` only: ``tops`` the centre
    tokens of its first :data:`READER_TOPS` top examples, each decoded in its context as
    :meth:`~sae_hacking.absorption.evidence.read.Evidence.latents` decodes it."""
    import torch

    counts = evidence.counts().tolist()
    tokens = max(evidence.tokens, 1)
    n_top, width = evidence.n_top, evidence.width
    tops = min(READER_TOPS, n_top)
    middle = (width - 1) // 2
    out: dict[int, dict[str, Any]] = {}
    for start in range(0, len(readers), READERS_PER_READ):
        chunk = readers[start : start + READERS_PER_READ]
        slots_RT = torch.tensor(chunk)[:, None] * n_top + torch.arange(tops)
        prompts_RT = evidence.file.read_elements("top_prompts_eX", slots_RT).view(-1, tops)
        cells_RTW = slots_RT[:, :, None] * width + torch.arange(width)
        ids_RTW = evidence.file.read_elements("top_context_ids_eXW", cells_RTW)
        ids_RTW = ids_RTW.view(-1, tops, width).tolist()
        for d, r in enumerate(chunk):
            texts = []
            for t, prompt in enumerate(prompts_RT[d].tolist()):
                if prompt < 0:
                    continue
                keep = [w for w, token in enumerate(ids_RTW[d][t]) if token >= 0]
                texts.append(decode([ids_RTW[d][t][w] for w in keep])[keep.index(middle)])
            out[r] = {"count": counts[r], "density": counts[r] / tokens, "tops": texts}
    return out
