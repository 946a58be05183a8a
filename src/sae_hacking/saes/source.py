"""Which pretrained SAE a command loads: :class:`SAESource` (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from sae_hacking.config import Config, resolved_path, set_field, setting
from sae_hacking.errors import FieldError
from sae_hacking.saes.names import looks_like_path


@dataclass(frozen=True)
class SAESource(Config):
    """A SAELens release + SAE id, or a local SAE (Gemma Scope params.npz, SAELens folder,
    sae_hacking .safetensors; ``sae_id`` is then an optional sub-path)."""

    release: str | None = setting(
        None,
        help="SAELens release name, or a local SAE path: Gemma Scope params.npz, SAELens "
        "folder or sae_hacking .safetensors",
        key="sae_release",
    )
    sae_id: str | None = setting(
        None, help="SAE id within the release (for a local path: a sub-path)", key="sae_id"
    )
    hook: str | None = setting(
        None,
        help="hook point the SAE reads, when the SAE does not say (blocks.L.hook_...)",
        key="sae_hook",
    )

    def __post_init__(self):
        super().__post_init__()
        if self.sae_id == "":
            set_field(self, "sae_id", None)
        if self.is_local:
            set_field(self, "release", resolved_path(self.release))

    def check_inputs(self) -> None:
        """A local SAE must exist (whether it loads is seen when it does)."""
        if self.is_local:
            path = Path(self.release).expanduser() / (self.sae_id or "")
            if not path.exists():
                raise FieldError("sae_release", f"{path}: no such SAE file or folder.")

    @property
    def is_local(self) -> bool:
        return self.release is not None and looks_like_path(self.release)

    def with_default_id(self, sae_id: str) -> SAESource:
        """This source with ``sae_id`` when it names a release without an id (the default id
        belongs to the default release, never to a local file)."""
        if self.sae_id is None and self.release is not None and not self.is_local:
            return replace(self, sae_id=sae_id)
        return self

    def load(self, device, prefix: str = ""):
        """The SAE, for inference on ``device`` (imports torch). ``hook`` applies to an SAE
        that does not say which hook it reads; one that contradicts the SAE is a
        :class:`FieldError` on ``prefix + "sae_hook"``."""
        from sae_hacking.saes.releases import load_sae

        sae = load_sae(self.release, self.sae_id, device=device)
        if self.hook is not None:
            if sae.hook_name is not None and sae.hook_name != self.hook:
                raise FieldError(
                    prefix + "sae_hook",
                    f"is {self.hook} but the SAE {self.release} {self.sae_id or ''} reads "
                    f"{sae.hook_name}; drop it (it is only for SAEs that do not say).",
                )
            sae.info.hook_name = self.hook
        return sae

    def require(self, key: str) -> None:
        """A command needs this SAE: ``key`` is its release's flat key, for the error."""
        if self.release is None:
            raise FieldError(key, "is required: a SAELens release name or a local SAE path.")
