"""Browser tests: headless Chromium from Debian's `chromium` package, installed by install.sh when missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .cdp import Browser

HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE.parents[1] / "test-artifacts"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives headless Chromium (tests/browser/install.sh installs it)")


def _find_chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM_BIN"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium executable; runs install.sh (apt-get) once when it is missing. Fails in CI, skips elsewhere."""
    found = _find_chromium()
    if found:
        return found
    try:
        done = subprocess.run(["bash", str(HERE / "install.sh")], capture_output=True, text=True, timeout=900)
        output = (done.stdout + done.stderr)[-3000:]
    except (OSError, subprocess.TimeoutExpired) as exc:
        output = str(exc)
    found = _find_chromium()
    if found:
        return found
    message = f"chromium is missing and tests/browser/install.sh could not install it:\n{output}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def browser(chromium: str, tmp_path: Path):
    b = Browser(chromium, tmp_path / "profile", tmp_path / "chromium.log")
    try:
        yield b
    finally:
        b.close()
