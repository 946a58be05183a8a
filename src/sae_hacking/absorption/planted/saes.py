"""An ablator SAE with planted absorption, for checking the absorption search end to end.

:func:`planted_sae` starts from a calibrated random JumpReLU SAE (every latent fires on a few
per cent of the real tokens of the prompts, :func:`sae_hacking.saes.tiny.calibrated_random_sae`)
and overwrites some of its latents with three kinds of pairs:

- **planted** (absorption): one "parent" feature, ``|q . (x - b_dec)|`` large for a random
  encoder direction ``q``, whose tokens are split between two latents by the sign of that
  projection (encoders ``q`` and ``-q``, ``b_enc = 0``, one threshold ``t > 0``), so the two can
  never fire on the same token, on any input; their decoder rows are the parent's direction ``d``
  tilted by an angle θ in two orthogonal directions, so their cosine is exactly ``cos²θ``,
  drawn per pair from ``[c, c + 0.7 (1 - c)]`` (``c = min_decoder_cosine``, 0.9 by default).
  This is what absorption looks like from outside: two latents that write nearly the same
  direction and share out the tokens of one feature.
- **co-occurring controls**: decoders built the same way (cosines from the same range), but both encoders
  read ``q`` (the second one slightly perturbed), so they fire together on most of their tokens.
  The co-occurrence filter must drop them: a decoder-only search would rank them first.
- **exclusive controls**: encoders ``q`` and ``-q`` as for a planted pair (never on the same
  token) but two independent random decoder rows: never co-occurring, yet no absorption.

Every other latent stays an ordinary calibrated random latent. The slots of the special latents
are a random permutation of the latent ids, so nothing depends on id order. All pair kinds fire
on about ``pair_fraction`` of the tokens per latent, so a zero co-occurrence count is strong
evidence (``N f_i f_j`` is large).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from jaxtyping import Float

from sae_hacking.lm.hooked import HookedLM
from sae_hacking.saes.jumprelu import JumpReLUSAE
from sae_hacking.saes.tiny import calibrated_random_sae

Pair = tuple[int, int]
KINDS = ("planted", "cooccurring", "exclusive")
ABLATOR_HOOK = "blocks.1.hook_mlp_out"
READER_HOOK = "blocks.2.hook_resid_post"
N_LAYERS = 3


@dataclass(frozen=True)
class PlantedPlan:
    """Which latents of a planted SAE form which pairs (``id1 < id2`` in every pair)."""

    d_sae: int
    planted: tuple[Pair, ...]
    cooccurring: tuple[Pair, ...]
    exclusive: tuple[Pair, ...]

    def pairs(self, kind: str) -> tuple[Pair, ...]:
        return getattr(self, kind)

    def labels(self) -> dict[int, str]:
        """A one-line description of every special latent (for explanations and tables)."""
        what = {
            "planted": "planted absorption pair {n}, child {c}: fires where the parent's "
            "projection is {s}; decoder ~ the parent's",
            "cooccurring": "co-occurring control {n}, latent {c}: similar decoder to its "
            "partner, fires on the same tokens",
            "exclusive": "exclusive control {n}, latent {c}: never fires with its partner, "
            "unrelated decoder",
        }
        out = {}
        for kind in KINDS:
            for n, pair in enumerate(self.pairs(kind)):
                for c, (latent, sign) in enumerate(
                    zip(pair, ("positive", "negative"), strict=True)
                ):
                    out[latent] = what[kind].format(n=n, c="ab"[c], s=sign)
        return out

    def to_json(self) -> dict:
        return {k: [list(p) for p in v] if k in KINDS else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict) -> PlantedPlan:
        return cls(
            int(data["d_sae"]), *(tuple(tuple(int(i) for i in p) for p in data[k]) for k in KINDS)
        )


def tilted_pair(
    d_M: Float[torch.Tensor, " M"], cosine: float, gen: torch.Generator
) -> Float[torch.Tensor, "2 M"]:
    """Two unit vectors at angle θ from unit ``d_M`` in orthogonal directions, so their cosine
    is ``cos²θ = cosine`` exactly (up to rounding)."""
    theta = math.acos(math.sqrt(cosine))
    u_2M = torch.randn(2, d_M.shape[0], generator=gen)
    basis_3M, _ = torch.linalg.qr(torch.cat([d_M[None], u_2M]).T)  # orthonormal: d, u1, u2
    basis_3M = basis_3M.T
    parent_M = basis_3M[0] * torch.sign(basis_3M[0] @ d_M)  # QR may return -d
    return math.cos(theta) * parent_M + math.sin(theta) * basis_3M[1:]


def _unit(gen: torch.Generator, m: int) -> torch.Tensor:
    v = torch.randn(m, generator=gen)
    return v / v.norm()


@torch.no_grad()
def planted_sae(
    lm: HookedLM,
    hook_name: str,
    d_sae: int,
    texts: Sequence[str],
    *,
    n_planted: int = 4,
    n_cooccurring: int = 3,
    n_exclusive: int = 3,
    min_decoder_cosine: float = 0.9,
    pair_fraction: float = 0.15,
    active_fraction: float = 0.02,
    seed: int = 0,
    max_tokens: int = 64,
) -> tuple[JumpReLUSAE, PlantedPlan]:
    """An ablator SAE at ``hook_name`` with planted pairs and controls (module docstring),
    calibrated on the real tokens of ``texts``; and the plan of which latents are which."""
    n_special = 2 * (n_planted + n_cooccurring + n_exclusive)
    if n_special > d_sae:
        raise ValueError(f"{n_special} special latents do not fit in d_sae = {d_sae}")
    if not 0 < min_decoder_cosine < 1:
        raise ValueError(f"min_decoder_cosine must be in (0, 1), got {min_decoder_cosine}")
    sae = calibrated_random_sae(lm, hook_name, d_sae, texts, active_fraction, seed, max_tokens)
    batch = lm.tokenize(list(texts), max_tokens)
    acts_BSM = lm.read(batch.input_ids_BS, batch.attention_mask_BS, [hook_name])[hook_name]
    centred_TM = acts_BSM[batch.real_token_mask_BS].float().cpu() - sae.b_dec_M
    m = sae.d_in
    gen = torch.Generator().manual_seed(seed + 1)
    slots = torch.randperm(d_sae, generator=gen)[:n_special].tolist()
    W_enc_ME, W_dec_EM = sae.W_enc_ME, sae.W_dec_EM

    def threshold(q_M: torch.Tensor, fraction: float) -> float:
        return float(torch.quantile(centred_TM @ q_M, 1 - fraction))

    def place(encoders: list[torch.Tensor], decoders: torch.Tensor, thresholds: list[float]):
        pair = sorted(slots.pop() for _ in range(2))
        for latent, enc_M, dec_M, t in zip(pair, encoders, decoders, thresholds, strict=True):
            W_enc_ME[:, latent] = enc_M
            W_dec_EM[latent] = dec_M
            sae.b_enc_E[latent] = 0.0
            sae.threshold_E[latent] = t
        return tuple(pair)

    def similar() -> torch.Tensor:
        # Drawn per pair, so planted pairs and co-occurring controls overlap in decoder cosine
        # without exact ties.
        low = min_decoder_cosine
        cosine = low + (1 - low) * 0.7 * float(torch.rand((), generator=gen))
        return tilted_pair(_unit(gen, m), cosine, gen)

    def exclusive(decoders: torch.Tensor) -> Pair:
        q_M = _unit(gen, m)
        # One threshold for both signs: the quantile of |projection| at twice the fraction.
        t = float(torch.quantile((centred_TM @ q_M).abs(), 1 - 2 * pair_fraction))
        return place([q_M, -q_M], decoders, [t, t])

    planted = [exclusive(similar()) for _ in range(n_planted)]
    cooccurring = []
    for _ in range(n_cooccurring):
        q_M = _unit(gen, m)
        q2_M = q_M + 0.2 * _unit(gen, m)
        q2_M = q2_M / q2_M.norm()
        decoders = similar()
        t1, t2 = threshold(q_M, pair_fraction), threshold(q2_M, pair_fraction)
        cooccurring.append(place([q_M, q2_M], decoders, [t1, t2]))
    unrelated = [exclusive(torch.stack([_unit(gen, m), _unit(gen, m)])) for _ in range(n_exclusive)]
    plan = PlantedPlan(d_sae, tuple(planted), tuple(cooccurring), tuple(unrelated))
    return sae.eval(), plan


def decoder_cosines(sae, pairs: Sequence[Pair]) -> list[float]:
    """Cosine of the two decoder rows of each pair."""
    W_EM = torch.nn.functional.normalize(sae.W_dec.detach().float(), dim=-1)
    return [float(W_EM[i] @ W_EM[j]) for i, j in pairs]


@dataclass
class PlantedInputs:
    """The files :func:`build_inputs` wrote, the plan and every pair's decoder cosine."""

    model: Path
    prompts: Path
    ablator: Path
    reader: Path
    explanations: Path
    plan: PlantedPlan
    all_decoder_cosines: dict[Pair, float]


def build_inputs(config, run_dir: Path) -> PlantedInputs:
    """The tiny model (``model/`` with ``prompts.txt``), the planted ablator SAE, the reader SAE,
    ``plan.json`` and ``explanations.json`` (the plan as latent descriptions, for the report) in
    ``run_dir``, for a :class:`sae_hacking.absorption.planted.run.ValidateConfig`."""
    from sae_hacking.atomic import atomic_write_json
    from sae_hacking.lm.hooked import HookedLM
    from sae_hacking.lm.tiny import make_tiny_model
    from sae_hacking.saes.io import save_sae_checkpoint
    from sae_hacking.saes.tiny import calibrated_random_sae

    model = make_tiny_model(
        run_dir / "model", "gemma2", N_LAYERS, 64, seed=config.seed, prompts=config.n_prompts
    )
    prompts = model / "prompts.txt"
    texts = prompts.read_text(encoding="utf-8").splitlines()
    lm = HookedLM.from_pretrained(str(model), device="cpu", dtype="float32")
    tokens = config.max_tokens_in_prompt
    ablator, plan = planted_sae(
        lm,
        ABLATOR_HOOK,
        config.d_sae,
        texts,
        n_planted=config.n_planted,
        n_cooccurring=config.n_controls,
        n_exclusive=config.n_controls,
        min_decoder_cosine=config.min_decoder_cosine,
        seed=config.seed,
        max_tokens=tokens,
    )
    # A dense reader (a fifth of its latents on each token): an ablation's effect at the last
    # token then reaches enough reader latents that sign vectors are comparable (at 0.1, random
    # unrelated pairs came within 0.02 of a planted pair's effect cosine).
    reader = calibrated_random_sae(
        lm, READER_HOOK, config.reader_d_sae, texts, 0.2, seed=config.seed + 2, max_tokens=tokens
    )
    ablator_path = save_sae_checkpoint(
        ablator, run_dir / "ablator.safetensors", {"planted": plan.to_json()}
    )
    reader_path = save_sae_checkpoint(reader, run_dir / "reader.safetensors")
    atomic_write_json(run_dir / "plan.json", plan.to_json())
    labels = plan.labels()
    explanations = [
        {"index": i, "description": labels.get(i, "ordinary random latent")}
        for i in range(config.d_sae)
    ]
    explanations_path = atomic_write_json(run_dir / "explanations.json", explanations)
    unit_EM = torch.nn.functional.normalize(ablator.W_dec.float(), dim=-1)
    cos_EE = (unit_EM @ unit_EM.T).tolist()
    all_cos = {
        (i, j): cos_EE[i][j] for i in range(config.d_sae) for j in range(i + 1, config.d_sae)
    }
    return PlantedInputs(
        model, prompts, ablator_path, reader_path, explanations_path, plan, all_cos
    )
