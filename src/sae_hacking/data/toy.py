"""The toy hierarchical-feature dataset.

There are A parent features, unit vectors in M dimensions. Each parent ``a`` has C = 2 children
``v[a, c] = parent[a] + perturbation[a, c]`` where each perturbation has norm rho in a uniformly
random direction. A sample activates exactly k distinct parents, each with one child chosen
uniformly at random, and is the sum of the chosen children's vectors.

Two optional knobs that absorption studies ask for (both off by default, which gives exactly the
semantics above):

- ``parent_alone_prob``: probability that an active parent appears alone, i.e. contributes the
  bare parent vector instead of one of its children;
- ``magnitude_range``: each active feature is scaled by a magnitude drawn uniformly from this range
  (``(1, 1)`` means unit magnitudes).

Sampling is split into :meth:`ToyDataset.draw` (all randomness) and :meth:`ToyDataset.compose`
(deterministic), so the vectorised composition can be checked against :func:`compose_reference`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int

from sae_hacking.data.toy_config import ToyDatasetConfig

CHILDREN_PER_PARENT = 2
# Index c of a drawn feature: 0 and 1 are the two children, ALONE is the bare parent.
ALONE = CHILDREN_PER_PARENT


@dataclass
class ToyBatch:
    """One batch of samples and the ground truth that produced it."""

    x_BM: Float[torch.Tensor, "B M"]
    parents_BK: Int[torch.Tensor, "B K"]  # which parents are active
    which_BK: Int[torch.Tensor, "B K"]  # 0/1: that child, ALONE: the bare parent
    magnitudes_BK: Float[torch.Tensor, "B K"] | None  # None means all ones


class ToyDataset:
    """Ground-truth features plus a sampler. All tensors live on ``device``."""

    def __init__(
        self,
        config: ToyDatasetConfig,
        parents_AM: Float[torch.Tensor, "A M"],
        perturbations_ACM: Float[torch.Tensor, "A C M"],
    ):
        self.config = config
        self.parents_AM = parents_AM
        self.perturbations_ACM = perturbations_ACM
        self.children_ACM = parents_AM[:, None, :] + perturbations_ACM
        # Row a * (C + 1) + c of this table is what drawn feature (a, c) contributes, so one
        # embedding_bag composes a whole batch.
        self._table_DM = torch.cat([self.children_ACM, parents_AM[:, None, :]], dim=1).reshape(
            -1, config.model_dim
        )

    @classmethod
    def generate(
        cls, config: ToyDatasetConfig, seed: int, device: torch.device | str = "cpu"
    ) -> ToyDataset:
        config.validate()
        gen = torch.Generator().manual_seed(seed)
        A, M = config.num_features, config.model_dim
        parents_AM = F.normalize(torch.randn(A, M, generator=gen), dim=-1)
        directions_ACM = F.normalize(torch.randn(A, CHILDREN_PER_PARENT, M, generator=gen), dim=-1)
        perturbations_ACM = config.perturbation_size * directions_ACM
        return cls(config, parents_AM.to(device), perturbations_ACM.to(device))

    @property
    def device(self) -> torch.device:
        return self.parents_AM.device

    @property
    def all_children_DM(self) -> Float[torch.Tensor, "D M"]:
        """The 2A child vectors; rows 2a and 2a + 1 are siblings."""
        return self.children_ACM.reshape(-1, self.config.model_dim)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"parents_AM": self.parents_AM, "perturbations_ACM": self.perturbations_ACM}

    def config_dict(self) -> dict:
        return asdict(self.config)

    def draw(self, n: int, gen: torch.Generator) -> ToyBatch:
        """All the randomness of ``n`` samples, without composing them (``x_BM`` left empty).

        ``gen`` is a CPU generator; draws happen on the CPU so that a seed gives the same data
        on every device, then move to the dataset's device.
        """
        cfg = self.config
        # The top-k of i.i.d. uniforms is a uniformly random k-subset.
        parents_BK = torch.rand(n, cfg.num_features, generator=gen).topk(cfg.k, dim=1).indices
        which_BK = torch.randint(0, CHILDREN_PER_PARENT, (n, cfg.k), generator=gen)
        if cfg.parent_alone_prob > 0:
            alone_BK = torch.rand(n, cfg.k, generator=gen) < cfg.parent_alone_prob
            which_BK = torch.where(alone_BK, ALONE, which_BK)
        magnitudes_BK = None
        lo, hi = cfg.magnitude_range
        if (lo, hi) != (1.0, 1.0):
            magnitudes_BK = lo + (hi - lo) * torch.rand(n, cfg.k, generator=gen)
            magnitudes_BK = magnitudes_BK.to(self.device)
        empty = torch.empty(n, 0, device=self.device)  # filled by compose
        return ToyBatch(empty, parents_BK.to(self.device), which_BK.to(self.device), magnitudes_BK)

    def compose(self, batch: ToyBatch) -> ToyBatch:
        """Fill ``batch.x_BM``: the (magnitude-weighted) sum of each sample's drawn features."""
        rows_BK = batch.parents_BK * (CHILDREN_PER_PARENT + 1) + batch.which_BK
        batch.x_BM = F.embedding_bag(
            rows_BK, self._table_DM, per_sample_weights=batch.magnitudes_BK, mode="sum"
        )
        return batch

    def sample(self, n: int, gen: torch.Generator) -> ToyBatch:
        return self.compose(self.draw(n, gen))

    def active_parents_BA(self, batch: ToyBatch) -> torch.Tensor:
        """Boolean ``[B, A]``: which parents are active in each sample."""
        active_BA = torch.zeros(
            batch.parents_BK.shape[0],
            self.config.num_features,
            dtype=torch.bool,
            device=self.device,
        )
        return active_BA.scatter_(1, batch.parents_BK, True)


def compose_reference(dataset: ToyDataset, batch: ToyBatch) -> Float[torch.Tensor, "B M"]:
    """Plain-loop oracle for :meth:`ToyDataset.compose`."""
    n, k = batch.parents_BK.shape
    x_BM = torch.zeros(n, dataset.config.model_dim, device=dataset.device)
    for b in range(n):
        for j in range(k):
            a = int(batch.parents_BK[b, j])
            c = int(batch.which_BK[b, j])
            vec = dataset.parents_AM[a] if c == ALONE else dataset.children_ACM[a, c]
            mag = 1.0 if batch.magnitudes_BK is None else float(batch.magnitudes_BK[b, j])
            x_BM[b] += mag * vec
    return x_BM


def chunk_generator(seed: int, chunk_index: int) -> torch.Generator:
    """The generator for training chunk ``chunk_index``: any chunk can be regenerated alone,
    which is what makes resuming exact."""
    # Python's hash() of strings changes between processes, so mix the integers by hand.
    mixed = (seed * 0x9E3779B97F4A7C15 + (chunk_index + 1) * 0xBF58476D1CE4E5B9) % (2**63)
    return torch.Generator().manual_seed(mixed)
