"""Training activations: a language model's activations at one hook, gathered in shuffled blocks.

The text stream's rows ``[0, eval_prompts)`` are held out for evaluation; training reads rows
from ``eval_prompts`` on (at most ``n_prompts`` of them) and starts again there for the next
epoch. Under data-parallel training each rank reads its own shard of those rows (every
``count``-th, as ``--shard``); rows are then numbered within the shard ("training rows"). A **block** is what one shuffle mixes: windows of prompts are read (regrouped by length into
forwards that stop at the hook, :meth:`~sae_hacking.lm.hooked.HookedLM.read`) until at least
``buffer_tokens`` real tokens are gathered; block ``b`` is permuted by a generator seeded with ``(seed, b)`` and cut
into ``batch_tokens``-token batches (the last, partial one is dropped). A block depends only on
the row it starts at, so a resumed run re-reads its current block and skips the batches already
trained on: the batches are exactly those of an uninterrupted run.

With an activation cache, each block's activations (in the model's dtype, unshuffled) are stored
as ``block-<start row>.safetensors`` and read back instead of running the model; ``cache.json``
names what the activations are of, and a cache of something else is refused. A block that is not
finite (read or computed) stops the run: an SAE trained on it would be NaN.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float

from sae_hacking.atomic import atomic_write, atomic_write_json
from sae_hacking.data.text import TokenBatch, batch_prompts, length_sorted, open_text_stream
from sae_hacking.errors import FieldError, UsageError
from sae_hacking.runs.shards import Shard
from sae_hacking.train.checks import CACHE_FILE, check_cache_folder
from sae_hacking.train.config import TrainConfig
from sae_hacking.training.checkpoint import reason

# Prompts are read SORT_WINDOW forward batches at a time and regrouped by length, so a forward
# pads little (the shuffle mixes them again): on benchmarks/train_vs_saelens.py's prompts the
# padding and BOS positions the model computed fell from 36 % to 8 %.
SORT_WINDOW = 8
SEED_STRIDE = 1_000_003  # block b of seed s shuffles with seed s * SEED_STRIDE + b


@dataclass
class Position:
    """Where training is in the data: the block being trained on and the next batch in it."""

    epoch: int
    block: int  # blocks started so far, over all epochs (seeds the block's shuffle)
    start_row: int  # training row of the block's first prompt (0: the first after held-out)
    batch: int = 0  # batches of this block already trained on


@dataclass
class Block:
    acts_TM: Float[torch.Tensor, "T M"]
    next_row: int  # the row after the block's last prompt
    ended: bool  # the stream (or the `n_prompts` limit) ended inside this block
    prompts: int


def real_mask(batch: TokenBatch, include_bos: bool) -> torch.Tensor:
    return batch.attention_mask_BS.bool() if include_bos else batch.real_token_mask_BS


class ActivationSource:
    """Blocks of activations of ``config.hook`` from ``lm``, read or cached."""

    def __init__(self, lm, config: TrainConfig, shard: Shard | None = None):
        self.lm = lm
        self.config = config
        self.shard = shard or Shard()
        self.first_row = config.eval_prompts  # source row of training row 0
        self.end_row = self.shard.n_rows(config.text.n_prompts)  # training rows of this shard
        self._batches: Iterator[TokenBatch] | None = None
        self._row = -1  # the row self._batches reads next
        self.seconds = 0.0  # time spent producing activations (model forwards, cache reads)
        self.cache = None
        if config.activation_cache is not None:
            self.cache = Path(config.activation_cache)
            check_cache(self.cache, self.cache_identity())

    def cache_identity(self) -> dict:
        c = self.config
        return {
            "model": c.model.name,
            "dtype": str(self.lm.dtype),
            "hook": c.hook,
            "dataset_id": c.text.dataset_id,
            "text_column": c.text.column,
            "max_tokens_in_prompt": c.text.max_tokens_in_prompt,
            "batch_size": c.text.batch_size,
            "include_bos": c.include_bos,
            "buffer_tokens": c.buffer_tokens,
            "first_row": self.first_row,
        }

    # -- held-out prompts --------------------------------------------------------------------

    def eval_batches(self) -> list[TokenBatch]:
        c = self.config
        if c.eval_prompts == 0:
            return []
        rows = open_text_stream(c.text.dataset_id, c.text.text_column)
        return list(
            batch_prompts(
                rows,
                self.lm.tokenizer,
                c.text.batch_size,
                c.text.max_tokens_in_prompt,
                n_rows=c.eval_prompts,
            )
        )

    def read(self, batch: TokenBatch) -> Float[torch.Tensor, "T M"]:
        """The hook's activations at ``batch``'s training tokens, in prompt order."""
        acts_BSM = self.lm.read(batch.input_ids_BS, batch.attention_mask_BS, [self.config.hook])[
            self.config.hook
        ]
        return acts_BSM[real_mask(batch, self.config.include_bos).to(acts_BSM.device)]

    # -- training blocks ---------------------------------------------------------------------

    def block(self, start_row: int) -> Block:
        """The block that starts at source row ``start_row``."""
        # On a GPU, finish the SAE's queued work first, so that it is not billed here.
        self._sync()
        t0 = time.perf_counter()
        cached = self._cached(start_row)
        block = cached if cached is not None else self._compute(start_row)
        self._sync()
        self.seconds += time.perf_counter() - t0
        return block

    def _sync(self) -> None:
        if self.lm.device.type == "cuda":
            torch.cuda.synchronize(self.lm.device)

    def _open(self, start_row: int) -> None:
        c = self.config
        skip = self.first_row + self.shard.source_row(start_row)
        rows = open_text_stream(c.text.dataset_id, c.text.text_column, skip)
        if self.shard.count > 1:
            rows = itertools.islice(rows, 0, None, self.shard.count)
        left = None if self.end_row is None else max(self.end_row - start_row, 0)
        self._batches = batch_prompts(
            rows,
            self.lm.tokenizer,
            c.text.batch_size * SORT_WINDOW,
            c.text.max_tokens_in_prompt,
            start_row=start_row,
            n_rows=left,
        )
        self._row = start_row

    def _compute(self, start_row: int) -> Block:
        if self._row != start_row:
            self._open(start_row)
        parts, tokens, prompts, ended = [], 0, 0, True
        for window in self._batches:
            for batch in length_sorted(window, self.config.text.batch_size):
                acts_TM = self.read(batch)
                parts.append(acts_TM)
                tokens += acts_TM.shape[0]
            prompts += len(window.texts)
            self._row = window.next_row
            if tokens >= self.config.buffer_tokens:
                ended = False
                break
        d_model = self.lm.hook_width(self.config.hook)
        acts = torch.cat(parts) if parts else torch.zeros(0, d_model, device=self.lm.device)
        if not bool(torch.isfinite(acts).all()):
            raise FieldError(
                "model",
                f"{self.config.model.name}'s activations at {self.config.hook} are not finite in "
                f"the training rows from {start_row} on (in {self.lm.dtype}); an SAE cannot learn "
                "them (a wider `dtype`, such as float32, may help).",
            )
        block = Block(acts, self._row if parts else start_row, ended, prompts)
        if ended:
            self._row = -1  # the generator is spent
        if self.cache is not None:
            self._store(start_row, block)
        return block

    # -- cache -------------------------------------------------------------------------------

    def _path(self, start_row: int) -> Path:
        shard = "" if self.shard.count == 1 else f"shard-{self.shard.index}of{self.shard.count}-"
        return self.cache / f"{shard}block-{start_row:012d}.safetensors"

    def _store(self, start_row: int, block: Block) -> None:
        from safetensors.torch import save_file

        meta = {
            "next_row": str(block.next_row),
            "ended": str(int(block.ended)),
            "prompts": str(block.prompts),
            "end_row": json.dumps(self.end_row),
        }
        tensors = {"acts_TM": block.acts_TM.contiguous().cpu()}
        atomic_write(self._path(start_row), lambda tmp: save_file(tensors, str(tmp), metadata=meta))

    def _cached(self, start_row: int) -> Block | None:
        path = self._path(start_row) if self.cache is not None else None
        if path is None or not path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt", device="cpu") as f:
                meta = f.metadata()
                acts_TM = f.get_tensor("acts_TM")
            next_row, ended = int(meta["next_row"]), bool(int(meta["ended"]))
            prompts, end_row = int(meta["prompts"]), json.loads(meta["end_row"])
        except Exception as err:  # SafetensorError, OSError, missing or malformed metadata
            raise FieldError(
                "activation_cache",
                f"{path} is truncated or not a cached block ({reason(err)}); "
                "delete it (the next run computes it again).",
            ) from None
        width = self.lm.hook_width(self.config.hook)
        if acts_TM.ndim != 2 or acts_TM.shape[1] != width:
            raise FieldError(
                "activation_cache",
                f"{path} holds activations of shape {list(acts_TM.shape)}, not [tokens, {width}]; "
                "delete it (the next run computes it again).",
            )
        if not bool(torch.isfinite(acts_TM).all()):
            raise FieldError(
                "activation_cache",
                f"{path} holds activations that are not finite (NaN or infinite); delete it "
                "(the next run computes it again).",
            )
        # A block cut short by another run's `n_prompts`, or one that runs past this run's, is
        # not this run's block: recompute it (and overwrite the file).
        if ended and end_row != self.end_row:
            return None
        if self.end_row is not None and next_row > self.end_row:
            return None
        return Block(acts_TM.to(self.lm.device), next_row, ended, prompts)


def check_cache(folder: Path, identity: dict) -> None:
    """Create ``folder``'s ``cache.json``, or check that the cache holds these activations."""
    check_cache_folder(folder)
    path = folder / CACHE_FILE
    if path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise FieldError("activation_cache", f"{path} is not valid JSON ({err}).") from None
        if saved != identity:
            diff = sorted(k for k in {*saved, *identity} if saved.get(k) != identity.get(k))
            # Each entry is a setting (shown as its flag), but the first row after the held out.
            setting = {"first_row": "eval_prompts"}
            shown = [
                f"`{setting.get(k, k)}` {saved.get(k)!r} there, {identity.get(k)!r} here"
                for k in diff
            ]
            raise FieldError(
                "activation_cache",
                f"{folder} caches other activations ({'; '.join(shown)}); use another folder.",
            )
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"activation cache {folder} cannot be created ({err}).") from None
    atomic_write_json(path, identity)


def shuffled_batches(
    block: Block, position: Position, batch_tokens: int, seed: int, shard_index: int = 0
) -> Iterator[Float[torch.Tensor, "B M"]]:
    """The block's batches from ``position.batch`` on, advancing ``position.batch``."""
    n_batches = block.acts_TM.shape[0] // batch_tokens
    gen = torch.Generator().manual_seed((seed + 7919 * shard_index) * SEED_STRIDE + position.block)
    order_T = torch.randperm(block.acts_TM.shape[0], generator=gen).to(block.acts_TM.device)
    while position.batch < n_batches:
        i = position.batch * batch_tokens
        x_BM = block.acts_TM[order_T[i : i + batch_tokens]].float()
        position.batch += 1
        yield x_BM
