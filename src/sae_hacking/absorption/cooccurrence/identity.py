"""What a ``cooccurrences`` run is called and writes, declared once and torch-free: the run
module, the accumulator (which checks a results file's kind) and the CLI all read it here."""

from __future__ import annotations

from sae_hacking.runs.record import results_paths

KIND = "cooccurrences"  # run.json and results metadata "kind"
SLUG = "cooccurrences"  # default run-directory name
RESULTS_NAME = "cooccurrences"  # cooccurrences.safetensors.zst + .json
OUTPUTS = tuple(p.name for p in results_paths(RESULTS_NAME))
