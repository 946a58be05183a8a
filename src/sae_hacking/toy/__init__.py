"""The toy hierarchical-feature experiment: train SAEs on :mod:`sae_hacking.data.toy` data and
measure how well they recover the ground truth."""
