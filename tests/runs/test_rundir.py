"""RunDir, the one run-directory lifecycle: plan, create (run.json + args.yaml), remove on
failure unless there is something to resume, resume (record only what changed), torchrun."""

import json
from pathlib import Path

import pytest
import yaml

from sae_hacking.config import from_flat, to_flat
from sae_hacking.errors import FieldError, UsageError
from sae_hacking.runs.record import read_record
from sae_hacking.runs.rundir import RunDir
from sae_hacking.toy.config import ToyConfig

OUTPUTS = ("metrics.json",)


def toy(path: Path | None = None, **changes) -> ToyConfig:
    return from_flat(ToyConfig, {"output_dir": None if path is None else str(path), **changes})


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_create_writes_run_json_and_args_yaml(tmp_path):
    out = tmp_path / "deep" / "run"
    config = toy(out, max_step=7)
    with RunDir.create(config, "toy", "slug", OUTPUTS, identity={"hook": "h"}) as rundir:
        assert rundir.path == out and not rundir.resumed
    record = read_record(out, "toy")
    assert record.config == {**to_flat(config), "output_dir": str(out)}
    assert record.settings["max_step"] == 7 and record.settings["hook"] == "h"
    assert record.outputs == OUTPUTS and not record.is_complete()
    assert from_flat(ToyConfig, record.config) == config  # the config is rebuilt from it
    args = yaml.safe_load((out / "args.yaml").read_text())
    assert args["args"] == to_flat(config) and "git_commit" in args["provenance"]
    assert sorted(p.name for p in out.iterdir()) == ["args.yaml", "run.json"]


def test_the_default_folder_is_new_under_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with (
        RunDir.create(toy(), "toy", "my-slug") as first,
        RunDir.create(toy(), "toy", "my-slug") as second,
    ):
        pass
    assert first.path.parent == second.path.parent == tmp_path / "results"
    assert first.path.name.endswith("-my-slug") and first.path != second.path
    assert (first.path / "run.json").is_file() and (second.path / "run.json").is_file()


def test_an_existing_folder_that_holds_anything_is_refused(tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(FieldError) as refused, RunDir.create(toy(busy), "toy"):
        pytest.fail("the body must not run")
    assert refused.value.field == "output_dir"
    assert refused.value.message == f"{busy} exists and is not empty; choose a new folder."
    assert snapshot(busy) == {Path("notes.txt"): b"mine"}
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(FieldError, match="is a file, not a folder"):
        RunDir.plan(toy(afile), "toy")


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt, UsageError])
def test_a_failing_run_removes_what_it_created(tmp_path, error):
    out = tmp_path / "deep" / "run"
    with pytest.raises(error), RunDir.create(toy(out), "toy", keep=lambda p: False):
        assert (out / "run.json").is_file()
        raise error("late")
    assert not (tmp_path / "deep").exists()  # the parents it made go too
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(error), RunDir.create(toy(empty), "toy"):
        (empty / "partial.txt").write_text("half")
        raise error("late")
    assert empty.is_dir() and not any(empty.iterdir())  # the user's folder stays, emptied
    with RunDir.create(toy(empty), "toy"):  # so the corrected command runs there
        pass


def test_a_failing_run_with_a_checkpoint_is_kept(tmp_path):
    out = tmp_path / "run"

    def has_checkpoint(path: Path) -> bool:
        return (path / "checkpoint.safetensors").is_file()

    with pytest.raises(KeyboardInterrupt), RunDir.create(toy(out), "toy", keep=has_checkpoint):
        (out / "checkpoint.safetensors").write_bytes(b"step 10")
        raise KeyboardInterrupt
    assert (out / "checkpoint.safetensors").read_bytes() == b"step 10"
    assert read_record(out, "toy").kind == "toy"


def test_a_start_that_cannot_write_its_record_leaves_nothing(tmp_path, monkeypatch):
    from sae_hacking.runs import rundir as module

    def full_disk(path, args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(module, "write_args_yaml", full_disk)
    out = tmp_path / "deep" / "run"
    with pytest.raises(OSError, match="No space"):
        RunDir.plan(toy(out), "toy").start()
    assert not (tmp_path / "deep").exists()


def test_a_resume_records_only_settings_that_changed(tmp_path):
    out = tmp_path / "run"
    config = toy(out, max_step=10)
    with RunDir.create(config, "toy", outputs=OUTPUTS):
        pass
    before = snapshot(out)
    resumed_config = toy(out, max_step=10, resume=str(out))
    rundir = RunDir.plan(resumed_config, "toy", outputs=OUTPUTS)
    assert rundir.resumed and rundir.path == out and not rundir.complete
    with rundir.started(keep=lambda p: False):  # a resume creates nothing and removes nothing
        pass
    assert not rundir.update(resumed_config)  # `resume` itself is no change
    assert snapshot(out) == before
    with pytest.raises(RuntimeError), rundir.removed_on_failure():
        raise RuntimeError("a resume that fails")
    assert snapshot(out) == before
    longer = toy(out, max_step=20, resume=str(out))
    assert rundir.update(longer)
    record = read_record(out, "toy")
    assert record.config["max_step"] == 20 and record.settings["max_step"] == 20
    assert record.outputs == OUTPUTS and rundir.record.config == record.config
    (out / "metrics.json").write_text("{}")
    assert RunDir.open(out, "toy").complete


def test_a_resume_keeps_the_record_s_extra_and_compares_identity(tmp_path):
    out = tmp_path / "run"
    with RunDir.create(toy(out), "toy", identity={"hook": "a"}, extra={"shard": "0/2"}):
        pass
    rundir = RunDir.open(out, "toy", toy(out, resume=str(out)))
    assert rundir.record.extra == {"shard": "0/2"}
    assert not rundir.update(identity={"hook": "a"})
    assert rundir.update(identity={"hook": "b"})
    saved = json.loads((out / "run.json").read_text())
    assert saved["settings"]["hook"] == "b" and saved["shard"] == "0/2"


def test_a_resume_of_another_kind_or_world_size_is_refused(tmp_path):
    out = tmp_path / "run"
    with RunDir.create(toy(out), "toy"):
        pass
    with pytest.raises(FieldError) as refused:
        RunDir.open(out, "pairs")
    assert refused.value.field == "resume"
    assert refused.value.message == f"{out} is a 'toy' run, not a 'pairs' run."
    with pytest.raises(FieldError, match="no run.json there"):
        RunDir.open(tmp_path, "toy")
    record = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**record, "world_size": 2}))
    with pytest.raises(FieldError) as refused:
        RunDir.plan(toy(resume=str(out)), "toy")
    assert refused.value.message == (
        f"{out} was trained by 2 processes; resume it with as many "
        "(torchrun --nproc-per-node, times nodes)."
    )


# -- torchrun: two gloo processes ------------------------------------------------------------


SCENARIOS = {"ok": None, "rank1": 1, "rank0": 0, "busy": None}  # the rank that fails


def _two_ranks(rank: int, root: Path) -> None:
    """One rank of a 2-process job: plan and start a run directory in each scenario's folder,
    writing what it saw (one job for all, as starting processes is what takes time)."""
    import torch.distributed as dist

    from sae_hacking.runs.ranks import Ranks

    dist.init_process_group("gloo", init_method=f"file://{root}/store", rank=rank, world_size=2)
    ranks = Ranks(rank, 2, rank)
    seen = {}
    for name, failing_rank in SCENARIOS.items():
        seen[name] = mine = {}
        try:
            rundir = RunDir.plan(toy(root / name / "run"), "toy", outputs=OUTPUTS, ranks=ranks)
            with rundir.started():
                mine["path"] = str(rundir.path)
                mine["record_world"] = rundir.record.extra.get("world_size")
                dist.barrier()  # every rank is in the folder
                if rank == failing_rank:
                    raise RuntimeError("failed")
        except UsageError as err:
            mine["error"] = str(err)
        except RuntimeError:
            mine["failed"] = True
        dist.barrier()
    dist.destroy_process_group()
    (root / f"rank-{rank}.json").write_text(json.dumps(seen))


@pytest.mark.slow
def test_under_torchrun_rank_0_creates_and_every_rank_learns_the_path(tmp_path):
    import torch.multiprocessing as mp

    busy = tmp_path / "busy" / "run"
    busy.mkdir(parents=True)
    (busy / "notes.txt").write_text("mine")
    mp.spawn(_two_ranks, args=(tmp_path,), nprocs=2)
    seen = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    run = tmp_path / "ok" / "run"
    assert [s["ok"].get("path") for s in seen] == [str(run), str(run)]
    assert [s["ok"]["record_world"] for s in seen] == [2, 2]
    assert read_record(run, "toy").extra == {"world_size": 2}
    # Another rank failing removes nothing (only rank 0, which created the folder, removes).
    assert seen[1]["rank1"]["failed"] and (tmp_path / "rank1" / "run" / "run.json").is_file()
    assert seen[0]["rank0"]["failed"] and not (tmp_path / "rank0" / "run").exists()
    # A refused folder is one error, the same on every rank.
    message = f"`output_dir` {busy} exists and is not empty; choose a new folder."
    assert [s["busy"].get("error") for s in seen] == [message, message]
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]
