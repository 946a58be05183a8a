#!/usr/bin/env python3
"""Make the README's pictures of the analysis tools (run by hand; needs Chromium, as the browser
tests do): the demo pipeline on its tiny model (``sae-hacking demo``), each tool on its runs,
and a screenshot of each page into ``docs/images/``.

    uv run python docs/make_pictures.py [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

IMAGES = Path(__file__).resolve().parent / "images"
VIEWPORT = {"width": 1200, "height": 760}


def run(argv: list[str]) -> None:
    from sae_hacking.cli import main

    print("sae-hacking", " ".join(argv), flush=True)
    if main(argv) not in (0, None):
        raise SystemExit(f"failed: sae-hacking {' '.join(argv)}")


def tools(demo: Path, out: Path) -> dict[str, Path]:
    """Every tool on the demo's runs; the page (or picture) of each."""
    ablate = str(demo / "ablations")
    labels = [
        "--explanations-file", str(demo / "explanations.json"),
        "--ablator-evidence", str(demo / "cooccurrences"),
    ]  # fmt: skip
    run(["effect-network", "--input-path", ablate, "--n-edges", "40", *labels,
         "--output-dir", str(out / "network")])  # fmt: skip
    run(["four-tuples", "--input-path", ablate, "--treat-as-zero", "0.05", "--max-results", "50",
         *labels, "--output-dir", str(out / "tuples")])  # fmt: skip
    run(["effect-l0", "--input-path", ablate, "--treat-as-zero", "0.05", "--bins", "20", *labels,
         "--output-dir", str(out / "effect-l0")])  # fmt: skip
    # Labelled by local evidence only: how a tool reads for an SAE Neuronpedia does not host.
    run(["cluster", "--input-path", ablate, "--n-clusters", "8", *labels[2:],
         "--output-dir", str(out / "cluster")])  # fmt: skip
    run(["decoder-pairs", "--sae-release", str(demo / "ablator.safetensors"), "--model",
         str(demo / "model"), "--cooccurrence-path", str(demo / "cooccurrences"), "--top-k", "40",
         *labels, "--device", "cpu", "--output-dir", str(out / "decoder-pairs")])  # fmt: skip
    return {
        "effect_network.png": out / "network" / "network.html",
        "four_tuples.png": out / "tuples" / "tuples.html",
        "effect_l0.png": out / "effect-l0" / "effect_l0.png",
        "cluster.png": out / "cluster" / "cluster.html",
        "decoder_pairs.png": out / "decoder-pairs" / "report.html",
    }


def screenshot(page_path: Path, target: Path, before=None) -> None:
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.browser import find_chromium

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=find_chromium(lambda: playwright.chromium.executable_path),
            args=["--headless", "--no-sandbox", "--disable-gpu"],
        )
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(page_path.as_uri())
        page.wait_for_timeout(500)
        if before is not None:
            before(page)
            page.wait_for_timeout(300)
        page.screenshot(path=str(target))
        browser.close()


def scrolled_to(selector: str, then=None):
    """Show the page from ``selector`` down (the table, the tree), after ``then(page)``."""

    def prepare(page) -> None:
        if then is not None:
            then(page)
        page.evaluate(f"document.querySelector({selector!r}).scrollIntoView()")

    return prepare


def expand_some(page) -> None:
    """The dendrogram with more levels open than on load."""
    for _ in range(2):
        for toggle in page.locator("[aria-expanded=false]").all()[:4]:
            toggle.click()


def hover_a_node(page) -> None:
    """A node's tooltip: its label and how it was made."""
    page.locator("#nodes > *").nth(2).hover()


PREPARE = {
    "effect_network.png": scrolled_to("#network", hover_a_node),
    "four_tuples.png": scrolled_to("#tuples"),
    "cluster.png": scrolled_to("#dendrogram", expand_some),
    "decoder_pairs.png": scrolled_to("#pairs"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=None, help="keep the runs in this new folder")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="pictures-"))
    run(["demo", "--output-dir", str(work / "demo")])
    outputs = tools(work / "demo", work)
    IMAGES.mkdir(exist_ok=True)
    for name, source in outputs.items():
        target = IMAGES / name
        if source.suffix == ".png":
            shutil.copyfile(source, target)
        else:
            screenshot(source, target, PREPARE.get(name))
        print("wrote", target)


if __name__ == "__main__":
    main()
