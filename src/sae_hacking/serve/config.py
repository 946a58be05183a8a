"""The settings of ``sae-hacking serve`` (torch-free, checked before anything loads)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from sae_hacking.config import Config, resolved_path, set_field, setting
from sae_hacking.errors import FieldError
from sae_hacking.lm.source import ModelSource
from sae_hacking.saes.names import looks_like_path

LOOPBACK_NAMES = ("localhost",)
# Host headers a loopback server answers to (any port): a web page that rebinds its own name to
# 127.0.0.1 still sends that name, and is refused.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_sae_name(name: str) -> tuple[str, str | None]:
    """A preload name: a local path (whole), or ``RELEASE/ID`` split at the first slash (SAE ids
    have slashes of their own: ``layer_20/width_65k/canonical``)."""
    if looks_like_path(name):
        return name, None
    release, _, sae_id = name.partition("/")
    return release, sae_id or None


@dataclass(frozen=True)
class ServeConfig(Config):
    """Serve prompt highlighting: one model, loaded once, and a bounded cache of SAEs."""

    model: ModelSource = setting(default_factory=ModelSource, help="model")
    host: str = setting(
        "127.0.0.1",
        help="address to listen on; anything but a loopback address lets other machines in "
        "(the server has no authentication)",
        kind="free",
    )
    port: int = setting(9000, help="TCP port to listen on", kind="free", ge=1, le=65535)
    allowed_hosts: tuple[str, ...] = setting(
        (),
        help="host names (or addresses) clients may reach this server by, besides 127.0.0.1, "
        "localhost, [::1] and --host itself: requests with any other Host header are refused "
        "(a web page cannot rebind its own name to this server); * accepts any",
        kind="free",
    )
    sae_dir: tuple[str, ...] | None = setting(
        None,
        help="directories under which clients may name SAEs by path (files or folders); "
        "without it, only SAELens releases load",
    )
    max_saes: int = setting(4, help="SAEs kept loaded; the least recently used is freed", gt=0)
    sae: tuple[str, ...] = setting(
        (), help="SAEs to load at start: RELEASE/ID (SAELens) or local paths"
    )
    max_prompt_tokens: int = setting(
        1024, help="longest prompt accepted, in tokens (BOS not counted)", ge=1
    )
    evidence: tuple[str, ...] | None = setting(
        None,
        help="cooccurrences or latents runs (one per SAE) whose latent evidence the page links "
        "to: a top latent of an SAE with the same weights opens its section of the "
        "latents-report pages, rendered by this server",
    )
    quiet: bool = setting(False, help="no request log and no Neuronpedia warnings", kind="free")

    def __post_init__(self):
        super().__post_init__()
        if not self.host:
            raise FieldError("host", "must not be empty.")
        set_field(self, "allowed_hosts", tuple(self._checked_host(h) for h in self.allowed_hosts))
        if self.sae_dir is not None:
            set_field(self, "sae_dir", tuple(resolved_path(d) for d in self.sae_dir))
        if self.evidence is not None:
            set_field(self, "evidence", tuple(resolved_path(d) for d in self.evidence))
        if len(self.sae) > self.max_saes:
            raise FieldError(
                "sae", f"names {len(self.sae)} SAEs but `max_saes` is {self.max_saes}."
            )

    def check_inputs(self) -> None:
        """The model, and every `sae_dir` a directory."""
        super().check_inputs()
        for name in self.sae_dir or ():
            if not Path(name).expanduser().is_dir():
                raise FieldError("sae_dir", f"{name}: no such directory.")
        for name in self.evidence or ():
            if not Path(name).expanduser().exists():
                raise FieldError("evidence", f"{name}: no such run directory or file.")

    @staticmethod
    def _checked_host(name: str) -> str:
        host = name.strip().lower()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not host or any(c.isspace() or c in "/@?#[]" for c in host):
            raise FieldError(
                "allowed_hosts", f"{name!r} is not a host name (give names such as example.org)."
            )
        if host.count(":") == 1:
            raise FieldError("allowed_hosts", f"{name!r}: give the name without a port.")
        return host

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def host_names(self) -> frozenset[str] | None:
        """The names a request's Host header may carry (lowercase, without port or
        brackets); ``None`` when ``*`` lets any through."""
        if "*" in self.allowed_hosts:
            return None
        own = () if self.host in WILDCARD_HOSTS else (self.host.strip("[]").lower(),)
        return frozenset((*LOOPBACK_HOSTS, *own, *self.allowed_hosts))

    def preloads(self) -> list[tuple[str, str | None]]:
        return [split_sae_name(name) for name in self.sae]
