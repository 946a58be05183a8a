"""The server's HTTP edge without a model: the Host-header check (DNS rebinding), the port bound
before anything loads, and HTTP that uvicorn itself cannot parse answered as a JSON sentence."""

from __future__ import annotations

import json
import socket
import threading

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sae_hacking.cli import main
from sae_hacking.errors import EXIT_USAGE, FieldError
from sae_hacking.lm.source import ModelSource
from sae_hacking.serve.config import ServeConfig
from sae_hacking.serve.http import (
    INVALID_HTTP,
    BodyLimit,
    HostCheck,
    bind_socket,
    host_name,
    json_error_protocol,
)
from tests.servers import wait_until_started


def config(**settings) -> ServeConfig:
    return ServeConfig(model=ModelSource("unused"), **settings)


def guarded(names) -> TestClient:
    app = FastAPI()

    @app.get("/ok")
    def ok() -> dict:
        return {"ok": True}

    @app.post("/echo")
    def echo(body: dict) -> dict:
        return body

    app.add_middleware(BodyLimit, limit=64)
    app.add_middleware(HostCheck, names=names)
    return TestClient(app)


def status(client: TestClient, host: str) -> int:
    return client.get("/ok", headers={"host": host}).status_code


def test_host_names_without_port_or_brackets():
    assert host_name("LocalHost:9000") == "localhost"
    assert host_name("127.0.0.1") == "127.0.0.1"
    assert host_name("[::1]:9000") == "::1"
    assert host_name("[::1]") == "::1"
    assert host_name("evil.example:80") == "evil.example"


def test_a_loopback_server_answers_only_loopback_names():
    client = guarded(config().host_names())
    for good in ("127.0.0.1:9000", "localhost:9000", "[::1]:9000", "localhost", "127.0.0.1"):
        assert status(client, good) == 200, good
    # A rebound name (the attacker's page asks its own name, now 127.0.0.1), or a look-alike.
    for bad in ("evil.example:9000", "127.0.0.1.evil.example", "localhost.evil:9000", ""):
        reply = client.get("/ok", headers={"host": bad})
        assert reply.status_code == 400, bad
        detail = reply.json()["detail"]
        assert detail.endswith(".") and "--allowed-hosts" in detail and "\n" not in detail


def test_a_wider_host_adds_itself_and_the_allowed_names():
    wide = config(host="0.0.0.0", allowed_hosts=("SAE.example.org", "[fe80::1]"))
    assert wide.allowed_hosts == ("sae.example.org", "fe80::1")
    client = guarded(wide.host_names())
    assert status(client, "sae.example.org:9000") == 200
    assert status(client, "[fe80::1]:9000") == 200
    assert status(client, "localhost:9000") == 200
    assert status(client, "evil.example:9000") == 400
    assert status(client, "0.0.0.0:9000") == 400  # a wildcard is not a name
    own = guarded(config(host="10.1.2.3").host_names())
    assert status(own, "10.1.2.3:9000") == 200 and status(own, "evil.example") == 400
    anyone = guarded(config(host="0.0.0.0", allowed_hosts=("*",)).host_names())
    assert status(anyone, "evil.example") == 200


@pytest.mark.parametrize("bad", ["a b", "x/y", "example.org:9000", "", "user@host"])
def test_bad_allowed_hosts_are_refused(bad):
    with pytest.raises(FieldError) as refused:
        config(allowed_hosts=(bad,))
    assert refused.value.field == "allowed_hosts"


def test_a_bad_content_length_is_a_sentence():
    client = guarded(None)
    reply = client.post("/echo", content=b'{"a": 1}', headers={"content-length": "abc"})
    assert reply.status_code == 400
    assert reply.json() == {"detail": "The Content-Length header is not a byte count."}
    assert client.post("/echo", json={"a": "b" * 100}).status_code == 413


def test_a_taken_port_is_one_line_before_the_model_loads(capsys, monkeypatch, tiny_model_path):
    import sae_hacking.serve.app as app_module

    def no_load(*args, **kwargs):
        raise AssertionError("the model loaded before the port was checked")

    monkeypatch.setattr(app_module, "create_app", no_load)
    model = str(tiny_model_path())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(FieldError, match="taken"):
            bind_socket("127.0.0.1", port)
        assert main(["serve", "--model", model, "--port", str(port)]) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert "loading" not in out and "serving" not in out
    assert (
        err
        == f"error: --port {port} on 127.0.0.1 is taken by another process; choose another port.\n"
    )


def raw_exchange(port: int, request: bytes) -> tuple[str, dict]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode("latin-1"), json.loads(body)


@pytest.fixture
def uvicorn_port():
    """A model-free app served by uvicorn with this package's protocol, on a free port."""
    import uvicorn

    sock = bind_socket("127.0.0.1", 0)
    app = guarded(config().host_names()).app
    server = uvicorn.Server(
        uvicorn.Config(app, http=json_error_protocol(), log_level="critical", lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until_started(server, thread)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n{}",
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: -4\r\n\r\n{}",
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nContent-Length: 3"
        b"\r\n\r\n{}",
        b"GARBAGE\r\n\r\n",
    ],
)
def test_unparsable_http_is_a_json_sentence(uvicorn_port, request_bytes):
    head, body = raw_exchange(uvicorn_port, request_bytes)
    assert head.startswith("HTTP/1.1 400")
    assert "application/json" in head.lower()
    assert body == {"detail": INVALID_HTTP}


def test_the_real_server_checks_the_host(uvicorn_port):
    request = b"GET /ok HTTP/1.1\r\nHost: evil.example:%d\r\nConnection: close\r\n\r\n"
    head, body = raw_exchange(uvicorn_port, request % uvicorn_port)
    assert head.startswith("HTTP/1.1 400") and '"evil.example:' in body["detail"]
    request = b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n"
    head, body = raw_exchange(uvicorn_port, request % uvicorn_port)
    assert head.startswith("HTTP/1.1 200") and body == {"ok": True}
