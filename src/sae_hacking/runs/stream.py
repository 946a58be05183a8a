"""Long runs over a text stream: accumulate tensors prompt batch by batch, checkpoint, resume.

The one path every streamed command takes (``sae_hacking.absorption.cooccurrence.run`` is the
worked example)::

    record = plan_run(config, kind, slug, outputs)     # torch-free: before the model loads
    run = StreamRun(config, record, results_name)
    if run.complete: return run.results_path           # a finished run: nothing to do
    ...load the model and SAEs, build the accumulator...
    state = run.start_or_resume(identity)     # creates the run, or checks it is the same one
    with run.removed_if_failing():            # a new run failing before a checkpoint: removed
        run.run_prompts(accumulator, tokenizer, state)    # resumes, checkpoints, writes results

``config`` is the command's typed config (:mod:`sae_hacking.config`) with ``text``
(:class:`~sae_hacking.data.source.TextSource`) and ``run``
(:class:`~sae_hacking.runs.options.RunOptions`); with ``config.run.resume`` it is already the
resumed run's config (:func:`sae_hacking.runs.record.resumed_config`).

A run directory holds ``run.json`` (:mod:`sae_hacking.runs.record`), ``args.yaml``,
``checkpoint.safetensors`` while the run is going (uncompressed, one file, written atomically, so
a kill at any moment leaves the previous checkpoint intact), and at the end the results
``NAME.safetensors.zst`` + ``NAME.json`` (:mod:`sae_hacking.runs.results`); the checkpoint is
then deleted. A new run never writes into a folder that holds anything; a start that fails
removes what it created; a resume refused or failed before its checkpoint is restored writes
nothing.

Exactness of resume: checkpoints are taken between batches and hold the shard-row count
consumed; batches are cut from the stream the same way whether or not the run was interrupted,
so a resumed run sees the same batches as an uninterrupted one and (for integer accumulators)
ends with identical tensors.
"""

from __future__ import annotations

import abc
import contextlib
import itertools
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from sae_hacking.config import json_value, leaf_map, to_flat
from sae_hacking.data.text import TokenBatch, batch_prompts, open_text_stream
from sae_hacking.errors import UsageError
from sae_hacking.runs.files import provenance
from sae_hacking.runs.record import RUN_FILE, RunRecord
from sae_hacking.runs.results import (
    ResultsFile,
    StoredTensors,
    results_paths,
    write_results,
    write_safetensors,
)
from sae_hacking.runs.rundir import RunDir
from sae_hacking.runs.shards import Shard

CHECKPOINT_FILE = "checkpoint.safetensors"
RESULTS_FORMAT = "sae_hacking.results"
RESULTS_FORMAT_VERSION = 1


@dataclass
class Progress:
    """How far a run (or one shard of it) got. ``rows_done`` counts this shard's source rows
    consumed (empty rows included): the resume point. ``prompts_done`` counts the non-empty
    prompts run through the model, ``tokens_done`` the real tokens (no padding, no BOS)."""

    rows_done: int = 0
    prompts_done: int = 0
    tokens_done: int = 0

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Progress:
        return cls(int(obj["rows_done"]), int(obj["prompts_done"]), int(obj["tokens_done"]))


class Accumulator(abc.ABC):
    """What a streamed run accumulates. Subclasses own their tensors (on any device)."""

    @abc.abstractmethod
    def add(self, batch: TokenBatch) -> int:
        """Count ``batch`` into the state; return the number of real tokens counted."""

    @abc.abstractmethod
    def state(self) -> dict[str, torch.Tensor]:
        """The tensors a checkpoint must hold to continue exactly (Shazeer-suffixed names)."""

    @abc.abstractmethod
    def load_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Continue from the tensors :meth:`state` returned (as read back from a checkpoint)."""

    def results(self) -> dict[str, torch.Tensor]:
        """The tensors of the final results file (default: the state)."""
        return self.state()

    def same_tensors(self) -> tuple[str, ...]:
        """Result tensors that are identical across shards (e.g. latent ids); merge checks them
        instead of summing them. Every other tensor is summed."""
        return ()

    def describe(self) -> dict[str, str]:
        """One line per result tensor: what it holds (stored in the results' metadata)."""
        return {}


def _strip(settings: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    keys = set(keys)
    return {k: v for k, v in json_value(dict(settings)).items() if k not in keys}


def shard_batches(
    dataset_id: str,
    text_column: str,
    tokenizer,
    batch_size: int,
    max_tokens: int,
    n_source_rows: int | None,
    shard: Shard | None = None,
    rows_done: int = 0,
) -> Iterator[TokenBatch]:
    """Batches of shard ``shard``'s rows among the first ``n_source_rows`` rows, starting after
    ``rows_done`` shard rows. The batches' ``first_row``/``next_row`` count shard rows."""
    shard = shard or Shard()
    n_rows = shard.n_rows(n_source_rows)
    left = None if n_rows is None else max(n_rows - rows_done, 0)
    rows = open_text_stream(dataset_id, text_column, shard.source_row(rows_done))
    if shard.count > 1:
        rows = itertools.islice(rows, 0, None, shard.count)
    return batch_prompts(rows, tokenizer, batch_size, max_tokens, start_row=rows_done, n_rows=left)


class _Bar:
    """tqdm over rows with the token rate as postfix; silent when ``quiet``."""

    def __init__(self, total: int | None, initial: int, quiet: bool, desc: str):
        from tqdm import tqdm

        self.bar = tqdm(
            total=total,
            initial=initial,
            unit="prompt",
            desc=desc,
            disable=quiet,
            dynamic_ncols=True,
            smoothing=0.05,
        )
        self.start = time.perf_counter()
        self.tokens = 0

    def update(self, rows: int, tokens: int) -> None:
        self.tokens += tokens
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{self.tokens / elapsed:,.0f} tokens/s", refresh=False)
        self.bar.update(rows)

    def close(self) -> None:
        self.bar.close()


class StreamRun:
    """A streamed run's directory (:class:`~sae_hacking.runs.rundir.RunDir`), identity (kind,
    settings, shard) and progress."""

    def __init__(self, config: Any, record: RunRecord, results_name: str):
        """``record`` from :func:`sae_hacking.runs.record.plan_run` (cheap, torch-free: call it
        before loading the model, so a bad output folder or resume directory fails fast)."""
        self.config = config
        self.rundir = RunDir(record, config)
        self.results_name = results_name
        self.resumed = record.resumed
        self.shard = config.run.shard_spec
        self.progress = Progress()
        self._identity: Mapping[str, Any] | None = None  # by a resume, recorded once it runs

    @property
    def record(self) -> RunRecord:
        return self.rundir.record

    @property
    def run_dir(self) -> Path:
        return self.record.run_dir

    @property
    def kind(self) -> str:
        return self.record.kind

    @property
    def settings(self) -> dict[str, Any]:
        return self.record.settings

    @property
    def resumable(self) -> tuple[str, ...]:
        """Recorded settings a resume may change: the free ones and the extents."""
        leaves = leaf_map(type(self.config))
        extents = tuple(k for k in self.settings if k in leaves and leaves[k].kind == "extent")
        return (*self.record.free_settings, *extents)

    # -- starting --

    @property
    def complete(self) -> bool:
        return self.rundir.complete

    def start_or_resume(self, identity: Mapping[str, Any]) -> Mapping[str, torch.Tensor] | None:
        """Create the run (``run.json``, ``args.yaml``), or check that the resumed run is the
        same computation (``identity``: what was resolved at start, e.g. the SAE's hook and
        content hash) and that its checkpoint can be read; return the last checkpoint's tensors,
        if any (``self.progress`` is set from it). A resume writes nothing until
        :meth:`run_prompts` has restored the checkpoint: one refused or failed before then
        leaves the run directory as it was."""
        if not self.resumed:
            args = {**to_flat(self.config), "run_dir": str(self.run_dir)}
            self.rundir.start(identity=identity, extra=self._extra(), args=args)
            return None
        saved = self.record.settings
        for key, value in identity.items():
            if key in saved and saved[key] != json_value(value):
                raise UsageError(
                    f"{self.run_dir} was run with {key} = {saved[key]!r}, but what is loaded "
                    f"now has {json_value(value)!r}; resume it with the same model and SAEs."
                )
        state = self.load_checkpoint()
        self._identity = identity
        if state is not None:
            print(f"resuming after {self.progress.rows_done} prompts of shard {self.shard}")
        return state

    @contextlib.contextmanager
    def removed_if_failing(self) -> Iterator[None]:
        """Around what follows :meth:`start_or_resume`: a new run that fails before its first
        checkpoint (a refused setting found late, a bad row of text, Ctrl-C) is removed, so the
        corrected command runs in the same folder; a run with a checkpoint is kept to resume."""
        with self.rundir.removed_on_failure(keep=lambda path: (path / CHECKPOINT_FILE).is_file()):
            yield

    def _extra(self) -> dict[str, Any]:
        return {"shard": self.shard.to_json(), "results_name": self.results_name}

    # -- files --

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_FILE

    @property
    def results_path(self) -> Path:
        return results_paths(self.run_dir / self.results_name)[0]

    def meta(self, accumulator: Accumulator | None, complete: bool) -> dict[str, Any]:
        """The results metadata (see :mod:`sae_hacking.runs.merge` for how shards combine)."""
        return {
            "format": RESULTS_FORMAT,
            "format_version": RESULTS_FORMAT_VERSION,
            "kind": self.kind,
            "settings": self.settings,
            "complete": complete,
            **self.progress.to_json(),
            "shards": [{**self.shard.to_json(), **self.progress.to_json()}],
            "free_settings": list(self.record.free_settings),
            "same_tensors": list(accumulator.same_tensors()) if accumulator else [],
            "tensor_docs": accumulator.describe() if accumulator else {},
            "provenance": provenance(),
        }

    def save_checkpoint(self, accumulator: Accumulator) -> Path:
        return write_safetensors(
            self.checkpoint_path, accumulator.state(), self.meta(accumulator, False), compress=False
        )

    def load_checkpoint(self) -> Mapping[str, torch.Tensor] | None:
        """The last checkpoint's tensors (and ``self.progress`` set from it); ``None`` when the
        run has none yet. A checkpoint of another run or a corrupt file is a UsageError."""
        if not self.checkpoint_path.is_file():
            return None
        with ResultsFile(self.checkpoint_path) as ckpt:
            meta = ckpt.meta
            shards = meta.get("shards") or [{}]
            if meta.get("kind") != self.kind or shards[0].get("count") != self.shard.count:
                raise UsageError(f"{self.checkpoint_path} does not belong to this {self.kind} run.")
            if _strip(meta.get("settings") or {}, self.resumable) != _strip(
                self.settings, self.resumable
            ):
                raise UsageError(
                    f"{self.checkpoint_path} was written with other settings than "
                    f"{self.run_dir / RUN_FILE} records; the run directory is inconsistent."
                )
            try:
                self.progress = Progress.from_json(meta)
            except (KeyError, TypeError, ValueError) as err:
                raise UsageError(f"{self.checkpoint_path} has no progress counters.") from err
        # Each tensor is read when the accumulator asks for it (large ones block by block).
        return StoredTensors(self.checkpoint_path)

    def finish(self, accumulator: Accumulator) -> Path:
        """Write the results file and sidecar, then drop the checkpoint."""
        path, _ = write_results(
            self.run_dir / self.results_name, accumulator.results(), self.meta(accumulator, True)
        )
        self.checkpoint_path.unlink(missing_ok=True)
        return path

    # -- the loop --

    def run_prompts(self, accumulator: Accumulator, tokenizer, state) -> Path:
        """:meth:`run` over this shard's prompts of ``config.text``, after restoring
        ``accumulator`` from ``state`` (what :meth:`start_or_resume` returned)."""
        if state is not None:
            accumulator.load_state(state)
        if self._identity is not None:  # the checkpoint was good: record the resume's settings
            self.rundir.update(self.config, identity=self._identity, extra=self._extra())
            self._identity = None
        text, options = self.config.text, self.config.run
        batches = shard_batches(
            text.dataset_id,
            text.column,
            tokenizer,
            text.batch_size,
            text.max_tokens_in_prompt,
            text.n_prompts,
            self.shard,
            self.progress.rows_done,
        )
        return self.run(
            accumulator,
            batches,
            total_rows=self.shard.n_rows(text.n_prompts),
            save_every=None if options.never_save else options.save_frequency,
            quiet=options.quiet,
        )

    def run(
        self,
        accumulator: Accumulator,
        batches: Iterable[TokenBatch],
        *,
        total_rows: int | None,
        save_every: int | None,
        quiet: bool = False,
    ) -> Path:
        """Feed ``batches`` to ``accumulator``; checkpoint every ``save_every`` shard rows (never
        when ``None``); write the results. ``total_rows`` (this shard's rows) sizes the bar."""
        last_saved = self.progress.rows_done
        bar = _Bar(total_rows, self.progress.rows_done, quiet, self.kind)
        try:
            for batch in batches:
                tokens = accumulator.add(batch)
                rows = batch.next_row - self.progress.rows_done
                self.progress.rows_done = batch.next_row
                self.progress.prompts_done += int(batch.input_ids_BS.shape[0])
                self.progress.tokens_done += tokens
                bar.update(rows, tokens)
                if save_every is not None and self.progress.rows_done - last_saved >= save_every:
                    self.save_checkpoint(accumulator)
                    last_saved = self.progress.rows_done
        finally:
            bar.close()
        return self.finish(accumulator)
