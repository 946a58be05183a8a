"""The page at ``GET /`` in a real browser: the real server (uvicorn in a thread, tiny model, tiny SAE
loaded by path under ``--sae-dir``) and a Chromium driven by playwright (see tests/browser.py; CI
installs Debian's). Every request that would leave the server's loopback address is refused and
recorded. The page `sae-hacking highlight` saves is the same page, opened from disk with no
server."""

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sae_hacking.serve.page import asset
from tests.browser import guard
from tests.servers import served_app

HOOK = "blocks.1.hook_resid_post"
D_SAE = 24
PROMPT = "The cat sat on the mat.\nThe dog  ran\tfast."
HOSTILE = 'a <script>window.pwned=1</script> b <img src=x onerror="window.pwned=2"> c'
RGBA = re.compile(r"rgba?\((\d+), (\d+), (\d+)(?:, ([\d.]+))?\)")
HEAT = re.search(r"--heat:\s*([^;]+);", asset("tokens.css")).group(1).strip()  # the one colour


@pytest.fixture(scope="module")
def server(tiny_model_path, tmp_path_factory):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from sae_hacking.lm.source import ModelSource
    from sae_hacking.saes.io import save_sae_checkpoint
    from sae_hacking.serve.app import create_app
    from sae_hacking.serve.config import ServeConfig
    from tests.random_saes import random_sae

    # With a Neuronpedia id, so the top-latents panel has links to check.
    module = random_sae(HOOK, D_SAE, seed=11)
    module.info.neuronpedia_id = "tiny/test-sae"
    sae = save_sae_checkpoint(module, tmp_path_factory.mktemp("page-sae") / "sae.safetensors")
    model = ModelSource(name=str(tiny_model_path("gemma2")), device="cpu", dtype="float32")
    config = ServeConfig(model=model, sae_dir=(str(sae.parent),), sae=(str(sae),), quiet=True)
    with served_app(create_app(config)) as base:
        yield {"base": base, "release": str(sae.resolve())}


def api(server, prompt: str, feature: int | None = None) -> dict:
    body = {
        "prompt": prompt,
        "sae_release": server["release"],
        "sae_id": None,
        "feature_idx": feature,
    }
    request = urllib.request.Request(
        server["base"] + "/api/activations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


@pytest.fixture
def page(server, chromium):
    page = chromium.new_page(viewport={"width": 1300, "height": 900})
    page.set_default_timeout(30_000)
    page.refused, page.errors = [], []
    page.allowed = [server["base"] + "/"]  # and saved pages, by their file:// URL

    def route(r):
        if any(r.request.url.startswith(allowed) for allowed in page.allowed):
            r.continue_()
        else:
            page.refused.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("pageerror", lambda err: page.errors.append(str(err)))
    page.on("console", lambda msg: msg.type == "error" and page.errors.append(msg.text))
    try:
        yield page
    finally:
        page.close()


def shown(page, data: dict, feature: int | None) -> None:
    """Waits until the page shows ``data`` (the API's answer for the same request)."""
    label = f"latent #{feature}" if feature is not None else "strongest latent at each token"
    page.wait_for_function(
        """([n, label]) => document.querySelectorAll('#tokens .tok').length === n
            && document.getElementById('legend-label').textContent.startsWith(label)
            && !document.getElementById('highlight').disabled""",
        arg=[len(data["tokens"]), label],
    )


def alphas(page) -> list[float]:
    colours = page.eval_on_selector_all(
        "#tokens .tok", "spans => spans.map(s => getComputedStyle(s).backgroundColor)"
    )
    found = [RGBA.fullmatch(c) for c in colours]
    assert all(found), colours
    assert {", ".join(m.groups()[:3]) for m in found} <= {HEAT, "0, 0, 0"}, colours
    return [float(m.group(4)) if m.group(4) is not None else 1.0 for m in found]


def highlight(page, prompt: str, release: str, feature: int | None) -> None:
    page.fill("#prompt", prompt)
    page.fill("#release", release)
    page.fill("#sae-id", "")
    page.fill("#feature", "" if feature is None else str(feature))
    page.click("#highlight")


@pytest.mark.slow
def test_highlighting_in_chromium(server, page):
    base = server["base"]
    strongest = api(server, PROMPT)
    feature = strongest["top_latents"][0]["index"]
    data = api(server, PROMPT, feature)
    assert max(data["activations"]) > 0

    # The preloaded SAE is offered in the picker and fills the release and id fields.
    page.goto(base + "/")
    page.wait_for_selector("#loaded option:nth-child(2)", state="attached")
    page.select_option("#loaded", index=1)
    assert page.input_value("#release") == server["release"]
    assert page.input_value("#sae-id") == ""
    page.fill("#prompt", PROMPT)
    page.fill("#feature", str(feature))
    page.click("#highlight")
    shown(page, data, feature)
    spans = page.locator("#tokens .tok")
    assert spans.all_text_contents() == data["tokens"]
    # Whitespace and newlines are kept as they are.
    assert page.eval_on_selector("#tokens", "e => e.textContent") == "".join(data["tokens"])

    # The background intensity follows the activations: proportional, strongest at the max.
    acts, top = data["activations"], data["max_activation"]
    seen = alphas(page)
    # (Chromium keeps a colour's alpha in 8 bits.)
    assert seen == pytest.approx([min(1.0, max(a, 0) / top) for a in acts], abs=6e-3)
    by_act = [alpha for _, alpha in sorted(zip(acts, seen, strict=True))]
    assert by_act == sorted(by_act)
    peak = acts.index(max(acts))
    assert seen.index(max(seen)) == peak or seen[peak] == pytest.approx(max(seen))
    assert page.text_content("#legend-max") == f"{top:.3f}"

    # Hovering a token shows its value and its top latents.
    spans.nth(peak).hover()
    assert float(page.text_content("#panel-value")) == pytest.approx(acts[peak], abs=1e-3)
    listed = page.locator("#panel-latents .latent")
    expected = [e["index"] for e in data["top_per_token"][peak]]
    assert [int(b.get_attribute("data-latent")) for b in listed.all()] == expected
    assert page.text_content("#panel-token") == json.dumps(data["tokens"][peak])

    # Clicking another latent in that list re-highlights by it and puts it in the URL.
    other = next(i for i in expected if i != feature)
    listed.nth(expected.index(other)).click()
    again = api(server, PROMPT, other)
    shown(page, again, other)
    assert f"feature={other}" in page.url
    assert page.input_value("#feature") == str(other)
    values = page.eval_on_selector_all("#tokens .tok", "s => s.map(e => +e.dataset.value)")
    assert values == pytest.approx(again["activations"], abs=1e-6)
    # The panel stays on the same token and shows its value for the new latent.
    assert page.text_content("#panel-pos") == f"position {peak}"
    value = float(page.text_content("#panel-value"))
    assert value == pytest.approx(again["activations"][peak], abs=1e-3)

    # The top-latents panel: explanations as text, Neuronpedia links that do not leak the opener.
    rows = page.locator("#top-latents tbody tr")
    assert rows.count() == len(data["top_latents"])
    links = page.locator("#top-latents a").all()
    assert len(links) == len(data["top_latents"]), "every top latent links to Neuronpedia"
    for link, latent in zip(links, data["top_latents"], strict=True):
        assert (
            link.get_attribute("href")
            == f"https://www.neuronpedia.org/tiny/test-sae/{latent['index']}"
        )
        assert "noopener" in link.get_attribute("rel")

    # The URL is the state: opening it elsewhere runs the same request.
    shared = page.url
    page.goto(base + "/")
    page.goto(shared)
    shown(page, again, other)
    assert page.input_value("#prompt") == PROMPT
    assert page.input_value("#release") == server["release"]

    # Tokens are text, never markup.
    hostile = api(server, HOSTILE)
    highlight(page, HOSTILE, server["release"], None)
    shown(page, hostile, None)
    assert spans.all_text_contents() == hostile["tokens"]
    assert page.locator("#tokens script, #tokens img").count() == 0
    assert page.evaluate("typeof window.pwned") == "undefined"
    # Without a chosen latent, each token shows its strongest latent.
    strongest_here = [top[0]["value"] if top else 0.0 for top in hostile["top_per_token"]]
    values = page.eval_on_selector_all("#tokens .tok", "s => s.map(e => +e.dataset.value)")
    assert values == pytest.approx(strongest_here, abs=1e-6)

    # Keyboard focus shows a token too; a clicked token stays while the mouse crosses others.
    spans.nth(1).focus()
    assert page.text_content("#panel-pos") == "position 1"
    spans.nth(0).click()
    spans.nth(2).hover()
    assert page.text_content("#panel-pos") == "position 0"
    assert page.is_visible("#panel-pinned")

    # A latent that never fires on the prompt says so instead of a scale from 0 to 0.
    silent = next(f for f in range(D_SAE) if api(server, "hi", f)["max_activation"] == 0)
    highlight(page, "hi", server["release"], silent)
    page.wait_for_function(
        "label => document.getElementById('legend-label').textContent.startsWith(label)",
        arg=f"latent #{silent} does not fire on this prompt",
    )
    assert page.is_hidden("#legend-scale")

    assert page.errors == []
    # A bad request is one readable sentence.
    highlight(page, PROMPT, server["release"], D_SAE)
    page.wait_for_selector("#error:not([hidden])")
    with pytest.raises(urllib.error.HTTPError) as refused:
        api(server, PROMPT, D_SAE)
    assert refused.value.code == 400
    assert page.text_content("#error") == json.load(refused.value)["detail"]

    shot = os.environ.get("SAE_HACKING_PAGE_SCREENSHOT")
    if shot:  # for looking at the page by hand
        page.goto(shared)
        shown(page, again, other)
        spans.nth(peak).hover()
        page.screenshot(path=shot, full_page=True)
    # The only console errors are the browser's notes on the refused request.
    assert all(e.startswith("Failed to load resource") for e in page.errors), page.errors
    assert page.refused == []


# -- the page `sae-hacking highlight` saves: the same page, from disk, with no server ----------


def what_is_shown(page) -> dict:
    """Everything the page shows of an answer, as the browser renders it."""
    tokens = "#tokens .tok"
    return {
        "tokens": page.eval_on_selector_all(tokens, "s => s.map(e => e.textContent)"),
        "colours": page.eval_on_selector_all(
            tokens, "s => s.map(e => getComputedStyle(e).backgroundColor)"
        ),
        "values": page.eval_on_selector_all(tokens, "s => s.map(e => e.dataset.value)"),
        "legend": page.text_content("#legend-label"),
        "scale": None if page.is_hidden("#legend-scale") else page.text_content("#legend-max"),
        "top latents": page.locator("#top-latents tbody tr").all_text_contents(),
        "links": page.eval_on_selector_all("#top-latents a", "s => s.map(e => e.href)"),
    }


@pytest.mark.slow
def test_the_saved_page_shows_what_the_server_page_shows(server, page, tmp_path, capsys):
    """`sae-hacking highlight` against the running server, then its page opened from disk: the
    same tokens in the same colours as the server's page for the same request."""
    from sae_hacking.cli import main

    strongest = api(server, PROMPT)
    feature = strongest["top_latents"][0]["index"]
    port = server["base"].rsplit(":", 1)[1]
    for chosen, answer in ((feature, api(server, PROMPT, feature)), (None, strongest)):
        page.goto(server["base"] + "/")
        highlight(page, PROMPT, server["release"], chosen)
        shown(page, answer, chosen)
        served = what_is_shown(page)
        alphas(page)  # in the one colour

        flags = [] if chosen is None else ["--feature-idx", str(chosen)]
        argv = ["highlight", "--prompt", PROMPT, "--sae-release", server["release"], "--sae-id",
                "", "--server-port", port, "--output-dir", str(tmp_path), *flags]  # fmt: skip
        assert main(argv) == 0
        url = Path(capsys.readouterr().out.strip()).resolve().as_uri()
        page.allowed.append(url)
        page.goto(url)
        assert what_is_shown(page) == served
        assert len(set(served["colours"])) > 2  # the comparison is not between blank pages
        assert page.is_hidden("#query")
        assert (
            page.text_content("#model") == f"saved by sae-hacking highlight from {server['base']}"
        )
    assert page.errors == [] and page.refused == []


@pytest.mark.slow
def test_a_saved_page_needs_no_server_and_shows_text_as_text(chromium, tmp_path):
    from sae_hacking.serve.client import HighlightConfig, write_page
    from tests.serve.test_client import RESULT, with_

    quiet = with_(
        activations=[0.0, -0.0, 0.0, 0.0],
        top_per_token=[[], [], [], []],
        top_latents=[],
        max_activation=-0.0,
    )
    config = HighlightConfig(prompt="<b>hi</b>", output_dir=str(tmp_path), feature_idx=3)
    page = chromium.new_page()
    opened = []
    refused, errors = guard(page, lambda u: u in opened)  # the page itself only
    try:
        for result in (RESULT, quiet):
            opened.append(write_page(config, result).resolve().as_uri())
            page.goto(opened[-1])
            shown = what_is_shown(page)
            assert shown["tokens"] == RESULT["tokens"]
            assert page.locator(".tok *, #summary *, #legend-label *").count() == 0
            assert page.evaluate("typeof window.pwned") == "undefined"
            assert page.title() == "<b>hi</b> — SAE prompt highlighting"
        # The last page: a latent that never fires says so, with no scale from 0 to 0.
        assert shown["legend"] == "latent #3 does not fire on this prompt (<b>bold</b>)"
        assert shown["scale"] is None and shown["top latents"] == []
        assert {RGBA.fullmatch(c).group(4) for c in shown["colours"]} == {"0"}
        opened.append(write_page(config, RESULT).resolve().as_uri())
        page.goto(opened[-1])
        # Only http(s) links; latents are labels, since there is no server to ask about them.
        assert what_is_shown(page)["links"] == ["https://x/3"]
        page.locator("#tokens .tok").nth(3).hover()
        assert page.locator("#panel-latents button").count() == 0
        assert page.locator("#panel-latents .latent").all_text_contents() == ["#3  4.000"]
    finally:
        page.close()
    assert errors == [] and refused == []
