"""The FastAPI application of ``sae-hacking serve``: :func:`create_app`.

Endpoints are plain (sync) functions, which FastAPI runs in a thread pool; the model and the SAE
cache are shared, so all model work (loading an SAE, the forward, the encoding) runs on one
dedicated thread, one request at a time. One thread rather than a lock: the allocator then keeps
the large per-request tensors in one arena, and the server's memory stays flat under
concurrent clients instead of growing to a high-water mark per pool thread.

Every answer that is not a result is JSON whose ``detail`` is one sentence: 400 for a Host
header that does not name this server (:class:`~sae_hacking.serve.http.HostCheck`), for HTTP
uvicorn cannot parse, for an SAE file that does not load or cannot read this model, a latent
index out of range or a prompt over the token limit; 404 for an SAE this server does not have
(or may not read); 413 for a body over 64 KiB; 422 for a body that is not JSON or not the
request's shape; 500 (the traceback in the server's log) for anything else.
"""

from __future__ import annotations

import mimetypes
import re
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

from fastapi import FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from sae_hacking.errors import UsageError
from sae_hacking.serve.config import ServeConfig
from sae_hacking.serve.docs import docs_page
from sae_hacking.serve.highlight import highlight, summary
from sae_hacking.serve.http import MAX_BODY_BYTES, BodyLimit, HostCheck
from sae_hacking.serve.saes import SAECache, SAENotFound, SAEUnfit, _sentence
from sae_hacking.serve.schema import (
    ActivationsRequest,
    ActivationsResponse,
    ErrorResponse,
    HealthResponse,
    SAEsResponse,
)

__all__ = ["MAX_BODY_BYTES", "ActivationsRequest", "create_app", "model_checker"]

ASSET_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")


def model_checker(lm):
    """The check an SAE passes before the cache keeps it: its hook is one of the model's and
    its input width is that hook's width."""

    def check(sae, hook: str) -> None:
        try:
            width = lm.hook_width(hook)
        except (UsageError, ValueError) as err:
            raise SAEUnfit(
                f"The SAE reads {hook}, which this model does not have ({err})"
            ) from None
        if int(sae.d_in) != width:
            raise SAEUnfit(
                f"The SAE reads {sae.d_in}-wide activations but {hook} of this model is "
                f"{width} wide."
            )

    return check


def create_app(config: ServeConfig, lm=None) -> FastAPI:
    """The application: ``lm`` (a :class:`~sae_hacking.lm.hooked.HookedLM`) or the config's
    model, loaded now; the config's SAEs preloaded."""
    if lm is None:
        lm = config.model.load()
    saes = SAECache(
        config.max_saes,
        config.sae_dir or (),
        device=lm.device,
        check=model_checker(lm),
        quiet=config.quiet,
    )
    for release, sae_id in config.preloads():
        saes.preload(release, sae_id)
    served = None
    if config.evidence:
        from sae_hacking.serve.evidence import ServedEvidence

        served = ServedEvidence(config.evidence, config.model.name, lm.tokenizer)
    model_thread = ThreadPoolExecutor(1, thread_name_prefix="sae-hacking-model")

    # /docs is this package's own page (no CDN, so it works offline); /openapi.json stays.
    app = FastAPI(
        title="sae-hacking prompt highlighting",
        description="How strongly SAE latents fire on each token of a prompt.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.lm, app.state.saes, app.state.config = lm, saes, config
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(HostCheck, names=config.host_names())  # outermost: checked first

    @app.exception_handler(RequestValidationError)
    def validation_error(request, exc: RequestValidationError):
        return JSONResponse({"detail": _validation_sentence(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    def http_error(request, exc: StarletteHTTPException):
        # Routing's own answers ("Not Found", "Method Not Allowed") as sentences too.
        return JSONResponse(
            {"detail": _sentence(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    def server_error(request, exc: Exception):
        # Starlette still re-raises the exception after this answer, so the log keeps its
        # traceback; the client gets a sentence instead of plain-text "Internal Server Error".
        return JSONResponse(
            {
                "detail": f"The server failed on this request ({type(exc).__name__}); its log "
                "has the details."
            },
            status_code=500,
        )

    # The answer is returned as a ready JSONResponse: FastAPI's validation and encoding of the
    # response model cost more than the model's forward on small models (the schema is still
    # documented).
    @app.post(
        "/api/activations",
        response_model=ActivationsResponse,
        responses={code: {"model": ErrorResponse} for code in (400, 404, 413, 422)},
    )
    def activations(body: ActivationsRequest) -> JSONResponse:
        """Tokens of the prompt and the SAE's latent activations on each."""

        def model_work():
            try:
                entry = saes.get(body.sae_release, body.sae_id)
            except SAENotFound as err:
                raise HTTPException(404, _sentence(err)) from None
            except UsageError as err:
                raise HTTPException(400, _sentence(err)) from None
            if body.feature_idx is not None and body.feature_idx >= entry.d_sae:
                raise HTTPException(
                    400,
                    f"feature_idx {body.feature_idx} is out of range: this SAE has "
                    f"{entry.d_sae} latents (0 to {entry.d_sae - 1}).",
                )
            try:
                result = highlight(lm, entry.sae, entry.hook, body.prompt, config.max_prompt_tokens)
            except UsageError as err:  # PromptTooLong, NotFinite
                raise HTTPException(400, _sentence(err)) from None
            if served is not None and getattr(entry, "fingerprint", None) is None:
                from sae_hacking.saes.fingerprint import sae_fingerprint

                entry.fingerprint = sae_fingerprint(entry.sae)  # once per loaded SAE
            return entry, result

        entry, result = model_thread.submit(model_work).result()
        explanations = saes.explanations(entry)
        np_id = entry.neuronpedia_id

        def describe(index: int):
            from sae_hacking.saes.neuronpedia import latent_url

            return explanations.get(index, ""), latent_url(np_id, index)

        def evidence_url(index: int):
            return None if served is None else served.link(entry.fingerprint, index)

        answer = summary(result, body.feature_idx, body.top_k, describe, evidence_url)
        return JSONResponse({"sae": {**entry.describe(), "neuronpedia_id": np_id}, **answer})

    @app.get("/api/saes", response_model=SAEsResponse)
    def list_saes() -> dict:
        """The SAEs loaded now (least recently used first) and where paths may point."""
        return {
            "loaded": [entry.describe() for entry in saes.loaded()],
            "max_saes": config.max_saes,
            "sae_dirs": list(config.sae_dir or ()),
        }

    @app.get("/api/health", response_model=HealthResponse)
    def health() -> dict:
        return {"status": "ok", "model": lm.name}

    @app.get("/evidence/{run}/{name}", include_in_schema=False)
    def evidence_page(run: int, name: str) -> Response:
        """A page of the latent evidence of run ``run`` (``serve --evidence``)."""
        if served is None:
            raise HTTPException(404, "This server was started without --evidence.")
        try:
            page = served.page(run, name)
        except KeyError:
            raise HTTPException(404, f"No evidence page {run}/{name}.") from None
        return Response(page, media_type="text/html; charset=utf-8")

    @app.get("/docs", include_in_schema=False)
    def docs() -> Response:
        return Response(docs_page(app.openapi()), media_type="text/html; charset=utf-8")

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return _asset("index.html")

    @app.get("/assets/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        return _asset(name)

    return app


def _asset(name: str) -> Response:
    """A file of the packaged web page; only names of files that exist there."""
    folder = resources.files("sae_hacking.serve") / "assets"
    if not ASSET_NAME.match(name) or not folder.is_dir():
        raise HTTPException(404, f"No asset named {name}.")
    found = {entry.name: entry for entry in folder.iterdir() if entry.is_file()}
    if name not in found:
        raise HTTPException(404, f"No asset named {name}.")
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if media_type.startswith("text/") or media_type.endswith("javascript"):
        media_type += "; charset=utf-8"
    return Response(found[name].read_bytes(), media_type=media_type)


def _validation_sentence(exc: RequestValidationError) -> str:
    """FastAPI's list of validation errors as one sentence (the first error)."""
    errors = exc.errors()
    if not errors:
        return "The request is not valid."
    first = errors[0]
    if first.get("type") == "json_invalid":
        reason = str((first.get("ctx") or {}).get("error") or "").rstrip(".")
        at = next((p for p in first.get("loc", ()) if isinstance(p, int)), None)
        detail = ": " + reason + (f" at character {at}" if at is not None else "") if reason else ""
        return f"The body is not valid JSON{detail}."
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    message = str(first.get("msg", "is not valid")).rstrip(".")
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{where or 'The body'}: {message}{more}."
