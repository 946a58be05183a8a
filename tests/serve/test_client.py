"""The highlight client: one line when no server answers, and an HTML page written on the
client's side with every token and explanation escaped."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sae_hacking.cli import main
from sae_hacking.errors import EXIT_USAGE
from sae_hacking.serve.client import HighlightConfig, render_page, write_page

SEED_CLIENT = Path(__file__).parents[2] / "src" / "sae_hacking" / "prompt_client.py"
RESULT = {
    "sae": {"release": "r", "sae_id": "i", "hook": "blocks.0.hook_resid_post", "d_sae": 8},
    "tokens": ["<script>window.pwned=1</script>", " a", "\n", " b"],
    "feature": {"index": 3, "explanation": "<b>bold</b>", "url": None},
    "activations": [0.0, 2.0, 0.5, 4.0],
    "top_per_token": [[], [{"index": 3, "value": 2.0}], [], [{"index": 3, "value": 4.0}]],
    "top_latents": [
        {"index": 3, "max": 4.0, "explanation": '"q" & <i>x</i>', "url": "https://x/3"},
        {"index": 5, "max": 1.0, "explanation": "", "url": "javascript:alert(1)"},
        {"index": 6, "max": 0.5, "explanation": "", "url": None},
    ],
    "max_activation": 4.0,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_server_is_one_line_naming_the_address(tmp_path, capsys):
    port = free_port()
    argv = [
        "highlight",
        "--prompt",
        "hi",
        "--server-port",
        str(port),
        "--output-dir",
        str(tmp_path),
    ]
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"127.0.0.1:{port}" in err[0] and "sae-hacking serve" in err[0]
    assert not any(tmp_path.iterdir())


def test_the_page_escapes_tokens_and_explanations(tmp_path):
    config = HighlightConfig(prompt="x", output_dir=str(tmp_path))
    page = render_page(config, RESULT)
    assert "<script>window" not in page and "&lt;script&gt;window.pwned" in page
    assert "<b>bold" not in page and "<i>x" not in page
    assert "javascript:" not in page  # only http(s) links
    assert page.count('class="tok"') == 4
    # Intensity follows the activation: the strongest token is fully coloured.
    assert "rgba(230, 80, 20, 1.000)" in page and "rgba(230, 80, 20, 0.500)" in page
    path = write_page(config, RESULT)
    assert path.parent == tmp_path and path.read_text(encoding="utf-8") == page


@pytest.mark.slow
def test_the_seed_client_against_a_running_server(tiny_model_path, tmp_path, random_sae_path):
    """The seed's prompt_client.py command line, against `sae-hacking serve` in a subprocess:
    the page lands on the client's side and holds the server's activations."""
    from test_load import Server, post, serve_command

    sae = random_sae_path("blocks.1.hook_resid_post", 32, seed=4)
    port = free_port()
    server = Server(
        serve_command(tiny_model_path("gemma2"), port, "--sae-dir", str(sae.parent)), port
    )
    try:
        out = tmp_path / "prompts"
        argv = [
            sys.executable, str(SEED_CLIENT), "--sae-release", str(sae), "--sae-id", "",
            "--prompt", "testing 1 2 3", "--output-dir", str(out), "--feature-idx", "3",
            "--server-port", str(port),
        ]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        page = Path(proc.stdout.strip())
        assert page.parent == out and page.is_file()
        body = {"prompt": "testing 1 2 3", "sae_release": str(sae), "feature_idx": 3}
        expected = post(server.base + "/api/activations", body)
        html = page.read_text(encoding="utf-8")
        assert html.count('class="tok"') == len(expected["tokens"])
        assert "Prompt highlighted by latent 3" in html
    finally:
        server.stop()
