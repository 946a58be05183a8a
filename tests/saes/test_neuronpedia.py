"""Neuronpedia ids, URLs and explanations. Never the real network: offline cases count socket
attempts; downloads run against a fake export bucket on 127.0.0.1."""

import gzip
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sae_hacking.errors import FieldError
from sae_hacking.saes import neuronpedia as np_

NP_ID = "gemma-2-2b/20-gemmascope-mlp-65k"
PREFIX = f"v1/{NP_ID}/explanations/"


def _batch(rows) -> bytes:
    return gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())


# Export rows carry more than index and description; an index may have several explanations.
BATCHES = {
    f"{PREFIX}batch-0.jsonl.gz": _batch(
        [
            {
                "modelId": "gemma-2-2b",
                "layer": "20-gemmascope-mlp-65k",
                "index": "5",
                "description": " capital letters ",
                "explanationModelName": "x",
                "embedding": None,
            },
            {"index": "5", "description": "a second opinion"},
            {"index": "9", "description": "<script>window.pwned=1</script>"},
        ]
    ),
    f"{PREFIX}batch-1.jsonl.gz": _batch([{"index": "70000", "description": "the end"}]),
}
EXPECTED = {5: "capital letters", 9: "<script>window.pwned=1</script>", 70000: "the end"}


class FakeBucket(BaseHTTPRequestHandler):
    requests: list[str] = []
    listing = True
    broken: set[str] = set()

    def do_GET(self):
        FakeBucket.requests.append(self.path)
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        key = urllib.parse.unquote(url.path.lstrip("/"))
        if url.path == "/" and "list-type" in query:
            if not FakeBucket.listing:
                return self._send(403, b"<Error><Code>AccessDenied</Code></Error>")
            keys = [k for k in BATCHES if k.startswith(query["prefix"][0])]
            # Two pages, as S3 pages long listings.
            first = "continuation-token" not in query
            page = keys[:1] if first else keys[1:]
            body = '<?xml version="1.0"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            body += "".join(f"<Contents><Key>{k}</Key></Contents>" for k in page)
            body += f"<IsTruncated>{'true' if first else 'false'}</IsTruncated>"
            body += "<NextContinuationToken>t1</NextContinuationToken>" if first else ""
            return self._send(200, (body + "</ListBucketResult>").encode())
        if key in FakeBucket.broken:
            return self._send(500, b"")
        if key in BATCHES:
            return self._send(200, BATCHES[key])
        return self._send(404 if FakeBucket.listing else 403, b"<Error/>")

    def _send(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def online(monkeypatch, tmp_path):
    """Offline mode off, no proxy, a private cache folder."""
    from huggingface_hub import constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv(np_.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "neuronpedia"


@pytest.fixture
def bucket(online, monkeypatch):
    FakeBucket.requests, FakeBucket.listing, FakeBucket.broken = [], True, set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeBucket)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(np_.EXPORT_ENV, f"http://127.0.0.1:{server.server_port}")
    yield FakeBucket
    server.shutdown()
    server.server_close()


def test_the_id_comes_from_the_saelens_registry():
    assert (
        np_.neuronpedia_id("gemma-scope-2b-pt-mlp-canonical", "layer_20/width_65k/canonical")
        == NP_ID
    )
    assert np_.neuronpedia_id("./my_sae.safetensors", None) is None
    assert np_.neuronpedia_id("/tmp/sae_folder", "layer_20/width_65k/canonical") is None
    assert np_.neuronpedia_id("no-such-release", "x") is None
    assert np_.neuronpedia_id(None, None) is None


def test_latent_urls():
    assert np_.latent_url(NP_ID, 15000) == f"https://www.neuronpedia.org/{NP_ID}/15000"
    assert np_.latent_url(None, 3) is None


def test_explanations_from_a_local_file(tmp_path, network_attempts):
    as_list = tmp_path / "export.json"
    as_list.write_text(
        json.dumps(
            [
                {"index": "3", "description": "  threes ", "typeName": "oai_token-act-pair"},
                {"index": 3, "description": "later, ignored"},
                {"index": 4, "description": ""},
                {"index": 8, "description": "eights"},
            ]
        )
    )
    assert np_.load_explanations(NP_ID, str(as_list)) == ({3: "threes", 8: "eights"}, "file", None)
    as_dict = tmp_path / "export_map.json"
    as_dict.write_text(json.dumps({"3": "threes"}))
    assert np_.load_explanations(None, str(as_dict))[0] == {3: "threes"}
    as_batch = tmp_path / "batch-0.jsonl.gz"
    as_batch.write_bytes(BATCHES[f"{PREFIX}batch-0.jsonl.gz"])
    assert np_.read_explanations_file(as_batch) == {5: "capital letters", 9: EXPECTED[9]}
    assert network_attempts == []


@pytest.mark.parametrize("content", ["not json", '[{"description": "no index"}]', '"a string"'])
def test_a_bad_explanations_file_names_the_setting(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(FieldError) as err:
        np_.load_explanations(NP_ID, str(path))
    assert err.value.field == "explanations_file"
    with pytest.raises(FieldError, match="no such file"):
        np_.load_explanations(NP_ID, str(tmp_path / "missing.json"))


def test_offline_gives_one_warning_and_no_network(monkeypatch, tmp_path, network_attempts):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(np_.CACHE_ENV, str(tmp_path))
    explanations, source, warning = np_.load_explanations(NP_ID)
    assert (explanations, source) == ({}, "none")
    assert "offline mode is on" in warning and "`explanations_file`" in warning
    assert network_attempts == []


def test_no_id_gives_one_warning_and_no_network(network_attempts):
    explanations, source, warning = np_.load_explanations(None)
    assert (explanations, source) == ({}, "none")
    assert "no Neuronpedia id" in warning
    assert network_attempts == []


def test_an_unreachable_export_is_one_probe(online, monkeypatch, network_attempts):
    monkeypatch.setenv(np_.EXPORT_ENV, "http://127.0.0.1:9")  # refuses connections
    explanations, source, warning = np_.load_explanations(NP_ID)
    assert (explanations, source) == ({}, "none")
    assert "127.0.0.1:9 cannot be reached" in warning
    assert network_attempts == [("127.0.0.1", 9)]


def test_download_then_cache_hit(bucket, online, network_attempts):
    assert np_.load_explanations(NP_ID) == (EXPECTED, "neuronpedia export", None)
    assert len(bucket.requests) == 4  # two listing pages, two batches
    cached = online / "gemma-2-2b__20-gemmascope-mlp-65k.json"
    assert np_.read_explanations_file(cached) == EXPECTED  # the cache is a valid local export
    made = len(network_attempts)
    assert np_.load_explanations(NP_ID) == (EXPECTED, "neuronpedia export", None)
    assert len(bucket.requests) == 4
    assert len(network_attempts) == made


def test_without_a_listing_batches_are_read_in_order(bucket):
    bucket.listing = False
    assert np_.load_explanations(NP_ID)[0] == EXPECTED
    batch_requests = [r for r in bucket.requests if "batch-" in r]
    assert [r.rsplit("/", 1)[1] for r in batch_requests] == [
        "batch-0.jsonl.gz",
        "batch-1.jsonl.gz",
        "batch-2.jsonl.gz",
    ]


def test_a_failed_batch_is_a_warning_and_not_cached(bucket, online):
    bucket.broken = {f"{PREFIX}batch-1.jsonl.gz"}
    explanations, source, warning = np_.load_explanations(NP_ID)
    assert explanations == {5: "capital letters", 9: EXPECTED[9]}
    assert source == "neuronpedia export" and "1 export batches failed" in warning
    assert not online.exists() or not any(online.iterdir())
    bucket.broken = set()
    assert np_.load_explanations(NP_ID) == (EXPECTED, "neuronpedia export", None)


def test_an_unknown_id_is_a_warning(bucket):
    explanations, source, warning = np_.load_explanations("gemma-2-2b/no-such-sae")
    assert (explanations, source) == ({}, "none")
    assert "the export has none" in warning
