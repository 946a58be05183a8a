"""``serve --evidence RUN``: a top latent of the SAE the run was collected for links to its
section of the evidence pages, which the server renders on demand (the same pages as
``latents-report``, same data as the reader); another SAE's latents get no link; a run of another
model is refused at start; in Chromium, the link opens the latent's section, contexts drawn."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from sae_hacking.cli import main
from sae_hacking.errors import UsageError
from tests.browser import guard
from tests.servers import served_app

pytestmark = pytest.mark.slow
HOOK = "blocks.1.hook_resid_post"
D_SAE = 24
PROMPT = "Mu ro qu jo ce de lo fohevo dazi."


@pytest.fixture(scope="module")
def served(tiny_model_path, random_sae_path, prompts_path, tmp_path_factory):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from sae_hacking.lm.source import ModelSource
    from sae_hacking.serve.app import create_app
    from sae_hacking.serve.config import ServeConfig

    model = str(tiny_model_path("gemma2"))
    sae, other = random_sae_path(HOOK, D_SAE, seed=21), random_sae_path(HOOK, D_SAE, seed=22)
    run = tmp_path_factory.mktemp("served-evidence") / "latents"
    argv = ["latents", "--model", model, "--device", "cpu", "--sae-release", str(sae)]
    argv += ["--dataset-id", str(prompts_path(40, seed=8)), "--max-tokens", "16", "--quiet"]
    assert main([*argv, "--output-dir", str(run)]) == 0
    config = ServeConfig(
        model=ModelSource(name=model, device="cpu", dtype="float32"),
        sae_dir=(str(sae.parent),),
        evidence=(str(run),),
        quiet=True,
    )
    with served_app(create_app(config)) as base:
        yield {"base": base, "sae": sae, "other": other, "run": run, "model": model}


def api(served, release) -> dict:
    body = {"prompt": PROMPT, "sae_release": str(release), "sae_id": None, "top_k": 5}
    request = urllib.request.Request(
        served["base"] + "/api/activations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def get(served, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(served["base"] + path, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_a_latent_of_the_runs_sae_links_to_its_section(served):
    from sae_hacking.absorption.evidence.read import Evidence, token_decoder
    from sae_hacking.train.run import load_tokenizer

    answer = api(served, served["sae"])
    top = answer["top_latents"]
    assert top and all(
        t["evidence_url"] == f"evidence/0/page-00000.html#latent-{t['index']}" for t in top
    )
    status, page = get(served, "/evidence/0/page-00000.html")
    assert status == 200 and "Content-Security-Policy" in page
    data = json.loads(
        page.split('type="application/json"', 1)[1].split(">", 1)[1].split("</script>")[0]
    )
    with Evidence(served["run"]) as evidence:
        want = evidence.latents(0, D_SAE, token_decoder(load_tokenizer(served["model"])))
    assert [latent["index"] for latent in data["latents"]] == list(range(D_SAE))
    assert [ex["tokens"] for ex in data["latents"][3]["top"]] == [
        ex["tokens"] for ex in want[3]["top"]
    ]
    assert get(served, "/evidence/0/index.html")[0] == 200
    # No such page, run or evidence: a sentence, 404.
    for path in ("/evidence/0/page-00007.html", "/evidence/1/page-00000.html", "/evidence/0/x"):
        status, body = get(served, path)
        assert status == 404 and json.loads(body)["detail"].startswith("No evidence page")
    # Another SAE (other weights at the same hook): no link.
    assert all(t["evidence_url"] is None for t in api(served, served["other"])["top_latents"])


def test_evidence_of_another_model_or_a_run_without_evidence_is_refused(
    served, tiny_model_path, tmp_path
):
    from sae_hacking.serve.evidence import ServedEvidence
    from sae_hacking.train.run import load_tokenizer

    tokenizer = load_tokenizer(served["model"])
    with pytest.raises(UsageError, match="collected on the model"):
        ServedEvidence((str(served["run"]),), str(tiny_model_path("gemma2", 3)), tokenizer)
    with pytest.raises(UsageError, match="holds no cooccurrences or latents results"):
        ServedEvidence((str(tmp_path),), served["model"], tokenizer)


def test_the_link_opens_the_latents_section_in_chromium(served, chromium):
    answer = api(served, served["sae"])
    latent = answer["top_latents"][0]["index"]
    page = chromium.new_page(viewport={"width": 1300, "height": 900})
    refused, errors = guard(page, lambda url: url.startswith(served["base"] + "/"))
    try:
        page.goto(served["base"] + "/")
        page.fill("#prompt", PROMPT)
        page.fill("#release", str(served["sae"]))
        page.click("#highlight")
        link = page.wait_for_selector("#top-latents a.evidence")
        assert link.get_attribute("href") == f"evidence/0/page-00000.html#latent-{latent}"
        with page.context.expect_page() as opened:
            link.click()
        evidence = opened.value
        evidence.wait_for_selector(f"#latent-{latent} .ctx .tok")
        assert evidence.url.endswith(f"/evidence/0/page-00000.html#latent-{latent}")
        assert evidence.eval_on_selector_all(f"#latent-{latent} .ctx", "c => c.length") > 0
        assert not refused and not errors, (refused, errors)
    finally:
        for opened_page in page.context.pages:
            opened_page.close()
