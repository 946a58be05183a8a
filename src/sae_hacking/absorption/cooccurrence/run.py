"""The ``cooccurrences`` run: exact latent co-occurrence counts over a text stream, resumable
and shardable (:mod:`sae_hacking.runs.stream`). ``run(config)`` is the whole command below the
CLI; it imports nothing heavy until the output folder or resume directory is checked."""

from __future__ import annotations

from pathlib import Path

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
    record = plan_run(config, KIND, SLUG, OUTPUTS)
    config.check_inputs()
    from sae_hacking.absorption.cooccurrence.accumulator import CooccurrenceAccumulator
    from sae_hacking.runs.distributed import wrote
    from sae_hacking.runs.stream import StreamRun
    from sae_hacking.saes.fingerprint import sae_fingerprint
    from sae_hacking.saes.splice import check_sae_fits

    run = StreamRun(config, record, RESULTS_NAME)
    if run.complete:
        print(f"{run.run_dir} is complete: {run.results_path}")
        return run.results_path
    lm = config.model.load()
    sae = config.ablator.load(lm.device, "ablator_")
    hook = check_sae_fits(lm, sae)
    accumulator = CooccurrenceAccumulator(lm, sae, hook, config.rows)
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
