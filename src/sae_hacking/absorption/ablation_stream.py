"""What an ``ablate`` run accumulates and reads: the effect sums of a text stream
(:class:`AblationAccumulator`), latent frequencies for ``exclude_latent_threshold``, and the
exact merge of shards. The run itself is :func:`sae_hacking.absorption.ablation_run.run`; the
results are ``ablations.safetensors.zst`` + ``ablations.json``, with the tensors of
:data:`sae_hacking.absorption.ablation_effects.RESULT_KEYS`.

Shards of an ablation run hold effect rows for different sets of latents, so they are merged
by :func:`merge_ablations` (rows matched by latent id), not by the elementwise
:func:`sae_hacking.runs.merge.merge_results`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from jaxtyping import Bool, Int

from sae_hacking.absorption.ablation import AblationSetup, method_function
from sae_hacking.absorption.ablation_effects import RESULT_KEYS, EffectSums
from sae_hacking.absorption.ablation_run import FREQUENCIES_FILE, KIND
from sae_hacking.data.text import TokenBatch
from sae_hacking.errors import FieldError, UsageError
from sae_hacking.runs.files import provenance
from sae_hacking.runs.results import ResultsFile, write_results, write_safetensors
from sae_hacking.runs.stream import RESULTS_FORMAT, Accumulator


class AblationAccumulator(Accumulator):
    """Sums of ablation effects (:class:`EffectSums`) fed by ``fast`` or ``naive``."""

    def __init__(self, setup: AblationSetup, method: str):
        self.setup = setup
        self.effects = method_function(method)
        self.sums = EffectSums(setup.reader.d_sae)

    def add(self, batch: TokenBatch) -> int:
        for prompt in self.effects(self.setup, batch):
            self.sums.add(prompt)
        return batch.n_real_tokens

    def state(self) -> dict[str, torch.Tensor]:
        tensors = self.sums.tensors()
        del tensors["effects_DE"]  # derived from effects_fixed_DE
        return tensors

    def load_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        sums = EffectSums.from_tensors(dict(tensors))
        if sums.d_reader != self.setup.reader.d_sae:
            raise UsageError(
                f"the checkpoint holds effects on {sums.d_reader} reader latents but the reader "
                f"SAE has {self.setup.reader.d_sae}; it belongs to another run."
            )
        self.sums = sums

    def results(self) -> dict[str, torch.Tensor]:
        return self.sums.tensors()

    def describe(self) -> dict[str, str]:
        return dict(RESULT_KEYS)


# -- latent frequencies for --exclude-latent-threshold ---------------------------------------


def count_frequencies(
    lm, sae, hook: str, batches: Iterable[TokenBatch]
) -> tuple[Int[torch.Tensor, " e"], int]:
    """How many real tokens each latent of ``sae`` is active on, and the real tokens counted."""
    active_e = torch.zeros(sae.d_sae, dtype=torch.long)
    tokens = 0
    for batch in batches:
        batch = batch.to(lm.device)
        x_BSM = lm.read(batch.input_ids_BS, batch.attention_mask_BS, [hook])[hook]
        with torch.inference_mode():
            on_BSe = sae.encode(x_BSM.to(sae.W_dec.dtype)) > 0
            active_e += (on_BSe & batch.real_token_mask_BS[..., None]).sum((0, 1)).cpu()
        tokens += batch.n_real_tokens
    return active_e, tokens


def save_frequencies(run_dir: Path, active_e: torch.Tensor, tokens: int, source: str) -> Path:
    return write_safetensors(
        run_dir / FREQUENCIES_FILE,
        {"active_tokens_e": active_e, "n_tokens": torch.tensor(tokens)},
        {"source": source, "provenance": provenance()},
        compress=False,
    )


# Settings that name the model and ablator SAE, in both co-occurrence and ablation runs; when
# both runs recorded the SAE's content hash, that decides instead of the names.
ABLATOR_IDENTITY = ("model", "ablator_sae_release", "ablator_sae_id")


def read_frequencies(
    path: str | Path, settings: Mapping[str, object] | None = None
) -> tuple[torch.Tensor, int]:
    """``(tokens each latent is active on, tokens counted)`` from a co-occurrence run
    (results file, sidecar or run directory; :class:`~sae_hacking.absorption.cooccurrence.
    Cooccurrences`) or from an ablate run's ``frequencies.safetensors`` (file or run directory).

    With ``settings`` (this run's), a co-occurrence run of another model or ablator SAE is a
    :class:`UsageError`: its frequencies would exclude the wrong latents.
    """
    from sae_hacking.absorption.cooccurrence import Cooccurrences

    path = Path(path)
    if path.is_dir() and (path / FREQUENCIES_FILE).is_file():
        path = path / FREQUENCIES_FILE
    if path.name == FREQUENCIES_FILE:
        with ResultsFile(path) as results:
            return results.read("active_tokens_e").long(), int(results.read("n_tokens"))
    with Cooccurrences(path) as counts:
        theirs = dict(counts.meta.get("settings", {}))
        theirs["ablator_fingerprint"] = theirs.get("sae_fingerprint")
        both_hashed = settings is not None and theirs["ablator_fingerprint"] is not None
        both_hashed = both_hashed and settings.get("ablator_fingerprint") is not None
        keys = ("model", "ablator_fingerprint") if both_hashed else ABLATOR_IDENTITY
        for key in keys if settings is not None else ():
            # An empty SAE id and no SAE id mean the same: the release is a file.
            if (
                theirs.get(key) is not None
                and key in settings
                and (theirs[key] or None) != (settings[key] or None)
            ):
                raise FieldError(
                    "frequencies_from",
                    f"{path} was counted with {key} = {theirs[key]!r}, but this run uses "
                    f"{settings[key]!r}; give the co-occurrences of this ablator.",
                )
        return counts.activations().long(), counts.tokens


def exclusion_mask(
    active_e: torch.Tensor, tokens: int, threshold: float, d_sae: int, source: str
) -> Bool[torch.Tensor, " e"]:
    """Latents active on more than ``threshold`` of the tokens."""
    if active_e.shape != (d_sae,):
        raise UsageError(
            f"the frequencies in {source} are for {active_e.shape[0]} latents but the ablator SAE "
            f"has {d_sae}; they belong to another SAE."
        )
    if tokens <= 0:
        raise UsageError(f"the frequencies in {source} were counted over no tokens.")
    return active_e.double() / tokens > threshold


# -- merging shards ---------------------------------------------------------------------------


def merge_ablations(out: str | Path, paths: list[str | Path]) -> tuple[Path, Path]:
    """Merge complete ``ablations`` results of disjoint shards (same settings) exactly: rows
    are matched by latent id and their int64 sums added."""
    from sae_hacking.runs.merge import check_runs, merged_meta
    from sae_hacking.runs.record import check_merge_output

    stem = check_merge_output(out, paths)
    merged: EffectSums | None = None
    metas = []
    for path in paths:
        with ResultsFile(path) as results:
            meta = results.meta
            if meta.get("format") == RESULTS_FORMAT and meta.get("kind") != KIND:
                raise UsageError(f"{path} holds {meta.get('kind')!r} results, not {KIND!r}.")
            check_runs([(Path(path), meta)])
            sums = EffectSums.from_tensors({key: results.read(key) for key in results.keys()})
        metas.append(meta)
        if merged is None:
            merged = sums
        else:
            merged.merge(sums)
    shards = check_runs([(Path(p), m) for p, m in zip(paths, metas, strict=True)])
    return write_results(stem, merged.tensors(), merged_meta(metas, paths, shards))
