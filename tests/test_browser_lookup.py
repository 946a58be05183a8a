"""How the browser tests find Chromium, and skip (or, under CI, fail) without one."""

import os

import pytest

from tests.browser import INSTALL_HINT, browser_missing, find_chromium, under_ci


def fake_executable(folder, name):
    path = folder / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def bin_dir(tmp_path, monkeypatch):
    """An empty folder as the whole PATH, and no $CHROMIUM."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.delenv("CHROMIUM", raising=False)
    return folder


def test_chromium_env_wins_over_path(bin_dir, monkeypatch):
    fake_executable(bin_dir, "chromium")
    monkeypatch.setenv("CHROMIUM", "/opt/my/chrome")
    assert find_chromium() == "/opt/my/chrome"


@pytest.mark.parametrize(
    "present, expected",
    [
        (["chromium", "chromium-browser", "google-chrome"], "chromium"),
        (["google-chrome", "chromium-browser"], "chromium-browser"),  # Ubuntu's name
        (["google-chrome"], "google-chrome"),  # macOS
    ],
)
def test_path_names_in_order(bin_dir, present, expected):
    for name in present:
        fake_executable(bin_dir, name)
    assert find_chromium(bundled=lambda: "/never/asked") == os.path.join(bin_dir, expected)


def test_playwrights_own_browser_only_when_its_file_exists(bin_dir, tmp_path):
    bundled = fake_executable(tmp_path, "headless_shell")
    assert find_chromium(bundled=lambda: bundled) == bundled
    # playwright names the path even when `playwright install` never ran.
    assert find_chromium(bundled=lambda: str(tmp_path / "not-installed")) is None
    assert find_chromium() is None


def test_a_non_executable_file_on_path_is_not_a_browser(bin_dir):
    (bin_dir / "chromium").write_text("")
    assert find_chromium() is None


@pytest.mark.parametrize(
    "ci, under",
    [(None, False), ("", False), ("0", False), ("false", False), ("true", True), ("1", True)],
)
def test_missing_browser_skips_unless_ci(monkeypatch, ci, under):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    assert under_ci() is under
    outcome = pytest.fail.Exception if under else pytest.skip.Exception
    with pytest.raises(outcome) as raised:
        browser_missing("no Chromium found")
    assert str(raised.value.msg).startswith(f"no Chromium found: {INSTALL_HINT}")
    assert (
        "apt-get install chromium" in INSTALL_HINT
        and "brew install --cask chromium" in INSTALL_HINT
    )
