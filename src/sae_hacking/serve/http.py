"""The server's HTTP edge, below FastAPI: the listening socket (bound before the model loads, so
a taken port is one line at once), ASGI middleware for the Host header and the body size, and
uvicorn run with its protocol-level errors answered as JSON sentences like every other error.
Torch-free; uvicorn is imported only by :func:`run`.
"""

from __future__ import annotations

import errno
import json
import socket
from collections.abc import Collection

from sae_hacking.errors import FieldError

MAX_BODY_BYTES = 64 * 1024
MAX_SHOWN_HOST = 80


def bind_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` as uvicorn binds one (``SO_REUSEADDR``, IPv6 for an
    address with a colon), for :func:`run`; a taken port or an address this machine does not
    have is a :class:`FieldError`."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise FieldError(
                "port", f"{port} on {host} is taken by another process; choose another port."
            ) from None
        if err.errno == errno.EACCES:
            raise FieldError(
                "port", f"{port} needs privileges this user lacks; choose one above 1023."
            ) from None
        reason = err.strerror or str(err)
        raise FieldError("host", f"cannot listen on {host}:{port} ({reason}).") from None
    return sock


def host_name(header: str) -> str:
    """The name in a Host header, lowercase, without its port or IPv6 brackets."""
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    name, colon, port = value.rpartition(":")
    return name if colon and port.isdigit() and ":" not in name else value


def _json(status: int, detail: str) -> tuple[dict, dict]:
    body = json.dumps({"detail": detail}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


async def _answer(send, status: int, detail: str) -> None:
    for message in _json(status, detail):
        await send(message)


class HostCheck:
    """ASGI middleware: 400 unless the request's Host header names this server by one of
    ``names`` (``None``: any). A web page whose name an attacker rebinds to 127.0.0.1 reaches a
    loopback server, but its requests still carry the attacker's name."""

    def __init__(self, app, names: Collection[str] | None):
        self.app = app
        self.names = None if names is None else frozenset(names)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or self.names is None:
            return await self.app(scope, receive, send)
        raw = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        if host_name(raw) in self.names:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        shown = json.dumps(raw[:MAX_SHOWN_HOST]) if raw else "(none)"
        names = ", ".join(sorted(f"[{n}]" if ":" in n else n for n in self.names))
        await _answer(
            send,
            400,
            f"The Host header {shown} does not name this server; it answers to {names} "
            "(start it with --allowed-hosts to add names).",
        )


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes, by its Content-Length or,
    for a chunked body, as soon as what arrived exceeds it. The body is read here (at most
    ``limit`` bytes are ever held) and handed on whole: FastAPI would turn an error raised
    while it reads the body into a 400."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and not length.strip().isdigit():
            return await _answer(send, 400, "The Content-Length header is not a byte count.")
        if length is not None and int(length) > self.limit:
            return await self._too_large(send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            body += message.get("body", b"")
            if len(body) > self.limit:
                return await self._too_large(send)
            more = message.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, send):
        await _answer(send, 413, f"The request body is larger than {self.limit // 1024} KiB.")


INVALID_HTTP = (
    "The request is not valid HTTP/1.1 (a malformed request line or header, such as a "
    "Content-Length that is not a byte count or disagrees with the body)."
)


def json_error_protocol():
    """uvicorn's h11 protocol, answering a request it cannot parse (before any application
    code runs) with a JSON sentence instead of plain text."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class JSONErrorH11Protocol(H11Protocol):
        def send_400_response(self, msg: str) -> None:
            body = json.dumps({"detail": INVALID_HTTP}).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ]
            for event in (
                h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                h11.Data(data=body),
                h11.EndOfMessage(),
            ):
                self.transport.write(self.conn.send(event))
            self.transport.close()

    return JSONErrorH11Protocol


def run(app, sock: socket.socket, quiet: bool = False) -> None:
    """Serve ``app`` on the bound ``sock`` until interrupted."""
    import uvicorn

    config = uvicorn.Config(
        app,
        http=json_error_protocol(),
        log_level="warning" if quiet else "info",
        access_log=not quiet,
    )
    uvicorn.Server(config).run(sockets=[sock])
