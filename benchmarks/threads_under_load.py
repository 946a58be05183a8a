"""CPU threads under load: ``sae-hacking train`` tokens/s with every core's worth of torch
threads (torch's default before the automatic rule), one thread, and the automatic rule
(``--threads 0``, :mod:`sae_hacking.threads`), on an idle machine and with ``--load-procs``
busy-loop processes running beside it (another user's job, a second command).

Each measurement is a fresh ``sae-hacking train`` process on a tiny Gemma-2 model written to a
temporary folder (offline); the figure is the run's own ``tokens_per_s`` (training steps only,
model load excluded). Reported: tokens/s of each setting, and the ratios auto / all cores and
auto / one thread, idle and under load.

    uv run python benchmarks/threads_under_load.py            # 2 x 3 runs of 40,960 tokens
    uv run python benchmarks/threads_under_load.py --quick    # a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import parse_args, write_json

from sae_hacking.threads import available_cpus

QUICK = {"tokens": 512, "width": 64, "settings": ["all_cores", "auto"], "eval_prompts": 4}
BUSY = "import time\nend = time.monotonic() + 600\nwhile time.monotonic() < end: pass\n"


def train(model: Path, out: Path, threads: int, args) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    command = [
        sys.executable, "-m", "sae_hacking.cli", "train", "--model", str(model),
        "--dataset-id", str(model / "prompts.txt"), "--hook", "blocks.1.hook_resid_post",
        "--device", "cpu", "--batch-tokens", "256", "--buffer-tokens", "1024",
        "--train-tokens", str(args.tokens), "--sae-hidden-dim", str(args.width), "--k", "8",
        "--eval-every", "1000000", "--eval-prompts", str(args.eval_prompts), "--threads", str(threads), "--output-dir", str(out),
        "--quiet",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        sys.exit(f"train with --threads {threads} failed:\n{done.stderr}")
    return json.loads((out / "metrics.json").read_text())["tokens_per_s"]


def measure(model: Path, folder: Path, label: str, cpus: int, args) -> dict[str, float]:
    rates = {}
    for name in args.settings:
        threads = {"all_cores": cpus, "one": 1, "auto": 0}[name]
        rates[name] = train(model, folder / f"{label}-{name}", threads, args)
        print(f"{label:>5}  threads {name:<9} {rates[name]:>10,.0f} tokens/s", flush=True)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=40_960, help="training tokens per run")
    parser.add_argument("--width", type=int, default=1024, help="SAE latents")
    parser.add_argument("--load-procs", type=int, default=1, help="busy processes beside it")
    parser.add_argument(
        "--settings", nargs="+", default=["all_cores", "one", "auto"],
        choices=["all_cores", "one", "auto"], help="thread settings to measure",
    )  # fmt: skip
    parser.add_argument("--eval-prompts", type=int, default=32, help="held-out prompts")
    args = parse_args(parser, QUICK)
    from sae_hacking.lm.tiny import make_tiny_model

    cpus = available_cpus()
    results = {"cpus": cpus}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = make_tiny_model(folder / "tiny", "gemma2", n_layers=3, prompts=400)
        results["idle"] = measure(model, folder, "idle", cpus, args)
        busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(args.load_procs)]
        try:
            results["loaded"] = measure(model, folder, "load", cpus, args)
        finally:
            for proc in busy:
                proc.kill()
                proc.wait()
    for label in ("idle", "loaded"):
        rates = results[label]
        for other in ("all_cores", "one"):
            if "auto" in rates and other in rates:
                ratio = results[f"{label}_auto_vs_{other}"] = rates["auto"] / rates[other]
                print(f"{label}: auto / {other.replace('_', ' ')} {ratio:.2f}x")
    write_json(args, results)


if __name__ == "__main__":
    main()
