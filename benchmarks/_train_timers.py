"""Timers for the training benchmarks (a helper module, not a benchmark: ``.ci/run`` skips
``_*.py``): :class:`Timers` wraps functions of a trainer and counts the seconds spent in each;
:func:`ours_profile` and :func:`saelens_profile` wrap the parts of ``sae-hacking train``'s trainer
and of SAELens's ``SAETrainer`` that read the model, shuffle, step the SAE, run Adam and log, and
``OURS_PARTS`` / ``SAELENS_PARTS`` turn those seconds into a breakdown of the training time.
"""

from __future__ import annotations

import collections
import contextlib
import time
from unittest import mock

import torch


class Timers:
    """Seconds spent in wrapped functions, by name. Inside a call that opens a phase (evaluation,
    SAELens's norm estimate) other calls count as ``phase/name``, apart from the training.
    With ``sync`` every timed call waits for the GPU before and after (else a call's time is
    the time to queue its kernels)."""

    def __init__(self, sync: bool = False):
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.counts: dict[str, int] = collections.defaultdict(int)
        self.phase = ""
        self.sync = sync

    def now(self) -> float:
        if self.sync:
            torch.cuda.synchronize()
        return time.perf_counter()

    def _timed(self, original, name: str, phase: str | None, generator: bool, count):
        timers = self

        def key() -> str:
            return f"{timers.phase}/{name}" if timers.phase and phase is None else name

        def timed_call(*args, **kwargs):
            outer, counted = timers.phase, key()
            if count is not None:
                timers.counts[counted] += count(*args)
            timers.phase = phase or outer
            start = timers.now()
            try:
                return original(*args, **kwargs)
            finally:
                timers.seconds[counted] += timers.now() - start
                timers.phase = outer

        def timed_generator(*args, **kwargs):
            items = original(*args, **kwargs)
            while True:
                start, counted = timers.now(), key()
                try:
                    item = next(items)
                except StopIteration:
                    return
                finally:
                    timers.seconds[counted] += timers.now() - start
                yield item

        return timed_generator if generator else timed_call

    def wrap(self, owner, attribute: str, name: str, phase=None, generator=False, count=None):
        """A patch of ``owner.attribute`` that counts its time under ``name`` (and, with
        ``count``, adds ``count(*args)`` to ``counts[name]``)."""
        timed = self._timed(getattr(owner, attribute), name, phase, generator, count)
        return mock.patch.object(owner, attribute, timed)

    def breakdown(self, parts, total: float) -> dict[str, float]:
        """``{label: sum of plus - sum of minus}`` for ``(label, plus, minus)`` in ``parts``,
        and ``other``: what of ``total`` no part accounts for."""
        out = {
            label: sum(self.seconds[k] for k in plus) - sum(self.seconds[k] for k in minus)
            for label, plus, minus in parts
        }
        out["other"] = total - sum(out.values())
        return out


OURS_PARTS = (
    ("model forward", ["read"], []),
    ("tokenize, concat", ["block"], ["read"]),
    ("shuffle, gather", ["shuffle"], []),
    ("scale", ["scale"], []),
    ("SAE forward", ["sae forward"], []),
    ("backward, zero_grad, counters", ["train step"], ["sae forward", "adam"]),
    ("Adam", ["adam"], []),
    ("logging", ["train metrics", "log"], []),
)
SAELENS_PARTS = (
    ("model forward", ["read"], []),
    ("tokenize, concat", ["llm batch"], ["read"]),
    ("shuffle, gather", ["next batch"], ["llm batch"]),
    ("scale", ["scale"], []),
    ("SAE forward", ["sae forward"], []),
    ("backward, zero_grad, counters", ["train step"], ["sae forward", "adam"]),
    ("Adam", ["adam"], []),
)


@contextlib.contextmanager
def ours_profile(timers: Timers):
    from sae_hacking.saes.topk import TopKSAE
    from sae_hacking.train import trainer
    from sae_hacking.train.activations import ActivationSource
    from sae_hacking.train.scaling import Scaling
    from sae_hacking.training import engine

    def positions(source, batch) -> int:
        return batch.input_ids_BS.numel()

    def real(source, batch) -> int:
        return int(batch.real_token_mask_BS.sum())

    with contextlib.ExitStack() as stack:
        for owner, attribute, name, phase, count in (
            (ActivationSource, "read", "read", None, positions),
            (ActivationSource, "read", "real tokens", None, real),
            (ActivationSource, "block", "block", None, None),
            (Scaling, "apply", "scale", None, None),
            (engine, "train_step", "train step", None, None),
            (TopKSAE, "train_forward", "sae forward", None, None),
            (torch.optim.Adam, "step", "adam", None, None),
            (engine, "train_metrics", "train metrics", None, None),
            (engine.Engine, "log", "log", None, None),
            (engine.Engine, "_eval_step", "eval", "eval", None),
        ):
            stack.enter_context(timers.wrap(owner, attribute, name, phase, count=count))
        stack.enter_context(timers.wrap(trainer, "shuffled_batches", "shuffle", generator=True))
        yield


@contextlib.contextmanager
def saelens_profile(timers: Timers):
    from sae_lens.saes.topk_sae import TopKTrainingSAE
    from sae_lens.training.activation_scaler import ActivationScaler
    from sae_lens.training.activations_store import ActivationsStore
    from sae_lens.training.sae_trainer import SAETrainer

    with contextlib.ExitStack() as stack:
        for owner, attribute, name, phase, count in (
            (ActivationsStore, "get_activations", "read", None, lambda _, ids: ids.numel()),
            (ActivationsStore, "get_raw_llm_batch", "llm batch", None, None),
            (ActivationsStore, "__next__", "next batch", None, None),
            (ActivationScaler, "__call__", "scale", None, None),
            (SAETrainer, "_train_step", "train step", None, None),
            (TopKTrainingSAE, "training_forward_pass", "sae forward", None, None),
            (torch.optim.Adam, "step", "adam", None, None),
            (SAETrainer, "fit", "fit", None, None),
            (ActivationScaler, "estimate_scaling_factor", "norm estimate", "norm estimate", None),
        ):
            stack.enter_context(timers.wrap(owner, attribute, name, phase, count=count))
        yield
