"""The training engine: one loop for every SAE this package trains, fed by any iterator of
activation batches (toy samples, SAELens synthetic data, LM activations).

Each step takes the schedule's learning rate (:mod:`~sae_hacking.training.schedule`) and one
:func:`~sae_hacking.saes.trainable.train_step` (with the auxiliary-k loss of dead latents once a
latent can be dead). Then, by the :class:`Cadence`: every ``log_every`` steps the training
metrics (``metrics.jsonl`` rows of split ``"train"`` and TensorBoard ``train/*``) and a check
that the loss and weights are finite; every ``resample_every`` steps resampling of the latents
that have been dead for the dead window (:class:`DeadRemedies`); every ``eval_every`` steps (and
at the end) the frontend's evaluation callback, logged as split ``"eval"`` with the learning rate
and the dead fraction, and shown to the schedule; every ``checkpoint_every`` steps a checkpoint
(:mod:`~sae_hacking.training.checkpoint`) holding everything a resumed run needs to take exactly
the steps an uninterrupted one would, the data source's state included.

One ``metrics.jsonl`` schema for every trainer: ``{"split", "step", "tokens", **metrics}``, where
``tokens`` counts the rows trained on (samples for toy data, tokens for an LM).

Under torchrun (``parallel``, :class:`sae_hacking.train.parallel.DataParallel`) every rank runs
this loop on its own batches; gradients are averaged and firing is shared, so the replicas stay
equal. Rank 0 evaluates, logs and writes checkpoints; resampling draws inputs on every rank and
then takes rank 0's parameters, so the replicas stay equal there too.

Training stops (a :class:`~sae_hacking.errors.UsageError`) as soon as the loss or the weights stop
being finite: checked where the loss is read anyway and before every evaluation and checkpoint,
so that no checkpoint holds a NaN.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from tqdm import tqdm

from sae_hacking.atomic import atomic_write
from sae_hacking.errors import UsageError
from sae_hacking.saes.io import load_sae_checkpoint, save_sae_checkpoint
from sae_hacking.saes.trainable import (
    PARENT,
    TrainableSAE,
    reset_adam_entries,
    residual_directions,
    train_step,
)
from sae_hacking.training.checkpoint import (
    SAE_CHECKPOINT,
    TRAINER_CHECKPOINT,
    all_finite,
    json_safe,
)
from sae_hacking.training.metrics import train_metrics
from sae_hacking.training.schedule import Schedule

# Inputs drawn to pick resampling directions from.
RESAMPLE_BATCH = 4096
# Draws ``n`` inputs for resampling, a pure function of the generator's state.
Inputs = Callable[[int, torch.Generator], Float[torch.Tensor, "B M"]]


@dataclass(frozen=True)
class Cadence:
    total_steps: int
    eval_every: int
    log_every: int
    checkpoint_every: int


@dataclass(frozen=True)
class DeadRemedies:
    """A parent-level latent is dead after ``dead_steps`` steps without firing. Two remedies,
    either or both: the auxiliary-k loss (``k_aux`` dead latents reconstruct the residual, with
    weight ``aux_coeff``; the TopK family), and resampling every ``resample_every`` steps
    (Bricken et al. 2023, simplified: :func:`resample_generator`)."""

    dead_steps: int
    k_aux: int = 0
    aux_coeff: float = 0.0
    resample_every: int = 0
    seed: int = 0

    @property
    def aux_on(self) -> bool:
        return self.k_aux > 0 and self.aux_coeff > 0


def resample_generator(seed: int, step: int) -> torch.Generator:
    """The generator of the resampling at ``step``: inputs, picks and new directions are a pure
    function of ``(seed, step)``, so a resumed run resamples exactly as an uninterrupted one."""
    from sae_hacking.data.toy import chunk_generator

    return chunk_generator(seed, -1 - step)


class Engine:
    """Trains ``sae`` in ``run_dir``. ``tokens_per_step``: rows one step trains on (all ranks);
    ``unit``: what the progress bar counts (``"step"``, or ``"tok"``: ``tokens_per_step`` per
    step); ``shown``: eval metrics on the bar; ``lr_name``: the setting named when training
    diverges."""

    def __init__(
        self,
        sae: TrainableSAE,
        run_dir: Path,
        *,
        lr: float,
        schedule: Schedule,
        remedies: DeadRemedies,
        cadence: Cadence,
        tokens_per_step: int,
        unit: str = "tok",
        shown: tuple[str, ...] = ("fvu", "l0", "dead_frac"),
        lr_name: str = "lr",
        parallel=None,
        rank: int = 0,
        quiet: bool = False,
    ):
        self.sae = sae
        self.run_dir = Path(run_dir)
        self.device = next(sae.parameters()).device
        self.lr, self.lr_name = lr, lr_name
        self.remedies, self.cadence = remedies, cadence
        self.tokens_per_step, self.unit, self.shown = tokens_per_step, unit, shown
        self.parallel, self.rank, self.main = parallel, rank, rank == 0
        self.quiet = quiet
        if parallel is not None and schedule.needs_eval:
            raise UsageError("a schedule that follows evaluations cannot run under torchrun.")
        # The fused kernel does Adam's dozen element-wise ops per parameter in one pass; at toy
        # sizes per-op overhead is most of a step.
        fused = self.device.type in ("cuda", "cpu")
        self.optimizer = torch.optim.Adam(sae.parameters(), lr=lr, fused=fused)
        self.schedule = schedule
        schedule.bind(self.optimizer)
        self.step = 0
        self.since_fired = {
            name: torch.zeros(n, dtype=torch.long, device=self.device)
            for name, n in sae.latent_banks().items()
        }
        self.checkpoint_step: int | None = None  # the step of the checkpoint on disk
        self.last_metrics: dict = {}
        self.eval_seconds = 0.0
        self._writer = None

    # ----- persistence -------------------------------------------------------------------
    def save_checkpoint(self, data_state: dict) -> None:
        """Write the checkpoint; ``data_state``: this rank's data-source state (JSON-able).
        A collective under torchrun (every rank's state is gathered); rank 0 writes."""
        self.check_finite(optimizer=True)  # a checkpoint is never worse than the last one
        states = self.parallel.gather(data_state) if self.parallel else [data_state]
        self.checkpoint_step = self.step
        if not self.main:
            return
        extra = {"step": self.step}
        save_sae_checkpoint(self.sae, self.run_dir / SAE_CHECKPOINT, extra=extra)
        trainer = {
            "step": self.step,
            "since_fired": self.since_fired,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "ranks": json.dumps(states),
        }
        atomic_write(self.run_dir / TRAINER_CHECKPOINT, lambda tmp: torch.save(trainer, tmp))

    def load_checkpoint(self, trainer: dict) -> dict:
        """Continue from the run directory's checkpoint; ``trainer``: its
        ``checkpoint.trainer.pt`` as :func:`~sae_hacking.training.checkpoint.read_trainer_state`
        read it. Returns this rank's data-source state."""
        sae = load_sae_checkpoint(self.run_dir / SAE_CHECKPOINT, self.device)
        self.sae.load_state_dict(sae.state_dict())
        # Adam's state follows its parameters' device (load_state_dict moves it).
        self.optimizer.load_state_dict(trainer["optimizer"])
        # Toy checkpoints written before the engine called it "scheduler".
        schedule = trainer.get("schedule", trainer.get("scheduler"))
        if schedule:
            self.schedule.load_state_dict(schedule)
        self.step = self.checkpoint_step = trainer["step"]
        self.since_fired = {k: v.to(self.device) for k, v in trainer["since_fired"].items()}
        return trainer["ranks"][self.rank]

    def check_finite(self, loss: float | None = None, optimizer: bool = False) -> None:
        """Stop if the loss or the weights (and, with ``optimizer``, Adam's moments) are not
        finite. Under torchrun every rank calls it at the same steps and all stop together."""
        tensors = list(self.sae.state_dict().values())
        if optimizer:
            moments = (t for s in self.optimizer.state.values() for t in s.values())
            tensors += [t for t in moments if torch.is_tensor(t)]
        weights_ok = all_finite(tensors)
        loss_ok = loss is None or math.isfinite(loss)
        bad = not (weights_ok and loss_ok)
        if self.parallel is not None:
            bad = self.parallel.sum_floats([float(bad)], self.device)[0] > 0
        if not bad:
            return
        what = [f"its loss is {loss}"] if not loss_ok else []
        what += [] if weights_ok else ["its weights are not finite"]
        kept = (
            f"nothing was exported and {self.run_dir} keeps the checkpoint of step "
            f"{self.checkpoint_step}"
            if self.checkpoint_step is not None
            else "no checkpoint had been written, so nothing is kept"
        )
        raise UsageError(
            f"training diverged by step {self.step}: "
            f"{' and '.join(what) or 'another process saw a non-finite loss'}; {kept}. Try a "
            f"smaller `{self.lr_name}` (it is {self.lr:g})."
        )

    # ----- logging -----------------------------------------------------------------------
    @property
    def writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        return self._writer

    def log(self, split: str, metrics: dict[str, float]) -> None:
        if not self.main:
            return
        tokens = self.step * self.tokens_per_step
        record = {"split": split, "step": self.step, "tokens": tokens, **json_safe(metrics)}
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, allow_nan=False) + "\n")
        for key, value in metrics.items():
            self.writer.add_scalar(f"{split}/{key}", value, self.step)

    # ----- the loop ----------------------------------------------------------------------
    def dead_frac(self) -> float:
        dead = self.since_fired[PARENT] >= self.remedies.dead_steps
        return float(dead.float().mean())

    def train(
        self,
        batches: Iterator[Float[torch.Tensor, "B M"]],
        evaluate: Callable[[], dict],
        data_state: Callable[[], dict],
        resample_inputs: Inputs | None = None,
    ) -> dict:
        """Train from the current step to the cadence's total; returns the last evaluation's
        metrics and the timing (``steps_per_s``, ``tokens_per_s``: training only, evaluations
        left out; ``seconds_eval``; ``seconds_loop``: the whole loop). ``evaluate()``: the
        frontend's metrics (rank 0 only); ``data_state()``: what the checkpoint keeps of the
        data source; ``resample_inputs``: inputs to resample from (needed when resampling)."""
        c, r = self.cadence, self.remedies
        if r.resample_every and resample_inputs is None:
            raise ValueError("resampling needs resample_inputs")
        k_aux, aux_coeff = (r.k_aux, r.aux_coeff) if r.aux_on else (0, 0.0)
        per = 1 if self.unit == "step" else self.tokens_per_step
        start = self.step
        bar = tqdm(
            total=c.total_steps * per,
            initial=start * per,
            unit=self.unit,
            unit_scale=per > 1,
            disable=self.quiet or not self.main,
            dynamic_ncols=True,
            smoothing=0.05,
        )
        if self.main:
            self.writer  # noqa: B018 (open TensorBoard before timing: its import takes a second)
        self._set_lr(max(start - 1, 0))  # what an evaluation before the first step reports
        t0 = time.perf_counter()
        eval_t0 = self.eval_seconds
        while self.step < c.total_steps:
            x_BM = next(batches)
            self._set_lr(self.step)
            # No latent can have gone dead_steps steps without firing before step dead_steps.
            k_now = k_aux if self.step >= r.dead_steps else 0
            out = train_step(
                self.sae,
                self.optimizer,
                x_BM,
                self.since_fired,
                r.dead_steps,
                k_now,
                aux_coeff,
                forward=self.parallel.forward if self.parallel else None,
                sync_fired=self.parallel.sync_fired if self.parallel else None,
            )
            self.step += 1
            if self.step % c.log_every == 0:
                metrics = train_metrics(out, x_BM)
                self.log("train", metrics)
                self.check_finite(metrics["loss"])
            bar.update(per)
            if r.resample_every and self.step % r.resample_every == 0:
                self.resample_dead(resample_inputs)
            if self.step % c.eval_every == 0 or self.step == c.total_steps:
                self._eval_step(bar, evaluate)
            if self.step % c.checkpoint_every == 0:
                self.save_checkpoint(data_state())
        bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - t0
        evaluating = self.eval_seconds - eval_t0  # within the loop (a final one may follow)
        if self.last_metrics.get("step") != self.step:
            self._eval_step(None, evaluate)
        training = max(elapsed - evaluating, 1e-9)
        timing = {
            "steps_per_s": (self.step - start) / training,
            "tokens_per_s": (self.step - start) * self.tokens_per_step / training,
            "seconds_eval": self.eval_seconds,
            "seconds_loop": elapsed,
        }
        self.save_checkpoint(data_state())
        return {**self.last_metrics, **timing}

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _set_lr(self, step: int) -> None:
        lr = self.schedule.lr(step)
        if lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr

    @torch.no_grad()
    def resample_dead(self, inputs: Inputs) -> int:
        """Move the parent latents dead for the dead window onto residual directions of
        :data:`RESAMPLE_BATCH` inputs (picked by squared reconstruction error) and reset their
        Adam moments; returns how many were moved."""
        dead_Z = (self.since_fired[PARENT] >= self.remedies.dead_steps).nonzero().flatten()
        if dead_Z.numel() == 0:  # the same on every rank: firing is shared
            return 0
        gen = resample_generator(self.remedies.seed, self.step)
        x_BM = inputs(RESAMPLE_BATCH, gen)
        dirs_ZM = residual_directions(self.sae, x_BM, dead_Z.numel(), gen)
        done = None if dirs_ZM is None else self.sae.resample(dead_Z, dirs_ZM, gen)
        if self.parallel is not None:
            self.parallel.broadcast_parameters()
        if done is None:
            return 0
        reset_adam_entries(self.optimizer, self.sae, done.entries)
        for bank, latents in done.latents.items():
            self.since_fired[bank][latents] = 0
        return int(dead_Z.numel())

    def _eval_step(self, bar, evaluate: Callable[[], dict]) -> None:
        self.check_finite()  # on every rank (a collective under torchrun)
        head = {"step": self.step, "tokens": self.step * self.tokens_per_step}
        if not self.main:  # rank 0 evaluates; the others go on (DDP's next step waits for it)
            self.last_metrics = head
            return
        t0 = time.perf_counter()
        metrics = {"dead_frac": self.dead_frac(), **evaluate()}
        self.schedule.after_eval(metrics)
        metrics = {"lr": self.optimizer.param_groups[0]["lr"], **metrics}
        self.eval_seconds += time.perf_counter() - t0
        self.log("eval", metrics)
        self.last_metrics = {**head, **metrics}
        if bar is not None:
            shown = {k: metrics[k] for k in self.shown if metrics.get(k) is not None}
            bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()}, refresh=False)
