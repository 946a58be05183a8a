"""What a ``pairs`` run is called and writes, declared once and torch-free."""

from __future__ import annotations

KIND = "pairs"  # run.json and pairs.json "kind"; also the default run-directory name
# Every file a run writes; pairs.json is written last, so a run killed while writing has no
# pairs.json and its run.json (written first) lists files that are missing: incomplete.
OUTPUTS = (
    "pairs.csv",
    "histogram.png",
    "effect_vs_decoder.png",
    "report.html",
    "pairs.json",
)
