"""Benchmark pci_topology_info against lspci -vvv on GPU-server-shaped trees.

Builds two synthetic sysfs trees shaped like a large GPU server (GPUs and
ConnectX NICs behind PCIe switch ports, NVSwitches, SR-IOV VFs) at about 400
and 1,600 PCI functions, then times:

* the module as Ansible runs it on a host: the AnsiballZ payload that
  ``ansible`` builds (kept with ANSIBLE_KEEP_REMOTE_FILES), run by python3;
* ``lspci -A linux-sysfs -O sysfs.path=<tree>/sys/bus/pci -vvv`` on the same tree;
* the payload of ``ansible.builtin.ping`` (a module that does nothing), for the start-up floor.

It prints the median of several runs of each and two figures:
per-function cost relative to lspci's ((t1600 - t400) / 1200, ours over
lspci's) and the whole task at 1,600 functions relative to lspci's.

The synthetic trees are plain files, so they leave out what reading a real
host costs: each 4 bytes read from a sysfs ``config`` file is a config access
(an ECAM read, or a trap to the hypervisor in a guest).  ``--host`` adds the
same comparison on the live host's own sysfs (run it as root, as Ansible runs
the module), where that cost is real.

Run from the repository root after ./scripts/setup:
    .venv/bin/python benchmarks/discovery.py [--runs 15]

On a host without Ansible (a lent GPU machine, say), build the payloads here
and carry them: ``--work /tmp/bench --payloads DIR`` saves them in DIR when
they are missing and reuses them when present (they hold the tree path, so
both runs need the same ``--work``).

The payload holds the controller's ``ansible.module_utils``, so the start-up
of every module depends on the ansible-core that builds it. ``--ansible
PATH`` builds the payloads with another controller's ``ansible`` command
(say a virtual environment with an older ansible-core) to compare them on the
same trees; the figures name the version that built them.

The payloads run under the interpreter a host gives Ansible: its
distribution's ``/usr/bin/python3`` (on a Debian 12 host interpreter
discovery finds ``python3.11``, the same program), not the controller's
virtual environment, whose Python may be
a slower build (pyenv's shared-library build starts and runs the same payload
about 20 % slower).  ``--python PATH`` chooses another; the figures name it.

To show what is left to the module, it also times Ansible's own share: a
module (``benchmarks/library/result_replay.py``) that loads the same result
from a file and hands it to ``exit_json``, i.e. start-up and result handling
with nothing read.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "lib"))
from fake_sysfs import FakeFunction, ServerShape, build_tree, gpu_server  # noqa: E402
from rich_server import FIXTURES, missing_fixtures, rich_gpu_server  # noqa: E402

# 8 GPUs with 2 NIC PFs each and 4 NVSwitches; VFs per PF set the size.
SHAPES = {
    "small": ServerShape(gpus=8, nic_pfs_per_gpu=2, vfs_per_pf=21, nvswitches=4, sockets=2),
    "large": ServerShape(gpus=8, nic_pfs_per_gpu=2, vfs_per_pf=96, nvswitches=4, sockets=2),
}
# Trees: the project's own synthetic server, and the held-out "rich" one (issue 16 point 7): the same layout
# with every config space a real dump from ../shared/fixtures (tests/lib/rich_server.py says which).
TREES: Dict[str, Callable[[ServerShape], List[FakeFunction]]] = {"synthetic": gpu_server, "rich": rich_gpu_server}


def median_seconds(command: List[str], runs: int, env: Dict[str, str]) -> float:
    samples = []
    for _run in range(runs):
        start = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


DEFAULT_ANSIBLE = REPO / ".venv" / "bin" / "ansible"
VERSION_FILE = "ansible-core-version"
# The benchmark's own modules (not part of the collection).
LIBRARY = REPO / "benchmarks" / "library"
# A host's own interpreter (on Debian 12, the python3.11 that Ansible's interpreter discovery finds).
HOST_PYTHON = Path("/usr/bin/python3")


def default_python() -> Path:
    """The interpreter the payloads run under: the distribution's python3 when there is one, else this one."""
    return HOST_PYTHON if os.access(HOST_PYTHON, os.X_OK) else Path(sys.executable)


def interpreter(value: str) -> Path:
    """An interpreter named on the command line, made absolute (Ansible runs modules from elsewhere)."""
    return Path(value).absolute()


def python_version(python: Path) -> str:
    return subprocess.run([str(python), "-c", "import platform; print(platform.python_version())"],
                          capture_output=True, text=True, check=True).stdout.strip()


def ansible_core_version(ansible: Path) -> str:
    """The ansible-core version of an ``ansible`` command (``ansible [core 2.19.14]`` -> ``2.19.14``)."""
    version = subprocess.run([str(ansible), "--version"], capture_output=True, text=True, check=True).stdout
    first = version.split("\n", 1)[0]
    return first.split("core", 1)[-1].strip(" ]") if "core" in first else first


def ansiballz_payload(module: str, args: str, work: Path, ansible: Path = DEFAULT_ANSIBLE) -> Path:
    """Build the module's AnsiballZ payload the way ``ansible`` does, and keep it."""
    remote_tmp = work / "remote"
    # Pipelining (on in ansible.cfg) sends the payload through stdin and writes no file to keep: off here.
    env = dict(os.environ, ANSIBLE_KEEP_REMOTE_FILES="1", ANSIBLE_REMOTE_TMP=str(remote_tmp), ANSIBLE_PIPELINING="0",
               ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_LIBRARY=str(LIBRARY))
    command = [str(ansible), "localhost", "-c", "local", "-i", "localhost,",
               "-e", "ansible_python_interpreter=" + sys.executable, "-m", module]
    if args:
        command += ["-a", args]
    built = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if built.returncode:
        raise SystemExit("%s failed building the %s payload:\n%s" % (ansible, module, built.stdout[-2000:]))
    name = module.rsplit(".", 1)[-1]
    found = glob.glob(str(remote_tmp / "*" / ("AnsiballZ_%s.py" % name)))
    if not found:
        raise SystemExit("ansible kept no AnsiballZ payload for %s under %s" % (module, remote_tmp))
    target = work / ("AnsiballZ_%s.py" % name)
    shutil.copy(max(found, key=os.path.getmtime), target)  # the one just built (same module, other arguments)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--runs", type=int, default=15, help="runs per measurement (median is kept)")
    parser.add_argument("--work", type=Path, help="fixed work directory (default: a new temporary one)")
    parser.add_argument("--payloads", type=Path, help="directory to keep or reuse the AnsiballZ payloads in")
    parser.add_argument("--trees", default="synthetic,rich",
                        help="trees to time: synthetic, rich (real config spaces from %s)" % FIXTURES)
    parser.add_argument("--subset", action="append", default=[],
                        help="also time the module with this gather_subset (comma-separated; repeatable)")
    parser.add_argument("--host", action="store_true", help="also compare on this host's own /sys (as root)")
    parser.add_argument("--ansible", type=Path, default=DEFAULT_ANSIBLE,
                        help="the controller's ansible command that builds the payloads (default: .venv/bin/ansible)")
    parser.add_argument("--python", type=interpreter, default=default_python(),
                        help="the interpreter that runs the payloads, as a host's would (default: %s when present, "
                             "else this one)" % HOST_PYTHON)
    options = parser.parse_args()
    if shutil.which("lspci") is None:
        raise SystemExit("lspci is missing: run ./scripts/setup (Debian package pciutils)")
    if options.work:
        shutil.rmtree(options.work, ignore_errors=True)
        options.work.mkdir(parents=True)
    work = options.work or Path(tempfile.mkdtemp(prefix="discovery-bench-"))
    payloads = Payloads(options.ansible, options.payloads)
    try:
        for tree in options.trees.split(","):
            if tree == "rich" and missing_fixtures():
                print("rich tree skipped: %s" % missing_fixtures())
                continue
            run(work / tree, tree, options.runs, payloads, options.python, options.subset)
        if options.host:
            run_on_host(work, options.runs, payloads, options.python)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class Payloads:
    """Where AnsiballZ payloads come from: built by ``ansible``, or kept in (and reused from) ``keep``."""

    ansible: Path = DEFAULT_ANSIBLE
    keep: Optional[Path] = None

    def get(self, module: str, args: str, work: Path, label: str = "") -> Path:
        """A kept payload when there is one, else a new one (saved to ``keep``)."""
        name = "AnsiballZ_%s%s.py" % (module.rsplit(".", 1)[-1], label)
        if self.keep is not None and (self.keep / name).is_file():
            return self.keep / name
        built = ansiballz_payload(module, args, work, self.ansible)
        if self.keep is not None:
            self.keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(built, self.keep / name)
            (self.keep / VERSION_FILE).write_text(ansible_core_version(self.ansible) + "\n")
        return built

    def built_by(self) -> str:
        """The ansible-core version that built the payloads (recorded beside kept ones)."""
        if self.keep is not None and (self.keep / VERSION_FILE).is_file():
            return (self.keep / VERSION_FILE).read_text().strip()
        return ansible_core_version(self.ansible)


def run_on_host(work: Path, runs: int, payloads: Payloads, python: Path) -> None:
    """The module and lspci -vvv on the live host's sysfs, where config reads are real config accesses."""
    if os.geteuid() != 0:
        raise SystemExit("--host needs root: an unprivileged reader sees 64 bytes of config space")
    (work / "host").mkdir(exist_ok=True)
    module = payloads.get("confidential_gpu.host.pci_topology_info", "root=/", work / "host", "_host")
    ping = payloads.get("ansible.builtin.ping", "", work)
    result = module_result(python, module)
    env = dict(os.environ, LC_ALL="C")
    ours = median_seconds([str(python), str(module)], runs, env)
    theirs = median_seconds(["lspci", "-vvv"], runs, env)
    floor = median_seconds([str(python), str(ping)], runs, env)
    print("this host's sysfs, %d functions: pci_topology_info %.3f s (%.3f s above the no-op module), "
          "lspci -vvv %.3f s -> ratio %.2f"
          % (result["summary"]["functions"], ours, ours - floor, theirs, ours / theirs))


def module_result(python: Path, payload: Path) -> Dict[str, Any]:
    """What a payload returns, without the ``invocation`` that echoes its arguments."""
    result = json.loads(subprocess.run([str(python), str(payload)], capture_output=True, text=True,
                                       check=True).stdout)
    result.pop("invocation", None)
    # ansible-core 2.19 payloads print each warning as {"event": {"msg": ...}}; module.warn takes the text
    result["warnings"] = [item["event"]["msg"] if isinstance(item, dict) else item
                          for item in result.get("warnings", [])]
    return result


def replay_payload(work: Path, payloads: Payloads, python: Path, result: Dict[str, Any]) -> Path:
    """The payload of result_replay, set up to hand back ``result``; checked to return it unchanged."""
    saved = work / "result.json"
    saved.write_text(json.dumps(result))
    replay = payloads.get("result_replay", "path=%s" % saved, work)
    if module_result(python, replay) != result:
        raise SystemExit("result_replay did not hand back the module's result unchanged")
    return replay


def run(work: Path, tree: str, runs: int, payloads: Payloads, python: Path, subsets: List[str]) -> None:
    """Time the module (default and each gather_subset), lspci and Ansible's share on one kind of tree."""
    sizes = {}
    for label, shape in SHAPES.items():
        functions = TREES[tree](shape)
        build_tree(work / label, functions)
        sizes[label] = len(functions)
    current = work.parent / "current"
    if current.is_symlink():
        current.unlink()
    current.symlink_to(work / "small")  # building a payload runs it once
    modules = {"": payloads.get("confidential_gpu.host.pci_topology_info", "root=%s" % current, work.parent)}
    for subset in subsets:
        label = "_" + subset.replace(",", "_").replace("!", "no_")
        modules[subset] = payloads.get("confidential_gpu.host.pci_topology_info",
                                       "root=%s gather_subset=%s" % (current, subset), work.parent, label)
    ping = payloads.get("ansible.builtin.ping", "", work.parent)
    env = dict(os.environ, LC_ALL="C")
    results: Dict[str, Dict[str, float]] = {}
    returned = {}
    for label in SHAPES:
        if current.is_symlink():
            current.unlink()
        current.symlink_to(work / label)
        returned[label] = module_result(python, modules[""])
        assert returned[label]["summary"]["functions"] == sizes[label], returned[label]["summary"]
        results[label] = {
            "lspci": median_seconds(["lspci", "-A", "linux-sysfs", "-O",
                                     "sysfs.path=%s/sys/bus/pci" % (work / label), "-vvv"], runs, env),
        }
        for subset, payload in modules.items():
            results[label]["module" + subset] = median_seconds([str(python), str(payload)], runs, env)
    replay = replay_payload(work.parent, payloads, python, returned["large"])
    results["large"]["ansible_share"] = median_seconds([str(python), str(replay)], runs, env)
    floor = median_seconds([str(python), str(ping)], runs, env)
    print("== %s tree; python: %s (%s), payloads built by ansible-core %s"
          % (tree, python, python_version(python), payloads.built_by()))
    for subset in modules:
        if subset:
            print("-- gather_subset=%s" % subset)
        report(sizes, {label: dict(values, module=values["module" + subset]) for label, values in results.items()},
               floor)


def report(sizes: Dict[str, int], results: Dict[str, Dict[str, float]], floor: float) -> None:
    small, large = sizes["small"], sizes["large"]
    print("no-op module (ansible.builtin.ping payload): %.3f s" % floor)
    for label in ("small", "large"):
        print("%5d functions: pci_topology_info %.3f s, lspci -vvv %.3f s"
              % (sizes[label], results[label]["module"], results[label]["lspci"]))
    extra = large - small
    ours = (results["large"]["module"] - results["small"]["module"]) / extra
    theirs = (results["large"]["lspci"] - results["small"]["lspci"]) / extra
    print("per extra function: module %.1f us, lspci %.1f us -> ratio %.2f (target <= 1.0)"
          % (ours * 1e6, theirs * 1e6, ours / theirs))
    whole, lspci, share = results["large"]["module"], results["large"]["lspci"], results["large"]["ansible_share"]
    print("whole task at %d functions: ratio %.2f (target <= 1.5)" % (large, whole / lspci))
    print("of it, Ansible's share (start-up and exit_json of the same result, read from a file): %.3f s "
          "(ratio %.2f); the module's own: %.3f s" % (share, share / lspci, whole - share))


if __name__ == "__main__":
    main()
