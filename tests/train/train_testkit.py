"""Shared by the train tests: the hook they train at and the rows of a run's ``metrics.jsonl``
(the ``make_config`` fixture is in this folder's conftest.py)."""

from __future__ import annotations

import json

HOOK = "blocks.1.hook_resid_post"


def records(run_dir, split):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]
