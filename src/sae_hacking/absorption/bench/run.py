"""``sae-hacking absorption-bench``: absorption that SAE training produces, in a tiny LM whose
features are known, and the absorption search scored against it.

For each seed: a world (:mod:`~sae_hacking.absorption.bench.world`: a tiny Gemma-2 whose
ablator hook carries ``a·g_group + b·u_token``, whose later block reads the groups), a reader
SAE trained at the reader hook, and for each width and architecture an ablator SAE trained at
the ablator hook, all by the ``train`` command's own :func:`sae_hacking.train.run.run`. Each
ablator SAE is labelled from the truth (:mod:`~sae_hacking.absorption.bench.labels`: parent and
absorbing latents, absorption rate), then the search runs through the commands' run functions
(``cooccurrences`` → ``ablate`` → ``pairs``, the latter three times: every pair with effects
compared by sign and raw, and once with ``pairs``' defaults, as a user runs it). Every ranking is
scored against the absorption pairs under every candidate rule
(:mod:`~sae_hacking.absorption.bench.ranking`; the tables: :mod:`~sae_hacking.absorption.bench.summary`).

The run directory holds ``seedS/world/``, ``seedS/reader/``, ``seedS/ARCH-wW/`` (the SAE's
training run, ``cooccurrences/``, ``ablations/``, ``pairs-sign/``, ``pairs-raw/``, ``pairs/``,
``labels.json``), and ``bench.json`` (every number), ``bench.md`` (the tables) and
``bench.html`` (the tables, precision/recall curves and per-group absorption; PNGs beside it).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from sae_hacking.absorption.bench.config import KIND, OUTPUTS, BenchConfig
from sae_hacking.absorption.bench.summary import markdown, summarize
from sae_hacking.absorption.configs import PairsConfig

PAIRS_DEFAULTS = PairsConfig()

# Precision and recall are reported at these ranks, and at the number of truth pairs.
KS = (5, 10, 20)
READER_WIDTH, READER_K = 64, 4
# The candidate rule that ``pairs`` applies by default (``rare``, at its default share).
DEFAULT_RULE = "rare"


def run(config: BenchConfig) -> tuple[Path, dict]:
    from sae_hacking.runs.rundir import RunDir

    # Nothing here resumes: a bench that fails leaves nothing and runs again.
    with RunDir.create(
        config, KIND, KIND, OUTPUTS, output_dir=config.output_dir, resume=None
    ) as rundir:
        out = rundir.path
        rows = []
        for seed in config.seeds:
            rows += _seed(config, out / f"seed{seed}", seed)
        summary = summarize(rows)
        from sae_hacking.atomic import atomic_write_json, atomic_write_text
        from sae_hacking.config import to_flat

        bench = {"settings": to_flat(config), **summary, "runs": rows}
        atomic_write_json(out / "bench.json", bench)
        atomic_write_text(out / "bench.md", markdown(summary, config))
        from sae_hacking.reports.bench import read_group_rates, write_bench_report

        write_bench_report(out, bench, read_group_rates(out, rows))
        print(f"run directory: {out}", file=sys.stderr)
        print(markdown(summary, config))
        return out, summary


def _seed(config: BenchConfig, folder: Path, seed: int) -> list[dict]:
    import torch

    from sae_hacking.absorption.bench.labels import label_latents
    from sae_hacking.absorption.bench.world import (
        make_world,
        probe_accuracy,
        read_real_tokens,
    )
    from sae_hacking.atomic import atomic_write_json
    from sae_hacking.lm.hooked import HookedLM
    from sae_hacking.saes.releases import load_sae

    world = make_world(folder / "world", groups=config.groups, seed=seed, prompts=config.prompts)
    lm = HookedLM.from_pretrained(str(world.path), device="cpu", dtype="float32")
    probe = probe_accuracy(world, lm)
    acts_NM, ids_N, _ = read_real_tokens(world, lm, world.ablator_hook)
    group_N = world.group_V[ids_N]
    reader, _ = _train(
        config, world, world.reader_hook, "topk", READER_WIDTH, READER_K, seed, folder / "reader"
    )
    rows = []
    for width in config.widths:
        for architecture in config.architectures:
            where = folder / f"{architecture}-w{width}"
            sae_path, metrics = _train(
                config,
                world,
                world.ablator_hook,
                architecture,
                width,
                config.k,
                seed,
                where / "train",
            )
            sae = load_sae(str(sae_path))
            with torch.no_grad():
                acts_NL = sae.encode(acts_NM)
                rows_LM = sae.feature_vectors() if hasattr(sae, "feature_vectors") else sae.W_dec
            labels = label_latents(acts_NL, group_N, ids_N, rows_LM, world.parents_GM)
            atomic_write_json(where / "labels.json", labels.to_json())
            scores = _search(config, world, sae_path, reader, labels, where)
            rows.append(
                {
                    "seed": seed,
                    "architecture": architecture,
                    "width": width,
                    "probe_accuracy": probe,
                    "absorption_rate": _number(labels.absorption_rate),
                    "absorption_rate_weighted": _number(labels.absorption_rate_weighted),
                    "n_absorbing": labels.n_absorbing,
                    "n_absorption_pairs": len(labels.absorption_pairs),
                    "n_sibling_pairs": len(labels.sibling_pairs),
                    "fvu": _number(metrics.get("fvu")),
                    "l0": _number(metrics.get("l0")),
                    "dead_frac": _number(metrics.get("dead_frac")),
                    **scores,
                }
            )
    return rows


def _train(config, world, hook, architecture, width, k, seed, folder):
    """One SAE trained by the ``train`` command's run function; its ``sae.safetensors``."""
    from sae_hacking.config import from_flat
    from sae_hacking.train.config import TrainConfig
    from sae_hacking.train.run import run as train_run

    hierarchical = architecture in ("hierarchical", "tiered")  # E/3 parents, 2 children each
    flat = {
        "model": str(world.path),
        "device": "cpu",
        "dataset_id": str(world.path / "prompts.txt"),
        "max_tokens_in_prompt": world.config.max_words + 1,
        "batch_size": 32,
        "hook": hook,
        "architecture": architecture,
        # Matched budget: the hierarchical SAE's parents each bring two children.
        "sae_hidden_dim": width // 3 if hierarchical else width,
        "k": max(1, k // 2) if hierarchical else k,
        "max_step": config.steps,
        "batch_tokens": 256,
        "buffer_tokens": 4096,
        "lr": 3e-3,
        "eval_prompts": 20,
        "eval_every": config.steps,
        "log_every": 50,
        "checkpoint_every": config.steps,
        "seed": seed,
        "output_dir": str(folder),
        "quiet": True,
    }
    run_dir, metrics = train_run(from_flat(TrainConfig, flat))
    return Path(run_dir) / "sae.safetensors", metrics


def _search(config, world, sae_path: Path, reader_path: Path, labels, folder: Path) -> dict:
    """``cooccurrences`` → ``ablate`` → ``pairs``, every ranking scored under every candidate
    rule, and what ``pairs`` returns with its defaults."""
    from sae_hacking.absorption.ablation import run as ablation_run
    from sae_hacking.absorption.bench.ranking import (
        PairColumns,
        candidate_rules,
        in_set,
        rankings,
        score_ranking,
    )
    from sae_hacking.absorption.configs import AblateConfig, CooccurrenceConfig, PairsConfig
    from sae_hacking.absorption.cooccurrence import run as cooccurrence_run
    from sae_hacking.absorption.pairs import run as pairs_run
    from sae_hacking.config import from_flat

    common = {
        "model": str(world.path),
        "device": "cpu",
        "ablator_sae_release": str(sae_path),
        "dataset_id": str(world.path / "prompts.txt"),
        "max_tokens_in_prompt": world.config.max_words + 1,
        "n_prompts": config.prompts,
        "batch_size": 16,
        "never_save": True,
        "quiet": True,
    }
    co = cooccurrence_run.run(
        from_flat(CooccurrenceConfig, {**common, "output_dir": str(folder / "cooccurrences")})
    )
    n_latents = labels.n_latents
    ablate = {
        **common,
        "reader_sae_release": str(reader_path),
        "abridge_ablations_to": n_latents,  # every active latent of every prompt
        "output_dir": str(folder / "ablations"),
    }
    ab = ablation_run.run(from_flat(AblateConfig, ablate))

    def pairs(name: str, **settings) -> dict:
        flat = {
            "input_path": str(ab),
            "cooccurrence_path": str(co),
            "max_pairs": max(1, n_latents * (n_latents - 1) // 2),
            "device": "cpu",
            "output_dir": str(folder / name),
            "quiet": True,
            **settings,
        }
        pairs_dir = pairs_run.run(from_flat(PairsConfig, flat))
        return json.loads((Path(pairs_dir) / "pairs.json").read_text("utf-8"))

    # Every pair (any cosine, any co-occurrence), effects compared both ways; the rules below
    # choose the candidates (scoring runs: no side-by-side view, nobody browses them). And pairs
    # as a user runs it: its defaults, view included.
    every = {"cosine_sim_threshold": -1.0, "max_cooccurrence_share": 1.0, "evidence_pairs": 0}
    columns = {
        compare: PairColumns.from_result(pairs(f"pairs-{compare}", compare=compare, **every))
        for compare in ("sign", "raw")
    }
    returned = PairColumns.from_result(pairs("pairs"))
    truth, siblings = labels.absorption_pairs, labels.sibling_pairs
    ks = sorted({*KS, max(1, len(truth))})
    by_rule = {}
    for rule, keep in candidate_rules(PAIRS_DEFAULTS.max_cooccurrence_share).items():
        scores = {}
        for compare, cols in columns.items():
            cols = cols.subset(keep(cols))
            for name, score_K in rankings(cols).items():
                if compare == "raw" or name == "effect_sign":  # the rest: from raw effects
                    scored = score_ranking(
                        cols.first_K, cols.second_K, score_K, truth, ks, siblings
                    )
                    scores[name] = {**scored.to_json(), "n_latents": n_latents}
        by_rule[rule] = scores
    hits = in_set(returned.first_K, returned.second_K, set(truth))
    n = returned.first_K.numel()
    return {
        "rankings": by_rule[DEFAULT_RULE],
        "rules": {
            rule: {name: _rule_cell(score) for name, score in scores.items()}
            for rule, scores in by_rule.items()
        },
        "returned": {
            "pairs": n,
            "truth": int(hits.sum()),
            "siblings": int(in_set(returned.first_K, returned.second_K, set(siblings)).sum()),
            "precision": int(hits.sum()) / n if n else None,
            "recall": int(hits.sum()) / len(truth) if truth else None,
        },
    }


def _rule_cell(score: dict) -> dict:
    keys = ("average_precision", "n_candidates", "n_truth_candidates", "n_truth")
    return {key: score[key] for key in keys}


def _number(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value
