"""``sae-hacking absorption-bench``: absorption that SAE training produces, in a tiny LM whose
features are known, and the absorption search scored against it.

For each seed: a world (:mod:`~sae_hacking.absorption.bench.world`: a tiny Gemma-2 whose
ablator hook carries ``a·g_group + b·u_token``, whose later block reads the groups), a reader
SAE trained at the reader hook, and for each width and architecture an ablator SAE trained at
the ablator hook, all by the ``train`` command's own :func:`sae_hacking.train.run.run`. Each
ablator SAE is labelled from the truth (:mod:`~sae_hacking.absorption.bench.labels`: parent and
absorbing latents, absorption rate), then the search runs through the commands' run functions
(``cooccurrences`` → ``ablate`` → ``pairs``, the latter twice: effects compared by sign and raw,
both keeping every pair that never fires together), and every ranking of those candidates is
scored against the absorption pairs (:mod:`~sae_hacking.absorption.bench.ranking`).

The run directory holds ``seedS/world/``, ``seedS/reader/``, ``seedS/ARCH-wW/`` (the SAE's
training run, ``cooccurrences/``, ``ablations/``, ``pairs-sign/``, ``pairs-raw/``,
``labels.json``), and ``bench.json`` (every number), ``bench.md`` (the tables) and
``bench.html`` (the tables, precision/recall curves and per-group absorption; PNGs beside it).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

from sae_hacking.absorption.bench.config import KIND, OUTPUTS, BenchConfig

# Precision and recall are reported at these ranks, and at the number of truth pairs.
KS = (5, 10, 20)
READER_WIDTH, READER_K = 64, 4
RANKING_NAMES = ("effect_sign", "effect_raw", "decoder", "cooccurrence", "combined")


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
                    "rankings": scores,
                }
            )
    return rows


def _train(config, world, hook, architecture, width, k, seed, folder):
    """One SAE trained by the ``train`` command's run function; its ``sae.safetensors``."""
    from sae_hacking.config import from_flat
    from sae_hacking.train.config import TrainConfig
    from sae_hacking.train.run import run as train_run

    hierarchical = architecture == "hierarchical"
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
    """``cooccurrences`` → ``ablate`` → ``pairs`` (sign and raw), every ranking scored."""
    from sae_hacking.absorption.ablation import run as ablation_run
    from sae_hacking.absorption.bench.ranking import PairColumns, rankings, score_ranking
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
    results = {}
    for compare, raw in (("sign", False), ("raw", True)):
        pairs = {
            "input_path": str(ab),
            "cooccurrence_path": str(co),
            "cosine_sim_threshold": -1.0,  # every never-co-occurring pair: the candidates
            "cooccurrence_threshold": 0,
            "skip_torch_sign": raw,
            "max_pairs": max(1, n_latents * (n_latents - 1) // 2),
            "device": "cpu",
            "output_dir": str(folder / f"pairs-{compare}"),
            "quiet": True,
        }
        pairs_dir = pairs_run.run(from_flat(PairsConfig, pairs))
        results[compare] = json.loads((Path(pairs_dir) / "pairs.json").read_text("utf-8"))
    truth, siblings = labels.absorption_pairs, labels.sibling_pairs
    ks = sorted({*KS, max(1, len(truth))})
    scored = {}
    for compare, result in results.items():
        columns = PairColumns.from_result(result)
        for name, score_K in rankings(columns).items():
            if compare == "raw" and name != "effect_raw":
                continue  # the other rankings do not depend on how effects were compared
            scored[name] = {
                **score_ranking(
                    columns.first_K, columns.second_K, score_K, truth, ks, siblings
                ).to_json(),
                "n_latents": n_latents,
            }
    return scored


def _number(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _mean_std(values: list[float | int | None]) -> tuple[float, float] | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(rows: list[dict]) -> dict:
    """Per architecture and width, over seeds: absorption, FVU, L0, dead latents, and every
    ranking's average precision, precision and recall at the number of truth pairs."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["architecture"], row["width"]), []).append(row)
    table = []
    for (architecture, width), runs in groups.items():
        entry = {"architecture": architecture, "width": width, "seeds": [r["seed"] for r in runs]}
        for key in (
            "absorption_rate",
            "n_absorbing",
            "n_absorption_pairs",
            "fvu",
            "l0",
            "dead_frac",
            "probe_accuracy",
        ):
            entry[key] = _mean_std([r[key] for r in runs])
        # The most any ranking can find: the absorption pairs that never fire together.
        entry["truth_among_candidates"] = _mean_std(
            [
                r["rankings"]["decoder"]["n_truth_candidates"] / r["n_absorption_pairs"]
                for r in runs
                if r["n_absorption_pairs"]
            ]
        )
        for name in RANKING_NAMES:
            scores = [r["rankings"][name] for r in runs if name in r["rankings"]]
            at_truth = [s["ks"].index(max(1, s["n_truth"])) for s in scores]
            entry[name] = {
                "average_precision": _mean_std([s["average_precision"] for s in scores]),
                "precision_at_truth": _mean_std(
                    [s["precision"][i] for s, i in zip(scores, at_truth, strict=True)]
                ),
                "siblings_at_truth": _mean_std(
                    [float(s["siblings"][i]) for s, i in zip(scores, at_truth, strict=True)]
                ),
                "per_seed_average_precision": [s["average_precision"] for s in scores],
            }
        table.append(entry)
    return {"table": table}


def _cell(value) -> str:
    if value is None:
        return "—"
    mean, std = value
    return f"{mean:.3f} ± {std:.3f}"


def markdown(summary: dict, config: BenchConfig) -> str:
    lines = [
        f"absorption-bench: seeds {' '.join(map(str, config.seeds))}, {config.groups} groups, "
        f"{config.prompts} prompts, {config.steps} steps, k {config.k}",
        "",
        "| SAE | width | absorption rate | absorbing latents | absorption pairs that never "
        "co-occur | FVU | L0 | dead |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in summary["table"]:
        lines.append(
            f"| {e['architecture']} | {e['width']} | {_cell(e['absorption_rate'])} | "
            f"{_cell(e['n_absorbing'])} | {_cell(e['truth_among_candidates'])} | "
            f"{_cell(e['fvu'])} | {_cell(e['l0'])} | {_cell(e['dead_frac'])} |"
        )
    lines += [
        "",
        "Average precision against the absorption pairs (candidates: pairs that never fire "
        "together):",
        "",
        "| SAE | width | " + " | ".join(RANKING_NAMES) + " |",
        "|---|---|" + "---|" * len(RANKING_NAMES),
    ]
    for e in summary["table"]:
        cells = [_cell(e[name]["average_precision"]) for name in RANKING_NAMES]
        lines.append(f"| {e['architecture']} | {e['width']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
