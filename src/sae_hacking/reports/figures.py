"""Matplotlib figures of the self-contained reports: no pyplot (no global state, no GUI
backend), PNG bytes that are the same on every run."""

from __future__ import annotations

import io


def figure(width: float, height: float, dpi: int):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=dpi, layout="constrained")


def png_bytes(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})  # same bytes every time
    return buffer.getvalue()
