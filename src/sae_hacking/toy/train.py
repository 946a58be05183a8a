"""The toy experiment on the training engine (:mod:`sae_hacking.training.engine`): Adam with the
plateau schedule on the validation MSE, resampling and the auxiliary-k loss against dead latents,
``metrics.jsonl`` + TensorBoard, checkpoints and exact resume.

Data come in chunks of :data:`CHUNK_STEPS` batches generated at once (one draw amortises the
per-op overhead that dominates at toy sizes); chunk ``c`` is a pure function of ``(seed, c)``,
so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sae_hacking.atomic import atomic_write, atomic_write_json
from sae_hacking.data.toy import ToyBatch, ToyDataset, chunk_generator
from sae_hacking.device import resolve_device
from sae_hacking.saes.io import save_sae_checkpoint
from sae_hacking.saes.trainable import TrainableSAE
from sae_hacking.toy.config import ToyConfig
from sae_hacking.toy.handcode import handcode
from sae_hacking.toy.metrics import evaluate
from sae_hacking.training.build import architecture_options
from sae_hacking.training.build import build_sae as new_sae
from sae_hacking.training.checkpoint import json_safe, read_trainer_state
from sae_hacking.training.engine import Cadence, DeadRemedies, Engine
from sae_hacking.training.schedule import Plateau

CHUNK_STEPS = 64
VAL_SEED_OFFSET = 7919


def build_data(config: ToyConfig, device: torch.device):
    """The run's data: the toy dataset, or SAELens's synthetic model (``--data saelens``)."""
    if config.data == "saelens":
        from sae_hacking.data.synthetic import SyntheticData

        return SyntheticData.generate(config.synthetic, config.seed, device)
    return ToyDataset.generate(config.dataset_config(), config.seed, device)


def build_sae(config: ToyConfig, dataset) -> TrainableSAE:
    c = config
    groups = c.resolved_groups() if c.architecture == "matryoshka" else None
    aux = c.aux_loss_coeff if c.architecture == "hierarchical" else None
    options = architecture_options(
        c.architecture,
        c.sae_hidden_dim,
        c.sae_k,
        groups=groups,
        aux_loss_coeff=aux,
        children_per_parent=c.children_per_parent,
        child_k=c.child_k,
        nested_weight=c.nested_weight,
    )
    gen = torch.Generator().manual_seed(c.seed)
    sae = new_sae(c.architecture, c.input_dim, options, gen)
    if c.handcode_sae:
        handcode(sae.to(dataset.device), dataset)
    elif c.init == "linear":
        linear_init(sae, gen)
    return sae.to(dataset.device)


@torch.no_grad()
def linear_init(sae: TrainableSAE, gen: torch.Generator) -> None:
    """Re-initialise like ``torch.nn.Linear`` (uniform in +-1/sqrt(fan_in), weights and biases),
    as the legacy script's SAEs were; kept to measure what the tied initialisation buys."""
    for name, param in sae.named_parameters():
        if name.startswith("W_enc"):
            fan_in = param.shape[0]
        elif name.startswith("W_dec"):
            fan_in = param.shape[0] // (2 if name.endswith("_HM") else 1)
        else:
            fan_in = sae.d_in if name.startswith("b_enc") else sae.d_sae
        bound = fan_in**-0.5
        param.copy_(torch.empty(param.shape).uniform_(-bound, bound, generator=gen))


class ToyTrainer:
    """The toy experiment on the training engine: the data source (chunks of generated samples),
    the evaluator (ground-truth recovery on a fixed validation batch) and the run's files
    (``dataset.safetensors``, ``sae.safetensors``, ``metrics.json``)."""

    def __init__(self, config: ToyConfig, run_dir: Path, quiet: bool = False):
        config.validate()
        self.config = config
        self.run_dir = Path(run_dir)
        self.device = resolve_device(config.device)
        self.synthetic = config.data == "saelens"
        self.dataset = build_data(config, self.device)
        if self.synthetic:
            self.val_x_BM, self.val_acts_BF = self.dataset.sample_with_features(
                config.val_size, self.val_generator()
            )
        else:
            self.val: ToyBatch = self.dataset.sample(config.val_size, self.val_generator())
        self.sae = build_sae(config, self.dataset)
        c = config
        self.engine = Engine(
            self.sae,
            self.run_dir,
            lr=c.lr,
            schedule=Plateau(min_lr=c.min_lr, patience=c.lr_patience),
            remedies=DeadRemedies(
                dead_steps=c.dead_steps,
                k_aux=c.resolved_k_aux() if c.auxk_coeff > 0 else 0,
                aux_coeff=c.auxk_coeff,
                resample_every=c.resample_every,
                seed=c.seed,
            ),
            cadence=Cadence(c.max_step, c.eval_every, c.log_every, c.checkpoint_every),
            tokens_per_step=c.batch_size,
            unit="step",
            shown=("fvu", "absorption_rate" if self.synthetic else "pair_detection_rate", "l0"),
            quiet=quiet,
        )

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.engine.optimizer

    @property
    def writer(self):
        return self.engine.writer

    # ----- persistence -------------------------------------------------------------------
    def save_dataset(self) -> None:
        from safetensors.torch import save_file

        tensors = {k: v.contiguous().cpu() for k, v in self.dataset.state_dict().items()}
        meta = {"config": json.dumps(self.dataset.config_dict())}
        atomic_write(
            self.run_dir / "dataset.safetensors",
            lambda tmp: save_file(tensors, str(tmp), metadata=meta),
        )

    def load_checkpoint(self) -> None:
        self.engine.load_checkpoint(read_trainer_state(self.run_dir, world=1))

    # ----- data and evaluation -----------------------------------------------------------
    def val_generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.config.seed + VAL_SEED_OFFSET)

    def chunk(self, index: int) -> torch.Tensor:
        cfg = self.config
        x_BM = self.resample_inputs(CHUNK_STEPS * cfg.batch_size, chunk_generator(cfg.seed, index))
        return x_BM.view(CHUNK_STEPS, cfg.batch_size, cfg.input_dim)

    def batches(self):
        """The training batches from the engine's step on: chunk ``c`` is a pure function of
        ``(seed, c)``, so a resumed run sees the batches an uninterrupted one would."""
        step = self.engine.step
        while True:
            xs = self.chunk(step // CHUNK_STEPS)
            for offset in range(step % CHUNK_STEPS, CHUNK_STEPS):
                yield xs[offset]
            step = (step // CHUNK_STEPS + 1) * CHUNK_STEPS

    def resample_inputs(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` samples drawn from ``gen`` (training chunks and resampling alike)."""
        if self.synthetic:
            return self.dataset.sample(n, gen)
        return self.dataset.sample(n, gen).x_BM

    def evaluate(self) -> dict[str, float]:
        """The ground-truth metrics on the validation samples; on SAELens's data, at the last
        step, SAELens's own evaluation on the same samples too (``saelens_*``)."""
        self.sae.eval()
        if not self.synthetic:
            metrics = evaluate(self.sae, self.dataset, self.val)
        else:
            from sae_hacking.toy.synthetic_eval import evaluate_synthetic, our_metrics

            if self.engine.step >= self.config.max_step:
                # Theirs and ours, on the validation samples (drawn again from their generator).
                metrics = evaluate_synthetic(
                    self.sae, self.dataset, self.config.val_size, self.val_generator()
                )
            else:
                metrics = our_metrics(self.sae, self.dataset, self.val_x_BM, self.val_acts_BF)
        self.sae.train()
        return metrics

    def train(self) -> dict[str, float | int]:
        """Train to ``max_step``; writes the final checkpoint, ``sae.safetensors`` and
        ``metrics.json``; returns the final metrics."""
        final = self.engine.train(
            self.batches(), self.evaluate, dict, resample_inputs=self.resample_inputs
        )
        self.engine.close()
        step = self.engine.step
        save_sae_checkpoint(self.sae, self.run_dir / "sae.safetensors", {"step": step})
        atomic_write_json(self.run_dir / "metrics.json", json_safe(final))
        return final
