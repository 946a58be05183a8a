"""Prompt-server latency: ``POST /api/activations`` with the server warm (SAE cached) vs the
legacy way (the SAE loaded from disk on every request), same model, same prompt, one process.

A tiny model (:func:`sae_hacking.lm.tiny.make_tiny_model`) and a random JumpReLU SAE of
``--d-sae`` latents (16k by default, so loading it costs what a real file of that width costs
per input dimension) are written to a temporary folder; everything runs offline. Both apps are
FastAPI applications called through FastAPI's TestClient (in-process ASGI, the same overhead
for both): ours is :func:`sae_hacking.serve.app.create_app`; the reference has one handler that
loads the SAE with :func:`sae_hacking.saes.releases.load_sae`, then computes the same answer
(:mod:`sae_hacking.serve.highlight`). The prompt is ``--tokens`` tokens long. Reported: p50 and
p99 latency of each, the p50 ratio, and the share of the reference's time spent loading the SAE.

    uv run python benchmarks/serve_latency.py            # 16k latents, 200 requests each
    uv run python benchmarks/serve_latency.py --quick    # a smoke test
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from _common import parse_args, write_json  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from sae_hacking.lm.hooked import HookedLM  # noqa: E402
from sae_hacking.lm.source import ModelSource  # noqa: E402
from sae_hacking.lm.tiny import generate_texts, make_tiny_model  # noqa: E402
from sae_hacking.saes.io import save_sae_checkpoint  # noqa: E402
from sae_hacking.saes.releases import load_sae  # noqa: E402
from sae_hacking.serve.app import ActivationsRequest, create_app  # noqa: E402
from sae_hacking.serve.config import ServeConfig  # noqa: E402
from sae_hacking.serve.highlight import highlight, summary  # noqa: E402
from tests.random_saes import random_sae  # noqa: E402

LOOPBACK = "http://127.0.0.1:9000"  # a Host the server answers to
QUICK = {"requests": 20, "warmup": 3, "d_sae": 1024}
HOOK = "blocks.1.hook_resid_post"


def reference_app(lm: HookedLM, max_tokens: int, load_times: list[float]) -> FastAPI:
    """The legacy way: every request loads its SAE from disk, then drops it."""
    app = FastAPI()

    @app.post("/api/activations")
    def activations(body: ActivationsRequest) -> dict:
        start = time.perf_counter()
        sae = load_sae(body.sae_release, body.sae_id, device=lm.device)
        load_times.append(time.perf_counter() - start)
        result = highlight(lm, sae, sae.hook_name, body.prompt, max_tokens)
        return {"sae": {"d_sae": sae.d_sae}, **summary(result, body.feature_idx, body.top_k)}

    return app


def prompt_of(lm: HookedLM, n_tokens: int) -> str:
    """A prompt of ``n_tokens`` tokens (BOS not counted)."""
    text = " ".join(generate_texts(50, seed=7, min_words=20, max_words=40))
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"][:n_tokens]
    return lm.tokenizer.decode(ids)


def timed(client: TestClient, body: dict, warmup: int, n: int) -> list[float]:
    for _ in range(warmup):
        assert client.post("/api/activations", json=body).status_code == 200
    times = []
    for _ in range(n):
        start = time.perf_counter()
        reply = client.post("/api/activations", json=body)
        times.append(time.perf_counter() - start)
        assert reply.status_code == 200, reply.text
    return times


def percentile(times: list[float], q: float) -> float:
    return statistics.quantiles(times, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="timed requests per method")
    parser.add_argument("--warmup", type=int, default=10, help="untimed requests first")
    parser.add_argument("--d-sae", type=int, default=16384, help="SAE latents")
    parser.add_argument("--tokens", type=int, default=64, help="prompt length in tokens")
    parser.add_argument("--layers", type=int, default=2, help="tiny model layers")
    parser.add_argument("--d-model", type=int, default=64, help="tiny model width (SAE input)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (model and SAEs)")
    args = parse_args(parser, QUICK)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        model_path = make_tiny_model(
            Path(tmp) / "model", "gemma2", n_layers=args.layers, d_model=args.d_model
        )
        sae_path = Path(tmp) / "saes" / "sae.safetensors"
        sae_path.parent.mkdir()
        save_sae_checkpoint(random_sae(HOOK, args.d_sae, seed=0, d_in=args.d_model), sae_path)
        lm = HookedLM.from_pretrained(str(model_path), device=args.device, threads=args.threads)
        prompt = prompt_of(lm, args.tokens)
        body = {"prompt": prompt, "sae_release": str(sae_path), "feature_idx": 3, "top_k": 5}
        config = ServeConfig(
            model=ModelSource(str(model_path), device=args.device),
            sae_dir=(str(sae_path.parent),),
            quiet=True,
        )
        # (the server answers loopback Host headers only; TestClient's default is "testserver")
        ours = timed(
            TestClient(create_app(config, lm), base_url=LOOPBACK), body, args.warmup, args.requests
        )
        load_times: list[float] = []
        legacy_app = reference_app(lm, config.max_prompt_tokens, load_times)
        legacy = timed(TestClient(legacy_app), body, args.warmup, args.requests)
        n_tokens = len(
            TestClient(create_app(config, lm), base_url=LOOPBACK)
            .post("/api/activations", json=body)
            .json()["tokens"]
        )

    load_share = sum(load_times[args.warmup :]) / sum(legacy)
    results = {
        "prompt_tokens": n_tokens,
        "ours_p50_ms": 1e3 * statistics.median(ours),
        "ours_p99_ms": 1e3 * percentile(ours, 99),
        "seed_p50_ms": 1e3 * statistics.median(legacy),  # keys as earlier results files name them
        "seed_p99_ms": 1e3 * percentile(legacy, 99),
        "seed_sae_load_share": load_share,
    }
    results["p50_speedup"] = results["seed_p50_ms"] / results["ours_p50_ms"]
    print(
        f"prompt: {n_tokens} tokens; SAE: {args.d_sae} latents at {HOOK}; {args.requests} "
        f"requests; device {args.device}"
    )
    print(f"{'':24}{'p50 ms':>10}{'p99 ms':>10}")
    print(
        f"{'server (SAE cached)':24}{results['ours_p50_ms']:>10.2f}{results['ours_p99_ms']:>10.2f}"
    )
    print(
        f"{'legacy (SAE per request)':24}{results['seed_p50_ms']:>10.2f}{results['seed_p99_ms']:>10.2f}"
    )
    print(
        f"p50 speed-up {results['p50_speedup']:.1f}x (target >= 10x); SAE loading is "
        f"{100 * load_share:.0f}% of the legacy request time"
    )
    write_json(args, results)


if __name__ == "__main__":
    main()
