"""Latent evidence collected while the co-occurrence pass encodes every token: for every latent
the exact top activations, a seeded sample (split into quantile bands when shown) and a
histogram of its activations on log-spaced bins, each example with the token ids and the
latent's activations in a window around it.

Tensors (``EvidenceCollector.state``; letters: e latents, X top examples, Q sampled examples,
W context tokens ``2w + 1``, J histogram bins):

- ``top_{values,prompts,positions}_eX``, ``top_context_{ids,acts}_eXW``: the ``X`` largest
  activations of each latent, largest first, ties broken by the earlier prompt, then the earlier
  position (:mod:`sae_hacking.absorption.evidence.tables`). ``prompts`` is the prompt's row in
  the dataset, ``positions`` the token's index in the model's input (BOS at 0); empty slots
  have prompt ``-1``. The context is the input ids ``position - w .. position + w`` of that
  prompt, ``-1`` where there is no real token (before the start, padding, BOS); the activations
  are float16 (for display; the example's own value is the float32 in ``values``).
- ``sample_*_eQ`` (+ ``sample_priority_eQ``): a uniform sample without replacement of each
  latent's activations, chosen by a hash of (seed, prompt, position, latent).
- ``histogram_eJ`` (int64) over ``histogram_edges_J1`` (J + 1 edges: 0, 1e-4 … 1e4 at 10 bins
  a decade, inf): how many tokens each latent is active on in each bin.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int

from sae_hacking.absorption.evidence.tables import (
    Candidates,
    ExampleTable,
    order_key,
    packed_place,
    sample_priority,
)
from sae_hacking.runs.shards import Shard

PER_DECADE = 10
LOW_EXP, HIGH_EXP = -4, 4  # log-spaced bins cover [1e-4, 1e4); below and above: one bin each
N_BINS = (HIGH_EXP - LOW_EXP) * PER_DECADE + 2


def histogram_edges() -> Float[torch.Tensor, " J1"]:
    inner = 10.0 ** (torch.arange(N_BINS - 1, dtype=torch.float64) / PER_DECADE + LOW_EXP)
    return torch.cat([torch.zeros(1, dtype=torch.float64), inner, torch.tensor([torch.inf])])


_INNER_EDGES: dict[torch.device, torch.Tensor] = {}


def histogram_bin(value_N: Float[torch.Tensor, " N"]) -> Int[torch.Tensor, " N"]:
    """The bin of each positive activation: comparisons with the float64 edges, so the same
    bin on every device and exactly :func:`histogram_edges`' (no logarithm to round)."""
    device = value_N.device
    if device not in _INNER_EDGES:
        _INNER_EDGES[device] = histogram_edges()[1:-1].to(device)
    return torch.bucketize(value_N.double(), _INNER_EDGES[device], right=True)


DOCS = {
    "top_values_eX": "the largest activations of each latent, largest first (ties: earlier "
    "prompt, then earlier position); -inf where fewer tokens were active",
    "top_prompts_eX": "dataset row of each top example's prompt (-1: empty slot)",
    "top_positions_eX": "index of each top example's token in the model input (BOS at 0)",
    "top_context_ids_eXW": "input ids position-w..position+w around each top example "
    "(-1: no real token there)",
    "top_context_acts_eXW": "the latent's activation on each context token (float16)",
    "sample_values_eQ": "activations of a seeded uniform sample of each latent's active tokens",
    "sample_prompts_eQ": "dataset row of each sampled example's prompt (-1: empty slot)",
    "sample_positions_eQ": "index of each sampled example's token in the model input",
    "sample_context_ids_eQW": "input ids around each sampled example (-1: no real token)",
    "sample_context_acts_eQW": "the latent's activation on each context token (float16)",
    "sample_priority_eQ": "the hash that chose each sampled example (smallest kept)",
    "histogram_eJ": "tokens where each latent's activation falls in each bin",
    "histogram_edges_J1": "bin edges: 0, then 1e-4 .. 1e4 log-spaced (10 a decade), then inf",
}


@dataclass
class Batch:
    """A batch's active entries (tokens ascending), each token's context window (``window_TW``:
    token index or -1; ``ids_TW``: input ids or -1) and the dense activations, for the compiled
    CPU path."""

    latent_N: torch.Tensor
    value_N: torch.Tensor
    prompt_N: torch.Tensor
    position_N: torch.Tensor
    token_N: torch.Tensor
    window_TW: torch.Tensor
    ids_TW: torch.Tensor
    acts_Te: torch.Tensor


class EvidenceCollector:
    """The evidence of ``e`` latents: ``top`` top examples, ``samples`` sampled ones, contexts
    of ``window`` tokens either side. Lives on ``device``."""

    def __init__(
        self,
        e: int,
        top: int,
        samples: int,
        window: int,
        seed: int,
        device: torch.device | str = "cpu",
        shard: Shard | None = None,
        kernel: str = "auto",
    ):
        """``kernel``: ``numba`` (compiled, CPU only), ``torch`` (any device), ``auto`` (numba
        on the CPU). Both keep the same examples."""
        device = torch.device(device)
        self.kernel = ("numba" if device.type == "cpu" else "torch") if kernel == "auto" else kernel
        self.e, self.window, self.seed = e, window, seed
        self.shard = shard or Shard()
        width = 2 * window + 1
        self.top = ExampleTable("top", "X", e, top, width, sampled=False, device=device)
        self.sample = ExampleTable("sample", "Q", e, samples, width, sampled=True, device=device)
        self.histogram_eJ = torch.zeros((e, N_BINS), dtype=torch.int64, device=device)
        self.edges_J1 = histogram_edges()

    @torch.no_grad()
    def add(
        self,
        acts_Te: Float[torch.Tensor, "T e"],
        token_N: Int[torch.Tensor, " N"],
        latent_N: Int[torch.Tensor, " N"],
        input_ids_BS: Int[torch.Tensor, "B S"],
        real_BS: torch.Tensor,
        rows_B: Int[torch.Tensor, " B"],
    ) -> None:
        """Add the active entries ``(token_N, latent_N)`` of ``acts_Te`` (tokens ascending, each
        token's latents ascending, as :func:`~sae_hacking.absorption.cooccurrence.kernels.active_lists`
        gives them), whose tokens are the real tokens of ``input_ids_BS`` in row-major order;
        ``rows_B`` are the prompts' rows in this shard (as the batches count them)."""
        device = self.histogram_eJ.device
        acts_Te = acts_Te.to(device)
        token_N, latent_N = token_N.to(device), latent_N.to(device)
        real_BS = real_BS.to(device)
        input_ids_BS = input_ids_BS.to(device)
        value_N = acts_Te.reshape(-1).take(token_N * acts_Te.shape[1] + latent_N).float()
        self.histogram_eJ.view(-1).index_add_(
            0,
            latent_N * N_BINS + histogram_bin(value_N),
            torch.ones_like(latent_N),
        )
        b_T, s_T = real_BS.nonzero(as_tuple=True)
        n_s, e = real_BS.shape[1], acts_Te.shape[1]
        token_of_BS = torch.full(real_BS.shape, -1, dtype=torch.int64, device=device)
        token_of_BS[b_T, s_T] = torch.arange(len(b_T), device=device)
        prompt_B = self.shard.index + rows_B.to(device).long() * self.shard.count
        prompt_N = prompt_B[b_T[token_N]]
        position_N = s_T[token_N]
        # A context depends on its token only (its ids) or on the token and the latent (its
        # activations): the token's window is found once per token, then gathered per example
        # with flat index_select / take (2-D advanced indexing is several times slower on CPUs).
        pos_TW = s_T[:, None] + torch.arange(-self.window, self.window + 1, device=device)
        inside_TW = (pos_TW >= 0) & (pos_TW < n_s)
        flat_TW = b_T[:, None] * n_s + pos_TW.clamp(0, n_s - 1)
        window_TW = token_of_BS.view(-1).take(flat_TW).masked_fill(~inside_TW, -1)
        ids_TW = input_ids_BS.reshape(-1).take(flat_TW).masked_fill(window_TW < 0, -1)
        acts_flat = acts_Te.reshape(-1)

        def contexts(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            token_K = token_N.index_select(0, idx)
            window_KW = window_TW.index_select(0, token_K)
            flat_KW = window_KW.clamp(min=0) * e + latent_N.index_select(0, idx)[:, None]
            acts_KW = acts_flat.take(flat_KW).masked_fill(window_KW < 0, 0.0)
            return ids_TW.index_select(0, token_K), acts_KW

        if self.kernel == "numba":
            from sae_hacking.absorption.evidence.kernels import offer_numba

            batch = Batch(
                latent_N,
                value_N,
                prompt_N,
                position_N,
                token_N,
                window_TW,
                ids_TW,
                acts_Te.float().contiguous(),
            )
            place_N = packed_place(prompt_N, position_N)
            offer_numba(self.top, batch, order_key(value_N), place_N)
            if self.sample.n:  # the kernel hashes the priorities itself (as sample_priority)
                offer_numba(self.sample, batch, None, place_N, self.seed)
            return
        cand = Candidates(latent_N, value_N, prompt_N, position_N, contexts)
        self.top.offer(cand)
        if self.sample.n:
            cand.priority_N = sample_priority(self.seed, prompt_N, position_N, latent_N)
            self.sample.offer(cand)

    def state(self) -> dict[str, torch.Tensor]:
        return {
            **self.top.state(),
            **self.sample.state(),
            "histogram_eJ": self.histogram_eJ,
            "histogram_edges_J1": self.edges_J1,
        }

    def load_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self.top.load_state(tensors)
        self.sample.load_state(tensors)
        self.histogram_eJ = tensors["histogram_eJ"].to(self.histogram_eJ.device)

    def merge(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Fold another shard's evidence (its :meth:`state`) into this one, exactly."""
        self.top.offer(self.top.stored_candidates(tensors))
        self.sample.offer(self.sample.stored_candidates(tensors))
        self.histogram_eJ += tensors["histogram_eJ"].to(self.histogram_eJ.device)

    def describe(self) -> dict[str, str]:
        return {k: DOCS[k] for k in self.state()}


EVIDENCE_PREFIXES = ("top_", "sample_", "histogram_")


def is_evidence(name: str) -> bool:
    return name.startswith(EVIDENCE_PREFIXES)
