# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Capture what this collection reads from a real host, as a replayable fixture.

    scripts/capture-host OUTPUT.tar.xz [--name NAME] [--no-commands]   (or: python3 scripts/capture_host.py ...)

The list of what is read and the writer are the collection's own,
plugins/module_utils/host_capture.py, which the host_capture module and
playbooks/capture.yml use too: this is the same capture without Ansible, run
from a checkout on the host (standard library only, Python >= 3.8).  The
archive holds root/ (what the info modules read), commands/ (lspci,
nvidia-smi) and CAPTURE.json (the manifest with each file's sha256).

Run it as root: unprivileged readers see only the first 64 bytes of a
function's config space.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional

# host_capture.py imports only the standard library, so it loads on its own from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "module_utils"))
import host_capture  # noqa: E402  pylint: disable=wrong-import-position


def write_capture(output: str, name: str, commands: Iterable[str]) -> Dict[str, object]:
    return host_capture.write_capture(output, "/", name, list(commands))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("output", help="archive to write (.tar.xz)")
    parser.add_argument("--name", default=platform.node(), help="a name for the host (default: hostname)")
    parser.add_argument("--no-commands", action="store_true", help="capture files only")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("capture-host: not root, so config space past 64 bytes is unreadable; "
              "the capture will be partial", file=sys.stderr)
    summary = write_capture(args.output, args.name, [] if args.no_commands else list(host_capture.COMMANDS))
    print(json.dumps({key: value for key, value in summary.items() if key not in ("files", "links")},
                     indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
