"""The training engine on its own: any iterator of batches, both schedules, both dead-latent
remedies, one checkpoint format with exact resume, one metrics schema."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sae_hacking.errors import UsageError
from sae_hacking.saes.topk import TopKSAE
from sae_hacking.training.checkpoint import read_trainer_state
from sae_hacking.training.engine import Cadence, DeadRemedies, Engine
from sae_hacking.training.metrics import reconstruction_metrics
from sae_hacking.training.schedule import Plateau, WarmupDecay

M, E = 8, 24


def batch(step: int) -> torch.Tensor:
    """Batch ``step`` of a fixed stream: sparse non-negative codes of a fixed dictionary."""
    gen = torch.Generator().manual_seed(1000 + step)
    dict_FM = torch.randn(12, M, generator=torch.Generator().manual_seed(0))
    codes_BF = torch.rand(32, 12, generator=gen) * (torch.rand(32, 12, generator=gen) < 0.2)
    return codes_BF @ dict_FM


def batches(start: int):
    step = start
    while True:
        yield batch(step)
        step += 1


def inputs(n: int, gen: torch.Generator) -> torch.Tensor:
    return batch(int(torch.randint(10**6, (1,), generator=gen)))[: min(n, 32)]


def engine(run_dir, total=60, remedies=None, schedule=None, lr=3e-3) -> Engine:
    sae = TopKSAE(M, d_sae=E, k=2, gen=torch.Generator().manual_seed(3))
    return Engine(
        sae,
        run_dir,
        lr=lr,
        schedule=schedule or WarmupDecay(lr, total, warmup=5, decay="linear", decay_fraction=0.3),
        remedies=remedies or DeadRemedies(dead_steps=5, k_aux=4, aux_coeff=1 / 32),
        cadence=Cadence(total, eval_every=20, log_every=10, checkpoint_every=20),
        tokens_per_step=32,
        quiet=True,
    )


def evaluate_on(e: Engine):
    held = torch.cat([batch(-1 - i) for i in range(4)])
    return lambda: reconstruction_metrics(e.sae, held)


def test_any_iterator_of_batches_trains_and_logs_one_schema(tmp_path):
    e = engine(tmp_path)
    before = evaluate_on(e)()["fvu"]
    final = e.train(batches(0), evaluate_on(e), dict)
    assert final["step"] == 60 and final["tokens"] == 60 * 32
    assert final["fvu"] < 0.7 * before
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [10, 20, 30, 40, 50, 60]
    evals = [r for r in rows if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [20, 40, 60]
    assert {"lr", "dead_frac", "mse", "fvu", "explained_variance", "l0"} <= evals[0].keys()
    # The logged learning rate is the schedule's at the last step taken (linear decay to 0).
    assert evals[-1]["lr"] == pytest.approx(3e-3 / 18)


STOP = 20  # a checkpoint step (checkpoint_every 20), with resamplings on both sides of it


@pytest.mark.parametrize("remedy", ["aux-k", "resampling"])
def test_resume_from_a_checkpoint_takes_the_uninterrupted_steps(tmp_path, remedy):
    remedies = (
        DeadRemedies(dead_steps=5, k_aux=4, aux_coeff=1 / 32)
        if remedy == "aux-k"
        else DeadRemedies(dead_steps=5, resample_every=10, seed=7)
    )
    straight = engine(tmp_path / "a", remedies=remedies)
    moved = []
    resample = straight.resample_dead
    straight.resample_dead = lambda f: moved.append(resample(f)) or moved[-1]
    straight.train(batches(0), evaluate_on(straight), dict, inputs)
    if remedy == "resampling":  # the remedy under test did act, before and after the stop
        assert sum(moved[: STOP // 10]) > 0 and sum(moved[STOP // 10 :]) > 0
    stopped = engine(tmp_path / "b", remedies=remedies)
    it = batches(0)

    def until_stop():  # the same run, killed after the checkpoint of step STOP
        for _ in range(STOP):
            yield next(it)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stopped.train(until_stop(), evaluate_on(stopped), lambda: {"next": stopped.step}, inputs)
    resumed = engine(tmp_path / "b", remedies=remedies)
    state = resumed.load_checkpoint(read_trainer_state(tmp_path / "b", world=1))
    assert state == {"next": STOP} and resumed.step == STOP
    resumed.train(batches(STOP), evaluate_on(resumed), dict, inputs)
    for name, tensor in straight.sae.state_dict().items():
        assert torch.equal(resumed.sae.state_dict()[name], tensor), name
    for bank, since in straight.since_fired.items():
        assert torch.equal(resumed.since_fired[bank], since), bank


def test_resampling_revives_dead_latents_and_resets_their_adam_moments(tmp_path):
    e = engine(tmp_path, remedies=DeadRemedies(dead_steps=5, resample_every=10, seed=1))
    e.train(batches(0), evaluate_on(e), dict, inputs)  # Adam has state for every parameter
    e.since_fired["parent"][:6] = 100  # six latents dead for a long while
    moved = e.resample_dead(inputs)
    assert moved == 6
    assert (e.since_fired["parent"][:6] == 0).all()
    state = e.optimizer.state[e.sae.W_dec_EM]
    assert (state["exp_avg"][:6] == 0).all() and (state["exp_avg"][6:] != 0).any()


def test_plateau_schedule_halves_the_rate_and_resumes_its_state(tmp_path):
    schedule = Plateau(min_lr=1e-4, patience=0)
    e = engine(tmp_path, schedule=schedule, lr=1e-3)
    e.schedule.after_eval({"mse": 1.0})
    e.schedule.after_eval({"mse": 2.0})  # no improvement, patience 0: halve
    assert e.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)
    e.save_checkpoint({})
    again = engine(tmp_path, schedule=Plateau(min_lr=1e-4, patience=0), lr=1e-3)
    again.load_checkpoint(read_trainer_state(tmp_path, world=1))
    assert again.schedule.state_dict()["best"] == 1.0
    assert again.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)


def test_a_diverging_run_stops_with_one_sentence_naming_the_setting(tmp_path):
    e = engine(tmp_path, lr=1e30)
    e.lr_name = "auxk_lr"
    with pytest.raises(UsageError, match=r"training diverged by step \d+.*`auxk_lr`"):
        e.train(batches(0), evaluate_on(e), dict)
    assert not (tmp_path / "checkpoint.safetensors").exists()


def test_reconstruction_metrics_chunked_equal_whole_and_nan_without_variance():
    sae = TopKSAE(M, d_sae=E, k=2, gen=torch.Generator().manual_seed(0))
    x_TM = torch.cat([batch(i) for i in range(5)])
    whole = reconstruction_metrics(sae, x_TM, chunk=len(x_TM))
    parts = reconstruction_metrics(sae, x_TM, chunk=7)
    assert parts == pytest.approx(whole, rel=1e-5)
    given = reconstruction_metrics(sae, x_TM, chunk=7, codes_TL=sae.encode(x_TM))
    assert given == pytest.approx(whole, rel=1e-5)
    assert whole["explained_variance"] == pytest.approx(1 - whole["fvu"])
    flat = reconstruction_metrics(sae, torch.ones(10, M))
    assert math.isnan(flat["fvu"]) and math.isnan(flat["explained_variance"])


def test_warmup_decay_matches_its_definition():
    s = WarmupDecay(1.0, total=100, warmup=10, decay="linear", decay_fraction=0.2)
    assert [s.lr(i) for i in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert s.lr(50) == 1.0 and s.lr(90) == pytest.approx(0.5) and s.lr(99) == pytest.approx(0.05)
    c = WarmupDecay(1.0, total=110, warmup=10, decay="cosine")
    assert c.lr(10) == pytest.approx(1.0) and c.lr(60) == pytest.approx(0.5)
    assert c.lr(110) == pytest.approx(0.0, abs=1e-12)


def test_a_toy_checkpoint_of_the_format_before_the_engine_resumes(tmp_path):
    """Toy checkpoints written before the engine: no data-source states, the plateau's state
    under "scheduler"."""
    e = engine(tmp_path, schedule=Plateau(min_lr=1e-4, patience=0), lr=1e-3)
    e.train(batches(0), evaluate_on(e), dict)
    state = torch.load(tmp_path / "checkpoint.trainer.pt", weights_only=True)
    old = {k: v for k, v in state.items() if k not in ("ranks", "schedule")}
    old.update(scheduler=state["schedule"], best_val=0.5)
    torch.save(old, tmp_path / "checkpoint.trainer.pt")
    again = engine(tmp_path, schedule=Plateau(min_lr=1e-4, patience=0), lr=1e-3)
    assert again.load_checkpoint(read_trainer_state(tmp_path, world=1)) == {}
    assert again.step == 60 and again.schedule.state_dict() == e.schedule.state_dict()
    for name, tensor in e.sae.state_dict().items():
        assert torch.equal(again.sae.state_dict()[name], tensor), name
