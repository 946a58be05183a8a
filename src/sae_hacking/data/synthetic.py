"""An external toy data source: SAELens's synthetic feature models (``sae_lens.synthetic``).

:class:`SyntheticData` builds, from a :class:`SyntheticDataConfig` and a seed, the SAELens objects
that generate the data, through SAELens's public API only:

- ``generate_hierarchy(HierarchyConfig(...))``: the feature forest (breadth-first numbering:
  roots ``0 .. n_roots - 1``, then their children, then grandchildren; extra features last);
- ``FeatureDictionary`` (with ``orthogonal_initializer``): one unit vector per feature, and
  optionally a bias, mapping feature activations ``acts_BF`` to samples
  ``x_BM = acts_BF @ features_FM + bias_M``;
- ``ActivationGenerator`` with one firing probability and magnitude per feature (by role: root,
  child, extra), the hierarchy's modifier (a child is off where its parent is off; among
  mutually exclusive siblings one random survivor) and optional low-rank correlations.

The tree is kept as ``parents_F`` (each feature's parent, -1 for roots and extra features) and
``exclusive_F`` (whether a feature's children are mutually exclusive); the SAELens tree is
rebuilt from them with ``HierarchyNode``/``hierarchy_modifier``, so a saved dataset
(:meth:`SyntheticData.state_dict`, :meth:`SyntheticData.config_dict`) comes back identical
(:meth:`SyntheticData.from_saved`) without re-running the orthogonalisation.

**Randomness.** SAELens samples with torch's global RNG. Every draw here takes its randomness
from a caller's CPU ``torch.Generator`` instead: one 62-bit seed is drawn from it, and SAELens
samples under ``torch.random.fork_rng`` with the global CPU generator seeded to it
(:meth:`SyntheticData.rng_from`). A batch is thus a pure function of the generator's state (the
toy trainer's per-chunk generators make resuming exact), the caller's global RNG is untouched,
and draws happen on the CPU, so a seed gives the same data on every device (tensors then move to
the dataset's device). SAELens is imported on first use, not when this module is imported.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int

from sae_hacking.data.synthetic_config import SyntheticDataConfig

if TYPE_CHECKING:
    from sae_lens.synthetic import ActivationGenerator, FeatureDictionary, Hierarchy

ORTHOGONALIZATION_LR = 0.01  # SAELens's OrthogonalizationConfig default
# Offsets of the sub-seeds, as SAELens's SyntheticModel keeps its generators apart.
HIERARCHY_SEED_OFFSET = 3
CORRELATION_SEED_OFFSET = 4


def draw_seed(gen: torch.Generator) -> int:
    """One seed from ``gen`` (advancing it): what a draw of SAELens data runs under."""
    return int(torch.randint(0, 2**62, (), generator=gen))


class SyntheticData:
    """A SAELens synthetic feature model. Build with :meth:`generate` or :meth:`from_saved`.

    Public tensors live on ``device``: ``features_FM`` (unit feature vectors), ``bias_M``,
    ``parents_F`` (parent feature of each feature, -1 for roots and extra features),
    ``exclusive_F``, ``depth_F`` (0 for roots and extra features). ``feature_dict``,
    ``activation_generator`` and ``hierarchy`` are the SAELens objects (on the CPU), for SAELens's
    own functions such as ``eval_sae_on_synthetic_data``.
    """

    feature_dict: FeatureDictionary
    activation_generator: ActivationGenerator
    hierarchy: Hierarchy

    def __init__(
        self,
        config: SyntheticDataConfig,
        features_FM: Float[torch.Tensor, "F M"],
        bias_M: Float[torch.Tensor, " M"],
        parents_F: Int[torch.Tensor, " F"],
        exclusive_F: Bool[torch.Tensor, " F"],
        correlation: tuple[torch.Tensor, torch.Tensor] | None = None,
        device: torch.device | str = "cpu",
    ):
        from sae_lens.synthetic import (
            ActivationGenerator,
            FeatureDictionary,
            Hierarchy,
            hierarchy_modifier,
        )

        config.validate()
        self.config = config
        features_FM, bias_M = features_FM.float().cpu(), bias_M.float().cpu()
        parents_F, exclusive_F = parents_F.long().cpu(), exclusive_F.bool().cpu()
        n_features, model_dim = features_FM.shape
        if model_dim != config.model_dim or parents_F.shape != (n_features,):
            raise ValueError(
                f"features {tuple(features_FM.shape)} and parents {tuple(parents_F.shape)} do "
                f"not fit model_dim {config.model_dim}."
            )
        self.n_tree = n_features - config.extra_features
        roots = tree_roots(parents_F[: self.n_tree], exclusive_F[: self.n_tree])
        self.hierarchy = Hierarchy(roots=roots, modifier=hierarchy_modifier(roots))
        # No initializer: the vectors are given (generated once, or loaded). The seed only
        # keeps the constructor's throw-away random vectors off the global RNG.
        self.feature_dict = FeatureDictionary(
            n_features, model_dim, bias=False, initializer=None, seed=0
        )
        self.feature_dict.feature_vectors.data = features_FM.clone()
        self.feature_dict.bias.data = bias_M.clone()
        self.feature_dict.requires_grad_(False)
        self.correlation = correlation
        probs_F, means_F = self._role_values(parents_F)
        self.activation_generator = ActivationGenerator(
            num_features=n_features,
            firing_probabilities=probs_F,
            std_firing_magnitudes=config.magnitude_std,
            mean_firing_magnitudes=means_F,
            modify_activations=self.hierarchy.modifier,
            correlation_matrix=correlation,
        )
        self.device = torch.device(device)
        self.features_FM = features_FM.to(self.device)
        self.bias_M = bias_M.to(self.device)
        self.parents_F = parents_F.to(self.device)
        self.exclusive_F = exclusive_F.to(self.device)
        self.depth_F = feature_depths(parents_F).to(self.device)

    def _role_values(self, parents_F: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Firing probability and mean magnitude of each feature, by its role."""
        cfg = self.config
        is_child_F = parents_F >= 0
        probs_F = torch.where(is_child_F, cfg.child_firing_prob, cfg.root_firing_prob)
        probs_F[self.n_tree :] = cfg.extra_firing_prob
        means_F = torch.where(is_child_F, cfg.child_magnitude, 1.0)
        return probs_F.float(), means_F.float()

    @classmethod
    def generate(
        cls, config: SyntheticDataConfig, seed: int, device: torch.device | str = "cpu"
    ) -> SyntheticData:
        """The model ``config`` describes, deterministically from ``seed``."""
        from sae_lens.synthetic import (
            FeatureDictionary,
            HierarchyConfig,
            generate_hierarchy,
            generate_random_low_rank_correlation_matrix,
            orthogonal_initializer,
        )

        config.validate()
        branching = config.branching_factor
        if config.max_branching_factor is not None:
            branching = (config.branching_factor, config.max_branching_factor)
        hierarchy_config = HierarchyConfig(
            total_root_nodes=config.n_roots,
            branching_factor=branching,
            max_depth=config.depth,
            mutually_exclusive_portion=1.0 if config.mutually_exclusive else 0.0,
        )
        # SAELens seeds each part explicitly; the fork pins anything that might not be.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            hierarchy = generate_hierarchy(
                config.max_tree_features(), hierarchy_config, seed=seed + HIERARCHY_SEED_OFFSET
            )
            n_tree = len(hierarchy.feature_indices_used)
            n_features = n_tree + config.extra_features
            initializer = None
            if config.orthogonalization_steps:
                initializer = orthogonal_initializer(
                    num_steps=config.orthogonalization_steps, lr=ORTHOGONALIZATION_LR
                )
            feature_dict = FeatureDictionary(
                n_features,
                config.model_dim,
                bias=config.bias_norm or False,
                initializer=initializer,
                seed=seed,
            )
            correlation = None
            if config.correlation_rank:
                low_rank = generate_random_low_rank_correlation_matrix(
                    n_features,
                    config.correlation_rank,
                    config.correlation_scale,
                    seed=seed + CORRELATION_SEED_OFFSET,
                )
                correlation = (low_rank.correlation_factor, low_rank.correlation_diag)
        parents_F, exclusive_F = tree_arrays(hierarchy.roots, n_features)
        features_FM = feature_dict.feature_vectors.detach()
        if config.child_parent_cosine is not None:
            features_FM = rotate_children(features_FM, parents_F, config.child_parent_cosine)
        bias_M = feature_dict.bias.detach()
        return cls(config, features_FM, bias_M, parents_F, exclusive_F, correlation, device)

    # -- the ground truth --------------------------------------------------------------------

    @property
    def num_features(self) -> int:
        return self.features_FM.shape[0]

    @property
    def parent_features(self) -> Int[torch.Tensor, " N"]:
        """The features that have children (roots and, at depth 2, the middle level)."""
        has_children_F = torch.zeros(self.num_features, dtype=torch.bool, device=self.device)
        has_children_F[self.parents_F[self.parents_F >= 0]] = True
        return has_children_F.nonzero().flatten()

    # -- sampling ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def rng_from(self, gen: torch.Generator) -> Iterator[None]:
        """Run the block with torch's global CPU RNG seeded from ``gen`` (one draw), restoring
        the caller's RNG state afterwards: SAELens code inside draws as a pure function of
        ``gen``'s state (:func:`evaluate_synthetic` runs SAELens's own eval in it)."""
        seed = draw_seed(gen)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            yield

    @torch.no_grad()
    def sample_with_features(
        self, n: int, gen: torch.Generator
    ) -> tuple[Float[torch.Tensor, "B M"], Float[torch.Tensor, "B F"]]:
        """``n`` samples and the true feature activations behind them, from ``gen`` (a CPU
        generator, advanced by one draw). The same draws as SAELens's
        ``eval_sae_on_synthetic_data(..., num_samples=n)`` under :meth:`rng_from` of a
        generator in the same state."""
        with self.rng_from(gen):
            acts_BF = self.activation_generator.sample(n)
        x_BM = self.feature_dict(acts_BF)
        return x_BM.to(self.device), acts_BF.to(self.device)

    def sample(self, n: int, gen: torch.Generator) -> Float[torch.Tensor, "B M"]:
        """``n`` samples (:meth:`sample_with_features` without the activations)."""
        return self.sample_with_features(n, gen)[0]

    # -- saving ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors for ``dataset.safetensors``; with :meth:`config_dict`, enough for
        :meth:`from_saved`."""
        state = {
            "features_FM": self.features_FM,
            "bias_M": self.bias_M,
            "parents_F": self.parents_F,
            "exclusive_F": self.exclusive_F,
        }
        if self.correlation is not None:
            state["correlation_factor_FR"], state["correlation_diag_F"] = self.correlation
        return {name: t.detach().cpu().contiguous() for name, t in state.items()}

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)

    @classmethod
    def from_saved(
        cls,
        config: SyntheticDataConfig | Mapping[str, Any],
        state: Mapping[str, torch.Tensor],
        device: torch.device | str = "cpu",
    ) -> SyntheticData:
        """The dataset :meth:`state_dict` and :meth:`config_dict` describe (same draws)."""
        if not isinstance(config, SyntheticDataConfig):
            config = SyntheticDataConfig(**config)
        correlation = None
        if "correlation_factor_FR" in state:
            correlation = (state["correlation_factor_FR"].cpu(), state["correlation_diag_F"].cpu())
        return cls(
            config,
            state["features_FM"],
            state["bias_M"],
            state["parents_F"],
            state["exclusive_F"],
            correlation,
            device,
        )


# -- the tree as arrays ------------------------------------------------------------------------


def tree_arrays(roots: list, n_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``parents_F`` and ``exclusive_F`` of SAELens ``HierarchyNode`` trees."""
    parents_F = torch.full((n_features,), -1, dtype=torch.long)
    exclusive_F = torch.zeros(n_features, dtype=torch.bool)
    stack = list(roots)
    while stack:
        node = stack.pop()
        exclusive_F[node.feature_index] = bool(node.mutually_exclusive_children)
        for child in node.children:
            parents_F[child.feature_index] = node.feature_index
            stack.append(child)
    return parents_F, exclusive_F


def tree_roots(parents_F: torch.Tensor, exclusive_F: torch.Tensor) -> list:
    """SAELens ``HierarchyNode`` trees of ``parents_F``, children in index order (as
    ``generate_hierarchy`` numbers them, which keeps its mutual-exclusion draws the same)."""
    from sae_lens.synthetic import HierarchyNode

    parents = parents_F.tolist()
    children: dict[int, list] = {i: [] for i in range(len(parents))}
    nodes: dict[int, Any] = {}
    # A child's index is above its parent's, so building from the end sees children first.
    for i in reversed(range(len(parents))):
        kids = list(reversed(children[i]))
        nodes[i] = HierarchyNode(
            feature_index=i, children=kids, mutually_exclusive_children=bool(exclusive_F[i])
        )
        if parents[i] >= 0:
            if parents[i] >= i:
                raise ValueError(f"feature {i}'s parent {parents[i]} must come before it.")
            children[parents[i]].append(nodes[i])
    return [nodes[i] for i in range(len(parents)) if parents[i] < 0]


def feature_depths(parents_F: torch.Tensor) -> torch.Tensor:
    depth_F = torch.zeros_like(parents_F)
    parents = parents_F.tolist()
    for i, p in enumerate(parents):  # parents come first, so their depth is known
        depth_F[i] = 0 if p < 0 else depth_F[p] + 1
    return depth_F


def rotate_children(
    features_FM: Float[torch.Tensor, "F M"], parents_F: Int[torch.Tensor, " F"], cosine: float
) -> Float[torch.Tensor, "F M"]:
    """Each child turned to cosine ``cosine`` with its parent, keeping its own direction
    orthogonal to the parent; level by level, so grandchildren follow their rotated parent."""
    out_FM = features_FM.clone()
    depth_F = feature_depths(parents_F)
    for level in range(1, int(depth_F.max()) + 1):
        idx_N = (depth_F == level).nonzero().flatten()
        parent_NM = out_FM[parents_F[idx_N]]
        own_NM = out_FM[idx_N]
        own_NM = F.normalize(
            own_NM - (own_NM * parent_NM).sum(-1, keepdim=True) * parent_NM, dim=-1
        )
        out_FM[idx_N] = cosine * parent_NM + math.sqrt(1.0 - cosine**2) * own_NM
    return out_FM
