"""What an ``ablate`` run is called and writes, and its vocabulary of choices, declared once and
torch-free: the settings (:class:`~sae_hacking.absorption.configs.AblateConfig`), the run module,
the accumulator, the effect sums and the CLI all read them here."""

from __future__ import annotations

from typing import Literal, get_args

from sae_hacking.runs.record import results_paths

KIND = "ablations"  # run.json and results metadata "kind"
SLUG = "ablate"  # default run-directory name
RESULTS_NAME = "ablations"  # ablations.safetensors.zst + .json
OUTPUTS = tuple(p.name for p in results_paths(RESULTS_NAME))
FREQUENCIES_FILE = "frequencies.safetensors"  # first-pass latent frequencies, in the run dir
Method = Literal["fast", "naive"]  # `method`: how the ablation variants are computed
SumsPlace = Literal["auto", "device", "host"]  # `sums_on`: where the exact effect sums live
METHODS = get_args(Method)
