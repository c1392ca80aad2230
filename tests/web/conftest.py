"""Fixtures of the page tests: a real headless Chromium driven by selenium through chromedriver.

The browser is Debian's ``chromium`` with ``chromium-driver`` (``/usr/bin/chromium``,
``/usr/bin/chromedriver``). When they are missing and this runs as root with apt available, the
fixture installs them (``apt-get install -y chromium chromium-driver``); otherwise the browser tests
are skipped with the reason. Nothing is downloaded at run time by selenium itself (its driver
manager is never asked: both paths are given, and ``SE_OFFLINE`` is set).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1100, 900)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--lang=en-US",
    "--hide-scrollbars",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives a real headless Chromium (selenium)")


def _install_chromium() -> str | None:
    """Install Debian's chromium and chromium-driver when missing; the reason to skip, or None."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return None
    apt = shutil.which("apt-get")
    if apt is None:
        return f"{CHROMIUM} or {CHROMEDRIVER} is missing and there is no apt-get to install them"
    if os.geteuid() != 0:
        return f"{CHROMIUM} or {CHROMEDRIVER} is missing; install them: sudo apt-get install -y chromium chromium-driver"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "-q", "chromium", "chromium-driver"]
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:  # stale package lists: refresh once and retry
        subprocess.run([apt, "update", "-q"], env=env, capture_output=True, timeout=600)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=1200)
    if done.returncode != 0 or not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        return f"apt-get install chromium chromium-driver failed: {done.stderr.strip()[-400:]}"
    return None


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """A headless Chromium session (selenium WebDriver) with a fresh profile, 1100 x 900."""
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install selenium)"
    )
    from selenium.webdriver.chrome.service import Service

    reason = _install_chromium()
    if reason is not None:
        pytest.skip(reason)
    os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium-manager fetch anything
    profile = tempfile.mkdtemp(prefix="loravet-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
