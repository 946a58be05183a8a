"""Flags every benchmark shares (a helper module, not a benchmark: ``.ci/run`` skips ``_*.py``).

- ``--quick``: a tiny configuration that runs in seconds on a small CPU and still goes through
  the real code paths, the comparison with the reference method included. It replaces the
  defaults only, so a flag given explicitly still wins. The figures are meaningless as
  measurements; ``.ci/run`` uses it as a smoke test.
- ``--json PATH``: also write the measured figures (rates, ratios, equality flags) and the
  configuration to ``PATH``, atomically.

Importing it also puts the repository root on ``sys.path`` (a script run as
``python benchmarks/NAME.py`` sees only ``benchmarks/``), so the benchmarks import the tests'
helpers (``tests.random_saes``) as the tests do; import it before them.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sae_hacking.atomic import atomic_write_json

# Ahead of site-packages, as pytest's `pythonpath = ["."]` puts it: `tests` is then the
# repository's, never a same-named package that some dependency installed.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(1, _ROOT)


def parse_args(
    parser: argparse.ArgumentParser, quick: dict[str, Any], argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """Add ``--quick`` and ``--json`` to ``parser`` and parse; under ``--quick`` the settings in
    ``quick`` (argparse destinations) replace the defaults."""
    shown = ", ".join(f"{k}={v}" for k, v in quick.items())
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"tiny configuration for a smoke test ({shown}); explicit flags still win",
    )
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="also write the figures to PATH as JSON"
    )
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**quick)
        args = parser.parse_args(argv)
    return args


def write_json(
    args: argparse.Namespace,
    results: dict[str, Any],
    *,
    exclude: Sequence[str] = (),
    **config: Any,
) -> None:
    """Write ``results`` and the configuration (``args`` but ``exclude``, plus ``config``) to
    ``args.json`` if given. NaN and infinities become null (strict JSON)."""
    if args.json is None:
        return
    name = Path(sys.argv[0]).stem
    payload = {
        "benchmark": name,
        "quick": args.quick,
        "config": {**settings(args, exclude), **config},
        "results": results,
    }
    atomic_write_json(args.json, _plain(payload))


def settings(args: argparse.Namespace, exclude: Sequence[str] = ()) -> dict[str, Any]:
    """The benchmark's own settings from ``args`` (without ``--quick``, ``--json``, ``exclude``)."""
    skip = {"quick", "json", *exclude}
    return {k: v for k, v in vars(args).items() if k not in skip}


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, bool | int | str) or obj is None:
        return obj
    if hasattr(obj, "item"):  # numpy / torch scalars
        return _plain(obj.item())
    return str(obj)
