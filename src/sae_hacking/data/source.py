"""Which text a command reads: :class:`TextSource` (torch-free, checked before any heavy import)."""

from __future__ import annotations

from dataclasses import dataclass

from sae_hacking.config import Config, resolved_path, set_field, setting
from sae_hacking.data.streams import check_text_source, looks_local

DEFAULT_DATASET = "monology/pile-uncopyrighted"


@dataclass(frozen=True)
class TextSource(Config):
    """Prompts from a text stream, tokenised and cut to a fixed length, in batches."""

    dataset_id: str = setting(
        DEFAULT_DATASET,
        help="HF dataset id (streamed) or a local .txt/.jsonl/.parquet file or folder",
    )
    text_column: str | None = setting(
        None, help="column holding the text, for .jsonl/.parquet/hub datasets (default: text)"
    )
    max_tokens_in_prompt: int = setting(
        1024,
        help="tokens per prompt including BOS; longer prompts are cut",
        ge=2,  # as tokenizing would refuse, but before the model loads
        why="BOS + a token",
    )
    batch_size: int = setting(8, help="prompts per forward pass", kind="free", gt=0)
    n_prompts: int | None = setting(
        None,
        help="rows of the dataset to use (default: all); a resumed, unfinished run may change it",
        kind="extent",
        gt=0,
    )

    def __post_init__(self):
        super().__post_init__()
        if looks_local(self.dataset_id):
            set_field(self, "dataset_id", resolved_path(self.dataset_id))

    def check_inputs(self) -> None:
        """A local source must exist and hold text files (and `text_column` apply to them); a
        hub dataset's id must be spelled as one and its hub answer (streaming needs it). Checked
        once, at a run's start, before anything heavy loads (not on construction: a run's
        settings can be read anywhere)."""
        check_text_source(self.dataset_id, self.text_column, probe_hub=True)

    check_reachable = check_inputs  # the name run modules being rewritten may still call

    @property
    def column(self) -> str:
        """The text column to read (``text`` unless one was given)."""
        return self.text_column or "text"
