"""``run.json``: what a run directory holds, and resuming a run from it (torch-free).

Every run directory (``toy``, ``cooccurrences``, ``ablations``, ...) has one ``run.json``,
written when the run starts and rewritten only when a resume changes a setting that may change:

- ``kind``: which command's run it is;
- ``config``: the command's whole config as flat keys (:func:`sae_hacking.config.to_flat`);
- ``settings`` (recorded settings plus what was resolved at start, such as the hook an SAE
  reads) and ``free_settings``: what results files record and merge compares;
- ``outputs``: the files whose presence means the run is complete;
- ``provenance``.

:func:`resumed_config` is the one resume path of every command: it reads the saved config and
applies the settings given now by :func:`sae_hacking.config.resume_config`; nothing is written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sae_hacking.config import from_flat, resume_config
from sae_hacking.errors import FieldError, UsageError
from sae_hacking.folders import check_new_folder

RUN_FILE = "run.json"
ZSTD_SUFFIX = ".safetensors.zst"


@dataclass
class RunRecord:
    run_dir: Path
    kind: str
    config: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    free_settings: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # kind-specific (shard, results name)
    resumed: bool = False  # read from an existing run directory (not written by this process)

    def is_complete(self) -> bool:
        return bool(self.outputs) and all((self.run_dir / n).is_file() for n in self.outputs)

    @classmethod
    def for_config(
        cls, run_dir: Path, kind: str, config: Any, outputs: tuple[str, ...] = ()
    ) -> RunRecord:
        """The record of a run of ``config`` in ``run_dir`` (which its config then names)."""
        from sae_hacking.config import free_keys, recorded_settings, to_flat

        return cls(
            run_dir,
            kind,
            {**to_flat(config), "output_dir": str(run_dir)},
            recorded_settings(config),
            free_keys(config),
            outputs,
        )

    def write(self) -> Path:
        """Write ``run.json`` (atomically, with the provenance of this process)."""
        from sae_hacking.atomic import atomic_write_json
        from sae_hacking.runs.files import provenance

        return atomic_write_json(self.run_dir / RUN_FILE, self.to_json(provenance()))

    def to_json(self, provenance: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "config": self.config,
            "settings": self.settings,
            "free_settings": list(self.free_settings),
            "outputs": list(self.outputs),
            **self.extra,
            "provenance": dict(provenance),
        }


def read_record(run_dir: str | Path, kind: str) -> RunRecord:
    """The record of the ``kind`` run in ``run_dir``; anything else is a :class:`FieldError`
    on ``resume`` (a missing or malformed ``run.json``, another kind of run)."""
    run_dir = Path(run_dir)
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise FieldError("resume", f"{run_dir}: no {RUN_FILE} there, so it is not a run directory.")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(record, dict) and "kind" in record and "config" not in record:
            raise FieldError(
                "resume",
                f"{run_dir} was started by an older sae_hacking ({RUN_FILE} has no config); "
                "this version cannot continue it, start a new run.",
            )
        known = {"kind", "config", "settings", "free_settings", "outputs", "provenance"}
        run = RunRecord(
            run_dir,
            str(record["kind"]),
            dict(record["config"]),
            dict(record.get("settings", {})),
            tuple(record.get("free_settings", ())),
            tuple(record.get("outputs", ())),
            {k: v for k, v in record.items() if k not in known},
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FieldError(
            "resume", f"{run_dir}: {RUN_FILE} is unreadable or malformed ({err})."
        ) from None
    if run.kind != kind:
        raise FieldError("resume", f"{run_dir} is a {run.kind!r} run, not a {kind!r} run.")
    return run


def resumed_config(
    cls: type, run_dir: str | Path, kind: str, changes: Mapping[str, Any], extendable: bool = False
) -> Any:
    """The config a resumed run continues with: the saved one, with the ``changes`` the user
    gave (only settings that may change). ``extendable``: a complete run may still grow (its
    ``extent`` may change), as a toy run given more steps."""
    record = read_record(run_dir, kind)
    try:
        saved = from_flat(cls, record.config)
    except UsageError as err:
        raise FieldError(
            "resume", f"{run_dir}: {RUN_FILE} holds settings this version cannot use ({err})."
        ) from None
    run_dir = str(Path(run_dir).resolve())
    output_dir = changes.get("output_dir")
    if output_dir is not None and str(Path(output_dir).resolve()) != run_dir:
        raise FieldError("output_dir", "is not the run directory given to `resume`; give one.")
    changes = {**changes, "resume": run_dir, "output_dir": run_dir}
    return resume_config(saved, changes, complete=record.is_complete() and not extendable)


def plan_run(config: Any, kind: str, slug: str, outputs: tuple[str, ...]) -> RunRecord:
    """The run ``config`` describes, before anything is written or heavy is imported: the saved
    run to continue (``config.run.resume``; :attr:`RunRecord.resumed`), or a new one whose folder
    (``config.run.output_dir`` or a fresh ``results/<timestamp>-<slug>``) is checked but not
    created. ``outputs`` are the files that make a new run complete."""
    return plan_record(kind, slug, outputs, config.run.output_dir, config.run.resume)


def plan_record(
    kind: str,
    slug: str,
    outputs: tuple[str, ...],
    output_dir: str | Path | None,
    resume: str | Path | None,
) -> RunRecord:
    """:func:`plan_run` with the folder settings given (for a config without ``run``)."""
    from sae_hacking.runs.files import default_run_dir

    if resume is not None:
        record = read_record(resume, kind)
        record.resumed = True
        return record
    run_dir = Path(output_dir or default_run_dir(slug))
    check_new_folder(run_dir, "output_dir")
    return RunRecord(run_dir.absolute(), kind, {}, outputs=outputs)


# -- results files' names ----------------------------------------------------------------------


def results_paths(stem: str | Path) -> tuple[Path, Path]:
    """``(STEM.safetensors.zst, STEM.json)``: a results file and its sidecar."""
    stem = Path(stem)
    return stem.with_name(stem.name + ZSTD_SUFFIX), stem.with_name(stem.name + ".json")


def results_stem(out: str | Path) -> Path:
    """``OUT`` without ``.safetensors.zst`` (so ``merged`` and ``merged.safetensors.zst`` agree)."""
    out = Path(out)
    for suffix in (ZSTD_SUFFIX, ".safetensors", ".json"):
        if out.name.endswith(suffix):
            return out.with_name(out.name[: -len(suffix)])
    return out


def check_merge_output(out: str | Path, paths: list[str | Path]) -> Path:
    """The output stem of a merge, after checking that it overwrites nothing (no existing
    results file or sidecar, none of the inputs) and can be written. Creates nothing."""
    if len(paths) < 2:
        raise UsageError(f"merge needs at least two results files, got {len(paths)}.")
    stem = results_stem(out)
    inputs = {Path(p).resolve() for p in paths}
    for path in results_paths(stem):
        if path.resolve() in inputs:
            raise UsageError(f"the merge output {path} is one of its inputs; choose another OUT.")
        if path.exists():
            raise UsageError(f"{path} exists already; merge never overwrites, choose another OUT.")
    if stem.parent != Path(""):
        try:
            check_new_folder(stem.parent / f".{stem.name}.merge-check", "out")
        except FieldError as err:
            raise UsageError(f"the merge output {stem} cannot be written: {err.message}") from None
    for path in paths:
        if not Path(path).exists():
            raise UsageError(f"{path}: no such results file.")
    return stem
