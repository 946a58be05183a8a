"""New output folders (bottom layer): a command writes only into a folder it creates, or one
that is empty, and a start that fails removes what it created."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from sae_hacking.errors import FieldError

_SYSTEM_TREES = ("/proc", "/sys", "/dev")


def check_new_folder(path: str | Path, field: str) -> Path:
    """``path`` as a :class:`Path`, if a folder can be made there: it is absent or an empty
    folder, and its nearest existing parent is a writable folder outside /proc, /sys and /dev
    (tried by creating and removing a temporary folder in it)."""
    path = Path(path).expanduser()
    try:
        if path.exists() or path.is_symlink():
            if not path.is_dir():
                raise FieldError(field, f"{path} is a file, not a folder; choose a new folder.")
            if any(path.iterdir()):
                raise FieldError(field, f"{path} exists and is not empty; choose a new folder.")
        parent = path.absolute().parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise FieldError(field, f"{path} cannot be created: {parent} is a file.")
        real = str(parent.resolve())
        for tree in _SYSTEM_TREES:
            if real == tree or real.startswith(tree + "/"):
                raise FieldError(field, f"{path} is under {tree}, a system folder; choose another.")
        os.rmdir(tempfile.mkdtemp(prefix=".sae-hacking-probe.", dir=parent))
    except FieldError:
        raise
    except OSError as err:
        raise FieldError(
            field, f"{path} cannot be created ({err.strerror or err}); choose another folder."
        ) from None
    return path


def create_new_folder(path: str | Path, field: str) -> tuple[Path, Path | None]:
    """Create the folder :func:`check_new_folder` accepted; returns it (absolute) and the topmost
    folder this call created (``None`` if the folder existed, empty), for :func:`remove_created`."""
    path = Path(path).expanduser().absolute()
    top = None
    probe = path
    while not probe.exists():
        top = probe
        probe = probe.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FieldError(field, f"{path} cannot be created ({err.strerror}).") from None
    return path, top


def remove_created(path: Path, top: Path | None) -> None:
    """Undo :func:`create_new_folder` after a failed start: remove what was created there."""
    if top is not None:
        shutil.rmtree(top, ignore_errors=True)
    elif path.is_dir():
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


@contextlib.contextmanager
def removed_on_failure(
    path: Path, top: Path | None, keep: Callable[[], bool] = lambda: False
) -> Iterator[None]:
    """Undo :func:`create_new_folder` when the body raises (anything, Ctrl-C included), unless
    ``keep()`` says the folder holds something to resume from (a checkpoint): a start that fails
    leaves the folder as it found it, so the corrected command runs there."""
    try:
        yield
    except BaseException:
        if not keep():
            remove_created(path, top)
        raise
