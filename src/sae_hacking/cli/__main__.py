"""Allows ``python -m sae_hacking.cli``."""

import sys

from sae_hacking.cli import main

sys.exit(main())
