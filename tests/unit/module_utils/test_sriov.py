"""SR-IOV planning, applying and the boot script on fake trees.

A fake tree has no kernel: writing sriov_numvfs only changes a file.  Where VFs must appear,
tests/lib/fake_sriov.KernelStandIn lays them out as the kernel would; where the order of the
writes matters, sriov_numvfs is a FIFO read by a thread, which sees every write the module makes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import List

import pytest
from conftest import REPO

from ansible_collections.confidential_gpu.host.plugins.module_utils.sriov import (
    CONFIG_FILE,
    SCRIPT_FILE,
    SHIPPED_SCRIPT,
    PfState,
    SriovError,
    Want,
    apply_plans,
    manage,
    parse_pfs,
    persistence_changes,
    plan_pf,
    read_and_plan,
    read_pf,
    unit_text,
    write_attribute,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot

sys.path.insert(0, str(REPO / "tests" / "lib"))
from fake_sriov import LAB_PF, KernelStandIn, lab_tree, snapshot  # noqa: E402
from shipped_files import shipped_for  # noqa: E402

SHIPPED = shipped_for("sriov_vfs")
UNIT_PATH = "/etc/systemd/system/confidential-gpu-sriov.service"
WANTS_LINK = "/etc/systemd/system/multi-user.target.wants/confidential-gpu-sriov.service"

NUMVFS = "/sys/bus/pci/devices/%s/sriov_numvfs" % LAB_PF
AUTOPROBE = "/sys/bus/pci/devices/%s/sriov_drivers_autoprobe" % LAB_PF


def state(num_vfs: int = 0, total: int = 4, driver: str = "nvme", autoprobe: bool = True,
          vf_drivers: tuple = ()) -> PfState:
    vfs = tuple(vf for vf, _driver in vf_drivers) or tuple("0000:01:00.%d" % (i + 1) for i in range(num_vfs))
    drivers = vf_drivers or tuple((vf, None) for vf in vfs)
    return PfState(LAB_PF, driver, total, num_vfs, autoprobe, 1, 1, vfs, drivers)


# --------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------

def test_parse_normalizes_addresses_and_keeps_order() -> None:
    wants = parse_pfs([{"address": "01:00.0", "num_vfs": 2},
                       {"address": "0000:41:00.1", "num_vfs": 0, "drivers_autoprobe": False}])
    assert wants == [Want("0000:01:00.0", 2, None), Want("0000:41:00.1", 0, False)]
    assert parse_pfs([{"address": "0000:41:00.0", "num_vfs": 1}])[0].address == "0000:41:00.0"
    assert parse_pfs([{"address": "0000:41:0A.0", "num_vfs": 1}])[0].address == "0000:41:0a.0"


def test_parse_reports_every_problem_at_once() -> None:
    with pytest.raises(SriovError) as caught:
        parse_pfs([{"address": "41:00", "num_vfs": 1}, {"address": "0000:01:00.0", "num_vfs": -1},
                   {"address": "0000:02:00.0", "num_vfs": True}, {"address": "0000:03:00.0", "num_vfs": 2},
                   {"address": "03:00.0", "num_vfs": 3}])
    assert caught.value.problems == [
        "pfs[0].address '41:00' is not a PCI address; give it as DDDD:BB:DD.F, like 0000:01:00.0",
        "pfs[1].num_vfs -1 for 0000:01:00.0: give a whole number from 0 to 65535",
        "pfs[2].num_vfs True for 0000:02:00.0: give a whole number from 0 to 65535",
        "pfs[4]: 0000:03:00.0 is already pfs[3]; give each PF once",
    ]


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------

def test_read_pf_on_the_lab_controller(tmp_path: Path) -> None:
    host = HostRoot(str(lab_tree(tmp_path / "root", num_vfs=2, vf_driver="vfio-pci")))
    pf = read_pf(host, LAB_PF)
    assert (pf.driver, pf.total_vfs, pf.num_vfs, pf.drivers_autoprobe, pf.offset, pf.stride) == \
        ("nvme", 4, 2, True, 1, 1)
    assert pf.vfs == ("0000:01:00.1", "0000:01:00.2")
    assert pf.vf_drivers == (("0000:01:00.1", "vfio-pci"), ("0000:01:00.2", "vfio-pci"))


@pytest.mark.parametrize(("address", "message"), [
    ("0000:07:00.0", "0000:07:00.0: no such PCI device (/sys/bus/pci/devices/0000:07:00.0 is absent)"),
    ("0000:00:10.0", "0000:00:10.0 is not an SR-IOV physical function: it has no "
                     "/sys/bus/pci/devices/0000:00:10.0/sriov_totalvfs"),
    ("0000:01:00.1", "0000:01:00.1 is a virtual function of 0000:01:00.0, not a physical function; give the "
                     "PF's address"),
])
def test_read_pf_refuses_what_is_not_a_pf(tmp_path: Path, address: str, message: str) -> None:
    host = HostRoot(str(lab_tree(tmp_path / "root", num_vfs=1)))
    with pytest.raises(SriovError, match="^" + message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        read_pf(host, address)


# --------------------------------------------------------------------------
# Planning (pure)
# --------------------------------------------------------------------------

@pytest.mark.parametrize(("before", "wanted", "writes"), [
    (0, 2, [(NUMVFS, "2")]),
    (3, 2, [(NUMVFS, "0"), (NUMVFS, "2")]),
    (2, 4, [(NUMVFS, "0"), (NUMVFS, "4")]),
    (2, 0, [(NUMVFS, "0")]),
    (2, 2, []),
    (0, 0, []),
])
def test_plan_writes_zero_then_n_only_when_different(before: int, wanted: int, writes: list) -> None:
    plan = plan_pf(state(before), Want(LAB_PF, wanted, None))
    assert list(plan.writes) == writes
    assert plan.recreates is (before != wanted)


def test_plan_writes_autoprobe_before_the_vfs() -> None:
    plan = plan_pf(state(1, autoprobe=True), Want(LAB_PF, 3, False))
    assert list(plan.writes) == [(AUTOPROBE, "0"), (NUMVFS, "0"), (NUMVFS, "3")]
    assert list(plan_pf(state(3, autoprobe=False), Want(LAB_PF, 3, False)).writes) == []
    assert list(plan_pf(state(3, autoprobe=False), Want(LAB_PF, 3, True)).writes) == [(AUTOPROBE, "1")]


def test_plan_refuses_more_than_total_vfs() -> None:
    with pytest.raises(SriovError) as caught:
        plan_pf(state(0, total=4), Want(LAB_PF, 5, None))
    assert str(caught.value).startswith("0000:01:00.0: 5 VFs asked for, but its sriov_totalvfs is 4; ask for at "
                                        "most 4")
    assert "NUM_OF_VFS" in str(caught.value)


def test_plan_refuses_a_pf_without_driver_only_when_the_count_changes() -> None:
    with pytest.raises(SriovError, match="0000:01:00.0 has no driver bound: the kernel changes sriov_numvfs only "
                                         "through the PF's driver"):
        plan_pf(state(0, driver=None), Want(LAB_PF, 2, None))
    assert list(plan_pf(state(2, driver=None), Want(LAB_PF, 2, None)).writes) == []


def test_plan_refuses_destroying_bound_vfs_unless_forced() -> None:
    bound = (("0000:01:00.1", "vfio-pci"), ("0000:01:00.2", None))
    with pytest.raises(SriovError) as caught:
        plan_pf(state(2, vf_drivers=bound), Want(LAB_PF, 3, None))
    message = str(caught.value)
    assert message.startswith("0000:01:00.0: going from 2 to 3 VFs removes every VF first, and one VF is bound to "
                              "a driver: 0000:01:00.1 (vfio-pci).")
    assert "set force to true" in message
    forced = plan_pf(state(2, vf_drivers=bound), Want(LAB_PF, 3, None), force=True)
    assert list(forced.writes) == [(NUMVFS, "0"), (NUMVFS, "3")]
    unbound = (("0000:01:00.1", None), ("0000:01:00.2", None))
    assert list(plan_pf(state(2, vf_drivers=unbound), Want(LAB_PF, 0, None)).writes) == [(NUMVFS, "0")]


def test_plan_refuses_autoprobe_on_a_kernel_without_it() -> None:
    with pytest.raises(SriovError, match="sriov_drivers_autoprobe cannot be read"):
        plan_pf(state(0)._replace(drivers_autoprobe=None), Want(LAB_PF, 1, False))


def test_read_and_plan_lists_every_problem_and_writes_nothing(tmp_path: Path) -> None:
    root = lab_tree(tmp_path / "root", num_vfs=1, vf_driver="vfio-pci")
    before = snapshot(root)
    wants = parse_pfs([{"address": LAB_PF, "num_vfs": 9}, {"address": "0000:07:00.0", "num_vfs": 1},
                       {"address": "0000:00:10.0", "num_vfs": 1}])
    with pytest.raises(SriovError) as caught:
        read_and_plan(HostRoot(str(root)), wants)
    problems = caught.value.problems
    assert len(problems) == 3
    assert problems[0].startswith("0000:07:00.0: no such PCI device")
    assert problems[1].startswith("0000:00:10.0 is not an SR-IOV physical function")
    assert problems[2].startswith("0000:01:00.0: 9 VFs asked for, but its sriov_totalvfs is 4")
    assert str(caught.value).startswith("nothing was changed: ")
    assert snapshot(root) == before


# --------------------------------------------------------------------------
# Applying
# --------------------------------------------------------------------------

def test_apply_creates_vfs_and_returns_their_addresses(tmp_path: Path) -> None:
    root = lab_tree(tmp_path / "root")
    host = HostRoot(str(root))
    plans = read_and_plan(host, [Want(LAB_PF, 2, False)])
    with KernelStandIn(root):
        results = apply_plans(host, plans, timeout=10, check_mode=False)
    assert results[0]["vfs"] == ["0000:01:00.1", "0000:01:00.2"]
    assert results[0]["applied"] is True and results[0]["recreated"] is True
    assert (root / NUMVFS.lstrip("/")).read_text() == "2\n"
    assert (root / AUTOPROBE.lstrip("/")).read_text() == "0\n"
    assert (root / "sys/bus/pci/devices/0000:01:00.2/physfn").is_symlink()


class FifoReader:
    """Reads every write to a FIFO in order; on a non-zero count, the kernel stand-in lays out the VFs."""

    def __init__(self, fifo: Path, kernel: KernelStandIn) -> None:
        self.fifo = fifo
        self.kernel = kernel
        self.values: List[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while len(self.values) < 2:
            with open(self.fifo, "rb") as handle:  # blocks until the module opens it for writing
                data = handle.read().decode()
            for value in data.split():
                self.values.append(value)
                self.kernel.set_vfs(LAB_PF, int(value))

    def release(self) -> None:
        """Unblock the reader when the test failed before the writes."""
        try:
            fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:
            pass
        self.thread.join(2)


def test_apply_writes_zero_then_the_new_count_in_that_order(tmp_path: Path) -> None:
    root = lab_tree(tmp_path / "root", num_vfs=3)
    host = HostRoot(str(root))
    plans = read_and_plan(host, [Want(LAB_PF, 2, None)])
    numvfs = root / NUMVFS.lstrip("/")
    numvfs.unlink()
    os.mkfifo(numvfs)
    reader = FifoReader(numvfs, KernelStandIn(root))
    try:
        results = apply_plans(host, plans, timeout=10, check_mode=False)
    finally:
        reader.release()
    assert reader.values == ["0", "2"], "the kernel refuses 3 -> 2 directly; 0 must come first"
    assert results[0]["vfs"] == ["0000:01:00.1", "0000:01:00.2"]
    assert not (root / "sys/bus/pci/devices/0000:01:00.3").exists()


def test_a_write_the_kernel_holds_fails_after_the_timeout(tmp_path: Path) -> None:
    """A FIFO nobody reads blocks the writer's open, as the kernel blocks a write while a guest holds a VF."""
    root = lab_tree(tmp_path / "root", num_vfs=1)
    host = HostRoot(str(root))
    plans = read_and_plan(host, [Want(LAB_PF, 0, None)])
    numvfs = root / NUMVFS.lstrip("/")
    numvfs.unlink()
    os.mkfifo(numvfs)
    try:
        with pytest.raises(SriovError) as caught:
            apply_plans(host, plans, timeout=1, check_mode=False)
    finally:
        fd = os.open(numvfs, os.O_RDONLY | os.O_NONBLOCK)  # lets the waiting writer finish
        os.close(fd)
    message = str(caught.value)
    assert message.startswith("0000:01:00.0: writing 0 to %s did not return within 1 s; the kernel still holds "
                              "it (process " % NUMVFS)
    assert "blocked until device is released" in message


def test_vfs_that_never_appear_fail_naming_pf_vfs_and_timeout(tmp_path: Path) -> None:
    root = lab_tree(tmp_path / "root")
    host = HostRoot(str(root))
    plans = read_and_plan(host, [Want(LAB_PF, 2, None)])
    with pytest.raises(SriovError) as caught:
        apply_plans(host, plans, timeout=0.5, check_mode=False)
    assert str(caught.value) == (
        "0000:01:00.0: sriov_numvfs is 2, but VF(s) 0000:01:00.1, 0000:01:00.2 did not appear in "
        "/sys/bus/pci/devices within 0.5 s; the PF driver may have failed to enable them (see dmesg), or they come "
        "up slowly: raise timeout")


def test_a_failing_write_names_the_file_the_value_and_the_reason(tmp_path: Path) -> None:
    target = tmp_path / "sriov_numvfs"
    target.mkdir()
    host = HostRoot(str(tmp_path))
    with pytest.raises(SriovError) as caught:
        write_attribute(host, "/sriov_numvfs", "2", 5, LAB_PF)
    assert str(caught.value).startswith("0000:01:00.0: writing 2 to /sriov_numvfs failed: Is a directory (")
    assert "mlxconfig" in str(caught.value), "an enable that fails points at the firmware and BIOS"


def test_check_mode_writes_nothing_and_predicts_the_vfs(tmp_path: Path) -> None:
    root = lab_tree(tmp_path / "root")
    before = snapshot(root)
    result = manage(HostRoot(str(root)), [Want(LAB_PF, 3, False)], check_mode=True, shipped=SHIPPED)
    assert snapshot(root) == before
    pf = result["pfs"][0]
    assert pf["vfs"] == ["0000:01:00.1", "0000:01:00.2", "0000:01:00.3"] and pf["applied"] is False
    assert pf["writes"] == [{"path": AUTOPROBE, "value": "0"}, {"path": NUMVFS, "value": "3"}]
    assert result["changed"] is True and result["unit_changed"] is True


# --------------------------------------------------------------------------
# Persistence
# --------------------------------------------------------------------------

def test_persistence_files_then_idempotent(tmp_path: Path) -> None:
    root = lab_tree(tmp_path / "root", num_vfs=2)
    host = HostRoot(str(root))
    wants = [Want(LAB_PF, 2, None), Want("0000:41:00.0", 0, False)]
    changes = persistence_changes(host, wants, True, "confidential-gpu-sriov.service", 30, SHIPPED)
    assert [change.host_path for change in changes] == [CONFIG_FILE, SCRIPT_FILE, UNIT_PATH, WANTS_LINK]
    assert changes[3][:3] == (WANTS_LINK, None, UNIT_PATH), "enabled as systemctl enable does (WantedBy=)"
    config = changes[0].after
    assert config.splitlines()[2:] == ["0000:01:00.0 2 -", "0000:41:00.0 0 0"]
    unit = changes[2].after
    for line in ("Type=oneshot", "RemainAfterExit=yes", "DefaultDependencies=no",
                 "After=local-fs.target systemd-modules-load.service systemd-udev-trigger.service",
                 "Before=network-pre.target containerd.service kubelet.service shutdown.target",
                 "ExecStart=%s %s 30" % (SCRIPT_FILE, CONFIG_FILE), "TimeoutStartSec=150",
                 "WantedBy=multi-user.target", "ConditionPathExists=%s" % CONFIG_FILE):
        assert line in unit.splitlines()
    assert unit == unit_text(SHIPPED, 2, 30) and changes[1].after == SHIPPED[SHIPPED_SCRIPT]


def test_persist_false_removes_files_and_enablement_links(tmp_path: Path) -> None:
    root = lab_tree(tmp_path / "root", num_vfs=2)
    host = HostRoot(str(root))
    result = manage(host, [Want(LAB_PF, 2, None)], persist=True, shipped=SHIPPED)
    assert result["changed"] is True and result["vfs"] == ["0000:01:00.1", "0000:01:00.2"]
    assert result["files"][-1] == WANTS_LINK and result["unit_changed"] is True
    assert os.stat(root / SCRIPT_FILE.lstrip("/")).st_mode & 0o777 == 0o755
    wants_dir = root / "etc/systemd/system/multi-user.target.wants"
    assert os.readlink(wants_dir / "confidential-gpu-sriov.service") == UNIT_PATH, "what systemctl enable leaves"
    assert manage(host, [Want(LAB_PF, 2, None)], persist=True, shipped=SHIPPED)["changed"] is False
    removed = manage(host, [Want(LAB_PF, 2, None)], persist=False)
    assert removed["files"] == [CONFIG_FILE, SCRIPT_FILE, "/etc/systemd/system/confidential-gpu-sriov.service",
                                "/etc/systemd/system/multi-user.target.wants/confidential-gpu-sriov.service"]
    assert removed["unit_changed"] is True and removed["persisted"] is False
    assert not (root / CONFIG_FILE.lstrip("/")).exists()
    assert not os.path.lexists(wants_dir / "confidential-gpu-sriov.service")
    assert (root / NUMVFS.lstrip("/")).read_text() == "2\n", "the VFs present now stay"
    assert manage(host, [Want(LAB_PF, 2, None)], persist=False)["changed"] is False


def test_a_script_with_the_wrong_mode_is_fixed(tmp_path: Path) -> None:
    root = lab_tree(tmp_path / "root", num_vfs=1)
    host = HostRoot(str(root))
    manage(host, [Want(LAB_PF, 1, None)], shipped=SHIPPED)
    os.chmod(root / SCRIPT_FILE.lstrip("/"), 0o644)
    again = manage(host, [Want(LAB_PF, 1, None)], shipped=SHIPPED)
    assert again["files"] == [SCRIPT_FILE] and again["unit_changed"] is False
    assert os.stat(root / SCRIPT_FILE.lstrip("/")).st_mode & 0o777 == 0o755


# --------------------------------------------------------------------------
# The boot script, run by /bin/sh on a fake tree
# --------------------------------------------------------------------------

def run_script(tmp_path: Path, root: Path, config: str, timeout: int) -> subprocess.CompletedProcess:
    script = tmp_path / "sriov-apply"
    script.write_text(SHIPPED[SHIPPED_SCRIPT])
    conf = tmp_path / "sriov.conf"
    conf.write_text(config)
    env = dict(os.environ, SRIOV_APPLY_SYSFS=str(root / "sys"))
    return subprocess.run(["/bin/sh", str(script), str(conf), str(timeout)], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_script_leaves_a_configured_pf_alone(tmp_path: Path) -> None:
    root = lab_tree(tmp_path / "root", num_vfs=2)
    before = snapshot(root)
    proc = run_script(tmp_path, root, "# comment\n\n%s 2 -\n" % LAB_PF, 1)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "sriov-apply: 0000:01:00.0: 2 VFs, as configured\n"
    assert snapshot(root) == before


def test_script_sets_autoprobe_then_zero_then_n_and_waits(tmp_path: Path) -> None:
    root = lab_tree(tmp_path / "root", num_vfs=3)
    with KernelStandIn(root):
        proc = run_script(tmp_path, root, "%s 2 0\n" % LAB_PF, 10)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["sriov-apply: 0000:01:00.0: sriov_drivers_autoprobe 1 -> 0",
                                        "sriov-apply: 0000:01:00.0: sriov_numvfs 3 -> 0 -> 2"]
    assert (root / NUMVFS.lstrip("/")).read_text() == "2\n"
    assert sorted(p.name for p in (root / "sys/bus/pci/devices/0000:01:00.0").glob("virtfn*")) == \
        ["virtfn0", "virtfn1"]


def test_script_reports_each_bad_pf_and_still_does_the_others(tmp_path: Path) -> None:
    root = lab_tree(tmp_path / "root", num_vfs=0)
    config = ("0000:07:00.0 1 -\n0000:00:10.0 1 -\n%s 9 -\n%s 1 x\n../x 1\n%s 1 -\n"
              % (LAB_PF, LAB_PF, LAB_PF))
    proc = run_script(tmp_path, root, config, 0)
    assert proc.returncode == 1
    errors = proc.stderr.splitlines()
    assert errors[0] == "sriov-apply: 0000:07:00.0: no such PCI device after 0s"
    assert errors[1] == "sriov-apply: 0000:00:10.0: not an SR-IOV physical function (no sriov_numvfs)"
    assert errors[2] == "sriov-apply: 0000:01:00.0: 9 VFs wanted, sriov_totalvfs is 4"
    assert errors[3].endswith("0000:01:00.0: bad drivers_autoprobe 'x' (1, 0 or -)")
    assert errors[4].endswith("bad PF address '../x'")
    assert errors[5] == "sriov-apply: 0000:01:00.0: sriov_numvfs is 1 but not all VFs appeared within 0s"
    assert proc.stdout == "sriov-apply: 0000:01:00.0: sriov_numvfs 0 -> 1\n"


def test_script_waits_for_the_pf_driver(tmp_path: Path) -> None:
    root = lab_tree(tmp_path / "root", num_vfs=0, pf_driver=None)
    proc = run_script(tmp_path, root, "%s 1 -\n" % LAB_PF, 1)
    assert proc.returncode == 1
    assert proc.stderr == ("sriov-apply: 0000:01:00.0: no driver bound after 1s; the kernel creates VFs only "
                           "through the PF's driver\n")
    assert (root / NUMVFS.lstrip("/")).read_text() == "0\n"
