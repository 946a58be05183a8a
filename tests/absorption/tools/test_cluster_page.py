"""cluster.html in Chromium (tests/browser.py): the collapsible dendrogram opens and closes,
finds latents, shows hostile labels as text and makes no request; a 20,000-leaf tree stays
quick because rows are built only when their branch opens."""

import time

import numpy as np
import pytest

from sae_hacking.absorption.tools.cluster import build_tree
from sae_hacking.reports.cluster import write_page
from tests.browser import guard

HOSTILE = '<img src=x onerror="window.pwned=1">'
NP = "https://www.neuronpedia.org/gemma-2-2b/20-gemmascope-res-16k/"


def make_result(latents, merges, leaves, clusters, label_of) -> dict:
    return {
        "meta": {
            "kind": "cluster",
            "mode": "decoder",
            "linkage": "average",
            "inputs": {"sae_release": "<b>release</b>", "model": "m", "hook": "h"},
            "n_latents": len(latents),
            "left_out": {"zero_norm": [999], "non_finite": []},
            "labels": {"how": ["explanations of <i>x</i>"], "sources": {}},
            "provenance": {"host": "<script>window.pwned=2</script>"},
        },
        "latents": latents,
        "linkage": merges,
        "leaves": leaves,
        "clusters": clusters,
        "labels": {str(i): label_of(i) for i in [*latents, 999]},
    }


def small_result(n: int = 12) -> dict:
    rng = np.random.default_rng(1)
    latents = sorted(rng.choice(5000, n, replace=False).tolist())
    tree = build_tree(np.array(latents), rng.normal(size=(n, 6)), "average", 3)

    def label(i: int) -> dict:
        if i == latents[0]:
            return {"text": HOSTILE, "source": "explanation", "url": NP + str(i)}
        if i == latents[1]:
            return {"text": "", "source": "none", "url": None}
        return {"text": f"words about topic {i}", "source": "logit lens", "url": NP + str(i)}

    return make_result(latents, tree.merges.tolist(), tree.leaves_N.tolist(),
                       tree.clusters_N.tolist(), label)  # fmt: skip


def random_tree_result(n: int, seed: int = 0) -> dict:
    """A valid linkage of ``n`` leaves built by merging random pairs (no distances needed)."""
    rng = np.random.default_rng(seed)
    active = list(range(n))
    merges = []
    for k in range(n - 1):
        picks = []
        for _ in range(2):
            j = int(rng.integers(len(active)))
            active[j], active[-1] = active[-1], active[j]
            picks.append(active.pop())
        merges.append([picks[0], picks[1], 0.001 * (k + 1), 0])
        active.append(n + k)
    return make_result(list(range(n)), merges, [], [1] * n,
                       lambda i: {"text": f"label {i}", "source": "evidence", "url": None})  # fmt: skip


@pytest.fixture
def page(chromium):
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    try:
        yield page
    finally:
        page.close()


def open_page(page, path):
    url = path.resolve().as_uri()
    refused, errors = guard(page, lambda u: u == url)
    page.goto(url)
    return refused, errors


def shown_nodes(page) -> list[int]:
    return [
        int(n)
        for n in page.eval_on_selector_all("#tree .node", "rs => rs.map(r => r.dataset.node)")
    ]


@pytest.mark.slow
def test_dendrogram(page, tmp_path):
    result = small_result()
    latents, n = result["latents"], len(result["latents"])
    root = 2 * n - 2
    refused, errors = open_page(page, write_page(tmp_path / "cluster.html", result))
    children = {n + k: (a, b) for k, (a, b, *_) in enumerate(result["linkage"])}

    # Three levels open at first: the root's row, then its children, in order, left first.
    nodes = shown_nodes(page)
    assert nodes[0] == root and nodes[1] == children[root][0]
    root_row = page.locator(f'#tree .node[data-node="{root}"]')
    assert root_row.get_attribute("aria-expanded") == "true"
    assert f"{n} latents" in root_row.text_content()

    # Closing the root leaves it alone; opening it shows exactly its two children after it.
    page.click("#collapse-all")
    assert shown_nodes(page) == [root]
    root_row.locator(".toggle").click()
    assert shown_nodes(page) == [root, *children[root]]
    height = result["linkage"][root - n][2]
    assert f"height {height:.3g}" in root_row.text_content()
    root_row.click()
    assert shown_nodes(page) == [root]

    # Expand all: every node, the leaves in cluster.json's leaf order.
    page.click("#expand-all")
    nodes = shown_nodes(page)
    assert sorted(nodes) == list(range(2 * n - 1))
    assert [x for x in nodes if x < n] == result["leaves"]

    # Leaves: "index: label", the hostile one as its literal text, its link a plain anchor.
    first = page.locator('#tree .node[data-node="0"]')
    assert first.locator(".index").text_content() == f"{latents[0]}:"
    assert first.locator(".label").text_content() == HOSTILE
    assert page.locator("#tree img").count() == 0
    link = first.locator("a")
    assert link.get_attribute("href") == NP + str(latents[0])
    assert "noopener" in link.get_attribute("rel")
    title = first.get_attribute("title")
    assert HOSTILE in title and "explanation" in title
    assert page.locator('#tree .node[data-node="1"] .label').text_content() == "(no label)"
    assert page.locator('#tree .node[data-node="1"] a').count() == 0

    # Search by index reveals that leaf from a closed tree; by text, every match.
    page.click("#collapse-all")
    target = latents[7]
    page.fill("#search", str(target))
    page.press("#search", "Enter")
    row = page.locator(f'#tree .node[data-latent="{target}"]')
    assert row.count() == 1 and row.is_visible() and "match" in row.get_attribute("class")
    assert page.locator("#status").text_content() == "1 latent matches"
    page.fill("#search", "TOPIC")
    page.press("#search", "Enter")
    assert page.locator("#tree .node.match").count() == n - 2
    assert page.locator("#status").text_content() == f"{n - 2} latents match"
    page.fill("#search", "nothing like this")
    page.press("#search", "Enter")
    assert page.locator("#tree .node.match").count() == 0
    assert page.locator("#status").text_content() == "no latent matches"

    # The page's own text: escaped, and the left-out latent listed.
    assert page.locator("#left-out li").all_text_contents() == ["999: words about topic 999"]
    assert "<b>release</b>" in page.locator(".sub").text_content()
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert refused == [] and errors == []


@pytest.mark.slow
def test_twenty_thousand_leaves(page, tmp_path):
    n = 20_000
    path = write_page(tmp_path / "cluster.html", random_tree_result(n))
    start = time.perf_counter()
    refused, errors = open_page(page, path)
    assert page.locator("#tree .node").count() <= 15  # three levels, not the whole tree
    opened = time.perf_counter() - start
    page.fill("#search", "12345")
    page.press("#search", "Enter")
    row = page.locator('#tree .node[data-latent="12345"]')
    assert row.count() == 1 and row.is_visible()
    start = time.perf_counter()
    page.click("#expand-all")
    assert page.locator("#tree .node").count() == 2 * n - 1
    expanded = time.perf_counter() - start
    page.click("#collapse-all")
    assert page.locator("#tree .node").count() == 1
    assert opened < 5 and expanded < 10, (opened, expanded)
    assert refused == [] and errors == []
