"""The highlight client (``sae-hacking highlight``, the seed's ``prompt_client.py``): asks a
running ``sae-hacking serve`` for a prompt's activations over HTTP and writes a self-contained
HTML file on the client's side. Torch-free: it only speaks HTTP and writes text.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import html
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sae_hacking.config import check_positive, setting
from sae_hacking.errors import FieldError, UsageError

TIMEOUT_S = 300  # a cold SAE load on the server can take a while


@dataclass(frozen=True)
class HighlightConfig:
    prompt: str = setting("", help="the text to highlight")
    sae_release: str = setting(
        "gemma-scope-2b-pt-mlp-canonical",
        help="SAELens release name (or a path under one of the server's --sae-dir folders)",
    )
    sae_id: str | None = setting("layer_20/width_65k/canonical", help="SAE id within the release")
    feature_idx: int | None = setting(
        None, help="the latent to highlight (default: the strongest latent at each token)"
    )
    top_k: int = setting(5, help="latents listed per token and for the prompt")
    output_dir: str = setting("prompts", help="folder (on this machine) for the HTML file")
    server_host: str = setting("127.0.0.1", help="address of the sae-hacking serve process")
    server_port: int = setting(9000, help="its port")
    device: str | None = setting(
        None,
        help="accepted for the seed's command line; the server chose its device when it "
        "started (sae-hacking serve --device)",
    )

    def __post_init__(self):
        check_positive("top_k", self.top_k)
        if self.feature_idx is not None and self.feature_idx < 0:
            raise FieldError("feature_idx", f"must not be negative, got {self.feature_idx}.")
        if not 0 < self.server_port < 65536:
            raise FieldError("server_port", f"must be a TCP port, got {self.server_port}.")
        out = Path(self.output_dir).expanduser()
        if out.exists() and not out.is_dir():
            raise FieldError("output_dir", f"{out} is a file, not a folder.")

    def require_prompt(self) -> None:
        """A request needs a prompt (the default is empty so ``--help`` can be shown)."""
        if not self.prompt:
            raise FieldError("prompt", "is required: the text to highlight.")

    @property
    def url(self) -> str:
        return f"http://{self.server_host}:{self.server_port}"


def request_activations(config: HighlightConfig) -> dict[str, Any]:
    """POST the prompt to the server; a refused connection or an error answer is one line."""
    config.require_prompt()
    body = {
        "prompt": config.prompt,
        "sae_release": config.sae_release,
        "sae_id": config.sae_id,
        "feature_idx": config.feature_idx,
        "top_k": config.top_k,
    }
    request = urllib.request.Request(
        f"{config.url}/api/activations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as err:
        try:
            detail = json.loads(err.read()).get("detail")
        except (ValueError, AttributeError):
            detail = None
        if isinstance(detail, list):  # FastAPI's validation errors
            detail = "; ".join(str(d.get("msg", d)) for d in detail)
        raise UsageError(
            f"the server at {config.url} answered {err.code}: {detail or err.reason}"
        ) from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
        reason = getattr(err, "reason", err)
        raise UsageError(
            f"no highlight server answers at {config.url} ({reason}); start one with "
            f"`sae-hacking serve --port {config.server_port}` (or give `server_host` / "
            "`server_port`)."
        ) from None


def write_page(config: HighlightConfig, result: dict[str, Any]) -> Path:
    """The highlighted prompt as one self-contained HTML file in ``output_dir``; returns it."""
    from sae_hacking.atomic import atomic_write_text

    out = Path(config.output_dir).expanduser()
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    digest = hashlib.sha256(json.dumps(result, sort_keys=True).encode()).hexdigest()[:8]
    latent = result.get("feature") or {}
    name = f"prompt-{stamp}-{'latent' + str(latent['index']) if latent else 'top'}-{digest}.html"
    return atomic_write_text(out / name, render_page(config, result))


def _intensity(value: float, top: float) -> float:
    return max(0.0, min(1.0, value / top)) if top > 0 else 0.0


def render_page(config: HighlightConfig, result: dict[str, Any]) -> str:
    """Tokens as spans whose background alpha is the activation over the prompt's maximum; a
    tooltip (``title``) with each token's value and top latents; the prompt's top latents."""
    e = html.escape
    tokens = result["tokens"]
    per_token = result.get("top_per_token") or [[] for _ in tokens]
    values = result.get("activations")
    if values is None:  # no latent chosen: the strongest latent at each token
        values = [max((t["value"] for t in top), default=0.0) for top in per_token]
    top = float(result.get("max_activation") or max(values, default=0.0))
    spans = []
    for token, value, latents in zip(tokens, values, per_token, strict=True):
        alpha = _intensity(float(value), top)
        tip = f"{value:.4g}" + "".join(f"\n#{t['index']}: {t['value']:.4g}" for t in latents)
        spans.append(
            f'<span class="tok" style="background: rgba(230, 80, 20, {alpha:.3f})" '
            f'title="{e(tip)}">{e(token)}</span>'
        )
    rows = []
    for t in result.get("top_latents", []):
        link = (
            f'<a href="{e(t["url"])}" rel="noopener noreferrer">{t["index"]}</a>'
            if (t.get("url") or "").startswith(("http://", "https://"))
            else str(t["index"])
        )
        rows.append(
            f"<tr><td>{link}</td><td>{t['max']:.4g}</td><td>{e(t.get('explanation') or '')}</td></tr>"
        )
    sae = result.get("sae", {})
    latent = result.get("feature")
    what = (
        f"latent {latent['index']}"
        + (f": {e(latent['explanation'])}" if latent.get("explanation") else "")
        if latent
        else "the strongest latent at each token"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>{e(config.prompt[:60])} — sae_hacking</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }}
.prompt {{ white-space: pre-wrap; font-family: ui-monospace, monospace; padding: 1em;
  border: 1px solid #ddd; border-radius: 6px; }}
.tok {{ border-radius: 3px; }}
.legend {{ display: inline-block; width: 12em; height: 0.9em; vertical-align: middle;
  background: linear-gradient(to right, rgba(230,80,20,0), rgba(230,80,20,1)); }}
table {{ border-collapse: collapse; }} td, th {{ padding: 0.2em 0.8em; text-align: left; }}
.muted {{ color: #666; font-size: 0.9em; }}
</style></head><body>
<h1>Prompt highlighted by {what}</h1>
<p class="muted">SAE {e(str(sae.get("release")))} {e(str(sae.get("sae_id") or ""))} at
{e(str(sae.get("hook")))} ({sae.get("d_sae")} latents); server {e(config.url)}</p>
<p>0 <span class="legend"></span> {top:.4g} <span class="muted">(hover a token for its value
and top latents)</span></p>
<div class="prompt">{"".join(spans)}</div>
<h2>Top latents of the prompt</h2>
<table><tr><th>latent</th><th>max</th><th>explanation</th></tr>{"".join(rows)}</table>
</body></html>
"""
