"""Streamed runs under ``torchrun``: each rank one shard of the same run directory.

``torchrun --nproc-per-node N -m sae_hacking cooccurrences|ablate ...`` (or ``--nnodes``, as a
SLURM job launches it) sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; rank ``r`` of ``w`` is
then ``--shard r/w`` on its own device (``cuda:LOCAL_RANK``, or the CPU with gloo), with its own
checkpoints. The run directory (on a file system all nodes see)::

    RUN/run.json, args.yaml      the run as a whole (written by rank 0; records the world size)
    RUN/ranks/rank-R/            rank R's own run: run.json, checkpoint, results of its shard
    RUN/NAME.safetensors.zst     the merged results (rank 0, once every rank has finished, with
    RUN/NAME.json                the exact merge of ``sae-hacking merge``); RUN/ranks is then
                                 removed, so RUN looks like a single-process run's directory.

A rank that died (or a killed job) is resumed by rerunning the same torchrun command (same
``--output-dir``), or with ``--resume RUN``: each rank continues from its own checkpoint. The
world size of a run is fixed. ``torch.distributed`` does the rest: a barrier before the merge,
and broadcasts of rank 0's decision about the directory and of its creation
(:class:`~sae_hacking.runs.rundir.RunDir`, as for every run directory).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sae_hacking.config import replace_flat, to_flat
from sae_hacking.errors import FieldError
from sae_hacking.runs.ranks import Ranks, on_rank0, ranks_from_env
from sae_hacking.runs.record import RUN_FILE, RunRecord, read_record, results_paths
from sae_hacking.runs.rundir import RunDir

RANKS_DIR = "ranks"
# Ranks finish at different times (their shards differ); the last barrier waits for the slowest.
BARRIER_TIMEOUT = timedelta(days=7)


def rank_dir(top: Path, rank: int) -> Path:
    return top / RANKS_DIR / f"rank-{rank}"


def rank_device(device: str, local_rank: int) -> str:
    """``auto`` and ``cuda`` mean this rank's GPU when there is one; other names stay."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{local_rank}"
    return "cpu" if device == "auto" else device


def check_single_process_resume(config: Any) -> None:
    """A directory started under torchrun (and not finished) must be resumed under torchrun."""
    resume = config.run.resume
    if resume is not None and (Path(resume) / RANKS_DIR).is_dir():
        try:
            saved = json.loads((Path(resume) / RUN_FILE).read_text(encoding="utf-8"))
            world = saved.get("world_size", "several")
        except (OSError, ValueError, AttributeError):
            world = "several"
        raise FieldError(
            "resume",
            f"{resume} was started under torchrun with {world} ranks; resume it with the same "
            "torchrun command.",
        )


@contextlib.contextmanager
def process_group(ranks: Ranks, device: str):
    """``torch.distributed`` for this job: NCCL between GPUs, gloo on CPUs."""
    import torch
    import torch.distributed as dist

    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(
        "nccl" if device.startswith("cuda") else "gloo", timeout=BARRIER_TIMEOUT
    )
    try:
        yield
        # Leave together: a gloo rank whose peer already tore the group down can abort at exit
        # ("terminate called without an active exception"), seen under load in CI.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _decide(config: Any, kind: str, slug: str, outputs: tuple[str, ...], world: int) -> dict:
    """Rank 0's decision: which directory, and whether it is new, to resume, or complete."""
    from sae_hacking.folders import check_new_folder
    from sae_hacking.runs.files import default_run_dir

    given = config.run.resume or config.run.output_dir
    top = Path(given or default_run_dir(slug)).absolute()
    started = (top / RANKS_DIR).is_dir() or all((top / name).is_file() for name in outputs)
    if config.run.resume is None and not started:
        check_new_folder(top, "output_dir")
        return {"top": str(top), "state": "new"}
    # The same command run again (same --output-dir), or --resume: continue that run.
    try:
        record = read_record(top, kind)
    except FieldError:
        if config.run.resume is not None:
            raise
        record = None
    saved_world = None if record is None else record.extra.get("world_size")
    if saved_world is None:
        if config.run.resume is None:  # a one-process run or the user's folder: not ours
            check_new_folder(top, "output_dir")
            raise FieldError("output_dir", f"{top} is not a torchrun run; choose a new folder.")
        raise FieldError(
            "resume", f"{top} was not started under torchrun; resume it without torchrun."
        )
    if saved_world != world:
        raise FieldError(
            "resume" if config.run.resume is not None else "output_dir",
            f"{top} was started with {saved_world} ranks, not {world}; resume it with "
            f"--nproc-per-node (times nodes) = {saved_world}.",
        )
    if record.is_complete():
        return {"top": str(top), "state": "complete"}
    return {"top": str(top), "state": "resume"}


def shown_on_this_rank(message: str) -> bool:
    """Whether this process prints an error line: outside torchrun always; under it rank 0,
    and another rank only for an error about its own files (``ranks/rank-R``). Every other error
    is rank 0's too (the same command line, model, SAEs and text, or rank 0's decision), so one
    line reaches the terminal, not one per rank."""
    try:
        ranks = ranks_from_env()
    except (KeyError, ValueError):  # not torchrun's environment: this process is on its own
        return True
    if ranks is None or ranks.rank == 0:
        return True
    return f"{RANKS_DIR}/rank-{ranks.rank}" in message


def wrote(path: Path) -> str:
    """``"; wrote PATH"`` for a run's summary line, or nothing for one rank's shard (torchrun
    prints only the merged results' path)."""
    return "" if ranks_from_env() is not None else f"; wrote {path}"


def run_streamed(
    config: Any,
    kind: str,
    slug: str,
    results_name: str,
    run_one: Callable[[Any], Path],
    merger: Callable[[], Callable[[Path, list[Path]], Any]],
) -> Path:
    """A streamed command: ``run_one(config)`` in one process, or under torchrun this rank's
    shard of it, merged by rank 0 with ``merger()`` (imported only then)."""
    if ranks_from_env() is None:
        check_single_process_resume(config)
        return run_one(config)
    return run_distributed(config, kind, slug, results_name, run_one, merger())


def run_distributed(
    config: Any,
    kind: str,
    slug: str,
    results_name: str,
    run_one: Callable[[Any], Path],
    merge: Callable[[Path, list[Path]], Any],
) -> Path:
    """Run ``run_one`` (a single-process run of ``config``) as this rank's shard; rank 0 merges
    the ranks' results with ``merge(out_stem, paths)``. Returns the merged results path."""
    import torch.distributed as dist

    ranks = ranks_from_env()
    if config.run.shard != "0/1":
        raise FieldError(
            "shard",
            f"is {config.run.shard}, but under torchrun each of the {ranks.world} ranks is a "
            "shard of its own; drop it.",
        )
    device = rank_device(config.model.device, ranks.local_rank)
    with process_group(ranks, device):
        outputs = tuple(p.name for p in results_paths(results_name))
        decision = on_rank0(ranks, lambda: _decide(config, kind, slug, outputs, ranks.world))
        top = Path(decision["top"])
        results = results_paths(top / results_name)[0]
        if decision["state"] == "complete":
            if ranks.rank == 0:
                print(f"{results} is already complete; nothing to do.")
            return results
        if decision["state"] == "new":
            rundir = RunDir(RunRecord(top, kind, {}, outputs=outputs), config, ranks)
            # run.json records the world size; rank 0 creates, the others wait for it.
            rundir.start(args={**to_flat(config), "run_dir": str(top), "world_size": ranks.world})
        else:
            rundir = RunDir.open(top, kind, config, ranks)
        # A start that fails before any rank has begun its run leaves nothing.
        with rundir.removed_on_failure(keep=_a_rank_began):
            if ranks.rank == 0 and not rundir.resumed:
                (top / RANKS_DIR).mkdir()
            dist.barrier()
            mine = rank_dir(top, ranks.rank)
            changes = {
                "shard": f"{ranks.rank}/{ranks.world}",
                "output_dir": str(mine),
                "resume": str(mine) if (mine / RUN_FILE).is_file() else None,
                "device": device,
            }
            if ranks.rank != 0:
                changes["quiet"] = True  # one progress bar per job
            run_one(replace_flat(config, changes))
        dist.barrier()
        if ranks.rank == 0:
            paths = [results_paths(rank_dir(top, r) / results_name)[0] for r in range(ranks.world)]
            merge(top / results_name, paths)
            rundir.update(config)  # a resume with other free settings records them
            shutil.rmtree(top / RANKS_DIR)
            print(f"merged the results of {ranks.world} ranks into {results}")
        dist.barrier()
        return results


def _a_rank_began(top: Path) -> bool:
    return (top / RANKS_DIR).is_dir() and any((top / RANKS_DIR).iterdir())
