"""The server's web page as one self-contained file, for ``sae-hacking highlight``.

The saved page is the page ``sae-hacking serve`` serves at ``/`` (assets/index.html) with its
stylesheet and script (app.css, app.js) inlined and the server's answer embedded as a JSON
block: the same script lays out and colours the tokens in both, so the two cannot drift apart.
It opens offline: a Content-Security-Policy allows only those two inline assets and no request
at all, and the script, finding the embedded answer, shows it instead of asking a server.

Untrusted text (tokens, explanations, the prompt) enters only through the JSON block, whose
``<``, ``>`` and ``&`` are escaped, and the script writes it with ``textContent`` only.
Torch-free: it reads packaged text files and returns text.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from sae_hacking.reports.inline import inline_element, locked_policy, script_json

SAVED_ID = "saved-answer"  # app.js looks for this block (showSaved)
# The lines of index.html that load the assets from the server, and where the policy goes.
CHARSET = '<meta charset="utf-8">'
TOKENS_CSS = '<link rel="stylesheet" href="assets/tokens.css">\n'
LINKED_CSS = '<link rel="stylesheet" href="assets/app.css">'
TOKENS_JS = '<script src="assets/tokens.js" defer></script>\n'
LINKED_JS = '<script src="assets/app.js" defer></script>'
BODY_END = "</body>"


def asset(name: str) -> str:
    """A file of the packaged web page (assets/), as text."""
    return resources.files("sae_hacking.serve").joinpath("assets", name).read_text("utf-8")


def saved_page(answer: dict[str, Any], prompt: str, server: str) -> str:
    """The web page showing ``answer`` (the API's JSON for ``prompt``, from ``server``) with no
    server: index.html with app.css and app.js inline and the answer embedded."""
    # The shared token renderer goes in front of the page's own style and script (one of each,
    # so the policy allows exactly one inline style and one inline script).
    css = asset("tokens.css") + asset("app.css")
    script = asset("tokens.js") + asset("app.js")
    data = script_json({"prompt": prompt, "server": server, "answer": answer})
    policy = locked_policy(css, script)
    parts = {
        CHARSET: f'{CHARSET}\n<meta http-equiv="Content-Security-Policy" content="{policy}">\n'
        '<meta name="referrer" content="no-referrer">',
        TOKENS_CSS: "",
        LINKED_CSS: inline_element("style", css),
        TOKENS_JS: "",
        LINKED_JS: "",  # moved to the end of the body: it runs once the page is there
        BODY_END: f'<script type="application/json" id="{SAVED_ID}">{data}</script>\n'
        f"{inline_element('script', script)}\n{BODY_END}",
    }
    page = asset("index.html")
    for marker in parts:
        if page.count(marker) != 1:
            raise ValueError(f"assets/index.html should hold {marker!r} once")
    # One pass: text substituted in (the answer, the assets) is never searched for markers.
    pattern = "|".join(re.escape(marker) for marker in parts)
    return re.sub(pattern, lambda m: parts[m.group(0)], page)
