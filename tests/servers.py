"""Shared by the tests that run a uvicorn server in a thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

# Only catches a server that never starts: a loaded CI machine may take many seconds.
START_TIMEOUT_S = 120


def wait_until_started(server, thread) -> None:
    """Wait for ``server`` (a ``uvicorn.Server`` running in ``thread``) to accept requests."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        assert thread.is_alive(), "the server thread ended before it started"
        assert time.monotonic() < deadline, f"the server did not start in {START_TIMEOUT_S} s"
        time.sleep(0.02)


@contextlib.contextmanager
def served_app(app) -> Iterator[str]:
    """Serve the ASGI ``app`` with uvicorn in a thread on a free loopback port; yields its base
    URL (``http://127.0.0.1:PORT``) once it accepts requests, and stops it afterwards."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until_started(server, thread)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
