#!/usr/bin/env python3
"""The legacy script path of print_cooccurrences.py; it says which command replaced it and exits 2."""

import sys
from pathlib import Path

# Run as a script, Python puts this folder first on sys.path, where module names like ``cli``
# or ``data`` could shadow installed packages; the real code is the installed package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from sae_hacking.cli.replaced import replaced_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(replaced_main("print_cooccurrences.py"))
