"""``python killed_after_checkpoint.py ARGS``: ``sae-hacking ARGS``, except that rank 1 (under
torchrun) kills itself with SIGKILL right after writing its first checkpoint: a rank dying
mid-run at a known point, without racing the run from outside."""

import os
import signal
import sys

from sae_hacking.cli import main
from sae_hacking.runs.stream import StreamRun

_save_checkpoint = StreamRun.save_checkpoint


def _save_then_die(self, accumulator):
    path = _save_checkpoint(self, accumulator)
    if os.environ.get("RANK") == "1":
        os.kill(os.getpid(), signal.SIGKILL)
    return path


if __name__ == "__main__":
    StreamRun.save_checkpoint = _save_then_die
    sys.exit(main(sys.argv[1:]))
