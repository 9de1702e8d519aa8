"""Offline stand-in for ansible-test's pip bootstrap script (get-pip).

ansible-test bootstraps pip into each sanity-test virtual environment by
running a get-pip script that it downloads from a host that CI machines
cannot reach; it documents saving that script to ~/.ansible/test/cache
instead.  scripts/setup saves this file there.  Like get-pip, it runs pip
from a pip wheel (the one bundled with the interpreter, or Debian's) inside
the target interpreter and installs the requested packages (pip==X first)
from the package index.
"""

import glob
import os
import runpy
import sys

GET_PIP_ONLY_OPTIONS = ("--no-setuptools", "--no-wheel")


def bundled_pip_wheel() -> str:
    import ensurepip

    places = [os.path.join(os.path.dirname(ensurepip.__file__), "_bundled"), "/usr/share/python-wheels"]
    for place in places:
        wheels = sorted(glob.glob(os.path.join(place, "pip-*.whl")))
        if wheels:
            return wheels[-1]
    sys.exit("no pip wheel found in %s: install Debian's python3-pip-whl or python3-venv" % ", ".join(places))


def main() -> None:
    sys.path.insert(0, bundled_pip_wheel())
    requested = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY_OPTIONS]
    sys.argv = ["pip", "install", "--quiet"] + requested
    runpy.run_module("pip", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
