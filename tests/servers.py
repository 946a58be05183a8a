"""Shared by the tests that run a uvicorn server in a thread."""

from __future__ import annotations

import time

# Only catches a server that never starts: a loaded CI machine may take many seconds.
START_TIMEOUT_S = 120


def wait_until_started(server, thread) -> None:
    """Wait for ``server`` (a ``uvicorn.Server`` running in ``thread``) to accept requests."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        assert thread.is_alive(), "the server thread ended before it started"
        assert time.monotonic() < deadline, f"the server did not start in {START_TIMEOUT_S} s"
        time.sleep(0.02)
