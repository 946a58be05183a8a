"""Reaching the Hugging Face hub without hanging.

Offline, ``huggingface_hub`` retries a failed connection five times with backoff (about 20 s)
and then raises a long traceback. Every hub access in this package therefore looks in the local
cache first and, only when that misses, probes the hub's host with a one-second deadline before
letting ``huggingface_hub`` use the network. A miss with no reachable hub becomes one
:class:`UsageError` sentence that says how to supply the files instead.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
import urllib.request
from pathlib import Path

from sae_hacking.errors import FieldError, UsageError

PROBE_TIMEOUT_S = 1.0
_TRUE = {"1", "on", "yes", "true"}


def hub_offline_by_env() -> bool:
    """True when the user asked for offline mode (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    from huggingface_hub import constants

    env = any(
        os.environ.get(name, "").strip().lower() in _TRUE
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
    return env or bool(constants.HF_HUB_OFFLINE)


def _probe_target(url: str) -> tuple[str, int]:
    """The host and port a request to ``url`` would connect to first (a proxy if one is
    configured)."""
    target = urllib.parse.urlsplit(url)
    scheme = target.scheme or "https"
    proxy = urllib.request.getproxies().get(scheme)
    if proxy and not urllib.request.proxy_bypass(target.hostname or ""):
        parsed = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return parsed.hostname or "", parsed.port or 80
    return target.hostname or "", target.port or (443 if scheme == "https" else 80)


def url_unreachable_reason(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """``None`` when a TCP connection towards ``url`` opens within ``timeout_s``, else why not.

    The probe runs in a daemon thread because name resolution has no timeout of its own; a
    resolver that hangs is abandoned, not waited for.
    """
    host, port = _probe_target(url)
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                outcome.append(None)
        except OSError as err:
            outcome.append(f"{host}:{port} cannot be reached ({err.strerror or err})")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s + 0.1)
    if not outcome:
        return f"{host}:{port} did not answer within {timeout_s:g} s"
    return outcome[0]


def hub_unreachable_reason(timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """``None`` when the hub (or its proxy) accepts a TCP connection within ``timeout_s``, else
    why not; offline mode makes no attempt."""
    from huggingface_hub import constants

    if hub_offline_by_env():
        return "offline mode is on (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)"
    return url_unreachable_reason(constants.ENDPOINT, timeout_s)


def hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def unreachable_message(what: str, reason: str, remedy: str) -> str:
    return (
        f"{what} is not in the local Hugging Face cache ({hub_cache_dir()}) and the hub is "
        f"unreachable: {reason}; {remedy}"
    )


def check_repo_id(repo_id: str, field: str) -> None:
    """A :class:`FieldError` for ``field`` unless ``repo_id`` is spelled like a hub repository id
    (``name`` or ``org/name``), so a typo is not reported as a missing download."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise FieldError(
            field,
            f"{repo_id}: no such local path, and not a Hugging Face hub id (org/name, letters, "
            "digits, '-', '_', '.').",
        ) from None


def hub_file(repo_id: str, filename: str, *, what: str, repo_type: str = "model") -> Path:
    """Path of ``filename`` in hub repo ``repo_id``: from the cache, else downloaded into it."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return Path(hf_hub_download(repo_id, filename, repo_type=repo_type, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    except HFValidationError as err:
        raise UsageError(f"{what}: {repo_id!r} is not a valid hub repository id ({err}).") from None
    reason = hub_unreachable_reason()
    if reason is not None:
        raise UsageError(
            unreachable_message(
                f"{what} ({repo_id}/{filename})",
                reason,
                f"download it where there is network (`hf download {repo_id} {filename}`) and "
                "copy the cache here, or point HF_HOME at a cache that has it.",
            )
        )
    try:
        return Path(hf_hub_download(repo_id, filename, repo_type=repo_type))
    except GatedRepoError as err:
        raise UsageError(
            f"{what}: {repo_id} is gated on the Hugging Face hub; accept its licence on the "
            "website and log in with `hf auth login`."
        ) from err
    except RepositoryNotFoundError as err:
        raise UsageError(f"{what}: there is no hub repository {repo_id!r}.") from err
    except LocalEntryNotFoundError as err:
        # Subclass of EntryNotFoundError: the connection failed after the probe succeeded.
        raise UsageError(f"{what}: downloading {repo_id}/{filename} failed ({err}).") from err
    except EntryNotFoundError as err:
        raise UsageError(f"{what}: hub repository {repo_id} has no file {filename!r}.") from err
    except HfHubHTTPError as err:
        raise UsageError(f"{what}: downloading {repo_id}/{filename} failed ({err}).") from err
