"""Open a local HTML page in headless Chromium (Debian package ``chromium``) and return the DOM it built.

For the reports the collection writes (the fleet report, validate's HTML report): the page is loaded from a
``file://`` URL with every host name resolving to nothing and a dead proxy, so a page that needs the network
shows it by missing parts. A missing Chromium skips the test on a developer's machine and fails it in CI
(``CI=true``), where scripts/apt-packages.txt installs it (tests/lib/required_tools.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from required_tools import require_tool

CHROMIUM_NAMES = ("chromium", "chromium-browser")


def chromium() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    require_tool(CHROMIUM_NAMES[0], "the page is checked in a real headless browser")
    raise AssertionError("unreachable: require_tool skips or fails")


def dump_dom(page: Path, profile: Path, timeout: int = 60) -> str:
    """The serialized DOM of ``page`` after Chromium loaded it (scripts run), offline."""
    command = [chromium(), "--headless", "--disable-gpu", "--no-first-run", "--user-data-dir=%s" % profile,
               "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9", "--dump-dom",
               page.resolve().as_uri()]
    if os.geteuid() == 0:
        command.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0 and "<html" in proc.stdout, "chromium failed on %s: %s" % (page, proc.stderr[-2000:])
    return proc.stdout
