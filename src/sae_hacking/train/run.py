"""One ``sae-hacking train`` run end to end: run directory, training, export; and resuming it.

A run directory holds ``run.json`` and ``args.yaml`` (as every run), ``metrics.jsonl`` and
``tensorboard/``, ``checkpoint.safetensors`` + ``checkpoint.trainer.pt``, and at the end
``metrics.json``, ``sae.safetensors`` (this package's format, every architecture; the input
scaling folded in, so it takes the model's raw activations) and, for the architectures SAELens
has, ``saelens/`` (``cfg.json`` + ``sae_weights.safetensors``, loadable with
``sae_lens.SAE.load_from_disk``). Both load as ``--ablator-sae-release PATH`` /
``--reader-sae-release PATH`` in the absorption commands.

A start that fails before the first checkpoint (a refused setting found once the model or the
data is read, a cache block that cannot be read, a run that diverges) removes the run directory
it created; a run that fails later keeps its last checkpoint. A resume that is refused or fails
writes nothing: everything it needs is read and checked before ``run.json`` is updated.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from sae_hacking.errors import FieldError, SettingWarning, UsageError
from sae_hacking.runs.record import RunRecord
from sae_hacking.train.config import KIND, TrainConfig
from sae_hacking.training.checkpoint import (
    TRAINER_CHECKPOINT,
    all_finite,
    checkpoint_step,
    json_safe,
    read_trainer_state,
)

OUTPUTS = ("metrics.json", "sae.safetensors")
SAELENS_FOLDER = "saelens"
SUMMARY_KEYS = (
    "explained_variance",
    "fvu",
    "l0",
    "dead_frac",
    "ce_clean",
    "ce_spliced",
    "ce_zero_ablated",
    "ce_loss_recovered",
    "tokens_per_s",
)


def slug(config: TrainConfig) -> str:
    model = Path(config.model.name).name
    return f"train-{model}-{config.hook}-{config.architecture}-E{config.sae_hidden_dim}"


def run(config: TrainConfig) -> tuple[Path | None, dict]:
    """Train (or continue training) one SAE; returns the run directory and final metrics.

    Under ``torchrun`` every process trains one data-parallel replica
    (:mod:`sae_hacking.train.parallel`) on its own device and shard of the text; rank 0 writes
    the run directory."""
    if config.only_count_tokens:
        return None, count_tokens(config)
    from sae_hacking.runs.distributed import ranks_from_env

    ranks = ranks_from_env()
    if ranks is None:
        return _run(config, None)
    from sae_hacking.config import replace_flat
    from sae_hacking.runs.distributed import process_group, rank_device

    device = rank_device(config.model.device, ranks.local_rank)
    changes = {"device": device, **({"quiet": True} if ranks.rank else {})}
    with process_group(ranks, device):
        return _run(replace_flat(config, changes), ranks)


def _run(config: TrainConfig, ranks) -> tuple[Path, dict]:
    from sae_hacking.runs.rundir import RunDir

    rundir = RunDir.plan(config, KIND, slug(config), OUTPUTS, ranks=ranks)
    config.check_inputs()
    if rundir.main:
        warn_settings(config, ranks.world if ranks else 1)
    if rundir.resumed:
        return _resume(config, rundir, ranks)
    lm = load_model(config)
    # Before its first checkpoint a run has nothing to resume: a failure removes what it
    # created, so that the corrected command starts in the same folder.
    with rundir.started(keep=lambda path: (path / TRAINER_CHECKPOINT).is_file()):
        return rundir.path, finish(_trainer(config, rundir.path, lm, ranks))


def warn_settings(config: TrainConfig, world: int) -> None:
    """Settings that are allowed but probably not meant."""
    total = config.total_steps(world)
    if config.lr_warmup_steps > total:
        warnings.warn(
            SettingWarning(
                f"`lr_warmup_steps` ({config.lr_warmup_steps}) is longer than the run's {total} "
                f"steps: the learning rate never reaches `lr` ({config.lr:g})."
            ),
            stacklevel=2,
        )


def load_model(config: TrainConfig):
    lm = config.model.load()
    lm.hook_point(config.hook)  # a hook this model lacks is one line, before any folder exists
    return lm


def _trainer(config: TrainConfig, run_dir: Path, lm, ranks=None):
    from sae_hacking.train.trainer import LMTrainer

    return LMTrainer(config, run_dir, lm, ranks)


def _resume(config: TrainConfig, rundir, ranks) -> tuple[Path, dict]:
    run_dir = rundir.path
    world = ranks.world if ranks else 1
    total = config.total_steps(world)
    done = finished_metrics(rundir.record)
    if done is not None and done.get("step") == total:
        if rundir.main:
            print(f"{run_dir} is complete (resume it with more training tokens to train on).")
        return run_dir, done
    if not (run_dir / TRAINER_CHECKPOINT).is_file():
        raise FieldError("resume", f"{run_dir} has no checkpoint yet; start the run again instead.")
    taken = checkpoint_step(run_dir)  # the header only: no torch, no model yet
    if taken > total:
        raise_too_short(config, run_dir, total, taken, world)
    state = read_trainer_state(run_dir, world)
    lm = load_model(config)
    trainer = _trainer(config, run_dir, lm, ranks)
    trainer.load_checkpoint(state)
    # Only a resume that goes on records its settings (a refused or failed one writes nothing).
    rundir.update(config)
    return run_dir, finish(trainer)


def raise_too_short(config: TrainConfig, run_dir: Path, total: int, taken: int, world: int):
    tokens = taken * config.batch_tokens * world
    if config.max_step is not None:
        raise FieldError(
            "max_step", f"({total}) is below the {taken} steps {run_dir} has taken already."
        )
    raise FieldError(
        "train_tokens",
        f"({config.train_tokens}) asks for {total} steps of `batch_tokens`, but {run_dir} has "
        f"taken {taken} ({tokens} tokens) already; give at least {tokens}, or drop it.",
    )


def finished_metrics(record: RunRecord) -> dict | None:
    """The final metrics of a run that finished (the outputs of an earlier, shorter length
    stay until a longer run replaces them, so the step count tells which length finished)."""
    if not record.is_complete():
        return None
    return json.loads((record.run_dir / "metrics.json").read_text(encoding="utf-8"))


def finish(trainer) -> dict:
    from sae_hacking.atomic import atomic_write_json
    from sae_hacking.saes.io import save_sae_checkpoint

    metrics = trainer.train()
    if not trainer.main:
        return metrics
    config, run_dir = trainer.config, trainer.run_dir
    sae = trainer.export()
    if not all_finite(sae.state_dict().values()):  # folding the scaling in overflowed
        raise UsageError(
            f"the trained SAE is not finite once its input scaling ({config.normalize}) is "
            f"folded into its weights; {run_dir} keeps its checkpoint, nothing was exported."
        )
    extra = {"step": trainer.step, "model_name": config.model.name, "tokens": metrics["tokens"]}
    save_sae_checkpoint(sae, run_dir / "sae.safetensors", extra)
    exported_as = export_saelens(sae, run_dir / SAELENS_FOLDER, config.model.name)
    metrics = json_safe({**metrics, "saelens_folder": exported_as})
    atomic_write_json(run_dir / "metrics.json", metrics)
    # The summary is the result, so --quiet (no progress bar) still prints it.
    print(f"run directory: {run_dir}", file=sys.stderr)
    from sae_hacking.training.metrics import summary_lines

    for line in summary_lines(metrics, SUMMARY_KEYS, summary_note):
        print(line)
    return metrics


def summary_note(key: str, m: dict) -> str:
    if key == "fvu" and m[key] is None:
        return "  (the held-out activations do not vary)"
    if key != "ce_loss_recovered":
        return ""
    clean, zero, value = m.get("ce_clean"), m.get("ce_zero_ablated"), m[key]
    if value is None:
        return "  (zero-ablating the hook leaves the held-out loss as it is: no scale)"
    if clean is not None and zero is not None and zero < clean:
        return (
            "  (zero-ablating the hook lowers the held-out loss here, as in a random model, so "
            "this ratio means little)"
        )
    if value > 1:
        return (
            "  (above 1: with the SAE spliced in, the loss on the held-out prompts is below "
            "the clean model's)"
        )
    return ""


def export_saelens(sae, folder: Path, model_name: str) -> str | None:
    """Write ``folder`` for an architecture SAELens has; ``None`` (and nothing) otherwise."""
    from sae_hacking.saes import registry
    from sae_hacking.saes.formats import save_saelens_folder

    if registry.get(sae.architecture).export_as is None:
        return None
    save_saelens_folder(sae, folder, model_name=model_name)
    return str(folder)


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    from sae_hacking.lm.loading import transformers_output

    with transformers_output():
        return AutoTokenizer.from_pretrained(name)


def count_tokens(config: TrainConfig) -> dict:
    """The prompts and tokens one epoch of training reads (the tokenizer only, no model)."""
    from sae_hacking.data.text import batch_prompts, open_text_stream

    if config.text.n_prompts is None and not Path(config.text.dataset_id).exists():
        raise FieldError(
            "n_prompts",
            "is needed to count the tokens of a streamed hub dataset (it may never end).",
        )
    tokenizer = load_tokenizer(config.model.name)
    rows = open_text_stream(config.text.dataset_id, config.text.text_column, config.eval_prompts)
    prompts = tokens = 0
    for batch in batch_prompts(
        rows,
        tokenizer,
        config.text.batch_size,
        config.text.max_tokens_in_prompt,
        n_rows=config.text.n_prompts,
    ):
        mask = batch.attention_mask_BS.bool() if config.include_bos else batch.real_token_mask_BS
        prompts += len(batch.texts)
        tokens += int(mask.sum())
    print(
        f"{prompts} prompts, {tokens} training tokens per epoch "
        f"(after {config.eval_prompts} held-out rows)"
    )
    return {"prompts": prompts, "tokens": tokens}
