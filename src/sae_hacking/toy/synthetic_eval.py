"""Scoring an SAE on SAELens's synthetic data (:mod:`sae_hacking.data.synthetic`) with SAELens's
own ground-truth evaluation, beside ours.

**Export** (:func:`to_saelens_sae`). Any of our trainable SAEs becomes a SAELens ``SAE`` whose
latents are the SAE's *effective decoder rows* (:meth:`TrainableSAE.feature_vectors`, each
latent's estimate of the whole feature it stands for): ``W_dec`` holds those rows, ``b_dec`` our
decoder bias, ``decode(acts) = acts @ W_dec + b_dec``, and ``encode`` gives one activation per
row such that ``decode(encode(x))`` is our SAE's reconstruction ``sae(x)``. The export is a live
view of our SAE (not a copy of its weights), for inference only.

- Flat SAEs (topk, batchtopk, matryoshka, relu, jumprelu): the effective rows are the decoder
  rows, and ``encode`` is our ``encode`` unchanged (BatchTopK and Matryoshka at inference: the
  learnt global threshold once training has set it).
- Hierarchical SAE (E parents, C children each, child ``h = C e + j``): the effective rows are
  the E parent rows ``P_e = W_dec_EM[e]``, then the H adjusted children
  ``A_h = P_e + r_h W_dec_HM[h]`` (``r_h = child_ratio_H[h]``, the EMA of child act / parent
  act). Our SAE reconstructs ``sum_e p_e P_e + sum_h c_h W_dec_HM[h] + b_dec`` from parent acts
  ``p_e`` and child acts ``c_h`` (at most one child per active parent). The export's child
  activation is ``a_h = c_h / r_h`` (the child's whole feature, at about the parent's act when
  the ratio is what the EMA saw) and the parent's is what remains of it,
  ``a_e = p_e - sum_{h child of e} c_h / r_h``; then ``a_e P_e + sum_h a_h A_h`` equals
  ``p_e P_e + sum_h c_h W_dec_HM[h]``, so the reconstruction is exactly ours. This split is the
  only one possible when ``P_e`` and ``W_dec_HM[h]`` are independent. The parent's activation
  is usually small and can be negative; SAELens counts any non-zero activation as firing (its
  L0, dead latents, precision/recall), so a parent latent fires with its child; a child fires
  exactly where our child latent does. A child ratio of 0 (its adjusted row equal to the
  parent's) cannot carry the child's direction and is refused.
  ``rows="decoder"`` exports the flat view instead (``W_dec`` = parent rows then the raw child
  rows ``W_dec_HM``, ``encode`` = our ``encode``): the child directions as learnt, without the
  parent added.

**Evaluation** (:func:`evaluate_synthetic`): SAELens's ``eval_sae_on_synthetic_data`` on the
export (keys ``saelens_*``: its MCC, uniqueness, mean precision/recall/F1/accuracy over latents,
true and SAE L0, dead latents, shrinkage, explained variance), and ours on the same samples:

- ``absorption_rate``: each *parent feature* (a feature with children: the roots, and at depth 2
  the middle level) is matched to the SAE latent whose effective decoder row has the largest
  cosine with it; over the samples where that feature is active, the fraction where the matched
  latent does not fire (our ``encode`` > 0); averaged over parent features active at least once
  (:func:`sae_hacking.toy.metrics.absorption_rate`).
- ``mse``, ``fvu``, ``explained_variance``, ``l0`` as every trainer reports them
  (:func:`sae_hacking.training.metrics.reconstruction_metrics`; L0 counts a hierarchical SAE's
  parents and children), ``dead_eval_frac`` (latents that fire on no sample),
  ``feature_recovery_mean`` (for each true feature the largest cosine with an effective decoder
  row, averaged).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from typing import TYPE_CHECKING, Any, Literal

import torch
from jaxtyping import Float

from sae_hacking.data.synthetic import SyntheticData
from sae_hacking.saes.hierarchical import HierarchicalTopKSAE
from sae_hacking.saes.trainable import TrainableSAE
from sae_hacking.toy.metrics import absorption_rate, cosine_matrix
from sae_hacking.training.metrics import reconstruction_metrics

if TYPE_CHECKING:
    from sae_lens import SAE as SAELensSAE

Rows = Literal["effective", "decoder"]
PREFIX = "saelens_"


def effective_rows(sae: TrainableSAE, rows: Rows = "effective") -> Float[torch.Tensor, "L M"]:
    """The decoder rows the export presents (see the module docstring)."""
    return sae.feature_vectors() if rows == "effective" else sae.W_dec


def effective_codes(
    sae: TrainableSAE, x_BM: Float[torch.Tensor, "*B M"], rows: Rows = "effective"
) -> Float[torch.Tensor, "*B L"]:
    """One activation per row of :func:`effective_rows` whose decoding is ``sae``'s
    reconstruction of ``x_BM`` (module docstring)."""
    acts_BL = sae.encode(x_BM)
    if rows == "decoder" or not _has_own_rows(sae):
        return acts_BL
    if not isinstance(sae, HierarchicalTopKSAE):
        raise TypeError(
            f"a {sae.architecture} SAE's effective rows differ from its decoder rows; "
            "effective_codes does not know how to re-express its codes on them."
        )
    E, C = sae.n_parents, sae.children_per_parent
    child_BH = acts_BL[..., E:]
    whole_BH = torch.where(child_BH != 0, child_BH / sae.child_ratio_H, 0.0)
    parent_BE = acts_BL[..., :E] - whole_BH.unflatten(-1, (E, C)).sum(-1)
    return torch.cat([parent_BE, whole_BH], dim=-1)


def _has_own_rows(sae: TrainableSAE) -> bool:
    """Whether the architecture's effective rows are not simply its decoder rows."""
    return type(sae).feature_vectors is not TrainableSAE.feature_vectors


@functools.cache
def _export_class() -> type:
    """The SAELens ``SAE`` subclass of the export (built on first use: SAELens imports slowly)."""
    from sae_lens import SAE, SAEConfig

    @dataclasses.dataclass
    class SAEHackingExportConfig(SAEConfig):
        @classmethod
        def architecture(cls) -> str:
            return "sae_hacking_export"

    class SAEHackingExport(SAE[SAEHackingExportConfig]):
        """A SAELens view of one of our SAEs (:func:`to_saelens_sae`)."""

        def __init__(self, ours: TrainableSAE, rows: Rows):
            cfg = SAEHackingExportConfig(
                d_in=ours.d_in,
                d_sae=int(effective_rows(ours, rows).shape[0]),
                device=str(ours.b_dec_M.device),
                apply_b_dec_to_input=False,
            )
            super().__init__(cfg)
            self.ours = ours
            self.rows = rows

        def initialize_weights(self) -> None:
            # W_dec and b_dec are read from our SAE (properties below); SAELens's default
            # initialisation would also draw from the global RNG.
            pass

        @property
        def W_dec(self) -> torch.Tensor:  # noqa: N802 (SAELens's name)
            return effective_rows(self.ours, self.rows)

        @property
        def b_dec(self) -> torch.Tensor:
            return self.ours.b_dec_M

        def encode(self, x: torch.Tensor) -> torch.Tensor:
            return effective_codes(self.ours, x, self.rows)

        def decode(self, feature_acts: torch.Tensor) -> torch.Tensor:
            return feature_acts @ self.W_dec + self.b_dec

    return SAEHackingExport


def to_saelens_sae(sae: TrainableSAE, rows: Rows = "effective") -> SAELensSAE:
    """``sae`` as a SAELens ``SAE`` on its effective decoder rows (module docstring); ``rows=
    "decoder"`` presents the decoder rows instead (differs for the hierarchical SAE only)."""
    if rows not in ("effective", "decoder"):
        raise ValueError(f"rows must be 'effective' or 'decoder', got {rows!r}.")
    if not sae.input_transform.is_identity:
        raise ValueError("to_saelens_sae exports SAEs without an input transform only.")
    if rows == "effective" and isinstance(sae, HierarchicalTopKSAE):
        if bool((sae.child_ratio_H == 0).any()):
            raise ValueError(
                "a child ratio is 0: that child's adjusted row is its parent's and cannot carry "
                "the child's direction; export with rows='decoder'."
            )
    return _export_class()(sae, rows)


@torch.no_grad()
def evaluate_synthetic(
    sae: TrainableSAE,
    data: SyntheticData,
    n_samples: int,
    gen: torch.Generator,
    rows: Rows = "effective",
) -> dict[str, float]:
    """SAELens's ``eval_sae_on_synthetic_data`` (keys ``saelens_*``) and our absorption rate,
    FVU, explained variance, L0, dead fraction and feature recovery (module docstring), all on
    the same ``n_samples`` samples drawn from ``gen`` (advanced by one draw, as
    :meth:`SyntheticData.sample_with_features` does).

    Runs on the CPU, on a copy of ``sae`` (SAELens puts the SAE it evaluates in eval mode), so
    the results do not depend on the device and the caller's SAE is left as it was."""
    from sae_lens.synthetic import eval_sae_on_synthetic_data

    ours = copy.deepcopy(sae).cpu()
    before = gen.get_state()
    with data.rng_from(gen):
        result = eval_sae_on_synthetic_data(
            to_saelens_sae(ours, rows),
            data.feature_dict,
            data.activation_generator,
            num_samples=n_samples,
        )
    out = {PREFIX + name: float(value) for name, value in _flat_fields(result).items()}
    # The same draws again (same generator state), for the metrics SAELens does not compute.
    x_BM, acts_BF = data.sample_with_features(n_samples, torch.Generator().set_state(before))
    out.update(our_metrics(ours, data, x_BM.cpu(), acts_BF.cpu(), rows))
    return out


def _flat_fields(result: Any) -> dict[str, Any]:
    """SAELens's result dataclass as flat ``{name: value}`` (the classification metrics'
    names without their group)."""
    flat = {}
    for field in dataclasses.fields(result):
        value = getattr(result, field.name)
        if dataclasses.is_dataclass(value):
            flat.update(_flat_fields(value))
        else:
            flat[field.name] = value
    return flat


@torch.no_grad()
def our_metrics(
    sae: TrainableSAE,
    data: SyntheticData,
    x_BM: Float[torch.Tensor, "B M"],
    acts_BF: Float[torch.Tensor, "B F"],
    rows: Rows = "effective",
) -> dict[str, float]:
    """Our metrics of the module docstring on samples ``x_BM`` with true activations
    ``acts_BF`` (all on ``sae``'s device)."""
    latents_BL = sae.encode(x_BM)
    features_FM = data.features_FM.to(x_BM.device)
    cos_FL = cosine_matrix(features_FM, effective_rows(sae, rows))
    parents_N = data.parent_features.to(x_BM.device)
    fires_BL = latents_BL > 0
    return {
        **reconstruction_metrics(sae, x_BM, codes_TL=latents_BL),
        "absorption_rate": absorption_rate(
            latents_BL, cos_FL[parents_N].argmax(-1), acts_BF[:, parents_N] > 0
        ),
        # Latents silent on every evaluated sample (the trainer's `dead_frac` is over its
        # dead window instead).
        "dead_eval_frac": float((~fires_BL.any(0)).float().mean()),
        "feature_recovery_mean": float(cos_FL.max(-1).values.mean()),
    }
