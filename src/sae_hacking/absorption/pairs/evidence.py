"""The pairs report's side-by-side view (issue 21): for each of the report's first
``evidence_pairs`` pairs, both latents' evidence next to each other, so a researcher can judge
the pair:

- each latent's evidence (:mod:`sae_hacking.absorption.evidence.read`): its top examples (the
  first :data:`TOP_EXAMPLES`), the sampled examples in quantile bands, the logit lens; built once
  per latent however many pairs hold it;
- **the tokens where each fires**: the centre token of every distinct example (top and sampled,
  an example in both counted once) of each latent, counted per latent, in one table whose
  tokens only one latent fires on come first. Absorption shows as a child firing on tokens
  where its parent does not;
- **their reader effects**: the :data:`TOP_READERS` reader latents each one's mean ablation effect
  (summed effect / ablation count, as the pair finder compares them) moves most up and down, split
  into the moves both make (same reader, same sign, in both lists) and those only one makes.

The evidence comes from ``evidence_from`` (a ``latents`` or ``cooccurrences`` run of the ablated
SAE, refused when it is another SAE) or else from the co-occurrence results when they hold
evidence; with neither, the view is empty and its ``note`` says how to get it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float

from sae_hacking.absorption.evidence.read import Decode, Evidence
from sae_hacking.absorption.pairs.inputs import results_file
from sae_hacking.errors import FieldError, UsageError

TOP_EXAMPLES = 10  # top examples of each latent shown (the run may keep more)
TOP_READERS = 10  # reader latents listed per latent and direction (K)
NO_EVIDENCE = (
    "No side-by-side view: {path} holds no latent evidence (counted with --top-examples 0, or "
    "before evidence was collected). Rerun sae-hacking cooccurrences with --top-examples N, or "
    "run sae-hacking latents on the same SAE and text and give it as pairs --evidence-from RUN."
)
NO_VIEW = "No side-by-side view (--evidence-pairs 0)."


def open_evidence_from(config) -> Evidence | None:
    """The evidence ``evidence_from`` names (``None`` when not given), checked before the work:
    a run without evidence, or of another SAE than the ablated one, is a usage error."""
    if config.evidence_from is None or config.evidence_pairs == 0:
        return None
    try:
        evidence = Evidence(config.evidence_from, allow_partial=config.allow_partial)
    except UsageError as err:
        raise FieldError("evidence_from", f"names no usable latent evidence: {err}") from None
    try:
        settings = _ablation_settings(config)
        check_same_sae(evidence.sae_identity(), settings, config.evidence_from, evidence.model)
    except BaseException:
        evidence.close()
        raise
    return evidence


def _ablation_settings(config) -> dict[str, Any] | None:
    """The ablate run's settings, or ``None`` when its file cannot be read (the pair finder
    then says what is wrong with it)."""
    from sae_hacking.runs.results import ResultsFile

    try:
        with ResultsFile(results_file(config.input_path, "ablations", "input_path")) as file:
            return file.meta.get("settings", {})
    except UsageError:
        return None


def check_same_sae(
    identity: dict[str, Any], settings: dict[str, Any] | None, where: str, model: str | None = None
) -> None:
    """Refuse evidence of another SAE than the ablated one (by content hash when both runs
    recorded one, else by release, id and width) or of another model."""
    if settings is None:
        return
    ours = (
        settings.get("ablator_fingerprint")
        or settings.get("ablator_sae_fingerprint")
        or settings.get("sae_fingerprint")
    )
    theirs = identity.get("sae_fingerprint")
    names = (identity.get("sae_release"), settings.get("ablator_sae_release"))
    if ours and theirs:
        why = None if ours == theirs else "its SAE's content hash differs from the ablated SAE's"
    else:
        same = names[0] == names[1] and (identity.get("sae_id") or None) == (
            settings.get("ablator_sae_id") or None
        )
        widths = (settings.get("ablator_d_sae"), identity.get("d_sae"))
        same = same and (None in widths or widths[0] == widths[1])
        why = None if same else f"its SAE {names[0]} is not the ablated SAE {names[1]}"
    if why is None and model and settings.get("model") and model != settings["model"]:
        why = f"it was run on model {model}, the ablations on {settings['model']}"
    if why is not None:
        raise FieldError(
            "evidence_from",
            f"{where} is not evidence of the ablated SAE: {why}; give a latents run of the "
            "ablated SAE on the same model.",
        )


def pair_views(config, result: dict[str, Any], given: Evidence | None = None) -> dict[str, Any]:
    """The view of ``result``'s first ``evidence_pairs`` pairs (``result``: the pairs.json
    document of :func:`sae_hacking.absorption.pairs.run.find`); ``given``: the evidence of
    :func:`open_evidence_from` (closed here), else the co-occurrence results' own."""
    total = len(result["pairs"])
    if config.evidence_pairs == 0 or total == 0:
        if given is not None:
            given.close()
        return empty_view(NO_VIEW if total else "No pairs, so no side-by-side view.")
    evidence = given
    if evidence is None:
        path = results_file(config.cooccurrence_path, "cooccurrences", "cooccurrence_path")
        if not _holds_evidence(path):
            return empty_view(NO_EVIDENCE.format(path=path))
        evidence = Evidence(path, allow_partial=config.allow_partial)
    with evidence:
        decode = _decoder(evidence)
        if isinstance(decode, str):
            return empty_view(decode)
        pairs = result["pairs"][: config.evidence_pairs]
        ids = sorted({p[k]["id"] for p in pairs for k in ("ablator1", "ablator2")})
        latents, centres = latent_views(evidence, ids, decode)
        where = str(evidence.path)
    rows = mean_effect_rows(Path(result["meta"]["inputs"]["ablations"]), ids)
    for i in ids:
        latents[i]["up"], latents[i]["down"] = top_moves(rows[i], TOP_READERS)
    views = []
    for p in pairs:
        a, b = p["ablator1"]["id"], p["ablator2"]["id"]
        views.append(
            {
                "tokens": token_table(centres[a][0], centres[b][0]),
                "totals": [centres[a][1], centres[b][1]],
                "effects": compare_moves(latents[a], latents[b], rows[a], rows[b]),
            }
        )
    which = f"all {total:,}" if len(pairs) == total else f"the first {len(pairs):,} of {total:,}"
    note = (
        f"Side-by-side view of {which} pairs (open one from its # button or row); evidence "
        f"from {where}."
    )
    return {
        "note": note,
        "n_pairs": len(pairs),
        "source": where,
        "top_readers": TOP_READERS,
        "latents": {str(i): view for i, view in latents.items()},
        "pairs": views,
    }


def empty_view(note: str) -> dict[str, Any]:
    return {"note": note, "n_pairs": 0, "source": None, "top_readers": TOP_READERS,
            "latents": {}, "pairs": []}  # fmt: skip


def _holds_evidence(path: Path) -> bool:
    from sae_hacking.runs.results import ResultsFile

    with ResultsFile(path) as file:
        return "top_values_eX" in file.keys()


def _decoder(evidence: Evidence) -> Decode | str:
    """The evidence's token decoder, or why there is none: a tokenizer that cannot be loaded
    (offline, say) costs the view, not the pairs."""
    from sae_hacking.absorption.evidence.read import token_decoder
    from sae_hacking.train.run import load_tokenizer

    try:
        return token_decoder(load_tokenizer(evidence.model))
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return (
            f"No side-by-side view: the tokenizer of {evidence.model} cannot be loaded ({first})."
        )


def latent_views(evidence: Evidence, ids: list[int], decode: Decode) -> tuple[dict, dict]:
    """Each latent's view (index, count, density, max, the first :data:`TOP_EXAMPLES` top
    examples, bands, logit lens) and ``(centre-token counts, examples counted)``."""
    views, centres = {}, {}
    for i in ids:  # ascending: the reads go forward through the file
        (full,) = evidence.latents(evidence.check_latent(i), i + 1, decode)
        centres[i] = centre_tokens(full)
        views[i] = {
            key: full[key] for key in ("index", "count", "density", "max", "bands", "logit_lens")
        }
        views[i]["top"] = full["top"][:TOP_EXAMPLES]
    return views, centres


def centre_tokens(latent: dict[str, Any]) -> tuple[Counter, int]:
    """How often each centre token occurs among the latent's distinct examples (top and
    sampled; one example in both counts once), and how many examples that is."""
    seen: dict[tuple[int, int], str] = {}
    examples = list(latent["top"]) + [ex for band in latent["bands"] for ex in band["examples"]]
    for ex in examples:
        seen.setdefault((ex["prompt"], ex["position"]), ex["tokens"][ex["center"]])
    return Counter(seen.values()), len(seen)


def token_table(first: Counter, second: Counter) -> list[list]:
    """``[token, count 1, count 2]`` of every centre token: the tokens only latent 1 fires on,
    then those only latent 2 fires on, then the shared ones; most frequent first in each."""
    rows = [[t, first.get(t, 0), second.get(t, 0)] for t in set(first) | set(second)]
    rows.sort(key=lambda r: (_group(r[1], r[2]), -(r[1] + r[2]), r[0]))
    return rows


def _group(count1: int, count2: int) -> int:
    return 2 if count1 and count2 else (0 if count1 else 1)


def mean_effect_rows(path: Path, ids: list[int]) -> dict[int, Float[torch.Tensor, " E"]]:
    """The mean effect row (summed effect / ablation count) of each latent of ``ids``, read row
    by row in file order (only the frames that hold them are decompressed)."""
    from sae_hacking.absorption.pairs.inputs import Effects

    effects = Effects.open(path)
    try:
        E = effects.d_reader
        position_of = {int(i): d for d, i in enumerate(effects.latents_D.tolist())}
        missing = [i for i in ids if i not in position_of]
        if missing:
            raise UsageError(f"{path} holds no ablation effects of latents {missing[:8]}.")
        rows = {}
        for i in sorted(ids, key=position_of.__getitem__):
            d = position_of[i]
            row_E = effects.file.read_range("effects_DE", d * E, (d + 1) * E).float()
            rows[i] = row_E / max(int(effects.counts_D[d]), 1)
        return rows
    finally:
        effects.close()


def top_moves(row_E: Float[torch.Tensor, " E"], k: int) -> tuple[list[list], list[list]]:
    """The ``k`` reader latents ``row_E`` raises most (positive effects only) and lowers most
    (negative only), as ``[reader, effect]``, ties by reader index."""
    order = torch.sort(row_E, descending=True, stable=True).indices
    up = [[int(r), float(row_E[r])] for r in order[:k] if row_E[r] > 0]
    order = torch.sort(row_E, stable=True).indices
    down = [[int(r), float(row_E[r])] for r in order[:k] if row_E[r] < 0]
    return up, down


def compare_moves(first: dict, second: dict, row1_E, row2_E) -> dict[str, list[list]]:
    """``shared``: readers in both latents' top lists with the same sign; ``only1`` /
    ``only2``: the rest of each one's lists. Entries ``[reader, effect 1, effect 2]`` (both
    latents' mean effects on that reader, listed or not), strongest first."""
    out: dict[str, list[list]] = {"shared": [], "only1": [], "only2": []}
    for side in ("up", "down"):
        mine = {r for r, _ in first[side]}
        theirs = {r for r, _ in second[side]}
        for name, readers in (
            ("shared", mine & theirs),
            ("only1", mine - theirs),
            ("only2", theirs - mine),
        ):
            out[name] += [[r, float(row1_E[r]), float(row2_E[r])] for r in readers]
    strength = {
        "shared": lambda e: abs(e[1]) + abs(e[2]),
        "only1": lambda e: abs(e[1]),
        "only2": lambda e: abs(e[2]),
    }
    for name, entries in out.items():
        entries.sort(key=lambda e, s=strength[name]: (-s(e), e[0]))
    return out
