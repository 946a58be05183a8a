"""Sparse autoencoders: architectures, training losses and loading.

Every SAE here subclasses :class:`sae_hacking.saes.base.SAE`, the one inference interface the
analyses use (``encode``, ``decode``, ``W_dec``, ``d_in``, ``d_sae``, ``hook_name``,
``neuronpedia_id``). Trainable architectures also implement
:class:`sae_hacking.saes.trainable.TrainableSAE`, the one interface trainers use; every
architecture is listed once in :mod:`sae_hacking.saes.registry`.
"""
