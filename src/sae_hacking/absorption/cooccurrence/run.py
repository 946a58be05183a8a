"""The ``cooccurrences`` run: exact latent co-occurrence counts over a text stream, with the
latents' evidence, resumable and shardable (:mod:`sae_hacking.runs.stream`). ``run(config)`` is
the whole command below the CLI; it imports nothing heavy until the output folder or resume
directory is checked. ``sae-hacking latents`` (:mod:`sae_hacking.absorption.evidence.run`)
is the same pass without the pair counts: :func:`run_pass`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sae_hacking.absorption.configs import CooccurrenceConfig
from sae_hacking.absorption.cooccurrence.identity import KIND, OUTPUTS, RESULTS_NAME, SLUG
from sae_hacking.runs.record import plan_run


def run(config: CooccurrenceConfig) -> Path:
    """The command: one process, or under ``torchrun`` this rank's shard of the run, merged
    by rank 0 (:mod:`sae_hacking.runs.distributed`). Returns the results path."""
    from sae_hacking.absorption.mergers import merger_of
    from sae_hacking.runs.distributed import run_streamed

    return run_streamed(config, KIND, SLUG, RESULTS_NAME, run_one, lambda: merger_of(KIND))


def run_one(config: CooccurrenceConfig) -> Path:
    """Count (or continue counting) and write ``cooccurrences.safetensors.zst``; returns it."""
    return run_pass(config, config.ablator, "ablator_", (KIND, SLUG, RESULTS_NAME, OUTPUTS))


def evidence_collector(config: Any, e: int, lm):
    """The evidence collector ``config.evidence`` asks for (``None`` when ``top_examples`` is
    0), on the device the counts live on."""
    options = config.evidence
    if not options.enabled:
        return None
    import torch

    from sae_hacking.absorption.evidence.collect import EvidenceCollector

    return EvidenceCollector(
        e,
        options.top_examples,
        options.samples,
        options.context_tokens,
        options.evidence_seed,
        lm.device if lm.device.type == "cuda" else torch.device("cpu"),
        config.run.shard_spec,
    )


def run_pass(config: Any, source: Any, prefix: str, names: tuple) -> Path:
    """One process's pass of ``cooccurrences`` (``config.rows`` set or not) or ``latents`` (no
    ``rows``: no pair counts) with the SAE ``source``; ``names`` = (kind, slug, results name,
    outputs). Writes the results and returns their path."""
    kind, slug, results_name, outputs = names
    record = plan_run(config, kind, slug, outputs)
    config.check_inputs()
    from sae_hacking.absorption.cooccurrence.accumulator import CooccurrenceAccumulator
    from sae_hacking.runs.distributed import wrote
    from sae_hacking.runs.stream import StreamRun
    from sae_hacking.saes.fingerprint import sae_fingerprint
    from sae_hacking.saes.splice import check_sae_fits

    run = StreamRun(config, record, results_name)
    if run.complete:
        print(f"{run.run_dir} is complete: {run.results_path}")
        return run.results_path
    lm = config.model.load()
    sae = source.load(lm.device, prefix)
    hook = check_sae_fits(lm, sae)
    pairs = hasattr(config, "rows")
    accumulator = CooccurrenceAccumulator(
        lm,
        sae,
        hook,
        config.rows if pairs else None,
        evidence_collector(config, sae.d_sae, lm),
        pairs=pairs,
    )
    identity = {
        "hook": hook,
        "d_sae": sae.d_sae,
        "neuronpedia_id": sae.neuronpedia_id,
        "sae_fingerprint": sae_fingerprint(sae),
    }
    state = run.start_or_resume(identity)
    with run.removed_if_failing():
        path = run.run_prompts(accumulator, lm.tokenizer, state)
    p = run.progress
    print(f"counted {p.tokens_done} tokens of {p.prompts_done} prompts{wrote(path)}")
    return path
