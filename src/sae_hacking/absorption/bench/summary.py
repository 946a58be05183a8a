"""The absorption bench's summary over seeds (``bench.json``'s ``table``) and its tables
(``bench.md``), from the per-run rows that :mod:`sae_hacking.absorption.bench.run` writes.

A row holds, per seed × architecture × width: the SAE's numbers (absorption rate, FVU, L0, …),
``rankings`` (every ranking scored under the candidate rule ``pairs`` applies by default),
``rules`` (average precision of every ranking under every candidate rule:
:func:`sae_hacking.absorption.bench.ranking.candidate_rules`) and ``returned`` (what ``pairs``
returns with its defaults: how many pairs, how many are absorption pairs).
"""

from __future__ import annotations

import math
import statistics

RANKING_NAMES = ("effect_sign", "effect_raw", "decoder", "cooccurrence", "combined")
RULE_NAMES = ("never", "rare", "all")
RULE_WORDS = {
    "never": "never fire together (legacy)",
    "rare": "fire together on at most half the rarer one's tokens (pairs' default)",
    "all": "every pair",
}
SAE_KEYS = ("absorption_rate", "n_absorbing", "n_absorption_pairs", "fvu", "l0", "dead_frac")


def mean_std(values) -> tuple[float, float] | None:
    values = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not values:
        return None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(rows: list[dict]) -> dict:
    """Per architecture and width, over seeds: the SAE's numbers, the share of absorption pairs
    each candidate rule keeps, what ``pairs`` returns, and every ranking's average precision
    (per rule) and precision at the number of truth pairs (under the default rule)."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["architecture"], row["width"]), []).append(row)
    table = []
    for (architecture, width), runs in groups.items():
        entry = {"architecture": architecture, "width": width, "seeds": [r["seed"] for r in runs]}
        for key in (*SAE_KEYS, "probe_accuracy"):
            entry[key] = mean_std([r[key] for r in runs])
        # The most any ranking can find under a rule: the absorption pairs it keeps.
        entry["truth_kept"] = {
            rule: mean_std(
                r["rules"][rule]["decoder"]["n_truth_candidates"] / r["n_absorption_pairs"]
                for r in runs
                if r["n_absorption_pairs"]
            )
            for rule in RULE_NAMES
        }
        entry["returned"] = {
            key: mean_std(r["returned"][key] for r in runs)
            for key in ("pairs", "truth", "siblings", "precision", "recall")
        }
        for name in RANKING_NAMES:
            scores = [r["rankings"][name] for r in runs]
            at_truth = [s["ks"].index(max(1, s["n_truth"])) for s in scores]
            entry[name] = {
                "average_precision": mean_std(s["average_precision"] for s in scores),
                "precision_at_truth": mean_std(
                    s["precision"][i] for s, i in zip(scores, at_truth, strict=True)
                ),
                "siblings_at_truth": mean_std(
                    float(s["siblings"][i]) for s, i in zip(scores, at_truth, strict=True)
                ),
                "per_seed_average_precision": [s["average_precision"] for s in scores],
            }
        entry["rules"] = {
            rule: {
                name: [r["rules"][rule][name]["average_precision"] for r in runs]
                for name in RANKING_NAMES
            }
            for rule in RULE_NAMES
        }
        table.append(entry)
    return {"table": table}


def cell(value) -> str:
    if value is None:
        return "—"
    mean, std = value
    return f"{mean:.3f} ± {std:.3f}"


def wins(entry: dict, a: tuple[str, str], b: tuple[str, str]) -> str:
    """On how many seeds ranking/rule ``a`` has a higher AP than ``b``, which, and by how much."""
    seeds = entry["seeds"]
    ap_a, ap_b = entry["rules"][a[1]][a[0]], entry["rules"][b[1]][b[0]]
    pairs = [(s, x, y) for s, x, y in zip(seeds, ap_a, ap_b, strict=True) if _ok(x) and _ok(y)]
    if not pairs:
        return "—"
    won = [s for s, x, y in pairs if x > y]
    seeds_word = "seed" if len(won) == 1 else "seeds"
    which = f" ({seeds_word} {' '.join(map(str, won))})" if 0 < len(won) < len(pairs) else ""
    difference = statistics.fmean(x - y for _, x, y in pairs)
    return f"{len(won)}/{len(pairs)}{which}, {difference:+.3f}".replace("-", "−")


def _ok(value) -> bool:
    return value is not None and not math.isnan(value)


def markdown(summary: dict, config) -> str:
    table = summary["table"]
    lines = [
        f"absorption-bench: seeds {' '.join(map(str, config.seeds))}, {config.groups} groups, "
        f"{config.prompts} prompts, {config.steps} steps, k {config.k}",
        "",
        "| SAE | width | absorption rate | absorbing latents | absorption pairs kept: never "
        "together | kept: rarely together | pairs `pairs` returns | their precision | precision "
        "of its first n (n: absorption pairs) | FVU | L0 | dead |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in table:
        kept, returned = e["truth_kept"], e["returned"]
        lines.append(
            f"| {e['architecture']} | {e['width']} | {cell(e['absorption_rate'])} | "
            f"{cell(e['n_absorbing'])} | {cell(kept['never'])} | {cell(kept['rare'])} | "
            f"{cell(returned['pairs'])} | {cell(returned['precision'])} | "
            f"{cell(e['effect_raw']['precision_at_truth'])} | {cell(e['fvu'])} | "
            f"{cell(e['l0'])} | {cell(e['dead_frac'])} |"
        )
    lines += [
        "",
        "Average precision against the absorption pairs (candidates: pairs that fire together "
        "on at most half the rarer one's tokens, as `pairs` keeps by default):",
        "",
        "| SAE | width | " + " | ".join(RANKING_NAMES) + " |",
        "|---|---|" + "---|" * len(RANKING_NAMES),
    ]
    for e in table:
        cells = [cell(e[name]["average_precision"]) for name in RANKING_NAMES]
        lines.append(f"| {e['architecture']} | {e['width']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Average precision by candidate rule: "
        + "; ".join(f"{k}: {v}" for k, v in RULE_WORDS.items()),
        "",
        "| SAE | width | "
        + " | ".join(f"{name} {rule}" for name in ("effect_raw", "decoder") for rule in RULE_NAMES)
        + " |",
        "|---|---|" + "---|" * (2 * len(RULE_NAMES)),
    ]
    for e in table:
        cells = [
            cell(mean_std(e["rules"][rule][name]))
            for name in ("effect_raw", "decoder")
            for rule in RULE_NAMES
        ]
        lines.append(f"| {e['architecture']} | {e['width']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Per seed (seeds where the first has the higher AP, mean AP difference):",
        "",
        "| SAE | width | effect_raw vs decoder (rarely together) | effect_raw vs decoder (never "
        "together) | effect_raw vs effect_sign | rarely vs never together (effect_raw) |",
        "|---|---|---|---|---|---|",
    ]
    for e in table:
        raw_rare, raw_never = ("effect_raw", "rare"), ("effect_raw", "never")
        lines.append(
            f"| {e['architecture']} | {e['width']} | {wins(e, raw_rare, ('decoder', 'rare'))} | "
            f"{wins(e, raw_never, ('decoder', 'never'))} | "
            f"{wins(e, raw_rare, ('effect_sign', 'rare'))} | {wins(e, raw_rare, raw_never)} |"
        )
    return "\n".join(lines) + "\n"
