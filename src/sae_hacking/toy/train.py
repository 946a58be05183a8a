"""Training loop of the toy experiment: Adam, ReduceLROnPlateau on validation loss, dead-latent
remedies, TensorBoard + JSONL metrics, atomic checkpoints and exact resume.

Data come in chunks of :data:`CHUNK_STEPS` batches generated at once (one draw amortises the
per-op overhead that dominates at toy sizes); chunk ``c`` is a pure function of ``(seed, c)``,
so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from sae_hacking.atomic import atomic_write, atomic_write_json
from sae_hacking.data.toy import ToyBatch, ToyDataset, chunk_generator
from sae_hacking.device import resolve_device
from sae_hacking.saes.io import load_sae_checkpoint, save_sae_checkpoint
from sae_hacking.saes.registry import architecture_class
from sae_hacking.saes.trainable import PARENT, TrainableSAE, reset_adam_entries, train_step
from sae_hacking.toy.config import ToyConfig
from sae_hacking.toy.handcode import handcode
from sae_hacking.toy.metrics import evaluate
from sae_hacking.toy.resample import resample_dead

CHUNK_STEPS = 64
VAL_SEED_OFFSET = 7919


def architecture_options(config: ToyConfig) -> dict:
    """The constructor arguments, besides ``d_in`` and ``k``, that a toy config gives the
    trainable architecture it names."""
    if config.architecture == "hierarchical":
        return {"n_parents": config.sae_hidden_dim, "aux_loss_coeff": config.aux_loss_coeff}
    if config.architecture == "matryoshka":
        return {"group_sizes": config.resolved_groups()}
    return {"d_sae": config.sae_hidden_dim}


def build_sae(config: ToyConfig, dataset: ToyDataset) -> TrainableSAE:
    gen = torch.Generator().manual_seed(config.seed)
    cls = architecture_class(config.architecture)
    sae = cls(config.model_dim, k=config.sae_k, gen=gen, **architecture_options(config))
    if config.handcode_sae:
        handcode(sae.to(dataset.device), dataset)
    elif config.init == "linear":
        linear_init(sae, gen)
    return sae.to(dataset.device)


@torch.no_grad()
def linear_init(sae: TrainableSAE, gen: torch.Generator) -> None:
    """Re-initialise like ``torch.nn.Linear`` (uniform in +-1/sqrt(fan_in), weights and biases),
    as the seed's SAEs were; kept to measure what the tied initialisation buys."""
    for name, param in sae.named_parameters():
        if name.startswith("W_enc"):
            fan_in = param.shape[0]
        elif name.startswith("W_dec"):
            fan_in = param.shape[0] // (2 if name.endswith("_HM") else 1)
        else:
            fan_in = sae.d_in if name.startswith("b_enc") else sae.d_sae
        bound = fan_in**-0.5
        param.copy_(torch.empty(param.shape).uniform_(-bound, bound, generator=gen))


@dataclass
class TrainState:
    """Everything besides the SAE that a resumed run needs to continue exactly."""

    step: int = 0
    since_fired: dict[str, torch.Tensor] = field(default_factory=dict)
    best_val: float = float("inf")


class ToyTrainer:
    def __init__(self, config: ToyConfig, run_dir: Path, quiet: bool = False):
        config.validate()
        self.config = config
        self.run_dir = Path(run_dir)
        self.quiet = quiet
        self.device = resolve_device(config.device)
        self.dataset = ToyDataset.generate(config.dataset_config(), config.seed, self.device)
        val_gen = torch.Generator().manual_seed(config.seed + VAL_SEED_OFFSET)
        self.val: ToyBatch = self.dataset.sample(config.val_size, val_gen)
        self.sae = build_sae(config, self.dataset)
        # The fused kernel does Adam's dozen element-wise ops per parameter in one pass; at toy
        # sizes per-op overhead is most of a step.
        self.optimizer = torch.optim.Adam(self.sae.parameters(), lr=config.lr, fused=True)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, factor=0.5, patience=config.lr_patience, min_lr=config.min_lr
        )
        self.state = TrainState(
            since_fired={
                name: torch.zeros(n, dtype=torch.long, device=self.device)
                for name, n in self.sae.latent_banks().items()
            }
        )
        self.last_metrics: dict[str, float | int] = {}
        self._writer = None

    # ----- persistence -------------------------------------------------------------------
    def save_dataset(self) -> None:
        from safetensors.torch import save_file

        tensors = {k: v.contiguous().cpu() for k, v in self.dataset.state_dict().items()}
        meta = {"config": json.dumps(self.dataset.config_dict())}
        atomic_write(
            self.run_dir / "dataset.safetensors",
            lambda tmp: save_file(tensors, str(tmp), metadata=meta),
        )

    def save_checkpoint(self, name: str = "checkpoint") -> None:
        save_sae_checkpoint(
            self.sae, self.run_dir / f"{name}.safetensors", extra={"step": self.state.step}
        )
        trainer = {
            "step": self.state.step,
            "since_fired": self.state.since_fired,
            "best_val": self.state.best_val,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }
        atomic_write(self.run_dir / f"{name}.trainer.pt", lambda tmp: torch.save(trainer, tmp))

    def load_checkpoint(self, name: str = "checkpoint") -> None:
        sae = load_sae_checkpoint(self.run_dir / f"{name}.safetensors", self.device)
        self.sae.load_state_dict(sae.state_dict())
        trainer = torch.load(
            self.run_dir / f"{name}.trainer.pt", map_location=self.device, weights_only=True
        )
        self.optimizer.load_state_dict(trainer["optimizer"])
        self.scheduler.load_state_dict(trainer["scheduler"])
        self.state = TrainState(trainer["step"], trainer["since_fired"], trainer["best_val"])

    # ----- logging -----------------------------------------------------------------------
    @property
    def writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        return self._writer

    def log_eval(self, metrics: dict[str, float]) -> None:
        step = self.state.step
        record = {"step": step, "lr": self.optimizer.param_groups[0]["lr"], **metrics}
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key != "step":
                self.writer.add_scalar(f"eval/{key}", value, step)

    # ----- the loop ----------------------------------------------------------------------
    def chunk(self, index: int) -> torch.Tensor:
        cfg = self.config
        batch = self.dataset.sample(CHUNK_STEPS * cfg.batch_size, chunk_generator(cfg.seed, index))
        return batch.x_BM.view(CHUNK_STEPS, cfg.batch_size, cfg.model_dim)

    def evaluate(self) -> dict[str, float]:
        self.sae.eval()
        metrics = evaluate(self.sae, self.dataset, self.val)
        self.sae.train()
        return metrics

    def train(self) -> dict[str, float | int]:
        cfg = self.config
        sae, opt = self.sae, self.optimizer
        k_aux = cfg.resolved_k_aux() if cfg.auxk_coeff > 0 else 0
        since = self.state.since_fired
        start = self.state.step
        chunk_index, xs = -1, None
        bar = tqdm(
            total=cfg.max_step,
            initial=start,
            unit="step",
            disable=self.quiet,
            dynamic_ncols=True,
            smoothing=0.05,
        )
        self.writer  # noqa: B018 (open TensorBoard before timing: its import takes a second)
        t0 = time.perf_counter()
        for step in range(start, cfg.max_step):
            if step // CHUNK_STEPS != chunk_index:
                chunk_index = step // CHUNK_STEPS
                xs = self.chunk(chunk_index)
            x_BM = xs[step % CHUNK_STEPS]
            out = train_step(sae, opt, x_BM, since, cfg.dead_steps, k_aux, cfg.auxk_coeff)
            self.state.step = step + 1
            bar.update(1)
            if self.state.step % cfg.log_every == 0:
                self.writer.add_scalar("train/loss", float(out.loss.detach()), self.state.step)
                self.writer.add_scalar("train/mse", float(out.mse.detach()), self.state.step)
            if cfg.resample_every and self.state.step % cfg.resample_every == 0:
                self.resample_dead()
            if self.state.step % cfg.eval_every == 0 or self.state.step == cfg.max_step:
                self._eval_step(bar)
            if self.state.step % cfg.checkpoint_every == 0:
                self.save_checkpoint()
        bar.close()
        elapsed = time.perf_counter() - t0
        if self.last_metrics.get("step") != self.state.step:
            self._eval_step(None)
        final = {**self.last_metrics, "steps_per_s": (self.state.step - start) / max(elapsed, 1e-9)}
        self.save_checkpoint()
        save_sae_checkpoint(self.sae, self.run_dir / "sae.safetensors", {"step": self.state.step})
        atomic_write_json(self.run_dir / "metrics.json", final)
        if self._writer is not None:
            self._writer.close()
        return final

    def resample_dead(self) -> int:
        """Resample the parent latents that have not fired for ``dead_steps`` steps; returns
        how many were moved."""
        since = self.state.since_fired
        dead_D = (since[PARENT] >= self.config.dead_steps).nonzero().flatten()
        done = resample_dead(self.sae, dead_D, self.dataset, self.config.seed, self.state.step)
        if done is None:
            return 0
        reset_adam_entries(self.optimizer, self.sae, done.entries)
        for bank, latents in done.latents.items():
            since[bank][latents] = 0
        return int(dead_D.numel())

    def _eval_step(self, bar) -> None:
        metrics = self.evaluate()
        self.scheduler.step(metrics["val_mse"])
        self.state.best_val = min(self.state.best_val, metrics["val_mse"])
        self.log_eval(metrics)
        self.last_metrics = {"step": self.state.step, **metrics}
        if bar is not None:
            shown = {"fvu": metrics["fvu"]}
            if "pair_detection_rate" in metrics:
                shown["pairs"] = metrics["pair_detection_rate"]
            shown["dead"] = metrics["dead_parent_frac"]
            bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()}, refresh=False)
