"""Benchmark a fleet on one controller (issue 20, point 3): discovery, prepare --check and the report over 500 hosts.

Builds ``--hosts`` simulated hosts (default 500), each its own root below a work directory, reached through the
local connection with ``confidential_gpu_root`` (as the unit tests reach one host): synthetic GPU servers of
tests/lib/fake_sysfs.gpu_server with 1 to 8 H100s (a ConnectX-7 beside each), with and without NVSwitches, the
IOMMU on (groups, an IOMMU unit) or off, AMD (IVRS, kvm_amd) or Intel (DMAR, kvm_intel) CPUs, and, when
../shared/fixtures is there, every tenth host the Lenovo SD665-N V3 rebuilt from its captured ``lspci -tv``.
Each root has a Debian 12 GRUB boot configuration, so prepare.yml --check has what it reads.

Then it runs, with the settings given (``--forks``, ``--strategy``, ``--fact-cache``, ``--pipelining``,
``--display-ok``, ``--vars-plugins``; each takes several values, and every combination runs, ``--rounds`` times),
``playbooks/discover.yml``, ``playbooks/prepare.yml --check`` and ``playbooks/report.yml`` (``--playbooks``
chooses), and prints per run: wall seconds, hosts per minute, and CPU seconds per host, split into the
controller's (ansible-playbook and its workers: templating, task queueing, result handling) and the modules'
(each module run, timed by /usr/bin/time around the hosts' interpreter).
For report.yml it also prints the seconds of its last play (combining the entries and writing the JSON and the
HTML page with one Graphviz picture per host), from benchmarks/callback_plugins/task_times.py.

A small run picks the settings (say ``--hosts 40 --forks 5 20 50 --strategy linear free``), one full run
measures them (``--hosts 500`` with the best). docs/report.md ("500 hosts on one controller") has the figures.

Run from the repository root after ./scripts/setup:
    .venv/bin/python benchmarks/fleet.py [--hosts 500] [--forks 2] [--strategy free] [--playbooks discover]
(defaults: forks as many as cores, linear, pipelining off, facts in memory: the best settings in docs/report.md)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "lib"))
from fake_sysfs import FakeFunction, ServerShape, build_tree, gpu_server  # noqa: E402
from lspci_tree import functions_from_tree  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from discovery import default_python, interpreter, python_version  # noqa: E402

FIXTURES = REPO.parent / "shared" / "fixtures"
SD665_TREE = "gpu-servers/lspci-tv_lenovo-sd665n-v3_4xH100_cx7.txt"
SD665_PLAIN = "gpu-servers/lspci_lenovo-sd665n-v3_4xH100_cx7.txt"
GRUB = 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=""\nGRUB_CMDLINE_LINUX="console=ttyS0,115200n8%s"\n'
CMDLINE = "BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=UUID=0a1b ro console=ttyS0,115200n8%s\n"
CPUINFO = "processor\t: 0\nvendor_id\t: %s\ncpu family\t: 25\nmodel name\t: bench CPU\nflags\t\t: fpu %s\n\n"
# What the CPU vendor changes on a host: its IOMMU's ACPI table, its KVM module, the IOMMU argument it boots with.
VENDORS = {"amd": ("AuthenticAMD", "svm", "IVRS", "kvm_amd", " amd_iommu=on iommu=pt"),
           "intel": ("GenuineIntel", "vmx", "DMAR", "kvm_intel", " intel_iommu=on iommu=pt")}
# prepare --check and the report on a fake host: no CC firmware or IOMMUFD kernel to enable (cc_host has its own
# tests), the GPUs asked for by role, the roles' defaults otherwise.
EXTRA_VARS = {"cc_host_technology": "none", "cc_host_iommufd": False}
PLAYBOOKS = {"discover": ["playbooks/discover.yml"], "prepare": ["playbooks/prepare.yml", "--check"],
             "report": ["playbooks/report.yml"]}


@dataclass(frozen=True)
class Layout:
    """One simulated host's shape."""

    gpus: int
    nvswitches: int
    iommu: bool
    vendor: str
    fixture: Optional[str] = None  # a server rebuilt from ../shared/fixtures instead of a synthetic one

    def describe(self) -> str:
        switches = ", %d NVSwitches" % self.nvswitches if self.nvswitches else ""
        base = self.fixture or "%d GPU%s%s" % (self.gpus, "s" if self.gpus > 1 else "", switches)
        return "%s, IOMMU %s, %s" % (base, "on" if self.iommu else "off", self.vendor)


def fleet_layouts(count: int, with_fixture: bool = True) -> List[Layout]:
    """``count`` layouts cycling through 1-8 GPUs, NVSwitches (4 on hosts with 4 or more GPUs, every other
    time), the IOMMU on or off and both CPU vendors; every tenth the SD665-N V3 fixture when ``with_fixture``."""
    layouts = []
    for index in range(count):
        gpus = index % 8 + 1
        nvswitches = 4 if gpus >= 4 and (index // 8) % 2 == 0 else 0
        iommu = (index // 16) % 4 != 3  # one host in four boots without the IOMMU
        vendor = "amd" if (index // 2) % 2 == 0 else "intel"
        if with_fixture and index % 10 == 9:
            layouts.append(Layout(4, 0, iommu, vendor, fixture="lenovo-sd665n-v3"))
        else:
            layouts.append(Layout(gpus, nvswitches, iommu, vendor))
    return layouts


def layout_functions(layout: Layout, fixtures: Path = FIXTURES) -> List[FakeFunction]:
    if layout.fixture:
        functions = functions_from_tree((fixtures / SD665_TREE).read_text(), (fixtures / SD665_PLAIN).read_text())
    else:
        functions = gpu_server(ServerShape(gpus=layout.gpus, nvswitches=layout.nvswitches, sockets=2))
    if not layout.iommu:
        for function in functions:
            function.iommu_group = None
    return functions


def build_host(root: Path, layout: Layout, fixtures: Path = FIXTURES) -> int:
    """The host's tree: PCI functions, CPU, IOMMU, boot configuration; returns its PCI function count."""
    functions = layout_functions(layout, fixtures)
    build_tree(root, functions)
    vendor_id, flag, table, kvm, iommu_args = VENDORS[layout.vendor]
    args = iommu_args if layout.iommu else ""
    files = {"etc/os-release": 'ID=debian\nVERSION_ID="12"\n', "etc/default/grub": GRUB % args,
             "proc/cmdline": CMDLINE % args, "proc/cpuinfo": CPUINFO % (vendor_id, flag),
             "proc/sys/kernel/osrelease": "6.1.0-28-amd64\n", "boot/grub/grub.cfg": "# installed\n",
             "proc/meminfo": "MemTotal:       1048576000 kB\nHugepagesize:       2048 kB\n",
             "sys/firmware/acpi/tables/APIC": "", "sys/module/%s/parameters/nested" % kvm: "1\n", "dev/kvm": ""}
    if layout.iommu:
        files["sys/firmware/acpi/tables/" + table] = ""
        files["sys/devices/virtual/iommu/%s/type" % ("ivhd0" if layout.vendor == "amd" else "dmar0")] = ""
    for path, content in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(content)
    for loaded in ("sys/bus/pci/drivers/vfio-pci", "sys/module/vfio_pci"):  # prepare binds GPUs to vfio-pci
        (root / loaded).mkdir(parents=True, exist_ok=True)
    if layout.iommu:
        unit = "ivhd0" if layout.vendor == "amd" else "dmar0"
        (root / "sys/class/iommu").mkdir(parents=True, exist_ok=True)
        os.symlink("../../devices/virtual/iommu/" + unit, root / "sys/class/iommu" / unit)
    return len(functions)


def build_fleet(work: Path, count: int) -> Dict[str, Layout]:
    """``count`` hosts below work/hosts and their inventory (work/inventory.json), and the stand-in boot tools
    (work/bin, tests/lib/standins) that kernel_args is pointed at; the layout of each host.  Hosts built there
    before are replaced: prepare changes a host's tree, so a second run starts from bare hosts again."""
    shutil.rmtree(work / "hosts", ignore_errors=True)
    shutil.copytree(REPO / "tests" / "lib" / "standins", work / "bin", dirs_exist_ok=True)
    for path in (work / "bin").iterdir():
        path.chmod(0o755)
    with_fixture = (FIXTURES / SD665_TREE).is_file()
    hosts: Dict[str, Layout] = {}
    inventory: Dict[str, Dict[str, object]] = {}
    for index, layout in enumerate(fleet_layouts(count, with_fixture)):
        name = "gpu-%03d" % index
        build_host(work / "hosts" / name, layout)
        hosts[name] = layout
        inventory[name] = {"confidential_gpu_root": str(work / "hosts" / name)}
    (work / "inventory.json").write_text(json.dumps({"all": {"hosts": inventory}}))
    return hosts


@dataclass
class Setting:
    forks: int
    strategy: str
    fact_cache: bool
    pipelining: bool
    # the default callback's lines for each host's ok and skipped results (ANSIBLE_DISPLAY_OK_HOSTS and
    # ANSIBLE_DISPLAY_SKIPPED_HOSTS; failures and the recap are printed either way)
    display_ok: bool = True
    # when vars plugins (host_vars/, group_vars/) run: "demand" (ansible-core's default) at every task, "start"
    # once (ANSIBLE_RUN_VARS_PLUGINS)
    vars_plugins: str = "demand"

    def describe(self) -> str:
        return "forks=%d strategy=%s fact_cache=%s pipelining=%s display_ok=%s vars_plugins=%s" % (
            self.forks, self.strategy, "jsonfile" if self.fact_cache else "memory", "on" if self.pipelining else "off",
            "on" if self.display_ok else "off", self.vars_plugins)

    def environment(self) -> Dict[str, str]:
        """The Ansible settings of this run, as environment variables (they override ansible.cfg)."""
        return {"ANSIBLE_FORKS": str(self.forks), "ANSIBLE_STRATEGY": self.strategy,
                "ANSIBLE_PIPELINING": str(self.pipelining), "ANSIBLE_DISPLAY_OK_HOSTS": str(self.display_ok),
                "ANSIBLE_DISPLAY_SKIPPED_HOSTS": str(self.display_ok), "ANSIBLE_RUN_VARS_PLUGINS": self.vars_plugins}


def timed_interpreter(work: Path, python: Path) -> Path:
    """The hosts' interpreter behind /usr/bin/time, which appends each module run's CPU seconds to a log."""
    wrapper = work / "python-timed"
    wrapper.write_text('#!/bin/sh\nexec /usr/bin/time -a -o "%s" -f "%%U %%S" "%s" "$@"\n'
                       % (work / "module-cpu.log", python))
    wrapper.chmod(0o755)
    return wrapper


def run_playbook(work: Path, name: str, setting: Setting, python: Path, validate: bool = True) -> Dict[str, Any]:
    """One run of a playbook over the fleet: wall seconds, controller and module CPU seconds, failed hosts."""
    log = work / "module-cpu.log"
    log.write_text("")
    times = work / "task-times.json"
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1", **setting.environment(),
               ANSIBLE_HOST_KEY_CHECKING="False",
               ANSIBLE_CALLBACK_PLUGINS=str(REPO / "benchmarks" / "callback_plugins"),
               ANSIBLE_CALLBACKS_ENABLED="task_times", CONFIDENTIAL_GPU_TASK_TIMES=str(times))
    # A controller keeps the compiled plugin files (__pycache__); a PYTHONDONTWRITEBYTECODE=1 inherited from a
    # sandbox would have every worker compile the collection's filter files again (docs/design.md, "Controller code").
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if setting.fact_cache:
        shutil.rmtree(work / "facts", ignore_errors=True)
        env.update(ANSIBLE_CACHE_PLUGIN="jsonfile", ANSIBLE_CACHE_PLUGIN_CONNECTION=str(work / "facts"))
    extra = dict(EXTRA_VARS, ansible_connection="local", ansible_python_interpreter=str(python),
                 report_dir=str(work / "report"), report_validate=validate,
                 kernel_args_command_path=[str(work / "bin")])
    command = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(work / "inventory.json"),
               *[str(REPO / part) if part.endswith(".yml") else part for part in PLAYBOOKS[name]],
               "-e", json.dumps(extra)]
    start = time.perf_counter()
    with open(work / ("%s.out" % name), "w") as output:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)
        _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    module_cpu = sum(float(a) + float(b) for a, b in (line.split() for line in log.read_text().splitlines()
                                                      if len(line.split()) == 2))
    total_cpu = usage.ru_utime + usage.ru_stime
    recap = [line for line in (work / ("%s.out" % name)).read_text().splitlines() if " : ok=" in line]
    failed = sum(1 for line in recap if "failed=0" not in line or "unreachable=0" not in line)
    result = {"wall": wall, "cpu": total_cpu, "module_cpu": module_cpu, "controller_cpu": total_cpu - module_cpu,
              "failed": failed, "status": os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode")
              else status >> 8}
    tasks = json.loads(times.read_text()) if times.is_file() else []
    result["tasks"] = [(task["name"], task["seconds"]) for task in tasks if task.get("seconds") is not None]
    if name == "report" and tasks:
        result["write_play"] = sum(task["seconds"] for task in tasks if task["role"] is None and task["name"] in (
            "Create the report directories", "Find the earlier reports", "Build the report", "Write the JSON report",
            "Write the HTML page", "Say where the report is"))
        result["html"] = sum(task["seconds"] for task in tasks if task["name"] == "Write the HTML page")
    return result


def settings(options: argparse.Namespace) -> Iterator[Setting]:
    for forks, strategy, cache, pipelining, display_ok, vars_plugins in itertools.product(
            options.forks, options.strategy, options.fact_cache, options.pipelining, options.display_ok,
            options.vars_plugins):
        yield Setting(forks, strategy, cache == "on", pipelining == "on", display_ok == "on", vars_plugins)


def load() -> str:
    return " ".join("%.2f" % value for value in os.getloadavg())


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--hosts", type=int, default=500)
    # The defaults are the settings of the best figures in docs/report.md: as many forks as cores (the local
    # connection's module runs are CPU on the controller, nothing waits), pipelining off (with the local connection
    # only: the payload is then a file the interpreter runs).
    parser.add_argument("--forks", type=int, nargs="+", default=[os.cpu_count() or 2])
    parser.add_argument("--strategy", nargs="+", choices=("linear", "free"), default=["linear"])
    parser.add_argument("--fact-cache", nargs="+", choices=("on", "off"), default=["off"])
    parser.add_argument("--pipelining", nargs="+", choices=("on", "off"), default=["off"])
    parser.add_argument("--display-ok", nargs="+", choices=("on", "off"), default=["on"],
                        help="print each host's ok and skipped results (off: failures and the recap only)")
    parser.add_argument("--vars-plugins", nargs="+", choices=("demand", "start"), default=["demand"],
                        help="when vars plugins run (ANSIBLE_RUN_VARS_PLUGINS)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every setting this many times, the settings interleaved (a shared machine's "
                             "speed drifts: only runs side by side compare)")
    parser.add_argument("--playbooks", nargs="+", choices=tuple(PLAYBOOKS), default=list(PLAYBOOKS))
    parser.add_argument("--report-validate", choices=("on", "off"), default="on",
                        help="report.yml's validate part (off: discovery only per host)")
    parser.add_argument("--python", type=interpreter, default=default_python(),
                        help="the hosts' interpreter (default: /usr/bin/python3 when present, else this one)")
    parser.add_argument("--top-tasks", type=int, default=8, help="print this many of the slowest tasks per run")
    parser.add_argument("--keep", type=Path, help="build the fleet here and keep it, replacing a fleet built there "
                        "before (default: a temporary directory)")
    options = parser.parse_args(argv)
    if not Path("/usr/bin/time").is_file():
        raise SystemExit("/usr/bin/time is missing (Debian package time): it measures the modules' CPU")
    work = options.keep or Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        hosts = build_fleet(work, options.hosts)
        print("%d hosts built in %.1f s (%d distinct layouts); nproc %d, load %s; modules run by %s (Python %s)"
              % (len(hosts), time.perf_counter() - start, len(set(hosts.values())), os.cpu_count() or 0, load(),
                 options.python, python_version(options.python)))
        python = timed_interpreter(work, options.python)
        for _round, setting in itertools.product(range(options.rounds), list(settings(options))):
            for name in options.playbooks:
                result = run_playbook(work, name, setting, python, options.report_validate == "on")
                count = len(hosts)
                line = ("%-8s %s: %6.1f s, %5.0f hosts/min, CPU/host %.2f s (controller %.2f, modules %.2f), "
                        "rc %d, %d hosts failed, load %s" % (
                            name, setting.describe(), result["wall"], count * 60 / result["wall"],
                            result["cpu"] / count, result["controller_cpu"] / count, result["module_cpu"] / count,
                            result["status"], result["failed"], load()))
                if "write_play" in result:
                    line += "; writing the report %.1f s (HTML %.1f s)" % (result["write_play"], result["html"])
                print(line, flush=True)
                # where the wall time went: the slowest tasks (with the linear strategy, each over all hosts)
                for task, seconds in sorted(result["tasks"], key=lambda pair: -pair[1])[:options.top_tasks]:
                    print("    %7.1f s  %s" % (seconds, task[:100]), flush=True)
    finally:
        if options.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
