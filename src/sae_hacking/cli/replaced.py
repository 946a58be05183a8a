"""The original repository's filter and conversion scripts, whose jobs the commands now do
without a copy of the results: each script path prints one line naming its replacement and
exits 2 (torch-free, so the answer is immediate)."""

from __future__ import annotations

import sys

from sae_hacking.errors import EXIT_USAGE

REPLACED = {
    "filter_results.py": "keeping the first N ablated latents of a results file is done where "
    "the results are read: `sae-hacking effect-network`, `four-tuples`, `effect-l0` and `cluster` "
    "read only the latent ids given to --latents (cluster also --abridge N), `sae-hacking pairs` "
    "only pairs with the ids given to --just-these",
    "filter_results2.py": "abridging effects and co-occurrences to the first N latents is done "
    "where they are read: --latents on `sae-hacking effect-network`, `four-tuples`, `effect-l0` "
    "and `cluster` (cluster also --abridge N), --just-these on `pairs`, and "
    "`sae-hacking cooccurrences --rows` counts only the rows of the latents given",
    "convert_json_to_safetensors.py": "every stage writes its results as "
    "NAME.safetensors.zst with a .json sidecar, so there are no JSON results to convert "
    "(`sae-hacking merge` combines shards)",
    "print_cooccurrences.py": "`sae-hacking cooccurrences-show RUN I J` prints how many tokens "
    "latents I and J are active together on (with I alone: I's largest counts)",
}


def replaced_main(script: str) -> int:
    """Say what replaced ``script`` on stderr; the exit code 2 of a usage error."""
    print(f"error: {script} is replaced: {REPLACED[script]}.", file=sys.stderr)
    return EXIT_USAGE
