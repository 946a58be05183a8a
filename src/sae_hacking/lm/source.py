"""Which language model a command loads: :class:`ModelSource` (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sae_hacking.config import Config, resolved_path, set_field, setting
from sae_hacking.device import check_device_name
from sae_hacking.lm.loading import DTYPE_CHOICES, check_model_source, is_local_path

DEFAULT_MODEL = "google/gemma-2-2b"
# The dtypes lm/loading.py resolves, written once there (Literal of a tuple: the same values).
Dtype = Literal[DTYPE_CHOICES]


@dataclass(frozen=True)
class ModelSource(Config):
    """A Hugging Face causal LM (hub id or local folder), where and in which dtype it runs."""

    name: str = setting(
        DEFAULT_MODEL, help="Hugging Face hub id or local model folder", key="model"
    )
    device: str = setting("auto", help="auto, cpu, cuda, cuda:N, mps", kind="free", recorded=False)
    dtype: Dtype = setting("auto", help="model dtype; auto = bfloat16 on CUDA, float32 elsewhere")
    threads: int = setting(
        0,
        help="CPU threads for torch on the CPU; 0 = the cores other processes leave idle (load "
        "average), or OMP_NUM_THREADS where set",
        kind="free",
        recorded=False,
        ge=0,
    )

    def __post_init__(self):
        super().__post_init__()
        check_device_name("device", self.device)
        if is_local_path(self.name):
            set_field(self, "name", resolved_path(self.name))

    def check_inputs(self) -> None:
        """A local folder must be a model folder whose config and safetensors headers parse; a
        hub model must be cached or its hub must answer. Checked once, at a run's start, before
        anything heavy loads (not on construction: a run's settings can be read anywhere)."""
        check_model_source(self.name)

    check_reachable = check_inputs  # the name run modules being rewritten may still call

    def load(self):
        """The model as a :class:`~sae_hacking.lm.hooked.HookedLM` (imports torch)."""
        from sae_hacking.lm.hooked import HookedLM

        return HookedLM.from_pretrained(
            self.name, device=self.device, dtype=self.dtype, threads=self.threads
        )
