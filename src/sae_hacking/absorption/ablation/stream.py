"""What an ``ablate`` run accumulates and reads: the effect sums of a text stream
(:class:`AblationAccumulator`), latent frequencies for ``exclude_latent_threshold``, and the
exact merge of shards. The run itself is :func:`sae_hacking.absorption.ablation.run.run`; the
results are ``ablations.safetensors.zst`` + ``ablations.json``, with the tensors of
:data:`sae_hacking.absorption.ablation.effects.RESULT_KEYS`.

Shards of an ablation run hold effect rows for different sets of latents, so they are merged
by :func:`merge_ablations` (rows matched by latent id), not by the elementwise
:func:`sae_hacking.runs.merge.merge_results`.

Memory: the sums live on the device the effects are computed on (see
:mod:`sae_hacking.absorption.ablation.effects`); checkpoints and results are written, and
checkpoints loaded, one chunk of rows at a time; the merge streams the shards' rows into the
output chunk by chunk. The host never holds a ``D x E`` matrix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from jaxtyping import Bool, Int

from sae_hacking.absorption.ablation.core import AblationSetup, method_function
from sae_hacking.absorption.ablation.effects import (
    RESULT_KEYS,
    EffectSums,
    chunk_rows,
    from_fixed,
    sums_device,
)
from sae_hacking.absorption.ablation.identity import FREQUENCIES_FILE, KIND
from sae_hacking.data.text import TokenBatch
from sae_hacking.errors import FieldError, UsageError
from sae_hacking.runs.files import provenance
from sae_hacking.runs.results import (
    ResultsFile,
    TensorStream,
    write_results,
    write_safetensors,
)
from sae_hacking.runs.stream import RESULTS_FORMAT, Accumulator


class AblationAccumulator(Accumulator):
    """Sums of ablation effects (:class:`EffectSums`, on the model's GPU if it has one) fed by
    ``fast`` or ``naive``."""

    def __init__(self, setup: AblationSetup, method: str, sums_on: str = "auto"):
        self.setup = setup
        self.effects = method_function(method)
        worst = 8 * setup.ablator.d_sae * setup.reader.d_sae
        self.sums = EffectSums(setup.reader.d_sae, sums_device(setup.lm.device, sums_on, worst))

    def add(self, batch: TokenBatch) -> int:
        self.sums.add_prompts(self.effects(self.setup, batch))
        return batch.n_real_tokens

    def state(self) -> dict[str, torch.Tensor | TensorStream]:
        return self.sums.streams(with_floats=False)  # effects_DE derives from effects_fixed_DE

    def load_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        if "effects_fixed_DE" not in tensors:
            raise UsageError("the checkpoint holds no ablation sums; it belongs to another run.")
        width = _width(tensors)
        if width != self.setup.reader.d_sae:
            raise UsageError(
                f"the checkpoint holds effects on {width} reader latents but the reader "
                f"SAE has {self.setup.reader.d_sae}; it belongs to another run."
            )
        self.sums = EffectSums.from_tensors(tensors, self.sums.device)

    def results(self) -> dict[str, torch.Tensor | TensorStream]:
        return self.sums.streams()

    def describe(self) -> dict[str, str]:
        return dict(RESULT_KEYS)


def _width(tensors: Mapping[str, torch.Tensor]) -> int:
    """The reader width of stored sums, without reading them."""
    if hasattr(tensors, "open"):  # StoredTensors: ask the header
        with tensors.open() as results:
            return results.shape("effects_fixed_DE")[1]
    return int(tensors["effects_fixed_DE"].shape[1])


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
    path: str | Path, settings: Mapping[str, object] | None = None, allow_partial: bool = False
) -> tuple[torch.Tensor, int]:
    """``(tokens each latent is active on, tokens counted)`` from a co-occurrence run
    (results file, sidecar or run directory;
    :class:`~sae_hacking.absorption.cooccurrence.accumulator.Cooccurrences`) or from an ablate run's ``frequencies.safetensors`` (file or run directory).

    With ``settings`` (this run's), a co-occurrence run of another model or ablator SAE is a
    :class:`UsageError`: its frequencies would exclude the wrong latents. So is a co-occurrence
    run of only some shards, unless ``allow_partial``.
    """
    from sae_hacking.absorption.cooccurrence.accumulator import Cooccurrences

    path = Path(path)
    if path.is_dir() and (path / FREQUENCIES_FILE).is_file():
        path = path / FREQUENCIES_FILE
    if path.name == FREQUENCIES_FILE:
        with ResultsFile(path) as results:
            return results.read("active_tokens_e").long(), int(results.read("n_tokens"))
    with Cooccurrences(path, allow_partial) as counts:
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
    are matched by latent id and their int64 sums added, one chunk of output rows at a time
    (each shard's rows are sorted by latent, so a chunk reads one contiguous range per shard)."""
    from contextlib import ExitStack

    from sae_hacking.runs.merge import check_runs, merged_meta
    from sae_hacking.runs.record import check_merge_output

    stem = check_merge_output(out, paths)
    with ExitStack() as stack:
        files = []
        for path in paths:
            results = stack.enter_context(ResultsFile(path))
            meta = results.meta
            if meta.get("format") == RESULTS_FORMAT and meta.get("kind") != KIND:
                raise UsageError(f"{path} holds {meta.get('kind')!r} results, not {KIND!r}.")
            check_runs([(Path(path), meta)])
            files.append(results)
        shards = check_runs([(Path(p), f.meta) for p, f in zip(paths, files, strict=True)])
        tensors = _merged_streams(files)
        meta = merged_meta([f.meta for f in files], paths, shards)
        return write_results(stem, tensors, meta)


def _merged_streams(files: list[ResultsFile]) -> dict[str, torch.Tensor | TensorStream]:
    """The merged :data:`RESULT_KEYS` of open shard files, the ``[D, E]`` ones as streams."""
    widths = {f.shape("effects_fixed_DE")[1] for f in files}
    if len(widths) != 1:
        raise UsageError(
            f"{files[0].path} and the other shards hold effects on different numbers of reader "
            f"latents ({sorted(widths)}); they belong to different runs."
        )
    (d_reader,) = widths
    latents = [f.read("latents_D").long() for f in files]
    union_D = torch.unique(torch.cat(latents))  # sorted
    counts_D = torch.zeros(len(union_D), dtype=torch.long)
    for mine, f in zip(latents, files, strict=True):
        counts_D.index_add_(0, torch.searchsorted(union_D, mine), f.read("ablation_counts_D"))

    def fixed_chunks():
        step = chunk_rows(d_reader)
        for start in range(0, len(union_D), step):
            chunk_D = union_D[start : start + step]
            out_DE = torch.zeros(len(chunk_D), d_reader, dtype=torch.long)
            for mine, f in zip(latents, files, strict=True):
                lo = int(torch.searchsorted(mine, chunk_D[0]))
                hi = int(torch.searchsorted(mine, chunk_D[-1], right=True))
                if hi > lo:
                    rows_DE = f.read_range("effects_fixed_DE", lo * d_reader, hi * d_reader)
                    at_D = torch.searchsorted(chunk_D, mine[lo:hi])
                    out_DE.index_add_(0, at_D, rows_DE.view(-1, d_reader))
            yield out_DE

    def float_chunks():  # quarter chunks: the conversion takes a float64 copy
        for chunk_DE in fixed_chunks():
            yield from (from_fixed(part) for part in chunk_DE.split(max(1, len(chunk_DE) // 4)))

    shape = (len(union_D), d_reader)
    total = {key: sum(int(f.read(key)) for f in files) for key in ("n_prompts", "n_prompts_seen")}
    return {
        "latents_D": union_D,
        "effects_DE": TensorStream(torch.float32, shape, float_chunks),
        "effects_fixed_DE": TensorStream(torch.long, shape, fixed_chunks),
        "ablation_counts_D": counts_D,
        "n_prompts": torch.tensor(total["n_prompts"], dtype=torch.long),
        "n_prompts_seen": torch.tensor(total["n_prompts_seen"], dtype=torch.long),
    }
