"""Long runs over a text stream: accumulate tensors prompt batch by batch, checkpoint, resume.

The pieces, in the order a command uses them (``sae_hacking.absorption.cooccurrence`` is the
worked example)::

    run = StreamRun.create(output_dir, slug, kind, settings, shard, name, free)    # new run
    run = StreamRun.open(run_dir, kind)                                            # --resume
    settings = run.resolve_settings(given, defaults)                               # --resume
    state = run.load_checkpoint()            # tensors of the last checkpoint (sets run.progress)
    accumulator.load_state(state)
    batches = shard_batches(..., shard=run.shard, rows_done=run.progress.rows_done)
    run.run(accumulator, batches, total_rows=..., save_every=..., quiet=...)

A run directory holds ``run.json`` (kind, settings, shard, provenance; written once),
``args.yaml``, ``checkpoint.safetensors`` while the run is going (uncompressed, one file, written
atomically, so a kill at any moment leaves the previous checkpoint intact), and at the end the
results ``NAME.safetensors.zst`` + ``NAME.json`` (:mod:`sae_hacking.runs.results`); the
checkpoint is then deleted.

Exactness of resume: checkpoints are taken between batches and hold the shard-row count
consumed; batches are cut from the stream the same way whether or not the run was interrupted,
so a resumed run sees the same batches as an uninterrupted one and (for integer accumulators)
ends with identical tensors.
"""

from __future__ import annotations

import abc
import itertools
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from sae_hacking.atomic import atomic_write_json
from sae_hacking.data.text import TokenBatch, batch_prompts, open_text_stream
from sae_hacking.errors import UsageError
from sae_hacking.runs.files import new_run_dir, provenance, write_args_yaml
from sae_hacking.runs.results import ResultsFile, results_paths, write_results, write_safetensors
from sae_hacking.runs.shards import Shard

RUN_FILE = "run.json"
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


def _json_normal(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def _strip(settings: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    keys = set(keys)
    return {k: v for k, v in _json_normal(dict(settings)).items() if k not in keys}


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


def resolve_settings(
    saved: Mapping[str, Any],
    given: Mapping[str, Any],
    defaults: Mapping[str, Any],
    may_change: Iterable[str] = (),
) -> dict[str, Any]:
    """Settings for a resumed run: the ``saved`` ones, where a flag left at its default keeps
    the saved value (so ``--resume DIR`` alone continues the run as it was). Keys in
    ``may_change`` take a ``given`` non-default value (e.g. a larger ``--n-prompts``); for any
    other key, a ``given`` non-default value that differs from the saved one is a
    :class:`UsageError` naming the flag (``--key-with-dashes``)."""
    saved, given, defaults = map(_json_normal, (dict(saved), dict(given), dict(defaults)))
    may_change = set(may_change)
    merged = dict(given)
    for key, value in saved.items():
        explicit = key in given and given[key] != defaults.get(key)
        if key in may_change:
            merged[key] = given[key] if explicit else value
            continue
        if explicit and given[key] != value:
            flag = "--" + key.replace("_", "-")
            raise UsageError(
                f"{flag} {given[key]} differs from the resumed run's {value}; drop the flag or "
                "start a new run."
            )
        merged[key] = value
    return merged


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
    """A run directory, its identity (``kind``, ``settings``, ``shard``) and its progress."""

    def __init__(
        self,
        run_dir: Path,
        kind: str,
        settings: dict[str, Any],
        shard: Shard,
        results_name: str,
        free_settings: Iterable[str] = (),
    ):
        self.run_dir = Path(run_dir)
        self.kind = kind
        self.settings = _json_normal(settings)
        self.shard = shard
        self.results_name = results_name
        # Settings that do not change what is counted (e.g. batch_size): shards and resumed
        # runs may differ in them. ``n_prompts`` may also change on resume (to extend a run).
        self.free_settings = tuple(free_settings)
        self.progress = Progress()

    @property
    def resumable(self) -> tuple[str, ...]:
        """Settings a resume may change: the free ones and ``n_prompts``."""
        return (*self.free_settings, "n_prompts")

    # -- creating and reopening --

    @classmethod
    def create(
        cls,
        output_dir: str | Path | None,
        slug: str,
        kind: str,
        settings: Mapping[str, Any],
        shard: Shard,
        results_name: str,
        free_settings: Iterable[str] = (),
    ) -> StreamRun:
        """A new run in ``output_dir`` (default ``results/<timestamp>-<slug>``), which must not
        already hold a run. ``settings`` (JSON-able) identify what is counted; resume and merge
        require them equal except ``free_settings``."""
        run_dir = new_run_dir(output_dir, slug)
        if (run_dir / RUN_FILE).exists():
            raise UsageError(
                f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose "
                "another --output-dir."
            )
        run = cls(run_dir, kind, dict(settings), shard, results_name, free_settings)
        run.write_run_file()
        write_args_yaml(run_dir, {**run.settings, "shard": str(shard)})
        return run

    def write_run_file(self) -> None:
        atomic_write_json(
            self.run_dir / RUN_FILE,
            {
                "kind": self.kind,
                "settings": self.settings,
                "shard": self.shard.to_json(),
                "results_name": self.results_name,
                "free_settings": list(self.free_settings),
                "provenance": provenance(),
            },
        )

    @classmethod
    def open(cls, run_dir: str | Path, kind: str) -> StreamRun:
        """The run in ``run_dir`` (for ``--resume``); its settings are as saved."""
        run_dir = Path(run_dir)
        path = run_dir / RUN_FILE
        if not path.is_file():
            raise UsageError(
                f"--resume {run_dir}: no {RUN_FILE} there, so it is not a run directory."
            )
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            run = cls(
                run_dir,
                record["kind"],
                record["settings"],
                Shard.from_json(record["shard"]),
                record["results_name"],
                record.get("free_settings", ()),
            )
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UsageError(f"--resume {run_dir}: {RUN_FILE} is unreadable ({err}).") from err
        if run.kind != kind:
            raise UsageError(f"--resume {run_dir} is a {run.kind!r} run, not a {kind!r} run.")
        return run

    def resolve_settings(
        self, given: Mapping[str, Any], defaults: Mapping[str, Any]
    ) -> dict[str, Any]:
        """:func:`resolve_settings` against this run's saved settings (:attr:`resumable` may
        change); the result becomes this run's settings (``run.json`` is rewritten if one
        changed)."""
        merged = resolve_settings(self.settings, given, defaults, self.resumable)
        if merged != self.settings:
            self.settings = merged
            self.write_run_file()
        return merged

    # -- files --

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_FILE

    @property
    def results_path(self) -> Path:
        return results_paths(self.run_dir / self.results_name)[0]

    @property
    def sidecar_path(self) -> Path:
        return results_paths(self.run_dir / self.results_name)[1]

    def is_complete(self) -> bool:
        return self.results_path.is_file() and self.sidecar_path.is_file()

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
            "free_settings": list(self.free_settings),
            "same_tensors": list(accumulator.same_tensors()) if accumulator else [],
            "tensor_docs": accumulator.describe() if accumulator else {},
            "provenance": provenance(),
        }

    def save_checkpoint(self, accumulator: Accumulator) -> Path:
        return write_safetensors(
            self.checkpoint_path, accumulator.state(), self.meta(accumulator, False), compress=False
        )

    def load_checkpoint(self) -> dict[str, torch.Tensor] | None:
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
            return {key: ckpt.read(key) for key in ckpt.keys()}

    def finish(self, accumulator: Accumulator) -> Path:
        """Write the results file and sidecar, then drop the checkpoint."""
        path, _ = write_results(
            self.run_dir / self.results_name, accumulator.results(), self.meta(accumulator, True)
        )
        self.checkpoint_path.unlink(missing_ok=True)
        return path

    # -- the loop --

    def run_prompts(
        self,
        accumulator: Accumulator,
        args,
        tokenizer,
        state: dict[str, torch.Tensor] | None,
    ) -> Path:
        """:meth:`run` over this shard's prompts as the standard flags ask (``--dataset-id
        --text-column --batch-size --max-tokens-in-prompt --n-prompts --save-frequency
        --never-save --quiet``), after restoring ``accumulator`` from ``state`` (what
        :meth:`load_checkpoint` returned)."""
        if state is not None:
            accumulator.load_state(state)
        batches = shard_batches(
            args.dataset_id,
            args.text_column,
            tokenizer,
            args.batch_size,
            args.max_tokens_in_prompt,
            args.n_prompts,
            self.shard,
            self.progress.rows_done,
        )
        return self.run(
            accumulator,
            batches,
            total_rows=self.shard.n_rows(args.n_prompts),
            save_every=None if args.never_save else args.save_frequency,
            quiet=args.quiet,
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
        if save_every is not None and save_every < 1:
            raise UsageError(f"--save-frequency must be at least 1, got {save_every}.")
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
