"""``GET /docs``: the API described from its OpenAPI schema as one static HTML page.

FastAPI's own ``/docs`` loads Swagger UI from a CDN, which an offline machine (or one behind a
strict proxy) cannot reach, and a CDN script is code this server would ask browsers to trust.
This page has no script at all: each endpoint with its description, the request and answer
models, and each model's fields; ``/openapi.json`` has the full schema for tools.
"""

from __future__ import annotations

import html
from typing import Any

STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
code { font-family: ui-monospace, monospace; background: #f3f3f3; padding: 0 0.2em; }
table { border-collapse: collapse; margin: 0.3em 0 1em; }
td, th { padding: 0.2em 0.8em; text-align: left; vertical-align: top; border-bottom: 1px solid #eee; }
h2 code { font-size: 1em; }
.muted { color: #666; }
"""


def _ref_name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref", "")
    return ref.rsplit("/", 1)[-1] if ref else None


def _type(schema: dict[str, Any]) -> str:
    """A field's type in a few words: ``list[TokenLatent]``, ``integer | null``."""
    if "$ref" in schema:
        name = _ref_name(schema)
        return f'<a href="#{html.escape(name)}">{html.escape(name)}</a>'
    if "anyOf" in schema:
        return " | ".join(_type(option) for option in schema["anyOf"])
    if schema.get("type") == "array":
        return f"list[{_type(schema.get('items', {}))}]"
    return html.escape(str(schema.get("type", "any")))


def _model(name: str, schema: dict[str, Any]) -> str:
    required = set(schema.get("required", ()))
    rows = []
    for field, spec in schema.get("properties", {}).items():
        limits = [
            f"{word} {spec[key]}"
            for key, word in (("minimum", "≥"), ("maximum", "≤"), ("minLength", "length ≥"))
            if key in spec
        ]
        if "default" in spec:
            limits.append(f"default {spec['default']!r}")
        note = ", ".join(limits)
        rows.append(
            f"<tr><td><code>{html.escape(field)}</code>{'' if field in required else '?'}</td>"
            f"<td>{_type(spec)}</td><td>{html.escape(spec.get('description', ''))}"
            f"{' <span class=muted>(' + html.escape(note) + ')</span>' if note else ''}</td></tr>"
        )
    return (
        f'<h3 id="{html.escape(name)}">{html.escape(name)}</h3>'
        f"<table><tr><th>field</th><th>type</th><th>meaning</th></tr>{''.join(rows)}</table>"
    )


def docs_page(spec: dict[str, Any]) -> str:
    info = spec.get("info", {})
    parts = []
    for path, methods in spec.get("paths", {}).items():
        for method, op in methods.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            request = _ref_name(body.get("schema", {}))
            answers = []
            for code, answer in op.get("responses", {}).items():
                schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
                answers.append(f"{html.escape(code)}: {_type(schema) if schema else '—'}")
            parts.append(
                f"<h2><code>{html.escape(method.upper())} {html.escape(path)}</code></h2>"
                f"<p>{html.escape(op.get('description') or op.get('summary') or '')}</p>"
                + (
                    f'<p>body: <a href="#{html.escape(request)}">{html.escape(request)}</a></p>'
                    if request
                    else ""
                )
                + f"<p>answers: {'; '.join(answers)}</p>"
            )
    models = spec.get("components", {}).get("schemas", {})
    parts.append("<h2>Models</h2>")
    parts.extend(_model(name, schema) for name, schema in models.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>{html.escape(info.get("title", "API"))} — API</title><style>{STYLE}</style></head><body>
<h1>{html.escape(info.get("title", "API"))}</h1>
<p>{html.escape(info.get("description", ""))} Errors answer <code>{{"detail": "one
sentence"}}</code>. The machine-readable schema: <a href="openapi.json">openapi.json</a>.</p>
{"".join(parts)}
</body></html>
"""
