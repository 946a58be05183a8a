"""How a run runs (torch-free): :class:`RunDirOptions` for every run, :class:`RunOptions` for
runs over a text stream. None of these change the results."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sae_hacking.config import Config, resolved_path, set_field, setting
from sae_hacking.runs.shards import Shard


@dataclass(frozen=True)
class RunDirOptions(Config):
    """Where a run writes; ``resume`` names a run directory to continue (its saved settings are
    then the run's)."""

    output_dir: str | None = setting(
        None,
        help="run directory, a new or empty folder (default results/<timestamp>-<slug>)",
        kind="free",
    )
    resume: str | None = setting(
        None,
        help="continue the run in RUN_DIR from its last checkpoint; settings not given keep "
        "the run's values, and only those that do not change the results may differ",
        kind="free",
    )
    quiet: bool = setting(False, help="no progress bar", kind="free")

    def __post_init__(self):
        super().__post_init__()
        if self.output_dir is not None:  # absolute: the record must not depend on the cwd
            set_field(self, "output_dir", str(Path(self.output_dir).expanduser().absolute()))
        set_field(self, "resume", resolved_path(self.resume))


@dataclass(frozen=True)
class RunOptions(RunDirOptions):
    """:class:`RunDirOptions` plus checkpoints and shards of a run over a text stream."""

    save_frequency: int = setting(
        10_000, help="write a checkpoint every N prompts", kind="free", gt=0
    )
    never_save: bool = setting(
        False, help="write no checkpoints, only the final results (cannot resume)", kind="free"
    )
    shard: str = setting(
        "0/1",
        help="process only prompts whose row index is I modulo N; merge the N shards' results "
        "with `sae-hacking merge`; 0/1 is all prompts",
    )

    def __post_init__(self):
        super().__post_init__()
        set_field(self, "shard", str(Shard.parse(self.shard)))

    @property
    def shard_spec(self) -> Shard:
        return Shard.parse(self.shard)
