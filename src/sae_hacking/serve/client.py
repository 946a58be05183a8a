"""The highlight client (``sae-hacking highlight``, the legacy ``prompt_client.py``): asks a
running ``sae-hacking serve`` for a prompt's activations over HTTP and saves, on the client's
side, the server's own web page with that answer in it, self-contained and offline
(:mod:`sae_hacking.serve.page`). Torch-free: it only speaks HTTP and writes text.

The client trusts no server: an answer is checked against the API's models
(:mod:`sae_hacking.serve.schema`) before any field is used, it enters the page as escaped JSON
only, and the file name comes from the client's own settings only.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import http.client
import json
import re
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sae_hacking.config import Config, set_field, setting
from sae_hacking.errors import FieldError, UsageError
from sae_hacking.saes.names import looks_like_path

if TYPE_CHECKING:
    from sae_hacking.serve.schema import ActivationsResponse

DEFAULT_RELEASE = "gemma-scope-2b-pt-mlp-canonical"
DEFAULT_SAE_ID = "layer_20/width_65k/canonical"
WAIT_NOTE_S = 2.0  # after this long without an answer, say what the client waits for
MAX_ANSWER_BYTES = 32 * 1024 * 1024  # 1,024 tokens x 50 latents is ~3 MiB of JSON
MAX_DETAIL_CHARS = 300
API_FIELDS = re.compile(r"\b(sae_release|sae_id|feature_idx|top_k)\b")


@dataclass(frozen=True)
class HighlightConfig(Config):
    prompt: str = setting("", help="the text to highlight")
    sae_release: str = setting(
        DEFAULT_RELEASE,
        help="SAELens release name (or a path under one of the server's --sae-dir folders)",
    )
    sae_id: str | None = setting(
        None,
        help="SAE id within the release (a path takes none unless given: a sub-path)",
    )
    feature_idx: int | None = setting(
        None, help="the latent to highlight (default: the strongest latent at each token)", ge=0
    )
    top_k: int = setting(5, help="latents listed per token and for the prompt", gt=0)
    output_dir: str = setting("prompts", help="folder (on this machine) for the HTML file")
    server_host: str = setting("127.0.0.1", help="address of the sae-hacking serve process")
    server_port: int = setting(9000, help="its port", ge=1, le=65535)
    timeout: float = setting(
        30.0,
        help="seconds to wait for the server's answer (a cold SAE load on the server can take "
        "minutes)",
        gt=0,
    )
    device: str | None = setting(
        None,
        help="accepted for the legacy command line; the server chose its device when it "
        "started (sae-hacking serve --device)",
    )

    def __post_init__(self):
        super().__post_init__()
        # The legacy default id belongs to release names: a path is a whole SAE (`--sae-id ""`
        # says "no id" for a release too).
        if self.sae_id is None and not looks_like_path(self.sae_release):
            set_field(self, "sae_id", DEFAULT_SAE_ID)

    def require_prompt(self) -> None:
        """A request needs a prompt (the default is empty so ``--help`` can be shown)."""
        if not self.prompt:
            raise FieldError("prompt", "is required: the text to highlight.")

    def check_inputs(self) -> None:
        """The output folder can receive the page (:meth:`check_output_dir`)."""
        self.check_output_dir()

    def check_output_dir(self) -> Path:
        """The output folder, if the page can be written there: an existing folder this user
        may write into, or a new one that can be made (outside /proc, /sys and /dev). Checked
        before the server is asked, so its work is not wasted."""
        from sae_hacking.folders import check_new_folder

        out = Path(self.output_dir).expanduser()
        if not out.is_dir():
            return check_new_folder(out, "output_dir")
        # An existing folder, with pages in it or not, is fine: probe a new name inside it.
        probe = out / ".sae-hacking-highlight"
        try:
            check_new_folder(probe, "output_dir")
        except FieldError as err:
            raise FieldError("output_dir", err.message.replace(str(probe), str(out))) from None
        return out

    @property
    def url(self) -> str:
        host = f"[{self.server_host}]" if ":" in self.server_host else self.server_host
        return f"http://{host}:{self.server_port}"


def request_activations(config: HighlightConfig) -> ActivationsResponse:
    """POST the prompt to the server and check its answer; a refused connection, an error
    answer, no answer within ``timeout`` or an answer that is not the API's is one line."""
    config.require_prompt()
    body = {
        "prompt": config.prompt,
        "sae_release": config.sae_release,
        "sae_id": config.sae_id or None,
        "feature_idx": config.feature_idx,
        "top_k": config.top_k,
    }
    request = urllib.request.Request(
        f"{config.url}/api/activations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    raw, content_type = _fetch(request, config)
    answer = parse_answer(raw, config.url, content_type)
    chosen = answer.feature.index if answer.feature is not None else None
    if chosen != config.feature_idx:
        asked = "none" if config.feature_idx is None else f"latent {config.feature_idx}"
        got = "none" if chosen is None else f"latent {chosen}"
        raise UsageError(
            f"the server at {config.url} answered for {got} where `feature_idx` asked for "
            f"{asked}; is it a sae-hacking serve?"
        )
    return answer


def parse_answer(raw: bytes | str, url: str, content_type: str = "") -> ActivationsResponse:
    """The server's answer as the API's model, or one line saying how it is not one."""
    from pydantic import ValidationError

    from sae_hacking.serve.schema import ActivationsResponse

    try:
        return ActivationsResponse.model_validate_json(raw)
    except ValidationError as err:
        first = err.errors()[0]
        if first.get("type") == "json_invalid":
            what = f" ({_one_line(content_type)})" if content_type else ""
            raise UsageError(
                f"the server at {url} answered something that is not JSON{what}; is it a "
                "sae-hacking serve?"
            ) from None
        where = ".".join(str(part) for part in first.get("loc", ())) or "the answer"
        more = f" and {err.error_count() - 1} more problems" if err.error_count() > 1 else ""
        raise UsageError(
            f"the server at {url} answered JSON that is not a highlight answer ({where}: "
            f"{_one_line(str(first.get('msg', 'not valid')))}{more})."
        ) from None


def _fetch(request: urllib.request.Request, config: HighlightConfig) -> tuple[bytes, str]:
    """The answer's body and content type. The request runs on a daemon thread so that
    ``timeout`` bounds the whole exchange (a socket timeout alone restarts with every byte a
    slow server trickles) and a note can say what the client is waiting for."""
    outcome: dict[str, Any] = {}

    def work():
        try:
            with urllib.request.urlopen(request, timeout=config.timeout) as response:
                outcome["type"] = response.headers.get("Content-Type", "")
                outcome["body"] = response.read(MAX_ANSWER_BYTES + 1)
        except BaseException as err:  # handed to the caller's thread
            outcome["error"] = err

    thread = threading.Thread(target=work, name="highlight-request", daemon=True)
    thread.start()
    thread.join(min(WAIT_NOTE_S, config.timeout))
    if thread.is_alive():
        print(f"waiting for {config.url} ...", file=sys.stderr, flush=True)
        thread.join(max(0.0, config.timeout - WAIT_NOTE_S))
    if thread.is_alive():
        raise _no_answer(config)
    err = outcome.get("error")
    if err is None:
        if len(outcome["body"]) > MAX_ANSWER_BYTES:
            raise UsageError(
                f"the server at {config.url} answered more than "
                f"{MAX_ANSWER_BYTES // 2**20} MiB; is it a sae-hacking serve?"
            )
        return outcome["body"], outcome["type"]
    if isinstance(err, urllib.error.HTTPError):
        raise UsageError(
            f"the server at {config.url} answered {err.code}: {_error_detail(err)}"
        ) from None
    if isinstance(err, TimeoutError) or isinstance(getattr(err, "reason", None), TimeoutError):
        raise _no_answer(config)
    if isinstance(err, (urllib.error.URLError, ConnectionError)):
        reason = _one_line(str(getattr(err, "reason", err)))
        raise UsageError(
            f"no highlight server answers at {config.url} ({reason}); start one with "
            f"`sae-hacking serve --port {config.server_port}` (or give `server_host` / "
            "`server_port`)."
        ) from None
    if isinstance(err, (OSError, http.client.HTTPException, ValueError)):
        raise UsageError(
            f"the server at {config.url} did not answer in HTTP ({type(err).__name__}: "
            f"{_one_line(str(err))}); is it a sae-hacking serve?"
        ) from None
    raise err


def _no_answer(config: HighlightConfig) -> UsageError:
    return UsageError(
        f"the server at {config.url} did not answer within {config.timeout:g} s; a cold SAE "
        "load can take minutes: give a longer `timeout`."
    )


def _error_detail(err: urllib.error.HTTPError) -> str:
    """The sentence of an error answer ({"detail": "..."}), made one safe line."""
    try:
        detail = json.loads(err.read(64 * 1024)).get("detail")
    except (ValueError, AttributeError, OSError):
        detail = None
    if isinstance(detail, list):  # FastAPI's validation errors
        detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    text = _one_line(str(detail or err.reason or "no explanation"))
    # The API's field names are this client's settings: shown as the user's flags.
    return API_FIELDS.sub(lambda m: f"`{m.group(1)}`", text.replace("`", "'"))


def _one_line(text: str) -> str:
    """Server text fit for one terminal line: no control characters (no escape sequences),
    whitespace collapsed, at most MAX_DETAIL_CHARS."""
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 1] + "…"


def _validated(result: ActivationsResponse | dict[str, Any]) -> ActivationsResponse:
    from sae_hacking.serve.schema import ActivationsResponse

    if isinstance(result, ActivationsResponse):
        return result
    return parse_answer(json.dumps(result), "(given)")


def write_page(config: HighlightConfig, result: ActivationsResponse | dict[str, Any]) -> Path:
    """The highlighted prompt as one self-contained HTML file in ``output_dir``; returns it.
    The name is built from the client's own settings and a hash, never from the answer."""
    from sae_hacking.atomic import atomic_write_text

    answer = _validated(result)
    out = Path(config.output_dir).expanduser()
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    digest = hashlib.sha256(answer.model_dump_json().encode()).hexdigest()[:8]
    latent = "top" if config.feature_idx is None else f"latent{int(config.feature_idx)}"
    try:
        return atomic_write_text(
            out / f"prompt-{stamp}-{latent}-{digest}.html", render_page(config, answer)
        )
    except OSError as err:
        raise FieldError(
            "output_dir", f"{out}: the page could not be written ({err.strerror or err})."
        ) from None


def render_page(config: HighlightConfig, result: ActivationsResponse | dict[str, Any]) -> str:
    """The server's own web page holding this answer (:func:`sae_hacking.serve.page.saved_page`):
    the tokens laid out and coloured by the script the server's page runs, with no server.
    Every value from the server reaches the page as escaped JSON only."""
    from sae_hacking.serve.page import saved_page

    answer = _validated(result)
    return saved_page(answer.model_dump(mode="json"), config.prompt, config.url)
