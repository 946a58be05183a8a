"""The flags every long streamed run shares (argparse only; imports nothing heavy).

``--output-dir --resume --save-frequency --never-save --shard --quiet``; the parsed values go
to :class:`sae_hacking.runs.stream.StreamRun` (``--shard`` arrives parsed, as a
:class:`~sae_hacking.runs.shards.Shard`).
"""

from __future__ import annotations

import argparse

from sae_hacking.errors import UsageError
from sae_hacking.runs.shards import Shard


def _shard(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except UsageError as err:  # argparse reports it as "argument --shard: ..." and exits 2
        raise argparse.ArgumentTypeError(str(err)) from None


def add_run_args(parser: argparse.ArgumentParser, save_frequency: int = 10_000) -> None:
    group = parser.add_argument_group("run")
    group.add_argument(
        "--output-dir",
        default=None,
        help="run directory (default results/<timestamp>-<slug>)",
    )
    group.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue an interrupted run from its last checkpoint; flags left at their "
        "defaults take the run's values, flags given must match them",
    )
    group.add_argument(
        "--save-frequency",
        type=int,
        default=save_frequency,
        help="write a checkpoint every N prompts (default %(default)s)",
    )
    group.add_argument(
        "--never-save",
        action="store_true",
        help="write no checkpoints, only the final results (such a run cannot resume)",
    )
    group.add_argument(
        "--shard",
        type=_shard,
        default=Shard(),
        metavar="I/N",
        help="process only prompts whose row index is I modulo N; merge the N shards' "
        "results with `sae-hacking merge` (default 0/1: all prompts)",
    )
    group.add_argument("--quiet", action="store_true", help="no progress bar")
