"""One run directory's life: plan, create (``run.json`` + ``args.yaml``), remove on failure, resume.

Every command that writes a run directory goes through :class:`RunDir`, so every run folder
(``toy-compare``'s sub-runs too) has a ``run.json`` (:mod:`sae_hacking.runs.record`) and an
``args.yaml`` (:func:`sae_hacking.runs.files.write_args_yaml`), and the same rules hold:

- **Plan** (:meth:`RunDir.plan`, torch-free, writes nothing): the folder is
  ``config.run.output_dir`` or a fresh ``results/<timestamp>-<slug>``, and must be absent or
  empty (a :class:`~sae_hacking.errors.FieldError` on ``output_dir`` otherwise, as
  :func:`sae_hacking.folders.check_new_folder` words it); with ``config.run.resume`` it is that
  run directory, whose ``run.json`` must be a run of this ``kind`` (:meth:`RunDir.open`).
- **Create** (:meth:`RunDir.start`): make the folder, write ``run.json`` and ``args.yaml``.
- **Remove on failure** (:meth:`RunDir.removed_on_failure`): a new run whose body raises
  (anything, Ctrl-C included) removes what :meth:`~RunDir.start` created, unless ``keep(path)``
  says there is something to resume from (a checkpoint), so the corrected command runs in the
  same folder. A resumed run is never removed.
- **Resume**: nothing is written until the run has read back what it continues from; then
  :meth:`RunDir.update` rewrites ``run.json`` only when a setting differs from the saved one
  (``resume`` itself, set by every resume, is no difference).
- **torchrun**: given ``ranks`` (:class:`~sae_hacking.runs.ranks.Ranks`), rank 0 plans and
  creates, every rank learns the path (and rank 0's errors) through
  :func:`~sae_hacking.runs.ranks.on_rank0`; ``run.json`` records ``world_size``, and a resume
  with another number of processes is refused. Only rank 0 removes or rewrites anything.

:meth:`RunDir.create` is plan + start + remove-on-failure in one context manager; a command that
has slow work between checking the folder and creating it (loading a model) plans first.

A training run with checkpoints (``CHECKPOINT`` written every N steps)::

    rundir = RunDir.plan(config, KIND, slug(config), OUTPUTS, ranks=ranks)  # before torch
    if rundir.resumed:
        if rundir.complete:
            return rundir.path                       # nothing to do
        trainer = Trainer(config, rundir.path)
        trainer.load_checkpoint()                    # a bad checkpoint: nothing was written
        rundir.update(config)                        # records the changed settings, if any
        return trainer.train()
    model = load_model(config)                       # slow: after the folder was checked
    with rundir.started(keep=lambda path: (path / CHECKPOINT).is_file()):
        return Trainer(config, rundir.path, model).train()

or, when nothing slow comes between::

    with RunDir.create(config, KIND, slug(config), OUTPUTS, keep=has_checkpoint) as rundir:
        ...
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from sae_hacking.config import json_value, to_flat
from sae_hacking.errors import FieldError
from sae_hacking.folders import create_new_folder, removed_on_failure
from sae_hacking.runs.files import write_args_yaml
from sae_hacking.runs.ranks import Ranks, on_rank0
from sae_hacking.runs.record import RunRecord, plan_record, read_record

Keep = Callable[[Path], bool]


class _FromConfig:
    """The default of :meth:`RunDir.plan`'s ``output_dir`` and ``resume``: ``config.run``'s."""

    def __repr__(self) -> str:
        return "FROM_CONFIG"


FROM_CONFIG = _FromConfig()


def _but_resume(flat: Mapping[str, Any]) -> dict[str, Any]:
    """A flat config without ``resume`` (set by every resume, no change of the run)."""
    return {k: v for k, v in flat.items() if k != "resume"}


class RunDir:
    """A run directory: planned (not yet on disk), created by this process, or resumed."""

    def __init__(self, record: RunRecord, config: Any = None, ranks: Ranks | None = None):
        self.record = record
        self.config = config
        self.ranks = ranks
        self._created: tuple[Path, Path | None] | None = None  # what start() made, to undo

    @property
    def path(self) -> Path:
        return self.record.run_dir

    @property
    def kind(self) -> str:
        return self.record.kind

    @property
    def resumed(self) -> bool:
        return self.record.resumed

    @property
    def complete(self) -> bool:
        """A resumed run whose outputs are all there."""
        return self.resumed and self.record.is_complete()

    @property
    def main(self) -> bool:
        """Whether this process writes (rank 0, or the only process)."""
        return self.ranks is None or self.ranks.rank == 0

    # -- planning --

    @classmethod
    def plan(
        cls,
        config: Any,
        kind: str,
        slug: str | None = None,
        outputs: tuple[str, ...] = (),
        *,
        output_dir: str | Path | _FromConfig | None = FROM_CONFIG,
        resume: str | Path | _FromConfig | None = FROM_CONFIG,
        ranks: Ranks | None = None,
    ) -> RunDir:
        """The run ``config`` describes, checked, nothing written: a new folder (``output_dir``,
        else ``results/<timestamp>-<slug>``; ``slug`` defaults to ``kind``) that is absent or
        empty, or the run directory ``resume`` names (:meth:`open`). ``output_dir`` and
        ``resume`` default to ``config.run``'s. ``outputs``: the files that make a new run
        complete. Under torchrun rank 0 decides and every rank gets its answer."""
        if output_dir is FROM_CONFIG:
            output_dir = config.run.output_dir
        if resume is FROM_CONFIG:
            resume = config.run.resume

        def decide() -> RunRecord:
            record = plan_record(kind, slug or kind, outputs, output_dir, resume)
            if record.resumed:
                _check_world(record, ranks)
            return record

        record = decide() if ranks is None else on_rank0(ranks, decide)
        return cls(record, config, ranks)

    @classmethod
    def open(
        cls, run_dir: str | Path, kind: str, config: Any = None, ranks: Ranks | None = None
    ) -> RunDir:
        """The existing ``kind`` run in ``run_dir``, to resume (a :class:`FieldError` on
        ``resume`` for anything else: no or a malformed ``run.json``, another kind of run,
        another number of torchrun processes). ``config``: the resumed run's config."""
        record = read_record(run_dir, kind)
        record.resumed = True
        _check_world(record, ranks)
        return cls(record, config, ranks)

    # -- creating --

    def start(
        self,
        *,
        identity: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        args: Mapping[str, Any] | None = None,
    ) -> RunDir:
        """Create the planned folder with ``run.json`` and ``args.yaml`` (if writing them fails,
        the folder goes again); nothing for a resumed run. ``identity``: what was resolved at
        start (a hook, an SAE's content hash), recorded among the settings; ``extra``:
        kind-specific keys of ``run.json``; ``args``: ``args.yaml``'s arguments (default: the
        flat config). Under torchrun rank 0 creates, and every rank returns once it has."""
        if self.resumed:
            return self

        def make() -> tuple[RunRecord, Path | None]:
            path, top = create_new_folder(self.path, "output_dir")
            with removed_on_failure(path, top):
                record = self._record(path, self.config, identity, extra, self.record.outputs)
                record.write()
                write_args_yaml(path, to_flat(self.config) if args is None else dict(args))
            return record, top

        record, top = make() if self.ranks is None else on_rank0(self.ranks, make)
        self.record = record
        if self.main:
            self._created = (record.run_dir, top)
        return self

    @contextlib.contextmanager
    def removed_on_failure(self, keep: Keep | None = None) -> Iterator[RunDir]:
        """Around the run's work after :meth:`start`: if it raises, what :meth:`start` created
        is removed, unless ``keep(path)`` (e.g. a checkpoint exists). A resumed run, or a rank
        that did not create the folder, removes nothing."""
        if self._created is None:
            yield self
            return
        path, top = self._created
        with removed_on_failure(path, top, keep=lambda: keep is not None and keep(path)):
            yield self

    @contextlib.contextmanager
    def started(
        self,
        keep: Keep | None = None,
        *,
        identity: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        args: Mapping[str, Any] | None = None,
    ) -> Iterator[RunDir]:
        """:meth:`start`, then the body under :meth:`removed_on_failure`."""
        self.start(identity=identity, extra=extra, args=args)
        with self.removed_on_failure(keep):
            yield self

    @classmethod
    @contextlib.contextmanager
    def create(
        cls,
        config: Any,
        kind: str,
        slug: str | None = None,
        outputs: tuple[str, ...] = (),
        *,
        keep: Keep | None = None,
        identity: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        args: Mapping[str, Any] | None = None,
        output_dir: str | Path | _FromConfig | None = FROM_CONFIG,
        resume: str | Path | _FromConfig | None = FROM_CONFIG,
        ranks: Ranks | None = None,
    ) -> Iterator[RunDir]:
        """:meth:`plan` and :meth:`started` at once. With ``resume`` (or ``config.run.resume``)
        this is the resumed run, nothing written: the body checks :attr:`resumed`."""
        rundir = cls.plan(
            config, kind, slug, outputs, output_dir=output_dir, resume=resume, ranks=ranks
        )
        with rundir.started(keep, identity=identity, extra=extra, args=args):
            yield rundir

    # -- resuming --

    def update(
        self,
        config: Any = None,
        *,
        identity: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> bool:
        """Record the settings a resume continues with (``config``, default the one given;
        ``identity`` and ``extra`` as in :meth:`start`, ``extra`` default the saved one):
        ``run.json`` is rewritten only when they differ from the saved ones, and only by rank 0.
        Call it once the run has read back what it continues from (its checkpoint), so that a
        resume that is refused or fails writes nothing. Returns whether anything differed."""
        config = self.config if config is None else config
        saved = self.record
        extra = saved.extra if extra is None else extra
        record = self._record(saved.run_dir, config, identity, extra, saved.outputs, ranks=False)
        if (
            _but_resume(record.config) == _but_resume(saved.config)
            and record.settings == saved.settings
            and record.extra == saved.extra
        ):
            return False
        if self.main:
            record.write()
        record.resumed = saved.resumed
        self.record, self.config = record, config
        return True

    def _record(
        self,
        path: Path,
        config: Any,
        identity: Mapping[str, Any] | None,
        extra: Mapping[str, Any] | None,
        outputs: tuple[str, ...],
        ranks: bool = True,
    ) -> RunRecord:
        record = RunRecord.for_config(path, self.kind, config, outputs)
        if identity:
            record.settings = {**record.settings, **json_value(dict(identity))}
        record.extra = dict(extra or {})
        if ranks and self.ranks is not None:
            record.extra["world_size"] = self.ranks.world
        return record


def _check_world(record: RunRecord, ranks: Ranks | None) -> None:
    """A run is resumed by as many processes as started it (``world_size``, default 1)."""
    saved = record.extra.get("world_size", 1)
    if saved != (ranks.world if ranks else 1):
        raise FieldError(
            "resume",
            f"{record.run_dir} was trained by {saved} processes; resume it with as many "
            "(torchrun --nproc-per-node, times nodes).",
        )
