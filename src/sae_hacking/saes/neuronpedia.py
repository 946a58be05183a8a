"""Neuronpedia ids, latent URLs and latent explanations (auto-interp descriptions).

Explanations come from Neuronpedia's public dataset export: per SAE, gzipped JSON-lines batches
``v1/{model}/{sae}/explanations/batch-{i}.jsonl.gz`` in the ``neuronpedia-datasets`` S3 bucket,
one object per explanation with (among others) ``index`` and ``description``. The older
``/api/explanation/export`` route answers 400 with a pointer there. They are downloaded once,
after a one-second reachability probe (name resolution has no timeout of its own), and cached as
a JSON list of ``{"index", "description"}`` under ``$SAE_HACKING_CACHE/neuronpedia`` (default
``~/.cache/sae_hacking/neuronpedia``); that cache file is also a valid ``explanations_file``.

Explanations only decorate a report, so every failure to get them is one warning string and an
empty mapping, never an exception (a bad ``explanations_file`` is the user's error and is one).
"""

from __future__ import annotations

import gzip
import json
import os
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sae_hacking.atomic import atomic_write_json
from sae_hacking.errors import FieldError, UsageError
from sae_hacking.hub import hub_offline_by_env, url_unreachable_reason

SITE = "https://www.neuronpedia.org"
EXPORT_BASE = "https://neuronpedia-datasets.s3.us-east-1.amazonaws.com"
EXPORT_ENV = "SAE_HACKING_NEURONPEDIA_EXPORT"  # another base URL (a mirror, or a test server)
CACHE_ENV = "SAE_HACKING_CACHE"
PROBE_TIMEOUT_S = 1.0
REQUEST_TIMEOUT_S = 10.0
DOWNLOAD_WORKERS = 8
# A 1M-latent SAE has ~8k batches of 128; past this the listing is not what we think it is.
MAX_BATCHES = 20_000

# Fields of Neuronpedia's export rows beside index and description.
EXPORT_FIELDS = frozenset({"modelId", "layer", "typeName", "explanationModelName"})

SOURCE_EXPORT = "neuronpedia export"
SOURCE_FILE = "file"
SOURCE_NONE = "none"


def neuronpedia_id(release: str | None, sae_id: str | None) -> str | None:
    """The Neuronpedia id (``model/sae``) the SAELens registry gives ``release`` / ``sae_id``;
    ``None`` for local paths, unknown names and entries without one."""
    from sae_hacking.saes.names import looks_like_path
    from sae_hacking.saes.releases import resolve_release

    if not release or not sae_id or looks_like_path(release):
        return None
    try:
        return resolve_release(release, sae_id).neuronpedia_id
    except UsageError:
        return None


def latent_url(np_id: str | None, index: int) -> str | None:
    return f"{SITE}/{np_id}/{int(index)}" if np_id else None


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV)
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        root = Path(base) / "sae_hacking"
    return Path(root).expanduser() / "neuronpedia"


def cache_path(np_id: str) -> Path:
    return cache_dir() / f"{np_id.replace('/', '__')}.json"


def load_explanations(
    np_id: str | None, explanations_file: str | None = None, n_latents: int | None = None
) -> tuple[dict[int, str], str, str | None]:
    """``(index -> description, source, warning)``: from ``explanations_file`` if given (its
    indices checked against ``n_latents``), else from the cache or Neuronpedia's export for
    ``np_id``. ``source`` is ``"file"``, ``"neuronpedia export"`` or ``"none"``; ``warning``
    says why explanations are missing or incomplete (``None`` when all is well)."""
    if explanations_file:
        return read_explanations_file(explanations_file, n_latents), SOURCE_FILE, None
    if not np_id:
        return {}, SOURCE_NONE, _why_none("the SAE has no Neuronpedia id")
    cached = cache_path(np_id)
    if cached.is_file():
        try:
            return (
                _parse_records(json.loads(cached.read_text(encoding="utf-8"))),
                SOURCE_EXPORT,
                None,
            )
        except (OSError, ValueError, TypeError, KeyError):
            cached.unlink(missing_ok=True)  # damaged: dropped, and fetched again below
    reason = _unreachable_reason()
    if reason is not None:
        return {}, SOURCE_NONE, _why_none(f"{np_id} is not cached ({cached}) and {reason}")
    try:
        records, missing = _download(np_id)
    except (OSError, ValueError, EOFError) as err:  # urllib errors, bad gzip or JSON
        return {}, SOURCE_NONE, _why_none(f"downloading the export of {np_id} failed ({err})")
    explanations = _parse_records(records)
    if not explanations:
        why = f"all {missing} export batches failed" if missing else "the export has none"
        return {}, SOURCE_NONE, _why_none(f"{why} for {np_id}")
    if missing:
        return (
            explanations,
            SOURCE_EXPORT,
            (
                f"Neuronpedia explanations for {np_id} are incomplete: {missing} export batches "
                "failed to download (not cached; the next run tries again)."
            ),
        )
    rows = [{"index": i, "description": d} for i, d in sorted(explanations.items())]
    atomic_write_json(cached, rows)
    return explanations, SOURCE_EXPORT, None


def _why_none(reason: str) -> str:
    return (
        f"no Neuronpedia explanations: {reason}; explanations are left empty "
        "(a local export can be given with `explanations_file`)."
    )


def read_explanations_file(path: str | os.PathLike, n_latents: int | None = None) -> dict[int, str]:
    """A local export: a JSON list of ``{"index", "description"}`` (Neuronpedia's export rows
    carry more fields, which are ignored), a JSON object ``{index: description}``, or
    Neuronpedia's JSON-lines batches (``.jsonl``, optionally ``.gz``).

    The user's file is checked record by record: an index that is missing, null, not an
    integer, negative, not below ``n_latents`` or given twice is a :class:`FieldError` naming
    the file, the record (counted from 1) and what is wrong. Rows of Neuronpedia's export
    (records with its fields, :data:`EXPORT_FIELDS`) may repeat an index: the first
    non-empty explanation is kept, as Neuronpedia's site shows the first."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FieldError("explanations_file", f"{path}: no such file.")
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8")
        try:
            records = json.loads(text)
        except ValueError:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (OSError, EOFError, ValueError) as err:
        raise FieldError(
            "explanations_file",
            f"{path} is not a list of {{index, description}} records (JSON or JSON lines): {err}.",
        ) from None
    if isinstance(records, dict):
        records = [{"index": k, "description": v} for k, v in records.items()]
    if not isinstance(records, list):
        raise FieldError(
            "explanations_file",
            f"{path} holds a JSON {type(records).__name__}, not a list of {{index, description}} "
            "records.",
        )
    # Neuronpedia's export rows may hold several explanations of one latent (the site shows
    # the first); in a file of the user's own, a repeated index is a mistake.
    export = any(isinstance(r, dict) and EXPORT_FIELDS & r.keys() for r in records)
    out: dict[int, str] = {}
    first_of: dict[int, int] = {}
    for number, record in enumerate(records, start=1):
        where = f"{path}, record {number}"
        if not isinstance(record, dict):
            raise FieldError(
                "explanations_file",
                f"{where}: is a {type(record).__name__}, not an {{index, description}} object.",
            )
        index = _record_index(record, where, n_latents)
        if index in first_of and not export:
            raise FieldError(
                "explanations_file",
                f"{where}: index {index} was given already (record {first_of[index]}); give one "
                "description per latent.",
            )
        first_of.setdefault(index, number)
        description = str(record.get("description") or "").strip()
        if description and index not in out:
            out[index] = description
    return out


def _record_index(record: dict, where: str, n_latents: int | None) -> int:
    """The record's latent index (an integer, or a string of digits as Neuronpedia writes
    it), or a :class:`FieldError` saying what is wrong with it."""
    if "index" not in record:
        raise FieldError("explanations_file", f"{where}: has no index.")
    value = record["index"]
    if value is None:
        raise FieldError("explanations_file", f"{where}: index is null.")
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(
            "explanations_file", f"{where}: index {value!r} is not an integer latent index."
        )
    if value < 0:
        raise FieldError("explanations_file", f"{where}: index {value} is negative.")
    if n_latents is not None and value >= n_latents:
        raise FieldError(
            "explanations_file",
            f"{where}: index {value} is out of range; the ablator SAE has latents "
            f"0..{n_latents - 1}.",
        )
    return value


def _parse_records(records: Any) -> dict[int, str]:
    """``index -> description`` of downloaded or cached export rows; an index with several
    explanations keeps its first non-empty one, as Neuronpedia's site shows the first, and a
    row without a usable index is skipped (the export is not the user's to fix)."""
    if isinstance(records, dict):
        records = [{"index": k, "description": v} for k, v in records.items()]
    if not isinstance(records, list):
        raise TypeError(f"expected a list, got {type(records).__name__}")
    out: dict[int, str] = {}
    for record in records:
        if not isinstance(record, dict):
            raise TypeError(f"expected objects, got {type(record).__name__}")
        try:
            index = int(record["index"])
        except (KeyError, TypeError, ValueError):
            continue
        description = str(record.get("description") or "").strip()
        if index >= 0 and description and index not in out:
            out[index] = description
    return out


def export_base() -> str:
    return (os.environ.get(EXPORT_ENV) or EXPORT_BASE).rstrip("/")


def _offline_by_env() -> bool:
    return hub_offline_by_env()


def _unreachable_reason(timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """``None`` when the export's host (or the proxy for it) accepts a TCP connection within
    ``timeout_s``; else why not. Offline mode makes no attempt at all."""
    if _offline_by_env():
        return "offline mode is on (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)"
    return url_unreachable_reason(export_base(), timeout_s)


def _get(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "sae-hacking"})
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
        return response.read()


def _prefix(np_id: str) -> str:
    return f"v1/{np_id.strip('/')}/explanations/"


def _list_batches(np_id: str) -> list[str] | None:
    """The export's batch keys from an S3 listing (``ListObjectsV2``, paged); ``None`` when the
    bucket refuses to list."""
    keys: list[str] = []
    token = None
    while len(keys) < MAX_BATCHES:
        query = {"list-type": "2", "prefix": _prefix(np_id)}
        if token:
            query["continuation-token"] = token
        try:
            body = _get(f"{export_base()}/?{urllib.parse.urlencode(query)}")
        except urllib.error.HTTPError:
            return None
        root = ET.fromstring(body)
        ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
        keys += [
            key.text for key in root.iter(f"{ns}Key") if key.text and key.text.endswith(".jsonl.gz")
        ]
        if (root.findtext(f"{ns}IsTruncated") or "").lower() != "true":
            break
        token = root.findtext(f"{ns}NextContinuationToken")
        if not token:
            break
    return keys


def _read_batch(body: bytes) -> list[dict]:
    text = gzip.decompress(body).decode("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _download(np_id: str) -> tuple[list[dict], int]:
    """Every export row for ``np_id`` and the number of batches that failed."""
    from tqdm import tqdm

    keys = _list_batches(np_id)
    if keys is None:
        return _download_in_order(np_id)
    records: list[dict] = []
    failed = 0

    def fetch(key: str) -> list[dict] | None:
        try:
            return _read_batch(_get(f"{export_base()}/{urllib.parse.quote(key)}"))
        except (OSError, ValueError, EOFError):
            return None

    bar = tqdm(total=len(keys), desc=f"Neuronpedia {np_id}", unit="batch", disable=None)
    with bar, ThreadPoolExecutor(DOWNLOAD_WORKERS) as pool:
        for rows in pool.map(fetch, keys):
            bar.update()
            if rows is None:
                failed += 1
            else:
                records += rows
    return records, failed


def _download_in_order(np_id: str) -> tuple[list[dict], int]:
    """Without a listing: batch 0, 1, ... until the first one that does not exist."""
    records: list[dict] = []
    for i in range(MAX_BATCHES):
        try:
            body = _get(f"{export_base()}/{_prefix(np_id)}batch-{i}.jsonl.gz")
        except urllib.error.HTTPError as err:
            if err.code in (403, 404):  # S3 says 403 for a missing key when listing is denied
                break
            raise
        records += _read_batch(body)
    return records, 0
