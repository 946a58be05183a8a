"""Settings of a SAELens synthetic feature model (torch-free, so commands check them before
importing torch or SAELens).

:class:`SyntheticDataConfig` describes a forest of feature hierarchies built with SAELens
(``sae_lens.synthetic``, see :mod:`sae_hacking.data.synthetic`): ``n_roots`` trees, each node
with ``branching_factor`` children, ``depth`` levels below the roots, plus ``extra_features``
that belong to no tree. Every feature is a unit vector in ``model_dim`` dimensions. A sample
draws each feature independently (Bernoulli with its firing probability), then SAELens's
hierarchy rule switches off every feature whose parent is off and, among mutually exclusive
siblings that fired together, keeps one chosen uniformly at random.

The defaults are the setup of issue 20: 40 roots with 2 mutually exclusive children each (120
features), children as large as their parent (unit magnitude) and nearly orthogonal to it (all
features orthogonalised by SAELens), a root active in 10 % of samples (so the number of active
roots varies: Binomial(40, 0.1), mean 4) and an active root has a child 80 % of the time
(each child fires with 1 - sqrt(0.2) = 0.553 given its parent, at least one of two does with
0.8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sae_hacking.config import Config, check_declared, setting
from sae_hacking.errors import FieldError

# P(a given child fires | its parent fires) such that an active parent with two children has at
# least one child 80 % of the time: 1 - (1 - p)^2 = 0.8.
CHILD_FIRING_PROB_80 = 1.0 - math.sqrt(0.2)


@dataclass(frozen=True)
class SyntheticDataConfig(Config):
    """Each field names the SAELens setting it becomes (``HierarchyConfig``,
    ``ActivationGenerator``, ``FeatureDictionary``, ...); fields marked *ours* are applied on top
    of what SAELens built."""

    n_roots: int = setting(40, help="root features (trees) of the hierarchy", gt=0)
    """``HierarchyConfig.total_root_nodes``."""
    branching_factor: int = setting(2, help="children of every non-leaf feature", ge=2)
    """``HierarchyConfig.branching_factor`` (an int), or its minimum when
    ``max_branching_factor`` is set. At least 2 (SAELens's rule)."""
    max_branching_factor: int | None = setting(
        None, help="if set, each node draws its number of children in [branching, this]", ge=2
    )
    """With it, ``HierarchyConfig.branching_factor = (branching_factor, max_branching_factor)``:
    SAELens draws each node's number of children uniformly in that range."""
    depth: int = setting(1, help="levels below the roots: 1 = children, 2 = grandchildren", gt=0)
    """``HierarchyConfig.max_depth``."""
    mutually_exclusive: bool = setting(True, help="at most one child of a parent is active")
    """``HierarchyConfig.mutually_exclusive_portion``: 1.0 (every parent's children are mutually
    exclusive) or 0.0 (children fire independently given their parent)."""
    model_dim: int = setting(100, help="M: dimension of the samples", gt=0)
    """``FeatureDictionary.hidden_dim`` (``SyntheticModelConfig.hidden_dim``)."""
    root_firing_prob: float = setting(
        0.1, help="probability that a root feature is active", gt=0, le=1
    )
    """``ActivationGenerator.firing_probabilities`` of the roots (SAELens allows one per
    feature; here one value per role)."""
    child_firing_prob: float = setting(
        CHILD_FIRING_PROB_80,
        help="probability that a child fires given its parent does, before mutual exclusion",
        gt=0,
        le=1,
    )
    """``ActivationGenerator.firing_probabilities`` of every non-root feature of a tree (with
    ``HierarchyConfig.compensate_probabilities = False``, so it is the probability given the
    parent). With mutual exclusion an active parent has some child with probability
    ``1 - (1 - p)^branching``."""
    extra_features: int = setting(0, help="features outside the hierarchy (independent)", ge=0)
    """Added to ``num_features`` beyond the hierarchy's; SAELens leaves features that are in no
    tree unconstrained."""
    extra_firing_prob: float = setting(
        0.05, help="probability that an extra feature is active", gt=0, le=1
    )
    """``ActivationGenerator.firing_probabilities`` of the extra features."""
    child_magnitude: float = setting(
        1.0, help="mean magnitude of non-root features (roots: 1)", gt=0
    )
    """``ActivationGenerator.mean_firing_magnitudes`` of every non-root feature (roots and extra
    features have 1.0)."""
    magnitude_std: float = setting(0.0, help="std of every feature's magnitude (0: fixed)", ge=0)
    """``ActivationGenerator.std_firing_magnitudes`` of every feature (magnitudes are then
    ReLU(mean + std * N(0, 1)), as SAELens draws them)."""
    orthogonalization_steps: int = setting(
        200, help="SAELens's orthogonalisation steps of the feature vectors (0: random unit)", ge=0
    )
    """``OrthogonalizationConfig.num_steps`` (via ``orthogonal_initializer``, lr 0.01); 0 keeps
    SAELens's random unit vectors."""
    child_parent_cosine: float | None = setting(
        None, help="if set, rotate each child to this cosine with its parent (ours)", ge=0, lt=1
    )
    """*Ours* (SAELens has no child geometry): each child's vector becomes
    ``c * parent + sqrt(1 - c^2) * u``, ``u`` its SAELens vector made orthogonal to the parent
    and normalised (applied top-down, so grandchildren use their rotated parent). ``None``
    keeps SAELens's nearly orthogonal vectors; 0 makes children exactly orthogonal."""
    correlation_rank: int = setting(0, help="rank of random feature correlations (0: none)", ge=0)
    """``generate_random_low_rank_correlation_matrix(rank=...)`` passed to
    ``ActivationGenerator(correlation_matrix=...)`` (``LowRankCorrelationConfig.rank``)."""
    correlation_scale: float = setting(0.075, help="scale of the random feature correlations", ge=0)
    """``LowRankCorrelationConfig.correlation_scale``; needs rank * scale^2 < 1."""
    bias_norm: float = setting(0.0, help="norm of a constant offset added to every sample", ge=0)
    """``FeatureDictionary(bias=...)``: 0 means no bias (``bias=False``)."""

    def __post_init__(self) -> None:
        super().__post_init__()  # the bounds declared on the fields
        self._check_cross_fields()

    def validate(self) -> None:
        """Raise :class:`FieldError` (naming this config's fields) on impossible settings: the
        bounds declared on the fields, then the rules that involve two of them."""
        check_declared(self)
        self._check_cross_fields()

    def _check_cross_fields(self) -> None:
        if self.max_branching_factor is not None and (
            self.max_branching_factor < self.branching_factor
        ):
            raise FieldError(
                "max_branching_factor",
                f"({self.max_branching_factor}) must be at least `branching_factor` "
                f"({self.branching_factor}).",
            )
        if self.correlation_rank * self.correlation_scale**2 >= 1.0:
            raise FieldError(
                "correlation_scale",
                f"({self.correlation_scale}) squared times `correlation_rank` "
                f"({self.correlation_rank}) must be below 1 (SAELens's low-rank correlations).",
            )

    @property
    def max_children(self) -> int:
        return self.max_branching_factor or self.branching_factor

    def max_tree_features(self) -> int:
        """Features of the hierarchy when every node has ``max_children`` children (SAELens
        numbers them breadth-first and stops at this bound)."""
        b = self.max_children
        return self.n_roots * sum(b**level for level in range(self.depth + 1))
