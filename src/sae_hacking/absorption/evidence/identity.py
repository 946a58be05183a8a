"""What a ``latents`` run (evidence only, no pair counts) is called and writes (torch-free)."""

from __future__ import annotations

from sae_hacking.runs.record import results_paths

KIND = "latents"
SLUG = "latents"
RESULTS_NAME = "latents"
OUTPUTS = tuple(p.name for p in results_paths(RESULTS_NAME))
