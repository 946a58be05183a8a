"""Proof on planted absorption: the whole search (``cooccurrences`` -> ``ablate`` -> ``pairs``)
on a tiny model whose ablator SAE has planted absorption pairs and controls
(:mod:`sae_hacking.absorption.planted.saes`), then a check of what the search found.

:func:`run` builds everything in one new run directory (``model/`` the tiny model and its
prompts, ``ablator.safetensors``, ``reader.safetensors``, ``plan.json``, ``explanations.json``,
the three stages' run directories ``cooccurrences/``, ``ablations/``, ``pairs/``, and
``validation.json``), through the same run functions as the commands, and returns the run
directory and the :class:`Evaluation`. :func:`evaluate` is the check alone, on a ``pairs.json``
dict (torch-free).

Pass: every planted pair is in the output and its effect cosine is above that of every other
pair in the output, and no co-occurring control is in the output. The pairs stage runs with
``cosine_sim_threshold`` -1 and ``cooccurrence_threshold`` 0, so its output is the whole
candidate set (every pair of compared latents that never fire together) and the rankings below
are over that set; the margin between the lowest planted and the highest other effect cosine is
the range of ``cosine_sim_threshold`` values that would keep exactly the planted pairs.

What it shows, and what not: the printed rankings compare the effect cosine with decoder cosine
alone over the same candidates, and decoder cosine over all pairs (no co-occurrence filter). In
this setting a latent's effect is close to a linear function of its decoder row, so decoder
cosine over the candidates ranks the planted pairs as well as the effects do; the effect stage
confirms them rather than adding to them. What the search adds over a decoder-only search is
the co-occurrence filter: the co-occurring controls are as similar as the planted pairs, so
decoder cosine over all pairs cannot tell them apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sae_hacking.config import Config, set_field, setting
from sae_hacking.errors import FieldError

Pair = tuple[int, int]
KIND = "validate-absorption"
OUTPUTS = ("validation.json",)
# (n_prompts, d_sae, reader_d_sae) of a full run and of a quick one.
FULL = (400, 64, 128)
QUICK = (150, 40, 128)


@dataclass(frozen=True)
class ValidateConfig(Config):
    """Plant absorption in a tiny model's SAE and check that the search finds it."""

    seed: int = setting(0, help="seed of the tiny model, its prompts and the SAEs")
    quick: bool = setting(False, help="a smaller run (fewer prompts and latents), for tests")
    n_prompts: int | None = setting(None, help=f"generated prompts; {QUICK[0]} with `quick`", gt=0)
    # Checked as the tokenizer would, but before the model loads.
    max_tokens_in_prompt: int = setting(
        32, help="tokens per prompt including BOS", ge=2, why="BOS + a token"
    )
    d_sae: int | None = setting(None, help=f"ablator SAE latents; {QUICK[1]} with `quick`", gt=0)
    reader_d_sae: int | None = setting(None, help="reader SAE latents", gt=0)
    n_planted: int = setting(4, help="planted absorption pairs", gt=0)
    n_controls: int = setting(
        3,
        help="control pairs of each kind (co-occurring with similar decoders; exclusive with "
        "unrelated decoders)",
        ge=0,
    )
    min_decoder_cosine: float = setting(
        0.9,
        help="the planted pairs' and the co-occurring controls' decoder cosines are drawn "
        "uniformly from [C, C + 0.7 (1 - C)]",
        gt=0,
        lt=1,
    )
    output_dir: str | None = setting(
        None,
        help="run directory, a new or empty folder (default results/<timestamp>-<command>)",
        kind="free",
    )
    quiet: bool = setting(False, help="no progress bars", kind="free")

    def __post_init__(self):
        super().__post_init__()
        preset = QUICK if self.quick else FULL
        for key, value in zip(("n_prompts", "d_sae", "reader_d_sae"), preset, strict=True):
            if getattr(self, key) is None:
                set_field(self, key, value)
        special = 2 * (self.n_planted + 2 * self.n_controls)
        if special > self.d_sae:
            raise FieldError(
                "d_sae", f"is {self.d_sae}, too few for the {special} latents of the pairs."
            )
        if self.output_dir is not None:
            set_field(self, "output_dir", str(Path(self.output_dir).expanduser().absolute()))


# -- the check (torch-free) --------------------------------------------------------------------


@dataclass
class Ranking:
    """Precision and recall of one ranking's top ``k`` against the planted pairs."""

    name: str
    k: int
    hits: int
    n_planted: int
    n_ranked: int

    @property
    def precision(self) -> float:
        return self.hits / self.k if self.k else 0.0

    @property
    def recall(self) -> float:
        return self.hits / self.n_planted if self.n_planted else 0.0


@dataclass
class Evaluation:
    passed: bool
    failures: list[str]
    n_candidates: int
    rankings: list[Ranking]
    rows: list[dict] = field(default_factory=list)  # one per planted pair / control
    margin: tuple[float | None, float | None] = (None, None)  # lowest planted, highest other

    def to_json(self) -> dict:
        return {
            "passed": self.passed,
            "failures": self.failures,
            "n_candidates": self.n_candidates,
            "rankings": [
                {**vars(r), "precision": r.precision, "recall": r.recall} for r in self.rankings
            ],
            "pairs": self.rows,
            "lowest_planted_effect_cosine": self.margin[0],
            "highest_other_effect_cosine": self.margin[1],
        }


def pair_key(pair: Mapping) -> Pair:
    a, b = int(pair["ablator1"]["id"]), int(pair["ablator2"]["id"])
    return (a, b) if a < b else (b, a)


def rank(scores: Mapping[Pair, float]) -> list[Pair]:
    """Pairs by score descending, then ids ascending (the order of ``pairs.json``)."""
    return sorted(scores, key=lambda p: (-scores[p], p))


def top_k_ranking(name: str, scores: Mapping[Pair, float], planted: set[Pair]) -> Ranking:
    k = len(planted)
    hits = len(set(rank(scores)[:k]) & planted)
    return Ranking(name, k, hits, len(planted), len(scores))


def evaluate(
    result: Mapping,
    planted: Sequence[Pair],
    cooccurring: Sequence[Pair] = (),
    exclusive: Sequence[Pair] = (),
    all_decoder_cosines: Mapping[Pair, float] | None = None,
) -> Evaluation:
    """Check a ``pairs.json`` dict against the planted pairs (module docstring).

    Rankings at ``k`` = the number of planted pairs: by effect cosine and by decoder cosine over
    the pairs in the output (the candidates), and, with ``all_decoder_cosines``, by decoder
    cosine over every pair of latents given there (no co-occurrence filter)."""
    planted_set = {tuple(sorted(p)) for p in planted}
    pairs = {pair_key(p): p for p in result["pairs"]}
    effect = {key: float(p["cosine_similarity"]) for key, p in pairs.items()}
    decoder = {key: float(p["decoder_cosine"]) for key, p in pairs.items()}
    failures = []
    missing = sorted(planted_set - set(pairs))
    if missing:
        failures.append(f"planted pairs missing from the output: {missing}")
    present = sorted({tuple(sorted(p)) for p in cooccurring} & set(pairs))
    if present:
        failures.append(f"co-occurring controls in the output: {present}")
    lowest = min((effect[p] for p in planted_set if p in effect), default=None)
    highest = max((s for p, s in effect.items() if p not in planted_set), default=None)
    if lowest is not None and highest is not None and not lowest > highest:
        above = sorted(p for p, s in effect.items() if p not in planted_set and s >= lowest)
        failures.append(
            f"{len(above)} other pairs rank level with or above a planted pair (effect cosine "
            f"{highest:.4f} >= {lowest:.4f}), e.g. {above[:3]}"
        )
    meta = result.get("meta", {})
    if meta.get("n_pairs_kept", len(pairs)) < meta.get("n_pairs_passing", len(pairs)):
        failures.append("the output was cut at max_pairs, so it is not the whole candidate set")
    rankings = [
        top_k_ranking("effect cosine (candidates)", effect, planted_set),
        top_k_ranking("decoder cosine (candidates)", decoder, planted_set),
    ]
    if all_decoder_cosines is not None:
        rankings.append(
            top_k_ranking(
                "decoder cosine (all pairs, no co-occurrence filter)",
                {tuple(sorted(p)): s for p, s in all_decoder_cosines.items()},
                planted_set,
            )
        )
    effect_rank = {p: i + 1 for i, p in enumerate(rank(effect))}
    decoder_rank = {p: i + 1 for i, p in enumerate(rank(decoder))}
    rows = []
    for kind, group in (
        ("planted", planted),
        ("co-occurring", cooccurring),
        ("exclusive", exclusive),
    ):
        for p in group:
            key = tuple(sorted(p))
            found = pairs.get(key)
            row = {"pair": list(key), "kind": kind, "in_output": found is not None}
            if found is not None:
                row.update(
                    effect_cosine=effect[key],
                    decoder_cosine=decoder[key],
                    effect_rank=effect_rank[key],
                    decoder_rank=decoder_rank[key],
                    expected_cooccurrence=float(found.get("expected_cooccurrence", float("nan"))),
                )
            elif all_decoder_cosines is not None and key in all_decoder_cosines:
                row["decoder_cosine"] = float(all_decoder_cosines[key])
            rows.append(row)
    return Evaluation(not failures, failures, len(pairs), rankings, rows, (lowest, highest))


def format_evaluation(ev: Evaluation) -> str:
    """A short table: the planted pairs and controls, the rankings, the verdict."""

    def num(row: dict, key: str, fmt: str) -> str:
        return format(row[key], fmt) if key in row else "-"

    lines = [
        f"candidates (compared pairs that never fire together): {ev.n_candidates}",
        f"{'pair':>12}  {'kind':<12} {'effect cos':>10} {'rank':>5} {'decoder cos':>11} "
        f"{'rank':>5} {'expected co-occ':>15}",
    ]
    for row in ev.rows:
        pair = f"({row['pair'][0]}, {row['pair'][1]})"
        if not row["in_output"]:
            note = "not in output" + (" (co-occur)" if row["kind"] == "co-occurring" else "")
            lines.append(
                f"{pair:>12}  {row['kind']:<12} {note:>16} {num(row, 'decoder_cosine', '.3f'):>11}"
            )
            continue
        lines.append(
            f"{pair:>12}  {row['kind']:<12} {row['effect_cosine']:>10.3f} {row['effect_rank']:>5} "
            f"{row['decoder_cosine']:>11.3f} {row['decoder_rank']:>5} "
            f"{row['expected_cooccurrence']:>15.1f}"
        )
    lowest, highest = ev.margin
    if lowest is not None and highest is not None:
        lines.append(f"effect cosine: lowest planted {lowest:.3f}, highest other {highest:.3f}")
    width = max(len(r.name) for r in ev.rankings)
    k = ev.rankings[0].k
    lines.append(f"{'ranking':<{width}}  precision@{k}  recall@{k}")
    for r in ev.rankings:
        lines.append(f"{r.name:<{width}}  {r.precision:>11.2f}  {r.recall:>8.2f}")
    lines.append("PASS" if ev.passed else "FAIL: " + "; ".join(ev.failures))
    return "\n".join(lines)


# -- the run -----------------------------------------------------------------------------------


def run(config: ValidateConfig, slug: str = KIND) -> tuple[Path, Evaluation]:
    """Build the tiny model and the SAEs, run the three stages, check the pairs (module
    docstring); returns the run directory and the evaluation."""
    from sae_hacking.runs.rundir import RunDir

    # Nothing here resumes: a run that fails at any stage leaves nothing, and runs again.
    with RunDir.create(
        config, KIND, slug, OUTPUTS, output_dir=config.output_dir, resume=None
    ) as rundir:
        from sae_hacking.absorption.planted.saes import build_inputs

        inputs = build_inputs(config, rundir.path)
        return rundir.path, _search_and_check(config, rundir.path, inputs)


def _search_and_check(config: ValidateConfig, run_dir: Path, inputs) -> Evaluation:
    import json

    from sae_hacking.absorption.ablation import run as ablation_run
    from sae_hacking.absorption.configs import AblateConfig, CooccurrenceConfig, PairsConfig
    from sae_hacking.absorption.cooccurrence import run as cooccurrence_run
    from sae_hacking.absorption.pairs import run as pairs_run
    from sae_hacking.atomic import atomic_write_json
    from sae_hacking.config import from_flat, to_flat

    common = {
        "model": str(inputs.model),
        "device": "cpu",
        "ablator_sae_release": str(inputs.ablator),
        "dataset_id": str(inputs.prompts),
        "max_tokens_in_prompt": config.max_tokens_in_prompt,
        "n_prompts": config.n_prompts,
        "batch_size": 16,
        "never_save": True,
        "quiet": config.quiet,
    }
    co_path = cooccurrence_run.run(
        from_flat(CooccurrenceConfig, {**common, "output_dir": str(run_dir / "cooccurrences")})
    )
    ablate = {
        **common,
        "reader_sae_release": str(inputs.reader),
        # Every active latent of every prompt is ablated: the planted ones get many ablations.
        "abridge_ablations_to": config.d_sae,
        "output_dir": str(run_dir / "ablations"),
    }
    ab_path = ablation_run.run(from_flat(AblateConfig, ablate))
    pairs = {
        "input_path": str(ab_path),
        "cooccurrence_path": str(co_path),
        # -1 keeps every pair that never co-occurs: the whole candidate set, to rank.
        "cosine_sim_threshold": -1.0,
        "cooccurrence_threshold": 0,
        # Planted pairs never fire together by construction: the candidates are the pairs that
        # never do (pairs' default also keeps rare co-occurrence; README: on planted geometry
        # that admits random pairs whose raw effects outrank a planted pair).
        "max_cooccurrence_share": 0.0,
        "max_pairs": max(1, config.d_sae * (config.d_sae - 1) // 2),
        "explanations_file": str(inputs.explanations),
        "device": "cpu",
        "output_dir": str(run_dir / "pairs"),
        "quiet": config.quiet,
    }
    pairs_dir = pairs_run.run(from_flat(PairsConfig, pairs))
    result = json.loads((Path(pairs_dir) / "pairs.json").read_text(encoding="utf-8"))
    plan = inputs.plan
    evaluation = evaluate(
        result, plan.planted, plan.cooccurring, plan.exclusive, inputs.all_decoder_cosines
    )
    atomic_write_json(
        run_dir / "validation.json",
        {"settings": to_flat(config), "plan": plan.to_json(), **evaluation.to_json()},
    )
    return evaluation
