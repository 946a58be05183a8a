"""The one training engine (:mod:`~sae_hacking.training.engine`) and what it is made of:
learning-rate schedules, checkpoints with exact resume, reconstruction metrics. ``toy`` (toy and
SAELens synthetic data) and ``train`` (LM activations) are data sources and evaluators on it."""
