"""``sae-hacking latents-report RUN``: every latent's evidence as a folder of pages
(:mod:`sae_hacking.reports.latents` draws them; this module gathers their data).

Per latent: the evidence as :class:`~sae_hacking.absorption.evidence.read.Evidence` reads it,
its explanation (an ``explanations_file``, else Neuronpedia's export from the offline cache or a
download, as the pairs stage gets them; an SAE with no Neuronpedia id and no file has none) and,
for a ``cooccurrences`` run, its top co-occurring latents with the count expected if they were
independent, ``c_i · c_j / tokens`` (:mod:`sae_hacking.absorption.evidence.neighbours`), and,
given an ``ablate`` run of its SAE, the reader latents its ablation moves most, labelled by their
own evidence or their logit lens (:mod:`sae_hacking.absorption.evidence.report_moves`).
Every check of the input comes before the work: a bad run, latent or output folder is one
:class:`~sae_hacking.errors.UsageError`, and nothing is written.
"""

from __future__ import annotations

import bisect
import contextlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sae_hacking.errors import FieldError, SettingWarning

REPORT_DIR = "latents-report"


def default_output_dir(run: str | Path, results_path: Path) -> Path:
    run = Path(run)
    return (run if run.is_dir() else results_path.parent) / REPORT_DIR


def explanations_for(identity: dict[str, Any], explanations_file: str | None, e: int):
    """``(neuronpedia_id, {latent: explanation}, source)``; warns when an SAE with a
    Neuronpedia id has none to show."""
    from sae_hacking.saes.neuronpedia import load_explanations, neuronpedia_id

    np_id = identity.get("neuronpedia_id") or neuronpedia_id(
        identity.get("sae_release"), identity.get("sae_id")
    )
    if np_id is None and not explanations_file:
        return None, {}, None  # nothing to look for: no warning
    explanations, source, warning = load_explanations(np_id, explanations_file, e)
    if warning:
        warnings.warn(SettingWarning(warning), stacklevel=2)
    return np_id, explanations, source


def write_report(
    run: str | Path,
    output_dir: str | Path | None = None,
    latents_per_page: int = 128,
    latents: Sequence[int] | None = None,
    explanations_file: str | None = None,
    allow_partial: bool = False,
    decode=None,
    ablations: str | Path | None = None,
    reader_evidence: str | Path | None = None,
) -> Path:
    """Write the report of ``run`` (run directory, ``.json`` or results file) and return the
    path of its ``index.html``. ``decode``: ids -> token texts (default: the run's tokenizer,
    :func:`~sae_hacking.absorption.evidence.read.token_decoder`). ``ablations``: an ``ablate``
    run of the same SAE and model, whose ablated latents' reader moves the pages show, their
    readers labelled by ``reader_evidence`` (a ``latents`` / ``cooccurrences`` run of the reader
    SAE) when given, else by their logit lens."""
    from sae_hacking.absorption.evidence.read import Evidence
    from sae_hacking.reports.latents import check_output_dir, write_latents_report

    if latents_per_page < 1:
        raise FieldError("latents_per_page", f"must be at least 1, got {latents_per_page}.")
    if reader_evidence is not None and ablations is None:
        raise FieldError("reader_evidence", "labels the readers of `ablations`; give both.")
    if output_dir:  # refused before the results file is opened
        check_output_dir(Path(output_dir))
    with Evidence(run, allow_partial) as evidence, contextlib.ExitStack() as stack:
        selected = None
        if latents is not None:
            selected = sorted({evidence.check_latent(int(i)) for i in latents})
        out = Path(output_dir) if output_dir else default_output_dir(run, evidence.path)
        check_output_dir(out)
        identity = evidence.sae_identity()
        reader = None
        if ablations is not None:
            from sae_hacking.absorption.evidence.report_moves import (
                check_ablations,
                open_reader_evidence,
            )

            ablated = check_ablations(ablations, identity, evidence.model, allow_partial)
            if reader_evidence is not None:
                reader = stack.enter_context(
                    open_reader_evidence(reader_evidence, ablated[1], allow_partial)
                )
        np_id, explanations, source = explanations_for(identity, explanations_file, evidence.e)
        if decode is None:
            from sae_hacking.absorption.evidence.read import token_decoder
            from sae_hacking.train.run import load_tokenizer

            decode = token_decoder(load_tokenizer(evidence.model))
        from sae_hacking.absorption.evidence.neighbours import top_neighbours

        neighbours = top_neighbours(evidence.file)
        moves = None
        if ablations is not None:
            from sae_hacking.absorption.evidence.report_moves import gather_moves

            # Only the report's latents: the moves kept stay as few as the latents shown.
            wanted = set(selected) if selected is not None else None
            moves = gather_moves(*ablated, wanted, decode, reader)
        listed = selected if selected is not None else range(evidence.e)
        pages = sorted({i // latents_per_page for i in listed})
        meta = report_meta(
            evidence, latents_per_page, pages, selected, np_id, source, neighbours, moves
        )
        from tqdm import tqdm

        # ~10 ms a latent (decoding contexts): minutes at e = 65,536, so a bar on stderr.
        bar = tqdm(total=len(pages), unit="page", desc="latents-report", dynamic_ncols=True)
        try:
            return write_latents_report(
                out,
                meta,
                _counted(_pages(evidence, pages, latents_per_page, selected, decode,
                                explanations, np_id, neighbours, moves), bar),
            )  # fmt: skip
        finally:
            bar.close()


def _counted(pages, bar):
    for page in pages:
        yield page
        bar.update(1)


def report_meta(
    evidence, per_page: int, pages: list[int], selected, np_id, source, neighbours, moves=None
) -> dict[str, Any]:
    """What every page of a report shows about the run (the pages draw it); ``moves``: the
    :class:`~sae_hacking.absorption.evidence.report_moves.ReportMoves` of ``--ablations``."""
    identity = evidence.sae_identity()
    facts = _facts(evidence, identity, np_id, source, neighbours, selected)
    return {
        "e": evidence.e,
        "tokens": evidence.tokens,
        "per_page": per_page,
        "pages": pages,
        "listed": selected,
        "neuronpedia_id": np_id,
        "has_neighbours": neighbours is not None,
        "title": _title(evidence, identity),
        "has_moves": moves is not None,
        "reader_labels": moves.kind if moves is not None else None,
        "facts": facts + (moves.facts if moves is not None else []),
    }


def page_latents(
    evidence, page: int, per_page: int, decode, explanations, np_id, neighbours=None, moves=None
) -> list[dict[str, Any]]:
    """The latents of page ``page`` of a report of every latent (what the server shows)."""
    pages = _pages(evidence, [page], per_page, None, decode, explanations, np_id, neighbours, moves)
    return next(pages)[1]


def _pages(
    evidence, pages, per_page, selected, decode, explanations, np_id, neighbours, moves=None
) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """Each page's latents, read one page at a time."""
    from sae_hacking.saes.neuronpedia import latent_url

    counts = evidence.counts().tolist()
    tokens = max(evidence.tokens, 1)
    for page in pages:
        lo, hi = page * per_page, min(evidence.e, (page + 1) * per_page)
        if selected is not None:
            members = selected[bisect.bisect_left(selected, lo) : bisect.bisect_left(selected, hi)]
            lo, hi = members[0], members[-1] + 1
            wanted = set(members)
        latents = []
        for latent in evidence.latents(lo, hi, decode):
            i = latent["index"]
            if selected is not None and i not in wanted:
                continue
            latent["explanation"] = explanations.get(i)
            latent["url"] = latent_url(np_id, i)
            found = neighbours.of(i) if neighbours is not None else None
            latent["neighbours"] = (
                None
                if found is None
                else [[j, c, counts[i] * counts[j] / tokens, explanations.get(j)] for j, c in found]
            )
            latent["moves"] = moves.of(i) if moves is not None else None
            latents.append(latent)
        yield page, latents


def _title(evidence, identity: dict[str, Any]) -> str:
    sae = " / ".join(str(p) for p in (identity.get("sae_release"), identity.get("sae_id")) if p)
    return f"{evidence.model or '?'} · SAE {sae or '?'} · {identity.get('hook') or '?'}"


def _facts(evidence, identity, np_id, source, neighbours, selected) -> list[tuple[str, Any]]:
    settings = evidence.settings
    if neighbours is None:
        pairs = "none (a latents run)"
    elif neighbours.rows is None:
        pairs = "every pair (top 10 per latent)"
    else:
        pairs = f"the rows of latents {', '.join(map(str, neighbours.rows))}"
    return [
        ("model", evidence.model),
        ("SAE", " / ".join(str(p) for p in (identity.get("sae_release"), identity.get("sae_id")) if p)),
        ("hook", identity.get("hook")),
        ("latents (e)", evidence.e),
        ("in this report", evidence.e if selected is None else len(selected)),
        ("tokens counted", evidence.tokens),
        ("prompts", evidence.meta.get("prompts_done")),
        ("dataset", settings.get("dataset_id")),
        ("top examples per latent", evidence.n_top),
        ("sampled examples per latent", evidence.n_sample),
        ("quantile bands", evidence.bands),
        ("context tokens either side", (evidence.width - 1) // 2),
        ("co-occurrences", pairs),
        ("Neuronpedia id", np_id),
        ("explanations", source),
        ("results file", str(evidence.path)),
    ]  # fmt: skip
