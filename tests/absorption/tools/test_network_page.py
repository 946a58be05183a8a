"""network.html: the page as written (one style, one script, the policy, no label as markup) and
in a real Chromium (see tests/browser.py): the graph drawn, hover, zoom, pan, links, search,
keyboard, and no request other than the page itself."""

from __future__ import annotations

import json
import re
import time

import pytest
import torch

from sae_hacking.absorption.tools.network import layout
from sae_hacking.cli import main
from sae_hacking.reports.network import render_page, write_page
from tests.absorption.tools.conftest import write_ablations
from tests.browser import guard

HOSTILE = '<img src=x onerror="window.pwned=1"> & <script>window.pwned=2</script>'


@pytest.fixture
def network_run(tmp_path):
    """An effect-network run of 6 ablated latents x 8 readers whose ablator labels are hostile
    explanations; ablators have Neuronpedia pages (x/y), readers none."""
    g = torch.Generator().manual_seed(3)
    latents_D = torch.tensor([40, 3, 17, 8, 25, 31])
    counts_D = torch.tensor([1, 2, 1, 3, 2, 1])
    mean_DE = torch.randn(6, 8, generator=g)
    folder = write_ablations(tmp_path / "ablate", latents_D, counts_D, mean_DE * counts_D[:, None])
    explanations = tmp_path / "explanations.json"
    explanations.write_text(json.dumps(
        [{"index": i, "description": f"{HOSTILE} #{i}"} for i in latents_D.tolist()]
    ))  # fmt: skip
    out = tmp_path / "net"
    assert main(["effect-network", "--input-path", str(folder), "--n-edges", "12",
                 "--explanations-file", str(explanations), "--ablator-sae-neuronpedia-id", "x/y",
                 "--no-logit-lens", "--output-dir", str(out)]) == 0  # fmt: skip
    return out


def test_page_is_locked_and_holds_no_label_as_markup(network_run):
    text = (network_run / "network.html").read_text()
    doc = json.loads((network_run / "network.json").read_text())
    assert "<img" not in text and "window.pwned=2</script>" not in text
    assert len(re.findall(r"<style>", text)) == 1
    assert len(re.findall(r"<script>", text)) == 1  # plus the JSON block
    assert len(re.findall(r'<script type="application/json"', text)) == 1
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', text).group(1)
    assert "default-src 'none'" in policy and "script-src 'sha256-" in policy
    assert not re.search(r"https?:", policy)
    assert not re.search(r"<(script|link|img|iframe)\b[^>]*\b(src|href)=", text, re.I)
    assert doc["meta"]["n_edges"] == 12
    assert "\\u003cimg src=x" in text  # in the JSON block, escaped
    assert "<img" not in render_page({"meta": {}, "nodes": [], "edges": []})


@pytest.fixture
def browser_page(chromium):
    page = chromium.new_page(viewport={"width": 1300, "height": 900})
    try:
        yield page
    finally:
        page.close()


def _transform(page) -> tuple[float, float, float]:
    value = page.get_attribute("#viewport", "transform")
    tx, ty, k = map(float, re.fullmatch(r"translate\(([-\d.e]+),([-\d.e]+)\) scale\(([-\d.e]+)\)",
                                         value).groups())  # fmt: skip
    return tx, ty, k


POINT_ON_EDGE = """i => {
  const line = document.querySelector(`#hits line[data-e="${i}"]`);
  const m = line.getScreenCTM();
  const [x1, y1, x2, y2] = ["x1", "y1", "x2", "y2"].map((a) => +line.getAttribute(a));
  for (let f = 0.1; f < 0.95; f += 0.05) {
    const p = new DOMPoint(x1 + f * (x2 - x1), y1 + f * (y2 - y1)).matrixTransform(m);
    if (document.elementFromPoint(p.x, p.y) === line) return [p.x, p.y];
  }
  return null;
}"""


def _point_on_edge(page, i: int) -> tuple[float, float]:
    """A point of edge ``i`` where its own hit line, not a crossing one, takes the pointer."""
    point = page.evaluate(POINT_ON_EDGE, i)
    assert point is not None
    return tuple(point)


@pytest.mark.slow
def test_page_in_chromium(browser_page, network_run):
    doc = json.loads((network_run / "network.json").read_text())
    page = browser_page
    url = (network_run / "network.html").resolve().as_uri()
    refused, errors = guard(page, lambda u: u == url)
    page.goto(url)

    n_ablators = sum(n["kind"] == "ablator" for n in doc["nodes"])
    assert page.locator("#edges line").count() == len(doc["edges"]) == 12
    assert page.locator("#hits line").count() == 12
    assert page.locator("#nodes .node").count() == len(doc["nodes"])
    assert page.locator("#edges line.pos").count() == doc["meta"]["n_positive_edges"]
    assert page.locator("#edges line.neg").count() == doc["meta"]["n_negative_edges"]
    # Ablators link to their Neuronpedia page; readers have none, so they are no links.
    links = page.locator("#nodes a.node")
    assert links.count() == n_ablators
    first = next(n for n in doc["nodes"] if n["kind"] == "ablator")
    link = page.locator(f'#nodes a.node[aria-label^="{first["id"]}:"]')
    assert link.get_attribute("href") == f"https://www.neuronpedia.org/x/y/{first['index']}"
    assert link.get_attribute("target") == "_blank" and "noopener" in link.get_attribute("rel")
    assert page.locator("#nodes g.node[tabindex='0']").count() == len(doc["nodes"]) - n_ablators

    # Hover a node: its hostile label shown as the text it is.
    link.locator("circle").hover()
    tip = page.locator("#tooltip")
    assert tip.is_visible()
    assert tip.locator(".tt-label").text_content() == f"{HOSTILE} #{first['index']}"
    assert tip.locator("img, script").count() == 0 and page.locator("svg img").count() == 0
    # Hover an edge: its value.
    edge = doc["edges"][0]
    page.mouse.move(*_point_on_edge(page, 0))
    head = tip.locator(".tt-head").text_content()
    assert head == f"{edge['source']} \u2192 {edge['target']}: mean effect {edge['weight']:.4f}"

    # Wheel zooms in around the pointer; the buttons zoom; a drag pans without zooming.
    stage = page.locator("#graph").bounding_box()
    cx, cy = stage["x"] + 40, stage["y"] + 40  # an empty corner
    before = _transform(page)
    shown = page.get_attribute("#viewport", "transform")
    page.mouse.move(cx, cy)
    page.mouse.wheel(0, -300)
    page.wait_for_function(
        "t => document.getElementById('viewport').getAttribute('transform') !== t", arg=shown
    )
    zoomed = _transform(page)
    assert zoomed[2] > before[2] * 1.2
    page.click("#zoom-out")
    assert _transform(page)[2] < zoomed[2]
    page.click("#zoom-in")
    assert _transform(page)[2] == pytest.approx(zoomed[2])
    start = _transform(page)
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 60, cy + 25, steps=5)
    page.mouse.up()
    panned = _transform(page)
    assert panned[0] == pytest.approx(start[0] + 60, abs=0.02)
    assert panned[1] == pytest.approx(start[1] + 25, abs=0.02)
    assert panned[2] == start[2]
    page.click("#zoom-fit")
    assert _transform(page) == before

    # A drag that starts on a node pans and opens nothing; a click opens its page.
    opened: list[str] = []
    page.context.route("https://www.neuronpedia.org/**", lambda r: (opened.append(r.request.url),
                                                                    r.abort()))  # fmt: skip
    box = link.locator("circle").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 30, y + 10, steps=4)
    page.mouse.up()
    assert _transform(page)[0] == pytest.approx(before[0] + 30, abs=0.02)
    page.wait_for_timeout(200)
    assert len(page.context.pages) == 1 and opened == []
    page.click("#zoom-fit")
    with page.expect_popup() as popup:
        link.locator("circle").click()
    popup.value.wait_for_load_state()
    assert opened == [link.get_attribute("href")]
    popup.value.close()

    # Search: an id finds that node; words of a label find every node carrying them.
    page.fill("#search", first["id"])
    assert page.locator("#nodes .node.hit").count() == 1
    assert page.locator("#matches").text_content() == "1 latent matches"
    page.fill("#search", "onerror")
    assert page.locator("#nodes .node.hit").count() == n_ablators
    page.fill("#search", "")
    assert page.locator("#nodes .node.hit").count() == 0

    # Keyboard: a reader (no link) takes focus and shows its tooltip.
    page.locator("#nodes g.node").first.focus()
    assert tip.is_visible() and tip.locator(".tt-head").text_content().startswith("R")

    assert page.evaluate("typeof window.pwned") == "undefined"
    assert errors == [] and refused == []


def _big_doc(n: int) -> dict:
    edges = [(a, (a * 7) % n, (a % 13 - 6.5) / 6.5) for a in range(n)]
    where = layout([a for a, _, _ in edges], [r for _, r, _ in edges], edges)
    nodes = [
        {"id": node, "kind": "ablator" if node[0] == "A" else "reader", "index": int(node[1:]),
         "label": f"latent {node}", "source": "evidence",
         "url": f"https://www.neuronpedia.org/x/y/{node[1:]}" if node[0] == "A" else None,
         "degree": 1, "x": x, "y": y}
        for node, (x, y) in where.items()
    ]  # fmt: skip
    return {
        "meta": {"kind": "effect-network", "n_edges": n, "inputs": {}, "settings": {}},
        "nodes": nodes,
        "edges": [{"source": f"A{a}", "target": f"R{r}", "ablator": a, "reader": r, "weight": w,
                   "abs_weight": abs(w), "sign": 1 if w > 0 else -1} for a, r, w in edges],
    }  # fmt: skip


@pytest.mark.slow
def test_a_thousand_edges_stay_responsive(browser_page, tmp_path):
    path = write_page(tmp_path, _big_doc(1000))
    page = browser_page
    url = path.resolve().as_uri()
    refused, errors = guard(page, lambda u: u == url)
    started = time.perf_counter()
    page.goto(url)
    assert page.locator("#edges line").count() == 1000
    assert page.locator("#nodes .node").count() == 2000
    loaded = time.perf_counter() - started
    page.mouse.move(400, 400)
    started = time.perf_counter()
    for _ in range(20):
        page.mouse.wheel(0, -120)
    page.fill("#search", "latent A5")  # label substring: A5, A50..A59, A500..A599
    assert page.locator("#nodes .node.hit").count() == 111
    interactive = time.perf_counter() - started
    # Generous bounds (a loaded CI machine): catch quadratic work, not milliseconds.
    assert loaded < 10 and interactive < 10, (loaded, interactive)
    assert errors == [] and refused == []
