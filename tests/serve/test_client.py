"""The highlight client: one line when no server answers, and the server's own page saved on
the client's side, self-contained, with the answer in it as escaped JSON."""

import html.parser
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sae_hacking.cli import main
from sae_hacking.errors import EXIT_USAGE
from sae_hacking.reports.inline import locked_policy
from sae_hacking.serve.client import HighlightConfig, render_page, write_page
from sae_hacking.serve.page import SAVED_ID, asset

LEGACY_CLIENT = Path(__file__).parents[2] / "src" / "sae_hacking" / "prompt_client.py"
RESULT = {
    "sae": {"release": "r", "sae_id": "i", "hook": "blocks.0.hook_resid_post", "d_sae": 8},
    "tokens": ["<script>window.pwned=1</script>", " a", "\n", " b"],
    "feature": {"index": 3, "explanation": "<b>bold</b>", "url": None, "evidence_url": None},
    "activations": [0.0, 2.0, 0.5, 4.0],
    "top_per_token": [[], [{"index": 3, "value": 2.0}], [], [{"index": 3, "value": 4.0}]],
    "top_latents": [  # evidence_url: None, as from a server started without --evidence
        {"index": 3, "max": 4.0, "explanation": '"q" & <i>x</i>', "url": "https://x/3"},
        {"index": 5, "max": 1.0, "explanation": "", "url": "javascript:alert(1)"},
        {"index": 6, "max": 0.5, "explanation": "", "url": None},
    ],
    "max_activation": 4.0,
}
for _latent in RESULT["top_latents"]:
    _latent["evidence_url"] = None


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


class Markup(html.parser.HTMLParser):
    """A page's elements, attributes and the text of its inline style, scripts and data."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, tuple]] = []
        self.text: dict[str, str] = {}
        self.inside: str | None = None
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, tuple(attrs)))
        if tag in ("style", "script"):
            self.inside = dict(attrs).get("id") or tag
            self.text[self.inside] = ""

    def handle_endtag(self, tag):
        self.inside = None

    def handle_data(self, data):
        if self.inside:
            self.text[self.inside] += data


def test_the_saved_page_is_the_servers_page_with_the_answer_in_it(tmp_path):
    config = HighlightConfig(prompt="x", output_dir=str(tmp_path), feature_idx=3)
    page = render_page(config, RESULT)
    markup = Markup(page)
    # The server's own style and script (behind the shared token renderer's), inline: the saved
    # page renders with the same code.
    assert markup.text["style"] == asset("tokens.css") + asset("app.css")
    assert markup.text["script"] == asset("tokens.js") + asset("app.js")
    assert json.loads(markup.text[SAVED_ID]) == {
        "prompt": "x",
        "server": "http://127.0.0.1:9000",
        "answer": {**RESULT, "sae": {**RESULT["sae"], "neuronpedia_id": None}},
    }
    # Offline: nothing loaded from anywhere, and a policy that runs only those two.
    assert not [a for _, attrs in markup.tags for a in attrs if a[0] == "src"]
    assert [attrs for tag, attrs in markup.tags if tag == "link"] == [
        (("rel", "icon"), ("href", "data:,"))
    ]
    policy = ("http-equiv", "Content-Security-Policy")
    csp = [dict(attrs)["content"] for tag, attrs in markup.tags if policy in attrs]
    assert csp == [locked_policy(markup.text["style"], markup.text["script"])]
    # The server's markup otherwise, the form included (the script hides it).
    served = Markup(asset("index.html"))
    sheets = [
        ("link", (("rel", "stylesheet"), ("href", f"assets/{n}.css"))) for n in ("tokens", "app")
    ]
    assert [t for t in markup.tags if t[0] not in ("meta", "style", "script")] == [
        t for t in served.tags if t[0] not in ("meta", "script") and t not in sheets
    ]
    path = write_page(config, RESULT)
    assert path.parent == tmp_path and path.read_text(encoding="utf-8") == page


@pytest.mark.slow
def test_the_legacy_client_against_a_running_server(tiny_model_path, tmp_path, random_sae_path):
    """The legacy prompt_client.py command line, against `sae-hacking serve` in a subprocess:
    the page lands on the client's side and holds the server's activations."""
    from tests.serve.test_load import Server, post, serve_command

    sae = random_sae_path("blocks.1.hook_resid_post", 32, seed=4)
    port = free_port()
    server = Server(
        serve_command(tiny_model_path("gemma2"), port, "--sae-dir", str(sae.parent)), port
    )
    try:
        out = tmp_path / "prompts"
        argv = [
            sys.executable, str(LEGACY_CLIENT), "--sae-release", str(sae), "--sae-id", "",
            "--prompt", "testing 1 2 3", "--output-dir", str(out), "--feature-idx", "3",
            "--server-port", str(port),
        ]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        page = Path(proc.stdout.strip())
        assert page.parent == out and page.is_file()
        body = {"prompt": "testing 1 2 3", "sae_release": str(sae), "feature_idx": 3}
        expected = post(server.base + "/api/activations", body)
        saved = json.loads(Markup(page.read_text(encoding="utf-8")).text[SAVED_ID])
        assert saved["answer"] == expected and saved["prompt"] == "testing 1 2 3"
    finally:
        server.stop()


# -- a client that trusts no server: a fake server on a free loopback port --------------------


class FakeServer:
    """Answers every POST with ``status``, ``content_type`` and ``body`` (bytes, or a dict sent
    as JSON) after ``delay`` seconds; records the request bodies."""

    def __init__(self, body=RESULT, status=200, content_type="application/json", delay=0.0):
        import http.server
        import json
        import threading

        self.body, self.status, self.content_type, self.delay = body, status, content_type, delay
        self.requests: list[dict] = []
        self.release = threading.Event()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                fake.requests.append(
                    json.loads(self.rfile.read(int(self.headers["content-length"])))
                )
                if fake.delay:
                    fake.release.wait(fake.delay)
                body = fake.body if isinstance(fake.body, bytes) else json.dumps(fake.body).encode()
                self.send_response(fake.status)
                self.send_header("Content-Type", fake.content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A client that gave up (the timeout tests) leaves a broken pipe to a delayed answer;
        # socketserver would print its traceback into whichever test captures stderr next.
        self.server.handle_error = lambda request, client_address: None
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_server():
    servers = []

    def start(**kwargs) -> FakeServer:
        servers.append(FakeServer(**kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def highlight(server: FakeServer, out: Path, *flags: str) -> list[str]:
    argv = ["highlight", "--prompt", "hi", "--server-port", str(server.port)]
    return [*argv, "--output-dir", str(out), *flags]


def refused(capsys, argv, *words) -> str:
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for word in words:
        assert word in err, err
    return err


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def with_(**changes) -> dict:
    import copy

    result = copy.deepcopy(RESULT)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = result
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value
    return result


def test_a_path_in_the_answer_writes_nothing(fake_server, tmp_path, capsys):
    """Issue 17: feature.index "/../../../x" made the client write outside --output-dir."""
    server = fake_server(body=with_(feature__index="/../../../x"))
    out = tmp_path / "deep" / "er" / "out"
    refused(capsys, highlight(server, out, "--feature-idx", "3"), "feature.index")
    assert files_under(tmp_path) == []
    assert server.requests and server.requests[0]["feature_idx"] == 3


@pytest.mark.parametrize(
    "changes",
    [
        {"sae__d_sae": '<meta http-equiv="refresh" content="0;url=https://evil.example">'},
        {"feature__index": "<h1>3</h1>"},
        {"top_latents__0__index": "<h1>big</h1>"},
        {"top_per_token__1__0__index": "<b>3</b>"},
        {"tokens": 5},
        {"activations": ["NaN", "NaN", "NaN", "NaN"]},
        {"max_activation": "Infinity"},
        {"activations": [1.0]},  # fewer values than tokens
        {"top_latents__0__index": 8},  # not a latent of an 8-latent SAE
        {"sae": None},
    ],
)
def test_an_answer_that_is_not_the_apis_is_one_line(fake_server, tmp_path, capsys, changes):
    server = fake_server(body=with_(**changes))
    out = tmp_path / "out"
    err = refused(capsys, highlight(server, out, "--feature-idx", "3"), "not a highlight answer")
    assert "<" not in err
    assert files_under(tmp_path) == []


@pytest.mark.parametrize(
    "body, content_type",
    [
        (b"<!doctype html><html><body>It works!</body></html>", "text/html"),
        (b'{"tokens": [NaN', "application/json"),
        (b"", "application/json"),
    ],
)
def test_an_answer_that_is_not_json_is_one_line(fake_server, tmp_path, capsys, body, content_type):
    server = fake_server(body=body, content_type=content_type)
    refused(capsys, highlight(server, tmp_path / "out"), "not JSON")
    assert files_under(tmp_path) == []


def test_markup_in_text_fields_is_escaped(tmp_path):
    hostile = "<meta http-equiv=refresh content=0><h1>x</h1></script><!--<script>"
    result = with_(
        sae__release=hostile, sae__hook=hostile, sae__sae_id=hostile, feature__explanation=hostile
    )
    result["tokens"][1] = "</SCRIPT ><b>"
    result["top_latents"][0]["url"] = 'https://x/" onmouseover="alert(1)'
    page = render_page(HighlightConfig(prompt=hostile, output_dir=str(tmp_path)), result)
    benign = render_page(HighlightConfig(prompt="x", output_dir=str(tmp_path)), RESULT)
    # The same elements as with harmless text: nothing the server sent became markup, and the
    # answer comes back whole from the data block.
    assert Markup(page).tags == Markup(benign).tags
    saved = json.loads(Markup(page).text[SAVED_ID])
    assert saved["prompt"] == hostile and saved["answer"]["tokens"][1] == "</SCRIPT ><b>"
    assert "<meta http-equiv=refresh" not in page and "<h1>x" not in page


def test_the_file_name_comes_from_the_clients_settings(fake_server, tmp_path, capsys):
    server = fake_server()
    out = tmp_path / "out"
    out.mkdir()
    (out / "older-page.html").write_text("kept")  # an existing folder with pages is fine
    assert main(highlight(server, out, "--feature-idx", "3")) == 0
    written = Path(capsys.readouterr().out.strip())
    assert written.parent == out and written.name.startswith("prompt-")
    assert "-latent3-" in written.name
    assert sorted(p.name for p in out.iterdir()) == sorted(["older-page.html", written.name])


def test_an_answer_for_another_latent_is_refused(fake_server, tmp_path, capsys):
    server = fake_server()  # answers for latent 3
    refused(capsys, highlight(server, tmp_path / "out", "--feature-idx", "4"), "for latent 3")
    refused(capsys, highlight(server, tmp_path / "out"), "where --feature-idx asked for none")
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("folder", ["/proc/x", "/proc/self", "/sys/kernel/x"])
def test_an_unusable_output_dir_is_refused_before_asking(fake_server, capsys, folder):
    server = fake_server()
    refused(capsys, highlight(server, Path(folder)), "--output-dir", folder)
    assert server.requests == []


def test_an_output_dir_that_is_a_file_is_refused_before_asking(fake_server, tmp_path, capsys):
    server = fake_server()
    (tmp_path / "f").write_text("x")
    refused(capsys, highlight(server, tmp_path / "f" / "sub"), "--output-dir")
    refused(capsys, highlight(server, tmp_path / "f"), "--output-dir")
    assert server.requests == []


def test_a_silent_server_times_out_saying_what_it_waits_for(fake_server, tmp_path, capsys):
    import time

    server = fake_server(delay=60)
    start = time.monotonic()
    assert main(highlight(server, tmp_path / "out", "--timeout", "2.5")) == EXIT_USAGE
    # The server answers after 60 s; the client gave up long before (the bound is generous for
    # a loaded machine, and still far from the server's delay).
    assert time.monotonic() - start < 30
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"waiting for http://127.0.0.1:{server.port} ..."
    assert len(err) == 2 and "did not answer within 2.5 s" in err[1] and "--timeout" in err[1]
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_bad_timeout_is_refused(capsys, value, tmp_path):
    refused(capsys, ["highlight", "--prompt", "x", "--timeout", value], "--timeout")


def test_error_answers_are_one_safe_line_with_flags(fake_server, tmp_path, capsys):
    detail = "feature_idx 9 is out of range:\n\x1b[31mthis SAE has 8 latents\x1b[0m."
    server = fake_server(body={"detail": detail}, status=400)
    err = refused(capsys, highlight(server, tmp_path / "out", "--feature-idx", "9"), "answered 400")
    assert "--feature-idx 9 is out of range" in err and "\x1b" not in err


def test_a_local_sae_path_gets_no_default_id(fake_server, tmp_path, capsys):
    server = fake_server()
    for release, flags, sent in [
        ("./saes/sae.safetensors", [], None),
        ("/srv/saes/folder", [], None),
        ("gemma-scope-2b-pt-res-canonical", [], "layer_20/width_65k/canonical"),
        ("gemma-scope-2b-pt-res-canonical", ["--sae-id", "layer_3/width_16k/canonical"],
         "layer_3/width_16k/canonical"),
        ("./saes/folder", ["--sae-id", "sub"], "sub"),
    ]:  # fmt: skip
        main(
            highlight(
                server, tmp_path / "out", "--sae-release", release, "--feature-idx", "3", *flags
            )
        )
        assert server.requests[-1]["sae_release"] == release
        assert server.requests[-1]["sae_id"] == sent, release
    capsys.readouterr()


def test_a_failed_write_is_one_line(fake_server, tmp_path, capsys, monkeypatch):
    import errno

    import sae_hacking.atomic

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sae_hacking.atomic, "atomic_write_text", full)
    server = fake_server()
    (tmp_path / "out").mkdir()  # an empty existing folder is accepted
    refused(capsys, highlight(server, tmp_path / "out", "--feature-idx", "3"), "No space left")
