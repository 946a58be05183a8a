"""How much of the model each ablation method runs per prompt, counted from its structure.

A decoder layer is an attention block and an MLP block (see :mod:`sae_hacking.lm.arch`).
:func:`block_passes` counts, per prompt that ablates ``k`` latents, the attention blocks run
over the whole prompt, the MLP blocks run over the whole prompt, and the MLP blocks run on the
last real token only, exactly as :func:`sae_hacking.absorption.ablation.core.fast_effects` and
:func:`~sae_hacking.absorption.ablation.core.naive_effects` call them (the tests check the counts
against hooks on a real model's modules). :meth:`BlockPasses.layer_equivalents` weighs the
blocks by their FLOPs to give a number of whole decoder-layer forward passes.
"""

from __future__ import annotations

from dataclasses import dataclass

from sae_hacking.lm.arch import HOOK_KINDS, HookPoint

ATTN_SITE = HOOK_KINDS.index("attn_out")
MLP_SITE = HOOK_KINDS.index("mlp_out")


@dataclass(frozen=True)
class Geometry:
    """The sizes that set a decoder layer's FLOPs per token."""

    d_model: int
    d_mlp: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    mlp_matrices: int = 3  # gated MLPs (Gemma, Llama) have 3, GPT-2 / NeoX 2

    def attention_flops(self, seq_len: int) -> float:
        """Per query token: the four projections plus scores and weighted sum over the prompt."""
        q, kv = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        projections = 2 * self.d_model * (2 * q + 2 * kv)
        return projections + 4 * seq_len * q

    def mlp_flops(self) -> float:
        return 2 * self.mlp_matrices * self.d_model * self.d_mlp


GEMMA_2_2B = Geometry(d_model=2304, d_mlp=9216, n_heads=8, n_kv_heads=4, head_dim=256)
GEMMA_2_2B_LAYERS = 26


@dataclass(frozen=True)
class BlockPasses:
    """Blocks run per prompt: over the whole prompt, or (MLP) on its last real token only."""

    attention: int
    mlp: int
    mlp_last_token: int = 0

    def __add__(self, other: BlockPasses) -> BlockPasses:
        return BlockPasses(
            self.attention + other.attention,
            self.mlp + other.mlp,
            self.mlp_last_token + other.mlp_last_token,
        )

    def __mul__(self, times: int) -> BlockPasses:
        return BlockPasses(self.attention * times, self.mlp * times, self.mlp_last_token * times)

    @property
    def whole_layers(self) -> int:
        """Decoder layers entered (each runs its attention once over the prompt)."""
        return self.attention

    def layer_equivalents(self, geometry: Geometry, seq_len: int) -> float:
        """FLOP-weighted whole decoder-layer forward passes over a ``seq_len``-token prompt."""
        attn, mlp = geometry.attention_flops(seq_len), geometry.mlp_flops()
        flops = seq_len * (self.attention * attn + self.mlp * mlp) + self.mlp_last_token * mlp
        return flops / (seq_len * (attn + mlp))


def _blocks_between(after: tuple[int, int] | None, upto: tuple[int, int]):
    """(layer, site) of the attention and MLP blocks whose output lies in ``(after, upto]``."""
    layer = 0
    while (layer, ATTN_SITE) <= upto:
        for site in (ATTN_SITE, MLP_SITE):
            if (after is None or (layer, site) > after) and (layer, site) <= upto:
                yield layer, site
        layer += 1


def block_passes(
    method: str, n_layers: int, ablator: HookPoint, reader: HookPoint, k: int
) -> BlockPasses:
    """Blocks run for one prompt that ablates ``k`` latents, by ``method`` (fast or naive)."""
    if method == "naive":  # one full forward to rank, one baseline, one per ablated latent
        return BlockPasses(n_layers, n_layers) * (k + 2)
    start, end = ablator.stream_position(), reader.stream_position()
    prefix = list(_blocks_between(None, start))
    between = list(_blocks_between(start, end))
    # The reader's layer: once its attention has run, the rest is position-wise and runs on
    # the last real token (when the reader reads after that attention).
    tail_from = (reader.layer, ATTN_SITE)
    last_only = end > tail_from
    per_variant = BlockPasses(
        attention=sum(site == ATTN_SITE for _, site in between),
        mlp=sum(
            site == MLP_SITE and not (last_only and (layer, site) > tail_from)
            for layer, site in between
        ),
        mlp_last_token=sum(
            site == MLP_SITE and last_only and (layer, site) > tail_from for layer, site in between
        ),
    )
    prefix_passes = BlockPasses(
        attention=sum(site == ATTN_SITE for _, site in prefix),
        mlp=sum(site == MLP_SITE for _, site in prefix),
    )
    return prefix_passes + per_variant * (k + 1)  # k ablations and the baseline
