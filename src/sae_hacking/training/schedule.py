"""Learning-rate schedules of the training engine.

A schedule gives the learning rate of each step (:meth:`lr`, ``None`` to leave the optimiser's
as it is) and sees every evaluation (:meth:`after_eval`); its :meth:`state_dict` goes into the
checkpoint. Two exist: :class:`WarmupDecay` (LM training's default: linear warm-up, then
constant, linear or cosine decay; a pure function of the step, so it has no state) and
:class:`Plateau` (the toy's: halve the rate when the evaluation's MSE stops improving).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Schedule(Protocol):
    # Plateau reads evaluations, which only rank 0 computes under torchrun.
    needs_eval: bool

    def bind(self, optimizer: torch.optim.Optimizer) -> None: ...
    def lr(self, step: int) -> float | None: ...
    def after_eval(self, metrics: dict[str, Any]) -> None: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class WarmupDecay:
    """``lr`` after ``warmup`` steps of linear warm-up from 0; then ``decay``: ``"constant"``,
    ``"linear"`` (to 0 over the last ``decay_fraction`` of the ``total`` steps) or ``"cosine"``
    (to 0 from the end of the warm-up)."""

    base_lr: float
    total: int
    warmup: int = 0
    decay: str = "constant"
    decay_fraction: float = 0.0
    needs_eval = False

    def bind(self, optimizer: torch.optim.Optimizer) -> None:
        pass

    def lr(self, step: int) -> float:
        """The learning rate of step ``step`` (0-based) of ``total``."""
        if self.warmup and step < self.warmup:
            return self.base_lr * (step + 1) / self.warmup
        if self.decay == "linear":
            decay_steps = int(self.total * self.decay_fraction)
            left = self.total - step
            return self.base_lr * min(1.0, left / decay_steps) if decay_steps else self.base_lr
        if self.decay == "cosine":
            span = max(self.total - self.warmup, 1)
            done = min(max(step - self.warmup, 0) / span, 1.0)
            return self.base_lr * 0.5 * (1 + math.cos(math.pi * done))
        return self.base_lr

    def after_eval(self, metrics: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@dataclass
class Plateau:
    """Halve the learning rate (down to ``min_lr``) after ``patience`` evaluations whose
    ``metric`` did not improve (``torch.optim.lr_scheduler.ReduceLROnPlateau``)."""

    min_lr: float
    patience: int
    metric: str = "mse"
    factor: float = 0.5
    needs_eval = True

    def bind(self, optimizer: torch.optim.Optimizer) -> None:
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=self.factor, patience=self.patience, min_lr=self.min_lr
        )

    def lr(self, step: int) -> None:
        return None

    def after_eval(self, metrics: dict[str, Any]) -> None:
        self.scheduler.step(metrics[self.metric])

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)
