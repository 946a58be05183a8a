"""The inference interface every SAE implements.

Analyses (co-occurrence counts, ablations, highlighting) only see this interface: latent
activations from ``encode``, a reconstruction from ``decode``, and the decoder matrix ``W_dec``
whose row ``i`` is the direction latent ``i`` writes. Architectures with structure (the
hierarchical SAE's children) present a flat view here: latents ``[0, d_sae)`` in one index space.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float

from sae_hacking.saes.processing import InputTransform


@dataclass
class SAEInfo:
    """Where an SAE belongs: the hook it reads and its Neuronpedia id, when known; and what
    it expects done to that hook's activations before encoding (the identity unless a
    pretrained SAE declares a model processing or an activation normalisation)."""

    hook_name: str | None = None
    neuronpedia_id: str | None = None
    release: str | None = None
    sae_id: str | None = None
    input_transform: InputTransform = InputTransform()


class SAE(torch.nn.Module, abc.ABC):
    """Base class: subclasses implement :meth:`encode`, :meth:`decode` and :attr:`W_dec`."""

    architecture: str = "base"  # subclasses: their name in sae_hacking.saes.registry

    def __init__(self, d_in: int, d_sae: int, info: SAEInfo | None = None):
        super().__init__()
        self.d_in = d_in
        self.d_sae = d_sae
        self.info = info or SAEInfo()

    @property
    def hook_name(self) -> str | None:
        return self.info.hook_name

    @property
    def neuronpedia_id(self) -> str | None:
        return self.info.neuronpedia_id

    @property
    @abc.abstractmethod
    def W_dec(self) -> Float[torch.Tensor, "E M"]:  # noqa: N802 (the literature's name)
        """Row ``i`` is the direction latent ``i`` writes into the model."""

    @abc.abstractmethod
    def encode(self, x_BM: Float[torch.Tensor, "*B M"]) -> Float[torch.Tensor, "*B E"]:
        """Latent activations (dense; zeros where a latent is off)."""

    @abc.abstractmethod
    def decode(self, acts_BE: Float[torch.Tensor, "*B E"]) -> Float[torch.Tensor, "*B M"]:
        """Reconstruction from latent activations."""

    @property
    def input_transform(self) -> InputTransform:
        return self.info.input_transform

    def forward(self, x_BM: Float[torch.Tensor, "*B M"]) -> Float[torch.Tensor, "*B M"]:
        """The reconstruction of ``x`` in ``x``'s own space (SAELens's ``decode(encode(x))``).

        :meth:`decode` alone is stateless, so it returns the reconstruction in the space the
        SAE encodes (after :attr:`input_transform`); this maps it back, undoing the per-input
        normalisation (but not the centring: see :mod:`sae_hacking.saes.processing`)."""
        recon_BM = self.decode(self.encode(x_BM))
        return self.input_transform.restore(recon_BM, x_BM.to(recon_BM.dtype))

    def config(self) -> dict:
        """``architecture`` plus the constructor's keyword arguments: enough to rebuild the
        module before loading its weights (see :mod:`sae_hacking.saes.io`)."""
        return {"architecture": self.architecture, "d_in": self.d_in, "d_sae": self.d_sae}


def unit_rows(n: int, d: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """``n`` random unit vectors of dimension ``d`` (rows)."""
    return F.normalize(torch.randn(n, d, generator=gen), dim=-1)


class LinearSAE(SAE):
    """An SAE with one affine encoder and one affine decoder; subclasses choose the activation.

    Parameters ``W_enc_ME``, ``b_enc_E``, ``W_dec_EM``, ``b_dec_M``. Initialised with unit
    decoder rows and the encoder equal to the decoder's transpose (each latent starts able to
    fire on its own direction, which keeps latents alive in training); loaders overwrite both.
    """

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        info: SAEInfo | None = None,
        apply_b_dec_to_input: bool = True,
        gen: torch.Generator | None = None,
    ):
        super().__init__(d_in, d_sae, info)
        self.apply_b_dec_to_input = apply_b_dec_to_input
        W_dec_EM = unit_rows(d_sae, d_in, gen)
        self.W_dec_EM = torch.nn.Parameter(W_dec_EM)
        self.W_enc_ME = torch.nn.Parameter(W_dec_EM.T.contiguous())
        self.b_enc_E = torch.nn.Parameter(torch.zeros(d_sae))
        self.b_dec_M = torch.nn.Parameter(torch.zeros(d_in))

    @property
    def W_dec(self) -> Float[torch.Tensor, "E M"]:  # noqa: N802
        return self.W_dec_EM

    def pre_acts(self, x_BM: Float[torch.Tensor, "*B M"]) -> Float[torch.Tensor, "*B E"]:
        """Encoder pre-activations, in the SAE's dtype whatever the input's, of the input as
        the SAE expects it (:attr:`input_transform` applied)."""
        x_BM = self.info.input_transform.apply(x_BM.to(self.W_enc_ME.dtype))
        if self.apply_b_dec_to_input:
            x_BM = x_BM - self.b_dec_M
        return x_BM @ self.W_enc_ME + self.b_enc_E

    def decode(self, acts_BE: Float[torch.Tensor, "*B E"]) -> Float[torch.Tensor, "*B M"]:
        return acts_BE @ self.W_dec_EM + self.b_dec_M
