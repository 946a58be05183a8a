"""Resampling under torchrun keeps the replicas equal (each rank draws from its own data, then
every rank takes rank 0's parameters)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("broadcast", [True, False])
def test_resampling_keeps_the_replicas_equal(tmp_path, broadcast):
    script = Path(__file__).with_name("ddp_resample.py")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", str(script), str(tmp_path)]
    command += [] if broadcast else ["--no-broadcast"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["moved"] > 0  # latents were resampled, from different inputs on each rank
    assert result["equal"] is broadcast
