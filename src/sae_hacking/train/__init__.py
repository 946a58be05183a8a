"""Training SAEs on language-model activations (``sae-hacking train``).

- :mod:`~sae_hacking.train.config`: :class:`TrainConfig` (torch-free).
- :mod:`~sae_hacking.train.activations`: activations at a hook in shuffled, cacheable blocks.
- :mod:`~sae_hacking.train.scaling`: input normalisation, folded into the weights at export.
- :mod:`~sae_hacking.train.evaluate`: held-out FVU, L0 and CE loss recovered.
- :mod:`~sae_hacking.train.trainer`: the data source and evaluator on the training engine
  (:mod:`sae_hacking.training`: the loop, checkpoints, exact resume).
- :mod:`~sae_hacking.train.checks`: the activation cache folder.
- :mod:`~sae_hacking.train.run`: a run directory end to end, and its exports.
"""
