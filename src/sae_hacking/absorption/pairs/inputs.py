"""The inputs of the pair finder: an ``ablate`` results file and a ``cooccurrences`` results file
of the same model, ablator SAE and hook, read without loading more than needed.

- :func:`results_file`: a run directory, a ``.json`` sidecar, or the results path with or without
  ``.zst`` → the ``.safetensors.zst`` file.
- :func:`check_same_ablator`: both files must describe the same model, ablator SAE (by content
  hash when both recorded one, else by release and id) and hook, and hold every shard's prompts
  (unless allowed); :func:`check_same_dataset`: the same dataset and text column (unless
  allowed).
- :class:`Effects`: the compared latents' effect rows, streamed from the file.
- :class:`CooccurrenceLookup`: counts of many pairs at once, from the packed triangle or from a
  rows-mode file whose rows cover the compared latents.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int

from sae_hacking.absorption.cooccurrence.accumulator import Cooccurrences
from sae_hacking.absorption.cooccurrence.kernels import row_starts
from sae_hacking.errors import FieldError, UsageError
from sae_hacking.runs.locate import results_file_of
from sae_hacking.runs.results import ResultsFile
from sae_hacking.runs.shards import check_all_shards, coverage, partial_description, shards_of

ROWS_PER_READ = 2**22  # elements of the effects matrix decompressed at a time


def results_file(path: str | Path, name: str, key: str) -> Path:
    """The results file ``path`` names (see the module docstring); ``key`` names the setting
    for the error."""
    given = Path(path)
    path = results_file_of(path, name)
    if not path.is_file():
        kind = _run_kind(given)
        if kind is not None and kind != name:
            inside = given / name
            hint = f" (its {name} run is {inside})" if inside.is_dir() else ""
            raise FieldError(
                key, f"{given} is a {kind} run, where {name} results were expected{hint}."
            )
        raise FieldError(key, f"{path}: no {name} results there (is the run finished?).")
    return path


def _run_kind(folder: Path) -> str | None:
    """The kind a run directory's ``run.json`` records (``None``: not a readable run)."""
    import json

    from sae_hacking.runs.record import RUN_FILE

    try:
        kind = json.loads((folder / RUN_FILE).read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


def _sae_identity(settings: dict[str, Any], fingerprint_key: str) -> tuple:
    return (
        settings.get(fingerprint_key),
        settings.get("ablator_sae_release"),
        settings.get("ablator_sae_id") or None,
    )


def check_same_ablator(
    ablations: dict, cooccurrences: dict, paths: tuple[Path, Path], allow_partial: bool = False
) -> None:
    """Refuse files of another kind, unfinished runs, results of only some shards (unless
    ``allow_partial``), or two different models, SAEs or hooks."""
    for meta, kind, path in (
        (ablations, "ablations", paths[0]),
        (cooccurrences, "cooccurrences", paths[1]),
    ):
        if meta.get("kind") != kind:
            raise UsageError(f"{path} holds {meta.get('kind')!r} results, not {kind!r}.")
        if not meta.get("complete"):
            raise UsageError(f"{path} is the checkpoint of an unfinished run; finish it first.")
        check_all_shards(meta, path, allow_partial)
    a, c = ablations.get("settings", {}), cooccurrences.get("settings", {})
    a_sae = _sae_identity(a, "ablator_fingerprint")
    c_sae = _sae_identity(c, "sae_fingerprint")
    same_sae = a_sae[0] == c_sae[0] if a_sae[0] and c_sae[0] else a_sae[1:] == c_sae[1:]
    differences = []
    if a.get("model") != c.get("model"):
        differences.append(f"model {a.get('model')!r} vs {c.get('model')!r}")
    if not same_sae:
        differences.append(f"ablator SAE {a_sae[1:]} vs {c_sae[1:]}")
    if a.get("ablator_sae_hook") != c.get("hook"):
        differences.append(f"hook {a.get('ablator_sae_hook')!r} vs {c.get('hook')!r}")
    if differences:
        raise UsageError(
            f"{paths[0]} and {paths[1]} describe different ablators ({'; '.join(differences)}); "
            "give the co-occurrences of the ablator SAE that was ablated."
        )


def dataset_of(meta: dict[str, Any]) -> dict[str, Any]:
    """What a results file was counted on: the text and how much of it (pairs.json records it
    for both inputs)."""
    settings = meta.get("settings", {})
    shards = shards_of(meta)
    present, of = coverage(shards) if shards else ([0], 1)
    return {
        "dataset_id": settings.get("dataset_id"),
        "text_column": settings.get("text_column") or "text",
        "max_tokens_in_prompt": settings.get("max_tokens_in_prompt"),
        "n_prompts": settings.get("n_prompts"),
        "prompts_done": meta.get("prompts_done"),
        "tokens_done": meta.get("tokens_done"),
        "shards_present": {"present": present, "of": of},
        "partial": partial_description(meta) is not None,
    }


def check_same_dataset(
    ablations: dict, cooccurrences: dict, paths: tuple[Path, Path], allow: bool = False
) -> None:
    """Refuse co-occurrences counted on another text than the ablations (another dataset or
    text column) unless ``allow``: their zero counts would say nothing about the ablated text."""
    a, c = dataset_of(ablations), dataset_of(cooccurrences)
    differences = [
        f"{name} {a[key]!r} vs {c[key]!r}"
        for key, name in (("dataset_id", "dataset"), ("text_column", "text column"))
        if a[key] != c[key]
    ]
    if differences and not allow:
        raise UsageError(
            f"{paths[0]} and {paths[1]} were counted on different text ({'; '.join(differences)}); "
            "give co-occurrences of the ablated dataset, or `allow_other_dataset` to compare "
            "them anyway."
        )


@dataclass
class Effects:
    """The ablation results' latents and counts, and a reader of their mean-effect rows."""

    file: ResultsFile
    latents_D: Int[torch.Tensor, " D"]  # every ablated latent, in the file's row order
    counts_D: Int[torch.Tensor, " D"]  # prompts each was ablated in
    d_reader: int

    @classmethod
    def open(cls, path: Path) -> Effects:
        file = ResultsFile(path)
        if file.meta.get("kind") != "ablations":
            file.close()
            raise UsageError(f"{path} holds {file.meta.get('kind')!r} results, not 'ablations'.")
        try:
            latents = file.read("latents_D").long()
            counts = file.read("ablation_counts_D").long()
            d_reader = file.shape("effects_DE")[1]
        except (KeyError, UsageError) as err:
            file.close()
            raise UsageError(f"{path} does not hold ablation effects ({err}).") from None
        return cls(file, latents, counts, d_reader)

    def rows(self, positions_D: Int[torch.Tensor, " D"]) -> Float[torch.Tensor, "D E"]:
        """Mean effects (sum / ablation count) of the file rows ``positions_D``, streamed in
        chunks of whole rows."""
        E = self.d_reader
        out_DE = torch.empty(positions_D.shape[0], E)
        where = torch.full((self.latents_D.shape[0],), -1, dtype=torch.long)
        where[positions_D] = torch.arange(positions_D.shape[0])
        per_read = max(1, ROWS_PER_READ // max(E, 1))
        for start, chunk in self.file.iter_ranges("effects_DE", per_read * E):
            first = start // E
            block_RE = chunk.view(-1, E)
            rows_R = where[first : first + block_RE.shape[0]]
            keep = rows_R >= 0
            out_DE[rows_R[keep]] = block_RE[keep].float()
        return out_DE / self.counts_D[positions_D, None].clamp_min(1)

    def close(self) -> None:
        self.file.close()


class CooccurrenceLookup:
    """Co-occurrence counts of many pairs at once (CPU): the packed triangle is read once;
    a rows-mode file answers pairs that have a counted row on either side."""

    def __init__(self, counts: Cooccurrences, needed: Int[torch.Tensor, " D"], key: str):
        self.tokens = counts.tokens
        self.activations_e = counts.activations().long()
        self.e = counts.e
        if counts.rows is None:
            self.packed_P = counts.file.read("cooccurrences_P")
            self.row_start_e = row_starts(self.e)
            self.rows_De = None
        else:
            missing = sorted(set(needed.tolist()) - set(counts.rows))
            if missing:
                raise FieldError(
                    key,
                    f"counts rows {counts.rows[:8]}{'…' if len(counts.rows) > 8 else ''} only, "
                    f"but pairs of latents {missing[:8]} are compared; count those rows too "
                    "(cooccurrences --rows) or use a full co-occurrence file.",
                )
            self.rows_De = counts.file.read("cooccurrences_De").long()
            self.row_of_e = torch.full((self.e,), -1, dtype=torch.long)
            self.row_of_e[torch.tensor(counts.rows)] = torch.arange(len(counts.rows))

    def __call__(self, a_N: torch.Tensor, b_N: torch.Tensor) -> torch.Tensor:
        a_N, b_N = a_N.cpu().long(), b_N.cpu().long()
        if self.rows_De is None:
            lo, hi = torch.minimum(a_N, b_N), torch.maximum(a_N, b_N)
            return self.packed_P[self.row_start_e[lo] + hi].long()
        ra, rb = self.row_of_e[a_N], self.row_of_e[b_N]
        from_a = self.rows_De[ra.clamp_min(0), b_N]
        from_b = self.rows_De[rb.clamp_min(0), a_N]
        return torch.where(ra >= 0, from_a, from_b)
