"""Allows ``python -m sae_hacking`` (and ``torchrun -m sae_hacking``): the ``sae-hacking`` CLI."""

import sys

from sae_hacking.cli import main

if __name__ == "__main__":
    sys.exit(main())
