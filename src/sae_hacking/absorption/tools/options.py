"""Settings shared by the analysis tools over an ``ablate`` run (torch-free): the input, how its
latents are labelled, and where the run goes. Each tool's config (its own module's ``*Config``)
extends :class:`EffectsToolConfig`.

Labels: a latent's label is its Neuronpedia explanation (an ``explanations_file``, else the
cached or downloaded export of its SAE's Neuronpedia id); where that is missing, its local
evidence (the tokens its top examples fire on, from a ``latents`` / ``cooccurrences`` run of
that SAE); else the tokens its decoder row promotes through the unembedding (the logit lens);
else nothing. So every output is readable for SAEs Neuronpedia does not host.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sae_hacking.config import Config, resolved_path, set_field, setting
from sae_hacking.errors import FieldError
from sae_hacking.runs.options import RunDirOptions

EVIDENCE_HELP = (
    "a latents (or cooccurrences) run of the {side} SAE: label each {side} latent without an "
    "explanation by the tokens its top examples fire on"
)


@dataclass(frozen=True)
class LabelOptions(Config):
    """Where the labels of ablator and reader latents come from (module docstring)."""

    ablator_sae_neuronpedia_id: str | None = setting(
        None,
        help="Neuronpedia id of the ablator SAE, e.g. gemma-2-2b/20-gemmascope-mlp-65k "
        "(default: what the ablate run recorded, else the SAELens registry's)",
        kind="free",
    )
    reader_sae_neuronpedia_id: str | None = setting(
        None,
        help="Neuronpedia id of the reader SAE, e.g. gemma-2-2b/21-gemmascope-res-65k "
        "(default: the SAELens registry's)",
        kind="free",
    )
    explanations_file: str | None = setting(
        None,
        help="ablator explanations from this local file (a JSON list of {index, description}, "
        "Neuronpedia's export format) instead of Neuronpedia",
        kind="free",
    )
    reader_explanations_file: str | None = setting(
        None, help="reader explanations from this local file, as `explanations_file`", kind="free"
    )
    ablator_evidence: str | None = setting(
        None, help=EVIDENCE_HELP.format(side="ablator"), kind="free"
    )
    reader_evidence: str | None = setting(
        None, help=EVIDENCE_HELP.format(side="reader"), kind="free"
    )
    no_logit_lens: bool = setting(
        False,
        help="leave latents with neither explanation nor evidence unlabelled instead of "
        "labelling them by their logit lens (which loads the SAE and the model's unembedding)",
        kind="free",
    )

    def __post_init__(self):
        super().__post_init__()
        for key in self.paths():
            set_field(self, key, resolved_path(getattr(self, key)))

    @staticmethod
    def paths() -> tuple[str, ...]:
        return ("explanations_file", "reader_explanations_file", "ablator_evidence",
                "reader_evidence")  # fmt: skip

    def check_inputs(self) -> None:
        super().check_inputs()
        for key in self.paths():
            value = getattr(self, key)
            if value is not None and not Path(value).expanduser().exists():
                raise FieldError(key, f"{value}: no such file or folder.")


@dataclass(frozen=True)
class EffectsToolConfig(Config):
    """An analysis of one ``ablate`` run's effects, written to a new run directory."""

    input_path: str = setting(
        "",
        help="ablate results: the run directory, ablations.safetensors.zst (with or without "
        ".zst) or its .json sidecar",
    )
    allow_partial: bool = setting(
        False,
        help="read the results of only some shards of an ablate run (default: refused)",
    )
    labels: LabelOptions = setting(default_factory=LabelOptions, help="labels")
    run: RunDirOptions = setting(default_factory=RunDirOptions, help="run")

    def __post_init__(self):
        super().__post_init__()
        if self.input_path:
            set_field(self, "input_path", resolved_path(self.input_path))
        if self.run.resume is not None:
            raise FieldError(
                "resume", "does not apply: this analysis is quick and does not resume."
            )

    def check_inputs(self) -> None:
        if not self.input_path:
            raise FieldError("input_path", "is required.")
        super().check_inputs()
        value = self.input_path
        if not Path(value).expanduser().exists() and not Path(value + ".zst").exists():
            raise FieldError("input_path", f"{value}: no such file or folder.")
