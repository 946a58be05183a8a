"""The reconstruction metrics every trainer reports, computed one way.

- **MSE**: mean over elements of ``(x - x̂)²``.
- **FVU** (fraction of variance unexplained): ``sum ||x - x̂||² / sum ||x - mean x||²``, the mean
  taken over the evaluated rows; NaN (``null`` in JSON) when the rows do not vary, since the
  ratio is then undefined; **explained variance** ``1 - FVU``.
- **L0**: mean number of active latents per row (hierarchical: parents and children).
- **dead fraction** (the trainer's): parent-level latents that have not fired for the dead
  window (:class:`~sae_hacking.training.engine.DeadRemedies`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from jaxtyping import Float

from sae_hacking.saes.base import SAE


@torch.no_grad()
def reconstruction_metrics(
    sae: SAE,
    acts_TM: Float[torch.Tensor, "T M"],
    chunk: int = 4096,
    codes_TL: Float[torch.Tensor, "T L"] | None = None,
) -> dict[str, float]:
    """MSE, FVU, explained variance and L0 of ``sae`` on ``acts_TM`` (``chunk`` rows at a time:
    the dense codes of a 65k-wide SAE are large). ``codes_TL``: ``sae.encode(acts_TM)``, when
    the caller has it already (it is not computed again)."""
    mean_M = acts_TM.mean(0)
    err = var = active = 0.0
    parts = [None] * -(-acts_TM.shape[0] // chunk) if codes_TL is None else codes_TL.split(chunk)
    for x_TM, given_TL in zip(acts_TM.split(chunk), parts, strict=True):
        acts_TE = sae.encode(x_TM) if given_TL is None else given_TL
        err += float(((sae.decode(acts_TE) - x_TM) ** 2).sum())
        var += float(((x_TM - mean_M) ** 2).sum())
        active += float((acts_TE > 0).sum())
    fvu = err / var if var > 0 else float("nan")
    return {
        "mse": err / acts_TM.numel(),
        "fvu": fvu,
        "explained_variance": 1 - fvu,
        "l0": active / acts_TM.shape[0],
    }


@torch.no_grad()
def train_metrics(out, x_BM: Float[torch.Tensor, "B M"]) -> dict[str, float]:
    """Loss, MSE, FVU (same rule as :func:`reconstruction_metrics`) and the auxiliary loss of
    one training step's output."""
    err = float(((out.recon_BM - x_BM) ** 2).sum())
    var = float(((x_BM - x_BM.mean(0)) ** 2).sum())
    metrics = {
        "loss": float(out.loss),
        "mse": float(out.mse),
        "fvu": err / var if var > 0 else float("nan"),
    }
    if out.aux_loss is not None:
        metrics["aux_loss"] = float(out.aux_loss)
    return metrics


def summary_lines(
    metrics: dict,
    keys: Iterable[str],
    note: Callable[[str, dict], str] = lambda key, metrics: "",
    width: int = 24,
) -> list[str]:
    """The final metrics ``keys`` a run has, one a line (an undefined figure: ``n/a``), each
    followed by ``note(key, metrics)`` where a figure needs explaining."""
    lines = []
    for key in keys:
        if key not in metrics:
            continue
        value = metrics[key]
        undefined = value is None or (isinstance(value, float) and math.isnan(value))
        shown = "n/a" if undefined else f"{value:.4f}"
        lines.append(f"  {key:{width}s} {shown}{note(key, metrics)}")
    return lines
