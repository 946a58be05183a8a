"""The server's JSON API, in process (FastAPI's TestClient): activations equal the SAE applied to
``HookedLM.read`` directly, every client error is a 4xx with one sentence, the SAE cache frees
what it evicts, and the packaged page is served without path tricks."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from fastapi.testclient import TestClient

from sae_hacking.cli import main
from sae_hacking.data.pieces import token_pieces
from sae_hacking.lm.source import ModelSource
from sae_hacking.saes.io import load_sae_checkpoint
from sae_hacking.serve.app import MAX_BODY_BYTES, create_app
from sae_hacking.serve.config import ServeConfig

HOOK = "blocks.1.hook_resid_post"
PROMPT = "the cat sat on the mat and then the dog ran far away"


@pytest.fixture
def sae_dir(tmp_path, random_sae_path):
    folder = tmp_path / "saes"
    folder.mkdir()
    for seed in range(3):
        (folder / f"s{seed}.safetensors").write_bytes(random_sae_path(HOOK, 128, seed).read_bytes())
    return folder


@pytest.fixture
def make_client(tiny_lm, tiny_model_path, sae_dir):
    def make(**settings):
        model = ModelSource(str(tiny_model_path()), device="cpu")
        config = ServeConfig(model=model, sae_dir=(str(sae_dir),), quiet=True, **settings)
        # A Host the server answers to (TestClient's default, testserver, is refused).
        return TestClient(create_app(config, lm=tiny_lm()), base_url="http://127.0.0.1:9000")

    return make


def post(client, **body):
    return client.post("/api/activations", json={"prompt": PROMPT, **body})


def direct_acts(lm, sae_path, prompt):
    sae = load_sae_checkpoint(sae_path)
    batch = lm.tokenize([prompt], 64)
    real = batch.real_token_mask_BS[0]
    acts_BSM = lm.read(batch.input_ids_BS, batch.attention_mask_BS, [HOOK])[HOOK]
    with torch.inference_mode():
        return sae.encode(acts_BSM[0][real]).float(), batch.input_ids_BS[0][real].tolist()


def test_activations_equal_the_sae_on_the_read(make_client, tiny_lm, sae_dir):
    client = make_client()
    path = sae_dir / "s0.safetensors"
    expected_SE, ids = direct_acts(tiny_lm(), path, PROMPT)
    assert (expected_SE > 0).any()
    feature = int(expected_SE.max(dim=0).values.argmax())
    reply = post(client, sae_release=str(path), feature_idx=feature, top_k=4)
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert data["sae"] == {
        "release": str(path.resolve()),
        "sae_id": None,
        "hook": HOOK,
        "d_sae": 128,
        "neuronpedia_id": None,
    }
    assert len(data["tokens"]) == len(ids) == expected_SE.shape[0]
    assert "".join(data["tokens"]) == tiny_lm().tokenizer.decode(ids)
    torch.testing.assert_close(torch.tensor(data["activations"]), expected_SE[:, feature])
    assert data["feature"] == {
        "index": feature,
        "explanation": "",
        "url": None,
        "evidence_url": None,  # a server without --evidence
    }
    assert data["max_activation"] == pytest.approx(float(expected_SE[:, feature].max()))
    for t, latents in enumerate(data["top_per_token"]):
        active = int((expected_SE[t] > 0).sum())
        assert len(latents) == min(4, active)
        values = [item["value"] for item in latents]
        assert values == sorted(values, reverse=True)
        for item in latents:
            assert item["value"] == pytest.approx(float(expected_SE[t, item["index"]]), abs=1e-5)
        if latents:  # nothing left out is stronger
            assert values[-1] >= float(expected_SE[t].topk(len(latents)).values[-1]) - 1e-5
    max_E = expected_SE.max(dim=0).values
    top = data["top_latents"]
    assert [item["index"] for item in top] == max_E.topk(len(top)).indices.tolist()
    assert len(top) == min(4, int((max_E > 0).sum()))
    for item in top:
        assert item["max"] == pytest.approx(float(max_E[item["index"]]), abs=1e-5)


def test_without_a_feature_the_scale_is_the_largest_activation(make_client, tiny_lm, sae_dir):
    data = post(make_client(), sae_release=str(sae_dir / "s1.safetensors")).json()
    expected_SE, _ = direct_acts(tiny_lm(), sae_dir / "s1.safetensors", PROMPT)
    assert data["activations"] is None and data["feature"] is None
    assert data["max_activation"] == pytest.approx(float(expected_SE.max()))
    assert all(len(latents) <= 5 for latents in data["top_per_token"])


def test_relative_names_resolve_under_the_sae_dir(make_client):
    reply = post(make_client(), sae_release="./s2.safetensors", feature_idx=0)
    assert reply.status_code == 200, reply.text


def one_sentence(reply, status):
    assert reply.status_code == status, reply.text
    detail = reply.json()["detail"]
    assert isinstance(detail, str) and detail.endswith(".") and "\n" not in detail
    return detail


def test_client_errors_are_one_sentence(make_client, tmp_path, sae_dir, random_sae_path):
    client = make_client(max_prompt_tokens=8)
    good = str(sae_dir / "s0.safetensors")
    one_sentence(post(client, sae_release="no-such-release", sae_id="layer_0/x"), 404)
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(random_sae_path(HOOK, 128, 0).read_bytes())
    assert "--sae-dir" in one_sentence(post(client, sae_release=str(outside)), 404)
    one_sentence(post(client, sae_release="../outside.safetensors"), 404)
    one_sentence(post(client, sae_release=str(sae_dir), sae_id="../outside.safetensors"), 404)
    (sae_dir / "link.safetensors").symlink_to(outside)
    one_sentence(post(client, sae_release=str(sae_dir / "link.safetensors")), 404)
    one_sentence(post(client, sae_release="/etc/passwd"), 404)
    one_sentence(post(client, sae_release=str(sae_dir / "missing.safetensors")), 404)
    assert "128 latents" in one_sentence(
        client.post(
            "/api/activations", json={"prompt": "a b", "sae_release": good, "feature_idx": 128}
        ),
        400,
    )
    assert "8 tokens" in one_sentence(post(client, sae_release=good), 400)
    assert "prompt" in one_sentence(
        client.post("/api/activations", json={"sae_release": good}), 422
    )
    one_sentence(
        client.post("/api/activations", json={"prompt": "a", "sae_release": good, "top_k": 0}), 422
    )
    one_sentence(
        client.post("/api/activations", json={"prompt": "a", "sae_release": good, "x": 1}), 422
    )
    one_sentence(
        client.post(
            "/api/activations", content=b"{not json", headers={"content-type": "application/json"}
        ),
        422,
    )
    big = {"prompt": "a " * MAX_BODY_BYTES, "sae_release": good}
    one_sentence(client.post("/api/activations", json=big), 413)
    chunks = iter([b'{"prompt": "', b"a" * MAX_BODY_BYTES, b'"}'])
    one_sentence(client.post("/api/activations", content=chunks), 413)


def test_an_sae_for_another_width_is_refused(make_client, sae_dir, random_sae_path):
    narrow = sae_dir / "narrow.safetensors"
    narrow.write_bytes(random_sae_path(HOOK, 16, 0, d_in=32).read_bytes())
    assert "wide" in one_sentence(post(make_client(), sae_release=str(narrow)), 400)


def test_the_cache_frees_what_it_evicts(make_client, sae_dir):
    client = make_client(max_saes=2)
    saes = client.app.state.saes
    names = [str(sae_dir / f"s{seed}.safetensors") for seed in range(3)]
    assert post(client, sae_release=names[0]).status_code == 200
    first = weakref.ref(saes.loaded()[0].sae)
    for name in names[1:]:
        assert post(client, sae_release=name).status_code == 200
    gc.collect()
    assert first() is None
    listed = client.get("/api/saes").json()
    assert [item["release"] for item in listed["loaded"]] == names[1:]
    assert listed["max_saes"] == 2 and listed["sae_dirs"] == [str(sae_dir.resolve())]
    # Using an SAE makes it the most recent: the other one goes next.
    assert post(client, sae_release=names[1]).status_code == 200
    assert post(client, sae_release=names[0]).status_code == 200
    assert [e.key.release for e in saes.loaded()] == [names[1], names[0]]


def test_preloaded_saes_and_health(make_client, tmp_path, random_sae_path, tiny_lm):
    elsewhere = random_sae_path(HOOK, 64, 5)
    client = make_client(sae=(str(elsewhere),))
    assert [item["d_sae"] for item in client.get("/api/saes").json()["loaded"]] == [64]
    assert post(client, sae_release=str(elsewhere)).status_code == 200  # the operator's choice
    assert client.get("/api/health").json() == {"status": "ok", "model": tiny_lm().name}


def test_the_page_and_its_assets(make_client):
    client = make_client()
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert client.get("/assets/app.js").status_code == 200
    for name in ("nothing.js", "..%2Fapp.py", ".hidden", "%2E%2E"):
        assert client.get(f"/assets/{name}").status_code == 404
    assert client.get("/assets/../app.py").status_code == 404
    assert client.get("/openapi.json").json()["paths"]["/api/activations"]


def test_tokens_read_as_text(tiny_lm):
    tokenizer = tiny_lm().tokenizer
    text = "Hello  world, café <script>x</script>\nnew line ü"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces = token_pieces(tokenizer, ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == text
    assert "é" in pieces and "\ufffd" not in "".join(pieces)


@pytest.mark.parametrize(
    "flags",
    [["--port", "0"], ["--max-saes", "0"], ["--sae-dir", "/no/such/dir"], ["--port", "x"]],
)
def test_bad_flags_are_one_line(flags, capsys):
    with pytest.raises(SystemExit) if "x" in flags else _nothing():
        assert main(["serve", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:")


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_non_loopback_host_warns(monkeypatch, capsys, tiny_model_path):
    import sae_hacking.cli.serve as serve_cli

    started = []
    monkeypatch.setattr(serve_cli, "serve", started.append)
    assert main(["serve", "--model", str(tiny_model_path()), "--host", "0.0.0.0"]) == 0
    assert started[0].host == "0.0.0.0"
    err = capsys.readouterr().err
    assert err.startswith("warning: --host is 0.0.0.0: other machines")
    assert "--allowed-hosts" in err and "allowed_hosts" not in err
    assert main(["serve", "--model", str(tiny_model_path())]) == 0
    assert capsys.readouterr().err == ""


# -- issue 17: hostile requests and malformed SAEs get JSON sentences ---------------------------


def test_a_foreign_host_header_is_refused(make_client):
    client = make_client()
    detail = one_sentence(client.get("/api/health", headers={"host": "evil.example:9000"}), 400)
    assert "evil.example" in detail and "--allowed-hosts" in detail
    assert client.get("/api/health", headers={"host": "localhost:9000"}).status_code == 200
    wide = make_client(host="0.0.0.0", allowed_hosts=("sae.example.org",))
    assert wide.get("/api/health", headers={"host": "sae.example.org:9000"}).status_code == 200
    one_sentence(wide.get("/api/health", headers={"host": "evil.example"}), 400)


def malformed_saes(folder, good):
    """Three files that are not loadable SAEs: valid metadata but a tensor missing, metadata
    that is not JSON, a SAELens folder whose cfg.json is {}."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from sae_hacking.saes.io import METADATA_KEY

    with safe_open(str(good), framework="pt") as handle:
        meta = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    first = sorted(tensors)[0]
    missing = {name: t for name, t in tensors.items() if name != first}
    save_file(missing, str(folder / "missing.safetensors"), metadata=meta)
    save_file(tensors, str(folder / "badmeta.safetensors"), metadata={METADATA_KEY: "{not json"})
    lens = folder / "lens"
    lens.mkdir()
    (lens / "cfg.json").write_text("{}")
    save_file(tensors, str(lens / "sae_weights.safetensors"))
    return ["missing.safetensors", "badmeta.safetensors", "lens"]


def test_malformed_sae_files_are_a_sentence(make_client, sae_dir):
    client = make_client()
    for name in malformed_saes(sae_dir, sae_dir / "s0.safetensors"):
        reply = post(client, sae_release=str(sae_dir / name))
        assert 400 <= reply.status_code < 500, (name, reply.text)
        assert name in one_sentence(reply, reply.status_code), name
    assert post(client, sae_release=str(sae_dir / "s0.safetensors")).status_code == 200


def test_an_sae_with_nan_weights_is_a_sentence(make_client, sae_dir, random_sae_path):
    from sae_hacking.saes.io import load_sae_checkpoint, save_sae_checkpoint

    sae = load_sae_checkpoint(random_sae_path(HOOK, 128, 0))
    with torch.no_grad():
        sae.W_enc_ME.fill_(float("nan"))
    save_sae_checkpoint(sae, sae_dir / "nan.safetensors")
    detail = one_sentence(post(make_client(), sae_release=str(sae_dir / "nan.safetensors")), 400)
    assert "not finite" in detail


def test_an_unexpected_failure_is_a_json_500(make_client, monkeypatch):
    app = make_client().app  # answering as a real server would, not raising in the test:
    client = TestClient(app, base_url="http://127.0.0.1:9000", raise_server_exceptions=False)

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(client.app.state.saes, "get", broken)
    detail = one_sentence(post(client, sae_release="./s0.safetensors"), 500)
    assert "ZeroDivisionError" in detail and "log" in detail


@pytest.mark.parametrize(
    "body, start",
    [
        (b'{"prompt": "a", bad}', "The body is not valid JSON: Expecting property name"),
        (b'{"prompt": "a"', "The body is not valid JSON"),
        (b"[1, 2]", "The body:"),
    ],
)
def test_a_malformed_body_is_a_sentence(make_client, body, start):
    reply = make_client().post(
        "/api/activations", content=body, headers={"content-type": "application/json"}
    )
    assert one_sentence(reply, 422).startswith(start)


def test_a_latent_that_never_fires_has_no_negative_zero(make_client, tiny_lm, sae_dir):
    path, prompt = sae_dir / "s0.safetensors", "hi"
    acts_SE, _ = direct_acts(tiny_lm(), path, prompt)
    silent = int((acts_SE.max(dim=0).values <= 0).nonzero()[0])
    # (A JumpReLU gives -0.0 where the pre-activation is negative: mask 0 times a negative.)
    assert torch.signbit(acts_SE[:, silent]).any()
    reply = make_client().post(
        "/api/activations",
        json={"prompt": prompt, "sae_release": str(path), "feature_idx": silent},
    )
    assert reply.status_code == 200
    data = reply.json()
    assert data["max_activation"] == 0.0 and all(a == 0.0 for a in data["activations"])
    assert "-0.0" not in reply.text


def test_the_docs_work_offline(make_client):
    client = make_client()
    page = client.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    text = page.text
    assert "<script" not in text and "cdn" not in text.lower()
    assert "POST /api/activations" in text and "ActivationsResponse" in text
    assert 'href="openapi.json"' in text
    assert one_sentence(client.get("/redoc"), 404) == "Not Found."
    assert one_sentence(client.delete("/api/health"), 405) == "Method Not Allowed."
