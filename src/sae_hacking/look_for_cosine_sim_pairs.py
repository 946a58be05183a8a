#!/usr/bin/env python3
"""The legacy script path; same as ``sae-hacking decoder-pairs``."""

import sys
from pathlib import Path

# Run as a script, Python puts this folder first on sys.path, where module names like ``cli``
# or ``data`` could shadow installed packages; the real code is the installed package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from sae_hacking.cli import script_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(script_main("sae_hacking.cli.tools", factory="look_for_cosine_sim_pairs_parser"))
