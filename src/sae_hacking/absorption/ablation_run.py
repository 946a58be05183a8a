"""The ``ablate`` run: selective ablation effects over a text stream, resumable and shardable.

Uses the run machinery of :mod:`sae_hacking.runs.stream` (checkpoint every N prompts,
``--resume``, ``--shard i/n``); the results are ``ablations.safetensors.zst`` + ``ablations.json``
in the run directory, with the tensors of
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
from sae_hacking.data.text import TokenBatch
from sae_hacking.errors import UsageError
from sae_hacking.runs.files import provenance
from sae_hacking.runs.results import ResultsFile, write_results, write_safetensors
from sae_hacking.runs.shards import Shard, covers_everything
from sae_hacking.runs.stream import RESULTS_FORMAT, Accumulator

KIND = "ablations"
RESULTS_NAME = "ablations"
FREQUENCIES_FILE = "frequencies.safetensors"
PROGRESS_COUNTERS = ("rows_done", "prompts_done", "tokens_done")


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


def read_frequencies(path: str | Path) -> tuple[torch.Tensor, int]:
    """``(tokens each latent is active on, tokens counted)`` from a co-occurrence run
    (results file, sidecar or run directory; :class:`~sae_hacking.absorption.cooccurrence.
    Cooccurrences`) or from an ablate run's ``frequencies.safetensors`` (file or run directory)."""
    from sae_hacking.absorption.cooccurrence import Cooccurrences

    path = Path(path)
    if path.is_dir() and (path / FREQUENCIES_FILE).is_file():
        path = path / FREQUENCIES_FILE
    if path.name == FREQUENCIES_FILE:
        with ResultsFile(path) as results:
            return results.read("active_tokens_e").long(), int(results.read("n_tokens"))
    with Cooccurrences(path) as counts:
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
    from sae_hacking.runs.merge import results_stem

    if len(paths) < 2:
        raise UsageError(f"merging needs at least two results files, got {len(paths)}.")
    merged: EffectSums | None = None
    metas, shards = [], []
    for path in paths:
        with ResultsFile(path) as results:
            meta = results.meta
            if meta.get("format") != RESULTS_FORMAT or meta.get("kind") != KIND:
                raise UsageError(f"{path} is not the results file of an ablation run.")
            if not meta.get("complete"):
                raise UsageError(f"{path} is a checkpoint of an unfinished run; --resume it first.")
            sums = EffectSums.from_tensors({key: results.read(key) for key in results.keys()})
        _check_same_settings(path, meta, paths[0], metas[0] if metas else meta)
        for entry in meta["shards"]:
            shard = Shard.from_json(entry)
            for other_path, other in shards:
                if shard.overlaps(other):
                    raise UsageError(
                        f"shard {shard} of {path} and shard {other} of {other_path} share "
                        "prompts; each prompt may be counted once."
                    )
            shards.append((path, shard))
        metas.append(meta)
        if merged is None:
            merged = sums
        else:
            merged.merge(sums)
    meta = dict(metas[0])
    for counter in PROGRESS_COUNTERS:
        meta[counter] = sum(int(m[counter]) for m in metas)
    meta["shards"] = [entry for m in metas for entry in m["shards"]]
    meta["covers_all_rows"] = covers_everything([shard for _, shard in shards])
    meta["merged_from"] = [str(Path(p)) for p in paths]
    meta["provenance"] = provenance()
    return write_results(results_stem(out), merged.tensors(), meta)


def _check_same_settings(path, meta: dict, first_path, first: dict) -> None:
    free = set(first.get("free_settings", ()))
    ours = {k: v for k, v in meta["settings"].items() if k not in free}
    theirs = {k: v for k, v in first["settings"].items() if k not in free}
    for key in sorted(set(ours) | set(theirs)):
        if ours.get(key) != theirs.get(key):
            raise UsageError(
                f"{path} was computed with {key} = {ours.get(key)!r} but {first_path} with "
                f"{theirs.get(key)!r}; only results of the same settings merge."
            )


# -- the command --------------------------------------------------------------------------------


def run_ablate(args, given: dict, defaults: dict) -> int:
    """``sae-hacking ablate``: ``given``/``defaults`` are the identifying settings as parsed and
    as the parser's defaults (a resumed run takes its saved values for flags left at default)."""
    from sae_hacking.absorption.ablation import make_setup
    from sae_hacking.cli.lm import load_lm, load_sae_from_args
    from sae_hacking.runs.stream import StreamRun, shard_batches

    run = None
    if args.resume is not None:
        run = StreamRun.open(args.resume, KIND)
        # Settings a resume may change (n_prompts, batch size) keep their saved values
        # unless given: resolve_settings takes them from ``given`` as they are.
        given = {
            key: run.settings.get(key, value)
            if key in run.resumable and value == defaults.get(key)
            else value
            for key, value in given.items()
        }
        for key, value in run.resolve_settings(given, defaults).items():
            setattr(args, key, value)
        args.shard = run.shard
        if run.is_complete():
            print(f"{run.results_path} is already complete; nothing to do.")
            return 0
    if args.exclude_latent_threshold is None and args.frequencies_from is not None:
        raise UsageError("--frequencies-from is only used with --exclude-latent-threshold F.")
    if args.exclude_latent_threshold is not None and not 0 <= args.exclude_latent_threshold <= 1:
        raise UsageError(
            f"--exclude-latent-threshold must be a fraction in [0, 1], got "
            f"{args.exclude_latent_threshold}."
        )
    lm = load_lm(args)
    ablator = load_sae_from_args(args, "ablator", lm.device)
    reader = load_sae_from_args(args, "reader", lm.device)
    setup = make_setup(
        lm,
        ablator,
        reader,
        args.abridge_ablations_to,
        selected=args.selected_features,
        ablator_hook=args.ablator_sae_hook,
        reader_hook=args.reader_sae_hook,
        rows_per_chunk=args.variants_per_batch,
        batch_prompts=args.batch_prompts,
    )
    # Record the hooks the SAEs read (they may come from the SAE files, not the flags).
    args.ablator_sae_hook, args.reader_sae_hook = setup.ablator_hook, setup.reader_hook
    settings = {key: getattr(args, key) for key in given}
    frequencies = None
    if args.exclude_latent_threshold is not None and args.frequencies_from is not None:
        frequencies = (*read_frequencies(args.frequencies_from), args.frequencies_from)
    elif args.exclude_latent_threshold is not None and args.n_prompts is None:
        raise UsageError(
            "--exclude-latent-threshold without --frequencies-from counts frequencies in a first "
            "pass over the prompts, which needs --n-prompts N (or pass --frequencies-from FILE)."
        )
    if run is None:
        free = () if args.batch_prompts else ("batch_size",)
        run = StreamRun.create(
            args.output_dir, "ablate", KIND, settings, args.shard, RESULTS_NAME, free
        )
        print(f"run directory: {run.run_dir}")
    if args.exclude_latent_threshold is not None:
        if frequencies is None:
            frequencies = _first_pass_frequencies(args, run, lm, ablator, setup.ablator_hook)
        setup.excluded_e = exclusion_mask(
            *frequencies[:2], args.exclude_latent_threshold, ablator.d_sae, frequencies[2]
        ).to(lm.device)
        print(
            f"excluding {int(setup.excluded_e.sum())} of {ablator.d_sae} ablator latents active "
            f"on more than {args.exclude_latent_threshold:g} of tokens"
        )
    accumulator = AblationAccumulator(setup, args.method)
    state = run.load_checkpoint()
    if state is not None:
        accumulator.load_state(state)
        print(f"resuming after {run.progress.rows_done} prompts of this shard")
    batches = shard_batches(
        args.dataset_id,
        args.text_column,
        lm.tokenizer,
        args.batch_size,
        args.max_tokens_in_prompt,
        args.n_prompts,
        run.shard,
        run.progress.rows_done,
    )
    path = run.run(
        accumulator,
        batches,
        total_rows=run.shard.n_rows(args.n_prompts),
        save_every=None if args.never_save else args.save_frequency,
        quiet=args.quiet,
    )
    sums = accumulator.sums
    print(
        f"{sums.n_prompts} of {sums.n_prompts_seen} prompts used; {len(sums.row_of)} ablator "
        f"latents ablated; wrote {path}"
    )
    return 0


def _first_pass_frequencies(args, run, lm, ablator, hook: str):
    """Latent frequencies over all ``--n-prompts`` prompts (every shard counts the same ones,
    so all shards exclude the same latents), saved in the run directory for resuming."""
    from sae_hacking.runs.stream import shard_batches

    path = run.run_dir / FREQUENCIES_FILE
    if path.is_file():
        return (*read_frequencies(path), str(path))
    print(f"counting ablator latent frequencies over {args.n_prompts} prompts (first pass)")
    batches = shard_batches(
        args.dataset_id,
        args.text_column,
        lm.tokenizer,
        args.batch_size,
        args.max_tokens_in_prompt,
        args.n_prompts,
    )
    active_e, tokens = count_frequencies(lm, ablator, hook, batches)
    save_frequencies(run.run_dir, active_e, tokens, "first pass")
    return active_e, tokens, str(path)
