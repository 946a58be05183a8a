"""Which language model a command loads: :class:`ModelSource` (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass

from sae_hacking.config import check_choice, check_non_negative, resolved_path, set_field, setting
from sae_hacking.device import check_device_name
from sae_hacking.lm.loading import (
    DTYPE_CHOICES,
    check_model_folder,
    check_model_source,
    is_local_path,
)

DEFAULT_MODEL = "google/gemma-2-2b"


@dataclass(frozen=True)
class ModelSource:
    """A Hugging Face causal LM (hub id or local folder), where and in which dtype it runs."""

    name: str = setting(
        DEFAULT_MODEL, help="Hugging Face hub id or local model folder", key="model"
    )
    device: str = setting("auto", help="auto, cpu, cuda, cuda:N, mps", kind="free", recorded=False)
    dtype: str = setting(
        "auto",
        help="model dtype; auto = bfloat16 on CUDA, float32 elsewhere",
        choices=DTYPE_CHOICES,
    )
    threads: int = setting(
        0,
        help="CPU threads for torch on the CPU; 0 = the cores other processes leave idle (load "
        "average), or OMP_NUM_THREADS where set",
        kind="free",
        recorded=False,
    )

    def __post_init__(self):
        check_device_name("device", self.device)
        check_non_negative("threads", self.threads)
        check_choice("dtype", self.dtype, DTYPE_CHOICES)
        if is_local_path(self.name):
            check_model_folder(self.name)
            set_field(self, "name", resolved_path(self.name))

    def check_reachable(self) -> None:
        """A hub model must be cached or its hub must answer: checked once, at a run's start,
        before anything heavy loads."""
        check_model_source(self.name)

    def load(self):
        """The model as a :class:`~sae_hacking.lm.hooked.HookedLM` (imports torch)."""
        from sae_hacking.lm.hooked import HookedLM

        return HookedLM.from_pretrained(
            self.name, device=self.device, dtype=self.dtype, threads=self.threads
        )
