"""The real server (``sae-hacking serve`` in a subprocess, uvicorn on a free loopback port):
it starts from the command line and the legacy script, and stays correct and flat in memory
under concurrent load while its SAE cache keeps evicting."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sae_hacking.lm.tiny import generate_texts

HOOK = "blocks.1.hook_resid_post"
SCRIPT = Path(__file__).parents[2] / "src" / "sae_hacking" / "prompt_server.py"
START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str, timeout: float = 30) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return json.loads(reply.read())


def post(url: str, body: dict, timeout: float = 60) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return json.loads(reply.read())


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Server:
    def __init__(self, command: list[str], port: int):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        self.base = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited: {self.process.stdout.read()}")
            try:
                self.health = get(self.base + "/api/health", timeout=5)
                return
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError("the server did not answer in time") from None
                time.sleep(0.2)

    def stop(self) -> str:
        self.process.terminate()
        try:
            out, _ = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        return out


@pytest.fixture
def sae_dir(tmp_path, random_sae_path):
    folder = tmp_path / "saes"
    folder.mkdir()
    for seed in range(3):
        path = random_sae_path(HOOK, 4096, seed)
        (folder / f"s{seed}.safetensors").write_bytes(path.read_bytes())
    return folder


def serve_command(model: Path, port: int, *flags: str) -> list[str]:
    head = [sys.executable, "-m", "sae_hacking.cli", "serve", "--model", str(model)]
    return [*head, "--device", "cpu", "--port", str(port), *flags]


@pytest.mark.slow
def test_concurrent_load_keeps_memory_flat(tiny_model_path, sae_dir):
    port = free_port()
    flags = ["--sae-dir", str(sae_dir), "--max-saes", "2", "--quiet"]
    server = Server(serve_command(tiny_model_path(), port, *flags), port)
    try:
        texts = generate_texts(200, seed=3, min_words=5, max_words=40)
        gen = random.Random(0)
        bodies = [
            {
                "prompt": text,
                "sae_release": f"./s{gen.randrange(3)}.safetensors",
                "feature_idx": gen.randrange(4096),
                "top_k": gen.randint(1, 10),
            }
            for text in texts
        ]

        def ask(body):
            data = post(server.base + "/api/activations", body)
            assert len(data["activations"]) == len(data["tokens"]) > 0
            return len(data["tokens"])

        with ThreadPoolExecutor(8) as pool:
            assert all(pool.map(ask, bodies[:20]))
            after_20 = rss_kib(server.process.pid)
            assert all(pool.map(ask, bodies[20:]))
        after_200 = rss_kib(server.process.pid)
        loaded = get(server.base + "/api/saes")["loaded"]
        assert len(loaded) == 2
    finally:
        log = server.stop()
    print(f"server RSS: {after_20} KiB after 20 requests, {after_200} KiB after 200")
    assert abs(after_200 - after_20) <= 0.05 * after_20, (after_20, after_200, log[-2000:])


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["cli", "legacy script"])
def test_the_server_starts_from_the_command_line(entry, tiny_model_path):
    port = free_port()
    command = serve_command(tiny_model_path(), port, "--quiet")
    if entry == "legacy script":
        command = [sys.executable, str(SCRIPT), *command[4:]]
    server = Server(command, port)
    try:
        assert server.health == {"status": "ok", "model": str(tiny_model_path())}
    finally:
        server.stop()
