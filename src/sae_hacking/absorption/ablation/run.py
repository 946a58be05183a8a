"""The ``ablate`` run: selective ablation effects over a text stream, resumable and shardable.

:func:`run` is the whole command below the CLI (this module imports nothing heavy until it runs,
so a bad output folder or resume directory fails before torch loads). It uses the run machinery
of :mod:`sae_hacking.runs.stream` (checkpoint every N prompts, resume, shards) with the
accumulator of :mod:`sae_hacking.absorption.ablation.stream`.
"""

from __future__ import annotations

from pathlib import Path

from sae_hacking.absorption.ablation.identity import (
    FREQUENCIES_FILE,
    KIND,
    OUTPUTS,
    RESULTS_NAME,
    SLUG,
)
from sae_hacking.absorption.configs import AblateConfig
from sae_hacking.runs.record import plan_run


def run(config: AblateConfig) -> Path:
    """The command: one process, or under ``torchrun`` this rank's shard of the run, merged
    by rank 0 (:mod:`sae_hacking.runs.distributed`). Returns the results path."""
    from sae_hacking.absorption.mergers import merger_of
    from sae_hacking.runs.distributed import run_streamed

    return run_streamed(config, KIND, SLUG, RESULTS_NAME, run_one, lambda: merger_of(KIND))


def run_one(config: AblateConfig) -> Path:
    """Ablate (or continue ablating) and write ``ablations.safetensors.zst``; returns it."""
    record = plan_run(config, KIND, SLUG, OUTPUTS)
    config.check_inputs()
    from sae_hacking.absorption.ablation.core import make_setup
    from sae_hacking.absorption.ablation.stream import (
        AblationAccumulator,
        exclusion_mask,
        read_frequencies,
    )
    from sae_hacking.runs.distributed import wrote
    from sae_hacking.runs.stream import StreamRun
    from sae_hacking.saes.fingerprint import sae_fingerprint

    run = StreamRun(config, record, RESULTS_NAME)
    if run.complete:
        print(f"{run.results_path} is already complete; nothing to do.")
        return run.results_path
    lm = config.model.load()
    ablator = config.ablator.load(lm.device, "ablator_")
    reader = config.reader.load(lm.device, "reader_")
    setup = make_setup(
        lm,
        ablator,
        reader,
        config.abridge_ablations_to,
        selected=config.selected_features,
        rows_per_chunk=config.variants_per_batch,
        batch_prompts=config.batch_prompts,
    )
    identity = {
        # The hooks the SAEs read (from the SAE files when not given), under the settings' keys.
        "ablator_sae_hook": setup.ablator_hook,
        "reader_sae_hook": setup.reader_hook,
        "ablator_d_sae": ablator.d_sae,
        "reader_d_sae": reader.d_sae,
        "neuronpedia_id": ablator.neuronpedia_id,
        "ablator_fingerprint": sae_fingerprint(ablator),
        "reader_fingerprint": sae_fingerprint(reader),
    }
    frequencies = None
    if config.frequencies_from is not None:
        frequencies = (
            *read_frequencies(
                config.frequencies_from, identity | _ablator_names(config), config.allow_partial
            ),
            config.frequencies_from,
        )
    state = run.start_or_resume(identity)
    with run.removed_if_failing():
        if config.exclude_latent_threshold is not None:
            if frequencies is None:
                frequencies = _first_pass_frequencies(config, run, lm, ablator, setup.ablator_hook)
            setup.excluded_e = exclusion_mask(
                *frequencies[:2], config.exclude_latent_threshold, ablator.d_sae, frequencies[2]
            ).to(lm.device)
            print(
                f"excluding {int(setup.excluded_e.sum())} of {ablator.d_sae} ablator latents active "
                f"on more than {config.exclude_latent_threshold:g} of tokens"
            )
        accumulator = AblationAccumulator(setup, config.method, config.sums_on)
        print(f"effect sums on {accumulator.sums.device}")
        path = run.run_prompts(accumulator, lm.tokenizer, state)
    sums = accumulator.sums
    print(
        f"{sums.n_prompts} of {sums.n_prompts_seen} prompts used; {len(sums.row_of)} ablator "
        f"latents ablated{wrote(path)}"
    )
    return path


def _ablator_names(config: AblateConfig) -> dict[str, object]:
    return {
        "model": config.model.name,
        "ablator_sae_release": config.ablator.release,
        "ablator_sae_id": config.ablator.sae_id,
    }


def _first_pass_frequencies(config: AblateConfig, run, lm, ablator, hook: str):
    """Latent frequencies over all ``n_prompts`` prompts (every shard counts the same ones,
    so all shards exclude the same latents), saved in the run directory for resuming."""
    from sae_hacking.absorption.ablation.stream import (
        count_frequencies,
        read_frequencies,
        save_frequencies,
    )
    from sae_hacking.runs.stream import shard_batches

    path = run.run_dir / FREQUENCIES_FILE
    if path.is_file():
        return (*read_frequencies(path), str(path))
    text = config.text
    print(f"counting ablator latent frequencies over {text.n_prompts} prompts (first pass)")
    batches = shard_batches(
        text.dataset_id,
        text.column,
        lm.tokenizer,
        text.batch_size,
        text.max_tokens_in_prompt,
        text.n_prompts,
    )
    active_e, tokens = count_frequencies(lm, ablator, hook, batches)
    save_frequencies(run.run_dir, active_e, tokens, "first pass")
    return active_e, tokens, str(path)
