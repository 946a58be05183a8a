"""JumpReLU SAE (Rajamanoharan et al. 2024), the architecture of Gemma Scope.

    pre  = (x - b_dec · apply_b_dec_to_input) @ W_enc + b_enc
    acts = pre · 1[pre > max(threshold, 0)]
    x̂    = acts @ W_dec + b_dec

With a non-negative threshold (every trained one) the activation is Gemma Scope's
``pre · 1[pre > θ]``; the ``max(θ, 0)`` reproduces the ReLU that the Gemma Scope reference code
and SAELens apply before the mask, so a negative threshold behaves as it does there. Gemma Scope
does not subtract ``b_dec`` from the input; SAELens-format JumpReLU SAEs may
(``apply_b_dec_to_input``).

Training (:meth:`JumpReLUSAE.train_forward`), as SAELens's ``JumpReLUTrainingSAE`` in its
default ("step", DeepMind) mode::

    loss = mean_B sum_M (x̂ - x)^2  +  l0_coefficient · mean_B sum_E 1[pre_E > θ_E]

The step function has no useful derivative in θ, so both the JumpReLU output and the L0 count
pass θ a straight-through estimate: the derivative of their kernel-density smoothing with a
rectangle kernel of width ``bandwidth`` (paper eqs. 11-12), ``-(θ/ε) K((pre-θ)/ε)`` for the
output and ``-(1/ε) K((pre-θ)/ε)`` for L0. The encoder gets the ordinary gradient of
``pre · 1[pre > θ]`` and nothing from the L0 term. The threshold is trained directly (as
SAELens does since a log parametrisation barely moves a small initial threshold), clamped at 0
after each step (:meth:`JumpReLUSAE.after_step`), and stays the parameter ``threshold_E`` that
the loaders read and write. ``TrainOutput.mse`` is the per-element mean, for logging.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int

from sae_hacking.errors import FieldError
from sae_hacking.saes.base import LinearSAE, SAEInfo
from sae_hacking.saes.losses import penalised_output
from sae_hacking.saes.trainable import PARENT, Resampled, TrainableSAE, TrainOutput


def _rectangle_sum(grad, pre, threshold, bandwidth: float):
    """``sum over the batch of grad · K((pre - θ)/ε)``, ``K`` the unit-width rectangle."""
    z = (pre - threshold) / bandwidth
    inside = (z > -0.5) & (z < 0.5)
    return (grad * inside).reshape(-1, pre.shape[-1]).sum(0)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        bandwidth = ctx.bandwidth
        grad_threshold = -(threshold / bandwidth) * _rectangle_sum(grad, pre, threshold, bandwidth)
        return grad * (pre > threshold), grad_threshold, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        bandwidth = ctx.bandwidth
        return None, -_rectangle_sum(grad, pre, threshold, bandwidth) / bandwidth, None


def jumprelu_ste(
    pre_BE: Float[torch.Tensor, "*B E"], threshold_E: Float[torch.Tensor, " E"], bandwidth: float
) -> Float[torch.Tensor, "*B E"]:
    """``pre · 1[pre > θ]``; gradient to ``pre`` as written, to ``θ`` the rectangle-kernel
    straight-through estimate ``-(θ/ε) K((pre-θ)/ε)``."""
    return _JumpReLU.apply(pre_BE, threshold_E, bandwidth)


def step_ste(
    pre_BE: Float[torch.Tensor, "*B E"], threshold_E: Float[torch.Tensor, " E"], bandwidth: float
) -> Float[torch.Tensor, "*B E"]:
    """``1[pre > θ]``; no gradient to ``pre``, to ``θ`` the estimate ``-(1/ε) K((pre-θ)/ε)``."""
    return _Step.apply(pre_BE, threshold_E, bandwidth)


class JumpReLUSAE(LinearSAE, TrainableSAE):
    """Parameters ``W_enc_ME``, ``b_enc_E``, ``W_dec_EM``, ``b_dec_M``, ``threshold_E``.

    ``l0_coefficient``, ``bandwidth`` and ``init_threshold`` are training settings (not part
    of :meth:`config`, not saved with the weights); loaders overwrite the threshold.
    """

    architecture = "jumprelu"

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        apply_b_dec_to_input: bool = False,
        info: SAEInfo | None = None,
        gen: torch.Generator | None = None,
        l0_coefficient: float = 0.0,
        bandwidth: float = 0.001,
        init_threshold: float = 0.001,
    ):
        super().__init__(d_in, d_sae, info, apply_b_dec_to_input, gen=gen)
        if not bandwidth > 0:
            raise FieldError("bandwidth", f"must be positive, got {bandwidth}.")
        if not init_threshold >= 0:
            raise FieldError("init_threshold", f"must be non-negative, got {init_threshold}.")
        self.l0_coefficient = l0_coefficient
        self.bandwidth = bandwidth
        self.init_threshold = init_threshold
        self.threshold_E = torch.nn.Parameter(torch.full((d_sae,), float(init_threshold)))

    def config(self) -> dict:
        return {**super().config(), "apply_b_dec_to_input": self.apply_b_dec_to_input}

    def encode(self, x_BM: Float[torch.Tensor, "*B M"]) -> Float[torch.Tensor, "*B E"]:
        pre_BE = self.pre_acts(x_BM)
        return pre_BE * (pre_BE > self.threshold_E.clamp(min=0))

    def latent_banks(self) -> dict[str, int]:
        return {PARENT: self.d_sae}

    def train_forward(
        self,
        x_BM: Float[torch.Tensor, "B M"],
        dead_E: Bool[torch.Tensor, " E"] | None = None,
        k_aux: int = 0,
    ) -> TrainOutput:
        pre_BE = self.pre_acts(x_BM)
        acts_BE = jumprelu_ste(pre_BE, self.threshold_E, self.bandwidth)
        penalty_B = None
        if self.l0_coefficient:
            l0_B = step_ste(pre_BE, self.threshold_E, self.bandwidth).sum(-1)
            penalty_B = self.l0_coefficient * l0_B
        return penalised_output(self, x_BM, pre_BE, acts_BE, penalty_B, dead_E, k_aux)

    @torch.no_grad()
    def after_step(self, out: TrainOutput) -> None:
        # Below zero the gate would pass negative pre-activations. Projected after the step
        # rather than clamped in the graph, which would cut the threshold's gradient.
        self.threshold_E.clamp_(min=0)

    @torch.no_grad()
    def resample(
        self,
        dead_Z: Int[torch.Tensor, " Z"],
        dirs_ZM: Float[torch.Tensor, "Z M"],
        gen: torch.Generator,
    ) -> Resampled:
        """As a flat SAE's latents, and the threshold back to its initial value (a dead
        latent's has often climbed out of reach)."""
        done = super().resample(dead_Z, dirs_ZM, gen)
        self.threshold_E[dead_Z] = self.init_threshold
        done.entries["threshold_E"] = (0, dead_Z)
        return done
