"""The FastAPI application of ``sae-hacking serve``: :func:`create_app`.

Endpoints are plain (sync) functions, which FastAPI runs in a thread pool; the model and the SAE
cache are shared, so all model work (loading an SAE, the forward, the encoding) runs on one
dedicated thread, one request at a time. One thread rather than a lock: the allocator then keeps
the large per-request tensors in one arena, and the server's memory stays flat under
concurrent clients instead of growing to a high-water mark per pool thread. Everything a client can get wrong is a 4xx
answer whose ``detail`` is one sentence: 413 for a body over 64 KiB, 422 for a malformed body,
404 for an SAE this server does not have (or may not read), 400 for a latent index out of range
or a prompt over the token limit.
"""

from __future__ import annotations

import mimetypes
import re
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

from fastapi import FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from sae_hacking.errors import UsageError
from sae_hacking.serve.config import ServeConfig
from sae_hacking.serve.highlight import PromptTooLong, highlight, summary
from sae_hacking.serve.saes import SAECache, SAENotFound, SAEUnfit, _sentence

MAX_BODY_BYTES = 64 * 1024
ASSET_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")


class ActivationsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, description="the text to highlight")
    sae_release: str = Field(description="SAELens release, or an SAE path under --sae-dir")
    sae_id: str | None = Field(None, description="SAE id in the release (a path: a sub-path)")
    feature_idx: int | None = Field(None, ge=0, description="the latent to highlight by")
    top_k: int = Field(5, ge=1, le=50, description="latents listed per token and per prompt")


class SAEInfoOut(BaseModel):
    release: str
    sae_id: str | None
    hook: str
    d_sae: int
    neuronpedia_id: str | None = None


class FeatureOut(BaseModel):
    index: int
    explanation: str
    url: str | None


class TokenLatent(BaseModel):
    index: int
    value: float


class TopLatent(BaseModel):
    index: int
    max: float
    explanation: str
    url: str | None


class ActivationsResponse(BaseModel):
    sae: SAEInfoOut
    tokens: list[str]
    feature: FeatureOut | None
    activations: list[float] | None
    top_per_token: list[list[TokenLatent]]
    top_latents: list[TopLatent]
    max_activation: float


class SAEsResponse(BaseModel):
    loaded: list[SAEInfoOut]
    max_saes: int
    sae_dirs: list[str]


class HealthResponse(BaseModel):
    status: str
    model: str


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes, by its Content-Length or,
    for a chunked body, as soon as what arrived exceeds it. The body is read here (at most
    ``limit`` bytes are ever held) and handed on whole: FastAPI would turn an error raised
    while it reads the body into a 400."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await self._too_large(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            body += message.get("body", b"")
            if len(body) > self.limit:
                return await self._too_large(scope, receive, send)
            more = message.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send):
        detail = f"The request body is larger than {self.limit // 1024} KiB."
        await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)


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
    model_thread = ThreadPoolExecutor(1, thread_name_prefix="sae-hacking-model")

    app = FastAPI(
        title="sae-hacking prompt highlighting",
        description="How strongly SAE latents fire on each token of a prompt.",
    )
    app.state.lm, app.state.saes, app.state.config = lm, saes, config
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)

    @app.exception_handler(RequestValidationError)
    def validation_error(request, exc: RequestValidationError):
        return JSONResponse({"detail": _validation_sentence(exc)}, status_code=422)

    # The answer is returned as a ready JSONResponse: FastAPI's validation and encoding of the
    # response model cost more than the model's forward on small models (the schema is still
    # documented).
    @app.post("/api/activations", response_model=ActivationsResponse)
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
            except PromptTooLong as err:
                raise HTTPException(400, _sentence(err)) from None
            return entry, result

        entry, result = model_thread.submit(model_work).result()
        explanations = saes.explanations(entry)
        np_id = entry.neuronpedia_id

        def describe(index: int):
            from sae_hacking.saes.neuronpedia import latent_url

            return explanations.get(index, ""), latent_url(np_id, index)

        answer = summary(result, body.feature_idx, body.top_k, describe)
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
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    message = str(first.get("msg", "is not valid")).rstrip(".")
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{where or 'The body'}: {message}{more}."
