"""``sae-hacking train`` on the training engine (:mod:`sae_hacking.training.engine`): any
:class:`~sae_hacking.saes.trainable.TrainableSAE` on shuffled blocks of activations
(:mod:`sae_hacking.train.activations`), Adam with warm-up and decay, held-out evaluation.

The checkpoint's data-source state is each rank's scaling and data
:class:`~sae_hacking.train.activations.Position`; nothing else is random (each block's shuffle is
a function of the seed and the block index), so a resumed run takes exactly the steps an
uninterrupted one would.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from sae_hacking.errors import FieldError, SettingWarning
from sae_hacking.runs.distributed import Ranks
from sae_hacking.runs.shards import Shard
from sae_hacking.saes.base import SAEInfo
from sae_hacking.saes.trainable import TrainableSAE
from sae_hacking.train.activations import ActivationSource, Position, shuffled_batches
from sae_hacking.train.config import TOPK_FAMILY, TrainConfig
from sae_hacking.train.evaluate import evaluate, held_out
from sae_hacking.train.parallel import rank_state
from sae_hacking.train.scaling import Scaling, exported
from sae_hacking.training.build import architecture_options
from sae_hacking.training.build import build_sae as new_sae
from sae_hacking.training.checkpoint import read_trainer_state
from sae_hacking.training.engine import Cadence, DeadRemedies, Engine
from sae_hacking.training.schedule import WarmupDecay

# Training on more than this many epochs of the same tokens earns a warning (the SAE may learn
# the few tokens there are rather than the model's features).
REPEATS_WARNED = 10


def build_sae(config: TrainConfig, d_in: int) -> TrainableSAE:
    c = config
    options = architecture_options(
        c.architecture,
        c.sae_hidden_dim,
        c.k,
        groups=c.resolved_groups() if c.architecture == "matryoshka" else None,
        l1_coefficient=c.l1_coefficient,
        l0_coefficient=c.l0_coefficient,
        jumprelu_bandwidth=c.jumprelu_bandwidth,
        jumprelu_init_threshold=c.jumprelu_init_threshold,
        children_per_parent=c.children_per_parent,
        child_k=c.child_k,
        nested_weight=c.nested_weight,
    )
    gen = torch.Generator().manual_seed(c.seed)
    return new_sae(c.architecture, d_in, options, gen, SAEInfo(hook_name=c.hook))


class LMTrainer:
    """LM training on the engine (:mod:`sae_hacking.training.engine`): the data source (shuffled
    blocks of activations, scaled), the evaluator (held-out reconstruction and CE loss) and the
    export. ``ranks``: this process's place in a torchrun job (data-parallel training,
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
        self.source = ActivationSource(
            lm, config, Shard(ranks.rank, ranks.world) if ranks else None
        )
        self.parallel = None
        if ranks is not None:
            from sae_hacking.train.parallel import DataParallel

            self.parallel = DataParallel(self.sae, ranks, self.device)
        c = config
        k_aux = (c.k_aux or self.d_model // 2) if c.architecture in TOPK_FAMILY else 0
        self.engine = Engine(
            self.sae,
            self.run_dir,
            lr=c.lr,
            schedule=WarmupDecay(
                c.lr, self.total_steps, c.lr_warmup_steps, c.lr_decay, c.lr_decay_fraction
            ),
            remedies=DeadRemedies(
                dead_steps=self.dead_steps,
                k_aux=k_aux,
                aux_coeff=c.aux_k_coefficient,
                resample_every=c.resample_every,
                seed=c.seed,
            ),
            cadence=Cadence(self.total_steps, c.eval_every, c.log_every, c.checkpoint_every),
            tokens_per_step=self.step_tokens,
            parallel=self.parallel,
            rank=ranks.rank if ranks else 0,
            quiet=c.run.quiet,
        )
        self.scaling = Scaling(config.normalize, self.d_model)
        self.position = Position(epoch=0, block=0, start_row=0)
        self.block = None  # the block being read (resampling draws from it)
        self.epoch_tokens: int | None = 0  # tokens of the first epoch, while it is read
        self.held_out = None

    @property
    def step(self) -> int:
        return self.engine.step

    @property
    def writer(self):
        return self.engine.writer

    # ----- persistence -------------------------------------------------------------------
    def data_state(self) -> dict:
        return rank_state(self.position, self.scaling)

    def load_checkpoint(self, trainer: dict | None = None) -> None:
        """Continue from the run directory's checkpoint; ``trainer``: its
        ``checkpoint.trainer.pt`` already read (:func:`read_trainer_state`)."""
        if trainer is None:
            trainer = read_trainer_state(self.run_dir, self.world)
        mine = self.engine.load_checkpoint(trainer)
        self.epoch_tokens = None  # the first epoch's start is not seen again
        self.position = Position(**mine["position"])
        self.scaling.load(mine["scaling"])

    def export(self):
        """The SAE as users load it: scaling folded in, eval mode, no gradients."""
        return exported(self.sae, self.scaling)

    # ----- data --------------------------------------------------------------------------
    def batches(self):
        """Training batches (scaled) from the current position on, forever (epochs repeat)."""
        c = self.config
        while True:
            block = self.block = self.source.block(self.position.start_row)
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

    def resample_inputs(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` rows of the block being read (scaled), picked by ``gen``: the block is a
        function of the data position, so a resumed run picks the same rows."""
        acts_TM = self.block.acts_TM
        rows = torch.randint(acts_TM.shape[0], (n,), generator=gen)
        return self.scaling.apply(acts_TM[rows.to(acts_TM.device)])

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
        if self.held_out is None:
            self.held_out = held_out(
                self.lm, self.hook, self.source.eval_batches(), self.source.read
            )
        metrics = {"epoch": self.position.epoch}
        if self.held_out is not None:
            metrics.update(evaluate(self.lm, self.hook, self.export(), self.held_out))
        return metrics

    def train(self) -> dict:
        source_t0 = self.source.seconds
        final = self.engine.train(
            self.batches(), self.evaluate, self.data_state, resample_inputs=self.resample_inputs
        )
        activations = self.source.seconds - source_t0
        # The rest of the loop: SAE steps (and the little logging between them). Measured as a
        # remainder, since on a GPU the steps' kernels run asynchronously.
        sae_seconds = final["seconds_loop"] - activations - final["seconds_eval"]
        final.update(seconds_activations=activations, seconds_sae=max(sae_seconds, 0.0))
        if self.parallel is not None and self.scaling.mode == "per_batch":
            # The exported map averages the statistics of every rank's batches.
            sums = [self.scaling.mean_sum, self.scaling.std_sum, float(self.scaling.batches)]
            mean_sum, std_sum, batches = self.parallel.sum_floats(sums, self.device)
            self.scaling.mean_sum, self.scaling.std_sum = mean_sum, std_sum
            self.scaling.batches = int(batches)
        self.engine.close()
        return final


def raise_no_tokens(config: TrainConfig, tokens: int) -> None:
    raise FieldError(
        "dataset_id",
        f"{config.text.dataset_id} yields {tokens} training tokens after the "
        f"{config.eval_prompts} held-out prompts, fewer than one batch of `batch_tokens` "
        f"({config.batch_tokens}).",
    )
