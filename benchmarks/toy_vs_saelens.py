"""Training speed (steps/s) of our flat TopK toy trainer against SAELens's own toy trainer
(``sae_lens.synthetic.training.train_toy_sae``) on an SAE of the same size; run by hand:

    uv run python benchmarks/toy_vs_saelens.py [--steps N] [--quick] [--json PATH]

Both sides: d_in (model dim) 50, d_sae 30, k 3, batch 100, Adam lr 1e-4, the same number of
steps, CPU, ``torch.set_num_threads(1)``, one process.

- Ours: ``ToyTrainer`` with ``architecture="topk"`` and its default cadence (eval every 500
  steps, TensorBoard scalars every 50, checkpoint every 5000, dead-latent resampling every 1000,
  final eval + checkpoint), data 30 features in 50 dims, exactly 3 active per sample.
- SAELens: ``TopKTrainingSAE`` (its defaults otherwise: decoder-norm rescaling, aux loss on dead
  latents) trained by ``train_toy_sae`` (no wandb, no evals, no snapshots; its tqdm bar goes to
  /dev/null), fed by ``FeatureDictionary(30, 50)`` (orthogonal feature vectors) and
  ``ActivationGenerator(30, firing_probabilities=0.1)`` (independent Bernoulli features, ~3
  active per sample on average, magnitude 1.0), a fresh batch generated every step.

The data are not statistically identical (exactly 3 vs Bernoulli ~3 active), which does not
matter for speed. One-time costs are excluded on both sides: each trainer first runs a short
warm-up training in the same process, and the timed run starts after construction (ours: around
``train()``, TensorBoard opened beforehand; SAELens: from the request for the first batch, so
``SAETrainer`` construction is not timed, to the return of ``train_toy_sae``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

import torch
from _common import parse_args, write_json

D_IN, D_SAE, K, BATCH, LR = 50, 30, 3, 100, 1e-4
WARMUP_STEPS = 200
QUICK = {"steps": 50, "warmup": 10}


def ours_steps_per_s(steps: int) -> float:
    from sae_hacking.toy.config import ToyConfig
    from sae_hacking.toy.train import ToyTrainer

    cfg = ToyConfig(
        architecture="topk", lr=LR, sae_hidden_dim=D_SAE, dataset_num_features=D_SAE,
        model_dim=D_IN, sae_k=K, dataset_k=K, batch_size=BATCH, max_step=steps, plots=False,
        device="cpu",
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        trainer = ToyTrainer(cfg, Path(tmp), quiet=True)
        trainer.writer  # noqa: B018 (open TensorBoard before timing)
        start = time.perf_counter()
        trainer.train()
        return steps / (time.perf_counter() - start)


def saelens_steps_per_s(steps: int, seed: int = 0) -> float:
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.synthetic.activation_generator import ActivationGenerator
    from sae_lens.synthetic.feature_dictionary import FeatureDictionary
    from sae_lens.synthetic.training import train_toy_sae

    torch.manual_seed(seed)
    feature_dict = FeatureDictionary(num_features=D_SAE, hidden_dim=D_IN, seed=seed)
    generator = ActivationGenerator(num_features=D_SAE, firing_probabilities=K / D_SAE)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, device="cpu"))

    first_batch: list[float] = []

    def stamp(module, args) -> None:  # noqa: ARG001 (forward pre-hook signature)
        if not first_batch:
            first_batch.append(time.perf_counter())

    generator.register_forward_pre_hook(stamp)
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        train_toy_sae(
            sae, feature_dict, generator, training_samples=steps * BATCH, batch_size=BATCH, lr=LR,
            device="cpu",
        )  # fmt: skip
    return steps / (time.perf_counter() - first_batch[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=WARMUP_STEPS, help="steps of each warm-up")
    args = parse_args(parser, QUICK)
    torch.set_num_threads(1)

    ours_steps_per_s(args.warmup)
    saelens_steps_per_s(args.warmup)
    ours = ours_steps_per_s(args.steps)
    theirs = saelens_steps_per_s(args.steps)

    print(
        f"CPU, torch threads {torch.get_num_threads()} (torch.set_num_threads(1) for both); "
        f"d_in {D_IN}, d_sae {D_SAE}, k {K}, batch {BATCH}, Adam lr {LR:g}, {args.steps} steps "
        f"(after a {args.warmup}-step warm-up run each)"
    )
    print(f"ours    (sae_hacking ToyTrainer, topk, default cadence): {ours:8.0f} steps/s")
    print(f"SAELens (train_toy_sae, TopKTrainingSAE, no wandb):      {theirs:8.0f} steps/s")
    print(f"ratio ours / SAELens: {ours / theirs:.2f}x")
    write_json(
        args,
        {"ours_steps_per_s": ours, "saelens_steps_per_s": theirs, "ratio": ours / theirs},
        d_in=D_IN, d_sae=D_SAE, k=K, batch=BATCH, lr=LR, torch_threads=torch.get_num_threads(),
    )  # fmt: skip


if __name__ == "__main__":
    main()
