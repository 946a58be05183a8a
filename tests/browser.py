"""Which Chromium the browser tests drive, and what happens when there is none.

A newcomer's ``uv run pytest tests`` should pass without a browser, so a missing one skips the
browser tests with the install hint; under CI (``CI`` set, as ``.ci/run`` does) it fails instead,
because a skipped browser test proves nothing there."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

# Debian's name, Ubuntu's older name, then Google's build (the usual one on macOS).
NAMES_ON_PATH = ("chromium", "chromium-browser", "google-chrome")
INSTALL_HINT = (
    "install Chromium to run the browser tests (Debian/Ubuntu: `apt-get install chromium`; "
    "macOS: Google Chrome or `brew install --cask chromium`), or point $CHROMIUM at one"
)


def find_chromium(bundled: Callable[[], str | None] = lambda: None) -> str | None:
    """``$CHROMIUM``, else the first of :data:`NAMES_ON_PATH` on ``PATH``, else playwright's own
    browser (``bundled()``, its ``chromium.executable_path``) when that file exists; ``None``
    when there is none. An explicit ``$CHROMIUM`` is taken as given, so a wrong one fails at
    launch rather than silently falling back to another browser."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit
    for name in NAMES_ON_PATH:
        found = shutil.which(name)
        if found:
            return found
    path = bundled()
    return path if path and Path(path).is_file() else None


def under_ci() -> bool:
    """Whether ``CI`` is set: CI services set it to ``true`` (``.ci/run`` to ``1``); an empty
    value, ``0`` or ``false`` count as unset."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def browser_missing(what: str) -> None:
    """Skip the test (fail it under CI), saying ``what`` is missing and how to install it."""
    message = f"{what}: {INSTALL_HINT}"
    if under_ci():
        pytest.fail(f"{message} (CI is set, so the browser tests must run)", pytrace=False)
    pytest.skip(message)


def guard(page, allowed: Callable[[str], bool]) -> tuple[list[str], list[str]]:
    """Let ``page`` load only the URLs ``allowed`` accepts; returns the lists it fills: the
    refused URLs, and every page error and console error (a self-contained page has neither)."""
    refused: list[str] = []
    errors: list[str] = []

    def route(r):
        if allowed(r.request.url):
            r.continue_()
        else:
            refused.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    return refused, errors
