"""The training loop of ``sae-hacking train``: any :class:`~sae_hacking.saes.trainable.TrainableSAE`
on shuffled blocks of activations (:mod:`sae_hacking.train.activations`), Adam with warm-up and
decay, TensorBoard + ``metrics.jsonl``, held-out evaluation, atomic checkpoints, exact resume.

A checkpoint holds the SAE, Adam's state, the firing counters, the scaling and the data
:class:`~sae_hacking.train.activations.Position`; nothing else is random (each block's shuffle is
a function of the seed and the block index), so a resumed run takes exactly the steps an
uninterrupted one would.

Training stops (a :class:`~sae_hacking.errors.UsageError`) as soon as the loss or the weights stop
being finite: checked where the loss is read anyway (every `log_every` steps) and before every
evaluation, checkpoint and export, so that no checkpoint or export ever holds a NaN.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path

import torch
from tqdm import tqdm

from sae_hacking.atomic import atomic_write
from sae_hacking.errors import FieldError, SettingWarning, UsageError
from sae_hacking.runs.distributed import Ranks
from sae_hacking.runs.shards import Shard
from sae_hacking.saes.base import SAEInfo
from sae_hacking.saes.io import load_sae_checkpoint, save_sae_checkpoint
from sae_hacking.saes.registry import architecture_class
from sae_hacking.saes.trainable import PARENT, TrainableSAE, train_step
from sae_hacking.train.activations import ActivationSource, Position, shuffled_batches
from sae_hacking.train.checks import all_finite, json_safe, read_trainer_state
from sae_hacking.train.config import TOPK_FAMILY, TrainConfig
from sae_hacking.train.evaluate import evaluate, held_out
from sae_hacking.train.parallel import rank_state
from sae_hacking.train.scaling import Scaling, exported

# Training on more than this many epochs of the same tokens earns a warning (the SAE may learn
# the few tokens there are rather than the model's features).
REPEATS_WARNED = 10


def architecture_options(config: TrainConfig) -> dict:
    """Constructor arguments, besides ``d_in`` and ``gen``, of the architecture ``config`` names."""
    c = config
    if c.architecture == "relu":
        return {"d_sae": c.sae_hidden_dim, "l1_coefficient": c.l1_coefficient}
    if c.architecture == "jumprelu":
        return {
            "d_sae": c.sae_hidden_dim,
            "l0_coefficient": c.l0_coefficient,
            "bandwidth": c.jumprelu_bandwidth,
            "init_threshold": c.jumprelu_init_threshold,
        }
    if c.architecture == "hierarchical":
        return {"n_parents": c.sae_hidden_dim, "k": c.k}
    if c.architecture == "matryoshka":
        return {"group_sizes": c.resolved_groups(), "k": c.k}
    return {"d_sae": c.sae_hidden_dim, "k": c.k}


def build_sae(config: TrainConfig, d_in: int) -> TrainableSAE:
    gen = torch.Generator().manual_seed(config.seed)
    cls = architecture_class(config.architecture)
    info = SAEInfo(hook_name=config.hook)
    return cls(d_in, info=info, gen=gen, **architecture_options(config))


def lr_at(config: TrainConfig, step: int, total: int) -> float:
    """The learning rate of step ``step`` (0-based) of ``total``: a pure function, so a resumed
    run needs no scheduler state."""
    c = config
    if c.lr_warmup_steps and step < c.lr_warmup_steps:
        return c.lr * (step + 1) / c.lr_warmup_steps
    if c.lr_decay == "linear":
        decay_steps = int(total * c.lr_decay_fraction)
        left = total - step
        return c.lr * min(1.0, left / decay_steps) if decay_steps else c.lr
    if c.lr_decay == "cosine":
        span = max(total - c.lr_warmup_steps, 1)
        done = min(max(step - c.lr_warmup_steps, 0) / span, 1.0)
        return c.lr * 0.5 * (1 + math.cos(math.pi * done))
    return c.lr


class LMTrainer:
    """``ranks``: this process's place in a torchrun job (data-parallel training,
    :mod:`sae_hacking.train.parallel`), or ``None``."""

    def __init__(self, config: TrainConfig, run_dir: Path, lm, ranks: Ranks | None = None):
        self.config = config
        self.ranks = ranks
        self.main = ranks is None or ranks.rank == 0
        self.world = ranks.world if ranks else 1
        self.step_tokens = config.batch_tokens * self.world  # tokens one step trains on
        self.total_steps = config.total_steps(self.world)
        self.dead_steps = -(-config.dead_tokens // self.step_tokens)
        self.run_dir = Path(run_dir)
        self.lm = lm
        self.device = lm.device
        self.hook = config.hook
        self.d_model = lm.hook_width(config.hook)
        self.sae = build_sae(config, self.d_model).to(self.device)
        fused = self.device.type in ("cuda", "cpu")
        self.optimizer = torch.optim.Adam(self.sae.parameters(), lr=config.lr, fused=fused)
        self.source = ActivationSource(
            lm, config, Shard(ranks.rank, ranks.world) if ranks else None
        )
        self.parallel = None
        if ranks is not None:
            from sae_hacking.train.parallel import DataParallel

            self.parallel = DataParallel(self.sae, ranks, self.device)
        self.scaling = Scaling(config.normalize, self.d_model)
        self.step = 0
        self.since_fired = {
            name: torch.zeros(n, dtype=torch.long, device=self.device)
            for name, n in self.sae.latent_banks().items()
        }
        self.position = Position(epoch=0, block=0, start_row=0)
        self.checkpoint_step: int | None = None  # the step of the checkpoint on disk
        self.epoch_tokens: int | None = 0  # tokens of the first epoch, while it is read
        self.held_out = None
        self.last_metrics: dict = {}
        self.eval_seconds = 0.0
        self._writer = None

    # ----- persistence -------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Every rank's data position and scaling (a collective under torchrun); rank 0 writes."""
        self.check_finite(optimizer=True)  # a checkpoint is never worse than the last one
        state = rank_state(self.position, self.scaling)
        states = self.parallel.gather(state) if self.parallel else [state]
        self.checkpoint_step = self.step
        if not self.main:
            return
        save_sae_checkpoint(
            self.sae, self.run_dir / "checkpoint.safetensors", extra={"step": self.step}
        )
        trainer = {
            "step": self.step,
            "since_fired": self.since_fired,
            "optimizer": self.optimizer.state_dict(),
            "ranks": json.dumps(states),
        }
        atomic_write(self.run_dir / "checkpoint.trainer.pt", lambda tmp: torch.save(trainer, tmp))

    def load_checkpoint(self, trainer: dict | None = None) -> None:
        """Continue from the run directory's checkpoint; ``trainer``: its
        ``checkpoint.trainer.pt`` already read (:func:`read_trainer_state`)."""
        if trainer is None:
            trainer = read_trainer_state(self.run_dir, self.ranks.world if self.ranks else 1)
        sae = load_sae_checkpoint(self.run_dir / "checkpoint.safetensors", self.device)
        self.sae.load_state_dict(sae.state_dict())
        # Adam's state follows its parameters' device (load_state_dict moves it).
        self.optimizer.load_state_dict(trainer["optimizer"])
        self.step = self.checkpoint_step = trainer["step"]
        self.since_fired = {k: v.to(self.device) for k, v in trainer["since_fired"].items()}
        self.epoch_tokens = None  # the first epoch's start is not seen again
        mine = trainer["ranks"][self.ranks.rank if self.ranks else 0]
        self.position = Position(**mine["position"])
        self.scaling.load(mine["scaling"])

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
            f"smaller `lr` (it is {self.config.lr:g})."
        )

    def export(self):
        """The SAE as users load it: scaling folded in, eval mode, no gradients."""
        return exported(self.sae, self.scaling)

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
        tokens = self.step * self.step_tokens
        record = {"split": split, "step": self.step, "tokens": tokens, **json_safe(metrics)}
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, allow_nan=False) + "\n")
        for key, value in metrics.items():
            self.writer.add_scalar(f"{split}/{key}", value, self.step)

    # ----- data --------------------------------------------------------------------------
    def batches(self):
        """Training batches (scaled) from the current position on, forever (epochs repeat)."""
        c = self.config
        while True:
            block = self.source.block(self.position.start_row)
            if self.position.block == 0 and self.scaling.estimate(block.acts_TM) and self.parallel:
                self.scaling.scale = self.parallel.mean(self.scaling.scale, self.device)
            if block.acts_TM.shape[0] < c.batch_tokens and self.position.start_row == 0:
                raise_no_tokens(c, block.acts_TM.shape[0])
            if self.position.epoch == 0 and self.epoch_tokens is not None:
                self.epoch_tokens += block.acts_TM.shape[0] // c.batch_tokens * c.batch_tokens
                if block.ended:
                    self.warn_repeats(self.epoch_tokens)
            shard = self.source.shard.index
            for x_BM in shuffled_batches(block, self.position, c.batch_tokens, c.seed, shard):
                yield self.scaling.apply(x_BM)
            if block.ended:
                next_epoch, next_row = self.position.epoch + 1, 0
            else:
                next_epoch, next_row = self.position.epoch, block.next_row
            self.position = Position(next_epoch, self.position.block + 1, next_row)

    def warn_repeats(self, epoch_tokens: int) -> None:
        """Warn when the run would read its one epoch of tokens many times over."""
        c = self.config
        wanted = self.total_steps * c.batch_tokens  # this process's share
        if not self.main or wanted <= REPEATS_WARNED * epoch_tokens:
            return
        length = "max_step" if c.max_step is not None else "train_tokens"
        warnings.warn(
            SettingWarning(
                f"the text gives only {epoch_tokens * self.world} training tokens per epoch (its "
                f"rows after the first `eval_prompts` ({c.eval_prompts}), which are held out), so "
                f"this run reads each about {wanted / epoch_tokens:.0f} times: the SAE may fit "
                f"those tokens rather than the model's features; give more text (`dataset_id`, "
                f"`n_prompts`) or a smaller `{length}`."
            ),
            stacklevel=2,
        )

    # ----- the loop ----------------------------------------------------------------------
    def evaluate(self) -> dict:
        t0 = time.perf_counter()
        if self.held_out is None:
            self.held_out = held_out(
                self.lm, self.hook, self.source.eval_batches(), self.source.read
            )
        metrics = {
            "lr": lr_at(self.config, max(self.step - 1, 0), self.total_steps),
            "dead_frac": float((self.since_fired[PARENT] >= self.dead_steps).float().mean()),
            "epoch": self.position.epoch,
        }
        if self.held_out is not None:
            metrics.update(evaluate(self.lm, self.hook, self.export(), self.held_out))
        self.eval_seconds += time.perf_counter() - t0
        return metrics

    def train(self) -> dict:
        c = self.config
        total, dead_steps = self.total_steps, self.dead_steps
        k_aux = (c.k_aux or self.d_model // 2) if c.architecture in TOPK_FAMILY else 0
        aux_coeff = c.aux_k_coefficient if k_aux else 0.0
        if aux_coeff == 0:
            k_aux = 0
        start = self.step
        bar = tqdm(
            total=total * self.step_tokens,
            initial=start * self.step_tokens,
            unit="tok",
            unit_scale=True,
            disable=c.run.quiet or not self.main,
            dynamic_ncols=True,
            smoothing=0.05,
        )
        if self.main:
            self.writer  # noqa: B018 (open TensorBoard before timing: its import takes a second)
        t0 = time.perf_counter()
        source_t0 = self.source.seconds
        batches = self.batches()
        while self.step < total:
            x_BM = next(batches)
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(c, self.step, total)
            # No latent can have gone dead_steps steps without firing before step dead_steps.
            k_now = k_aux if self.step >= dead_steps else 0
            out = train_step(
                self.sae,
                self.optimizer,
                x_BM,
                self.since_fired,
                dead_steps,
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
            bar.update(self.step_tokens)
            if self.step % c.eval_every == 0 or self.step == total:
                self._eval_step(bar)
            if self.step % c.checkpoint_every == 0:
                self.save_checkpoint()
        bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - t0
        activations = self.source.seconds - source_t0
        evaluating = self.eval_seconds  # within the loop (a final evaluation may follow)
        if self.last_metrics.get("step") != self.step:
            self._eval_step(None)
        trained = (self.step - start) * self.step_tokens
        timing = {
            "tokens_per_s": trained / max(elapsed - evaluating, 1e-9),
            "seconds_activations": activations,
            # The rest of the loop: SAE steps (and the little logging between them). Measured
            # as a remainder, since on a GPU the steps' kernels run asynchronously.
            "seconds_sae": elapsed - activations - evaluating,
            "seconds_eval": self.eval_seconds,
        }
        self.save_checkpoint()
        if self.parallel is not None and self.scaling.mode == "per_batch":
            # The exported map averages the statistics of every rank's batches.
            sums = [self.scaling.mean_sum, self.scaling.std_sum, float(self.scaling.batches)]
            mean_sum, std_sum, batches = self.parallel.sum_floats(sums, self.device)
            self.scaling.mean_sum, self.scaling.std_sum = mean_sum, std_sum
            self.scaling.batches = int(batches)
        if self._writer is not None:
            self._writer.close()
        return {**self.last_metrics, **timing}

    def _eval_step(self, bar) -> None:
        self.check_finite()  # on every rank (a collective under torchrun)
        if not self.main:  # rank 0 evaluates; the others go on (DDP's next step waits for it)
            self.last_metrics = {"step": self.step, "tokens": self.step * self.step_tokens}
            return
        metrics = self.evaluate()
        self.log("eval", metrics)
        self.last_metrics = {"step": self.step, "tokens": self.step * self.step_tokens}
        self.last_metrics.update(metrics)
        if bar is not None and "fvu" in metrics:
            shown = {"fvu": metrics["fvu"], "l0": metrics["l0"], "dead": metrics["dead_frac"]}
            bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()}, refresh=False)


@torch.no_grad()
def train_metrics(out, x_BM: torch.Tensor) -> dict[str, float]:
    err = ((out.recon_BM - x_BM) ** 2).sum()
    var = ((x_BM - x_BM.mean(0)) ** 2).sum()
    metrics = {"loss": float(out.loss), "mse": float(out.mse), "fvu": float(err / var)}
    if out.aux_loss is not None:
        metrics["aux_loss"] = float(out.aux_loss)
    return metrics


def raise_no_tokens(config: TrainConfig, tokens: int) -> None:
    raise FieldError(
        "dataset_id",
        f"{config.text.dataset_id} yields {tokens} training tokens after the "
        f"{config.eval_prompts} held-out prompts, fewer than one batch of `batch_tokens` "
        f"({config.batch_tokens}).",
    )
