"""The server's SAEs: named by SAELens release + id, or by a path under the ``sae_dir``
directories the server was started with, loaded on demand and kept in a bounded LRU cache.

A client never makes the server read a path it invents: a path is resolved (symlinks and ``..``
followed) and must lie under one of the directories (or be an SAE the operator preloaded). An
evicted SAE is dropped from the cache, the garbage collector runs and CUDA's cache is emptied,
so its memory is returned (the tests check that nothing else keeps it alive).
"""

from __future__ import annotations

import gc
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError

from sae_hacking.errors import UsageError
from sae_hacking.saes.base import SAE
from sae_hacking.saes.names import looks_like_path


class SAENotFound(UsageError):
    """No such SAE for this server (unknown release or id, missing file, path not allowed)."""


class SAEUnfit(UsageError):
    """The SAE exists but cannot read this model (unknown hook, other width)."""


class SAEUnreadable(UsageError):
    """The SAE's file or folder exists but does not hold a loadable SAE (missing tensors,
    metadata that is not JSON, a SAELens cfg.json without its keys)."""


# What a loader raises on a malformed file when it does not say so itself (a bad cfg.json is
# a KeyError, a bad metadata string a JSONDecodeError, a missing tensor load_state_dict's
# RuntimeError): the client named a file, so this is an answer about that file, not a crash.
MALFORMED = (KeyError, ValueError, TypeError, RuntimeError, OSError, SafetensorError)


@dataclass(frozen=True)
class SAEKey:
    release: str  # a SAELens release, or a resolved absolute path
    sae_id: str | None
    is_path: bool = False


@dataclass
class LoadedSAE:
    key: SAEKey
    sae: SAE
    hook: str
    neuronpedia_id: str | None
    explanations: dict[int, str] | None = field(default=None, repr=False)

    @property
    def d_sae(self) -> int:
        return int(self.sae.d_sae)

    def describe(self) -> dict:
        return {
            "release": self.key.release,
            "sae_id": self.key.sae_id,
            "hook": self.hook,
            "d_sae": self.d_sae,
        }


def default_loader(path_or_release: str, sae_id: str | None, device) -> SAE:
    from sae_hacking.saes.releases import load_sae

    return load_sae(path_or_release, sae_id, device=device)


class SAECache:
    """At most ``max_saes`` loaded SAEs, least recently used evicted first. ``check`` (an SAE
    and its hook) raises :class:`SAEUnfit` for an SAE the model cannot feed. Thread-safe."""

    def __init__(
        self,
        max_saes: int,
        sae_dirs: Sequence[str] = (),
        device: torch.device | str = "cpu",
        check: Callable[[SAE, str], None] | None = None,
        loader: Callable[[str, str | None, object], SAE] = default_loader,
        quiet: bool = False,
    ):
        self.max_saes = max_saes
        self.sae_dirs = tuple(Path(d).resolve() for d in sae_dirs)
        self.device = device
        self.check = check
        self.loader = loader
        self.quiet = quiet
        self.preloaded_paths: set[Path] = set()
        self._entries: OrderedDict[SAEKey, LoadedSAE] = OrderedDict()
        self._lock = threading.RLock()
        self._warned: set[str] = set()

    # -- names -> keys ----------------------------------------------------------------------

    def key_for(self, release: str, sae_id: str | None) -> SAEKey:
        """The cache key of a client's SAE name; a path outside ``sae_dirs`` is
        :class:`SAENotFound`."""
        if not release:
            raise SAENotFound("sae_release is empty; give a SAELens release or an SAE path.")
        sae_id = sae_id or None
        if not looks_like_path(release):
            return SAEKey(release, sae_id)
        return SAEKey(str(self.allowed_path(release, sae_id)), None, is_path=True)

    def allowed_path(self, release: str, sae_id: str | None) -> Path:
        raw = Path(release) / (sae_id or "")
        candidates = [raw] if raw.is_absolute() else [d / raw for d in self.sae_dirs]
        for candidate in candidates:
            resolved = candidate.resolve()
            if resolved in self.preloaded_paths:
                return resolved
            if any(resolved.is_relative_to(d) for d in self.sae_dirs) and resolved.exists():
                return resolved
        if not self.sae_dirs:
            raise SAENotFound(
                f"SAE path {raw} is not allowed: this server loads SAE paths only under "
                "directories given with --sae-dir, and none was."
            )
        if any(c.resolve().is_relative_to(d) for c in candidates for d in self.sae_dirs):
            raise SAENotFound(f"SAE path {raw}: no such file or folder under --sae-dir.")
        raise SAENotFound(
            f"SAE path {raw} is not under a directory this server was started with (--sae-dir)."
        )

    # -- loading and eviction ---------------------------------------------------------------

    def get(self, release: str, sae_id: str | None) -> LoadedSAE:
        """The SAE, loaded if needed (and made the most recently used)."""
        key = self.key_for(release, sae_id)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry
            entry = self._load(key)
            self._entries[key] = entry
            self._evict()
            return entry

    def preload(self, release: str, sae_id: str | None) -> LoadedSAE:
        """An SAE the operator names at start: any path is allowed (and stays allowed)."""
        if looks_like_path(release):
            path = (Path(release).expanduser() / (sae_id or "")).resolve()
            self.preloaded_paths.add(path)
            release, sae_id = str(path), None
        return self.get(release, sae_id)

    def _load(self, key: SAEKey) -> LoadedSAE:
        from sae_hacking.saes.neuronpedia import neuronpedia_id

        name = f"{key.release} {key.sae_id or ''}".strip()
        exists = key.is_path and Path(key.release).exists()
        try:
            sae = self.loader(key.release, key.sae_id, self.device)
        except UsageError as err:
            raise (SAEUnreadable if exists else SAENotFound)(_sentence(err)) from None
        except torch.cuda.OutOfMemoryError:
            raise
        except MALFORMED as err:
            reason = _sentence(f"{type(err).__name__}: {str(err)[:300]}")
            raise SAEUnreadable(f"SAE {name} could not be loaded: {reason}") from None
        hook = sae.hook_name
        if hook is None:
            raise SAEUnfit(f"SAE {name} does not say which hook point it reads.")
        if self.check is not None:
            self.check(sae, hook)
        np_id = None if key.is_path else neuronpedia_id(key.release, key.sae_id)
        return LoadedSAE(key, sae, hook, sae.neuronpedia_id or np_id)

    def _evict(self) -> None:
        evicted = False
        while len(self._entries) > self.max_saes:
            self._entries.popitem(last=False)
            evicted = True
        if evicted:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def loaded(self) -> list[LoadedSAE]:
        with self._lock:
            return list(self._entries.values())

    def explanations(self, entry: LoadedSAE) -> dict[int, str]:
        """Neuronpedia's explanations of the SAE's latents: fetched (or read from the shared
        on-disk cache) once per loaded SAE; without them, empty, with one warning."""
        if entry.explanations is not None:
            return entry.explanations
        from sae_hacking.saes.neuronpedia import load_explanations

        with self._lock:
            if entry.explanations is None:
                found: dict[int, str] = {}
                if entry.neuronpedia_id:
                    found, _, warning = load_explanations(entry.neuronpedia_id)
                    if warning and not self.quiet and warning not in self._warned:
                        self._warned.add(warning)
                        print(f"warning: {warning}", file=sys.stderr)
                entry.explanations = found
            return entry.explanations


def _sentence(err: Exception | str) -> str:
    """An error's message as the one sentence of a 4xx answer (backticked keys unquoted, one
    line)."""
    text = " ".join(str(err).replace("`", "").split())
    return text if text.endswith((".", "?", "!")) else text + "."
