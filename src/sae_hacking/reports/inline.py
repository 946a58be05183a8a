"""What a self-contained page needs: its data as a JSON block that no text can break out of,
and a Content-Security-Policy that runs only the page's own inline style and script and
forbids every fetch. Used by every report page and by the
page ``sae-hacking highlight`` saves (:mod:`sae_hacking.serve.page`)."""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections.abc import Iterable
from importlib import resources
from typing import Any


def script_json(obj: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&`` left to
    end the element or open a comment, whatever the text holds."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def sha256_source(text: str) -> str:
    """The CSP source (``sha256-…``) that allows exactly this inline style or script."""
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()


def locked_policy(css: str, script: str) -> str:
    """A policy for a page whose only style is ``css`` and only script is ``script``, both
    inline: no requests (images only as ``data:`` URLs), no base URL, no form submission."""
    return (
        "default-src 'none'; img-src data:; base-uri 'none'; form-action 'none'; "
        f"style-src '{sha256_source(css)}'; script-src '{sha256_source(script)}'"
    )


def inline_element(tag: str, text: str) -> str:
    """``<tag>text</tag>`` for a packaged asset; text that would end the element early is a
    packaging error, caught here rather than as a broken page."""
    if f"</{tag}" in text.lower():
        raise ValueError(f"an inline <{tag}> may not contain </{tag}")
    return f"<{tag}>{text}</{tag}>"


def report_asset(name: str) -> str:
    """A packaged file of the reports' own pages (``reports/assets``), as text."""
    return resources.files("sae_hacking.reports").joinpath("assets", name).read_text("utf-8")


def token_asset(name: str) -> str:
    """A file of the one token renderer (``tokens.js`` / ``tokens.css``), kept with the serve
    page's assets; read as package data, since reports import nothing above the bottom layer."""
    return resources.files("sae_hacking").joinpath("serve", "assets", name).read_text("utf-8")


def facts_html(facts: Iterable[tuple[str, Any]]) -> str:
    """A report's facts as ``<dl class="facts">``: missing values as a dash, integers with
    thousands separators, everything escaped."""
    rows = []
    for key, value in facts:
        if value is None or value == "":
            value = "\u2014"
        elif isinstance(value, int) and not isinstance(value, bool):
            value = f"{value:,}"
        rows.append(f"<dt>{html.escape(str(key))}</dt><dd>{html.escape(str(value))}</dd>")
    return '<dl class="facts">' + "".join(rows) + "</dl>"
