"""``build_pairs_result``: a pairs.json dict of the documented shape (see absorption/pairs/run.py),
built by hand so the report is tested without running the pair finder."""

import math

HOSTILE = "<script>window.pwned=1</script>"
QUOTES = '"quotes" & <b>tags</b>'


def build_pairs_result(n_pairs: int = 6, np_id: str | None = "gemma-2-2b/20-gemmascope-mlp-65k"):
    tokens = 10_000
    pairs = []
    for k in range(n_pairs):
        id1, id2 = 10 * k + 3, 10 * k + 7
        f1, f2 = (50 + 13 * k) / tokens, (80 + 7 * k) / tokens
        expected = tokens * f1 * f2
        explanations = {0: (HOSTILE, QUOTES), 1: ("capital letters", "")}
        e1, e2 = explanations.get(k, (f"words about topic {k}", f"more about topic {k}"))
        pairs.append(
            {
                "ablator1": _latent(id1, e1, round(f1 * tokens), 5 + k, np_id),
                "ablator2": _latent(id2, e2, round(f2 * tokens), 3 + k, np_id),
                # Effect cosines descending, as the pair finder sorts them; decoder cosines not.
                "cosine_similarity": round(0.95 - 0.11 * k, 4),
                "cooccurrence_count": k % 3,
                "decoder_cosine": round(0.2 + 0.13 * ((k * 5) % n_pairs), 4),
                "expected_cooccurrence": expected,
                "p_no_cooccurrence": math.exp(-expected),
            }
        )
    edges = [-1 + 0.1 * i for i in range(21)]
    counts = [0] * 10 + [400, 200, 90, 40, 10, 4, 2, 1, 1, 0]
    meta = {
        "kind": "pairs",
        "settings": {"cosine_sim_threshold": 0.0, "no_log_scale": False, "max_pairs": 100000},
        "provenance": {"git_commit": "abc123", "command": f"sae-hacking pairs {HOSTILE}"},
        "inputs": {
            "ablations": f"/runs/{QUOTES}/ablations.safetensors.zst",
            "cooccurrences": "/runs/c/cooccurrences.safetensors",
            "model": "google/gemma-2-2b",
            "ablator_sae_release": "gemma-scope-2b-pt-mlp-canonical",
            "ablator_sae_id": "layer_20/width_65k/canonical",
            "hook": "blocks.20.hook_mlp_out",
            "neuronpedia_id": np_id,
            "tokens": tokens,
        },
        "compare": "sign",
        "n_compared": 40,
        "n_pairs_passing": sum(counts),
        "n_pairs_kept": n_pairs,
        "histogram": {"edges": edges, "counts": counts},
        "explanations": {"source": "file", "warning": None},
    }
    return {"meta": meta, "pairs": pairs}


def _latent(index, explanation, activations, ablations, np_id):
    url = f"https://www.neuronpedia.org/{np_id}/{index}" if np_id else None
    return {
        "id": index,
        "explanation": explanation,
        "activation_count": activations,
        "ablation_count": ablations,
        "url": url,
    }
