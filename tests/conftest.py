"""Test-wide settings: never touch the network, never open a window."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402 (after the environment it reads)

# Test tensors are tiny: one intra-op thread avoids oversubscribing the 2-core CI machine, where
# two contended threads made tiny-model forwards ~50x slower. Subprocesses set their own.
torch.set_num_threads(1)
