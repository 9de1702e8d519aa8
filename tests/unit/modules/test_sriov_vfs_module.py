"""sriov_vfs run as a process on fake trees, and the sriov role through ansible-playbook.

Where the module must see VFs appear, tests/lib/fake_sriov.KernelStandIn plays the kernel in this
test process while the module runs in its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from fake_sriov import LAB_PF, KernelStandIn, lab_tree, snapshot  # noqa: E402

MODULE = "sriov_vfs"
CONFIG = "etc/confidential-gpu/sriov.conf"
SCRIPT = "usr/local/libexec/confidential-gpu/sriov-apply"
UNIT = "etc/systemd/system/confidential-gpu-sriov.service"
WANTS_LINK = "etc/systemd/system/multi-user.target.wants/confidential-gpu-sriov.service"
NUMVFS = "sys/bus/pci/devices/%s/sriov_numvfs" % LAB_PF


def args(root: Path, **extra) -> dict:
    return dict({"root": str(root), "timeout": 10}, **extra)


def test_check_mode_with_diff_changes_nothing(run_module, tmp_path: Path) -> None:
    root = lab_tree(tmp_path / "root")
    before = snapshot(root)
    result = run_module(MODULE, args(root, pfs=[{"address": "01:00.0", "num_vfs": 2, "drivers_autoprobe": False}],
                                     _ansible_check_mode=True, _ansible_diff=True))
    assert result["rc"] == 0 and result["changed"] is True, result
    assert snapshot(root) == before
    pf = result["pfs"][0]
    assert pf["address"] == LAB_PF and pf["num_vfs_before"] == 0 and pf["num_vfs"] == 2
    assert pf["vfs"] == ["0000:01:00.1", "0000:01:00.2"] and pf["applied"] is False
    assert [write["value"] for write in pf["writes"]] == ["0", "2"]
    assert result["files"] == ["/" + CONFIG, "/" + SCRIPT, "/" + UNIT, "/" + WANTS_LINK]
    assert result["unit_changed"] is True
    diff = result["diff"]
    assert diff[0] == {"before_header": "/sys/bus/pci/devices/0000:01:00.0",
                       "after_header": "/sys/bus/pci/devices/0000:01:00.0",
                       "before": "sriov_drivers_autoprobe: 1\nsriov_numvfs: 0\n",
                       "after": "sriov_drivers_autoprobe: 0\nsriov_numvfs: 2\n"}
    assert diff[1]["before_header"] == "/%s (absent)" % CONFIG and "0000:01:00.0 2 0" in diff[1]["after"]
    assert diff[3]["after_header"] == "/%s" % UNIT and "Type=oneshot" in diff[3]["after"]
    assert diff[4] == {"before_header": "/" + WANTS_LINK, "after_header": "/" + WANTS_LINK, "before": "",
                       "after": "symlink -> /%s\n" % UNIT}


def test_creates_vfs_persists_then_is_idempotent(run_module, tmp_path: Path) -> None:
    root = lab_tree(tmp_path / "root")
    pfs = [{"address": LAB_PF, "num_vfs": 2}]
    with KernelStandIn(root):
        first = run_module(MODULE, args(root, pfs=pfs))
    assert first["rc"] == 0 and first["changed"] is True, first
    assert first["vfs"] == ["0000:01:00.1", "0000:01:00.2"] and "diff" not in first
    assert (root / NUMVFS).read_text() == "2\n"
    assert (root / CONFIG).read_text().splitlines()[-1] == "0000:01:00.0 2 -"
    assert os.stat(root / SCRIPT).st_mode & 0o777 == 0o755
    assert "ExecStart=/usr/local/libexec/confidential-gpu/sriov-apply /etc/confidential-gpu/sriov.conf 10" in \
        (root / UNIT).read_text().splitlines()

    second = run_module(MODULE, args(root, pfs=pfs))
    assert second["rc"] == 0 and second["changed"] is False, second
    assert second["files"] == [] and second["unit_changed"] is False
    assert second["pfs"][0]["vfs"] == ["0000:01:00.1", "0000:01:00.2"] and second["pfs"][0]["writes"] == []


def test_existing_vfs_are_left_alone_and_returned(run_module, tmp_path: Path) -> None:
    root = lab_tree(tmp_path / "root", num_vfs=2, vf_driver="vfio-pci")
    before = snapshot(root)
    result = run_module(MODULE, args(root, pfs=[{"address": LAB_PF, "num_vfs": 2}], persist=False))
    assert result["rc"] == 0 and result["changed"] is False, result
    assert result["vfs"] == ["0000:01:00.1", "0000:01:00.2"]
    assert result["pfs"][0]["recreated"] is False and result["persisted"] is False
    assert snapshot(root) == before


@pytest.mark.parametrize(("pfs", "extra", "message"), [
    ([{"address": LAB_PF, "num_vfs": 5}], {},
     "0000:01:00.0: 5 VFs asked for, but its sriov_totalvfs is 4; ask for at most 4"),
    ([{"address": "0000:07:00.0", "num_vfs": 1}], {},
     "0000:07:00.0: no such PCI device (/sys/bus/pci/devices/0000:07:00.0 is absent)"),
    ([{"address": "0000:00:10.0", "num_vfs": 1}], {},
     "0000:00:10.0 is not an SR-IOV physical function: it has no /sys/bus/pci/devices/0000:00:10.0/sriov_totalvfs"),
    ([{"address": "0000:01:00.1", "num_vfs": 1}], {},
     "0000:01:00.1 is a virtual function of 0000:01:00.0, not a physical function"),
    ([{"address": LAB_PF, "num_vfs": 3}], {},
     "0000:01:00.0: going from 1 to 3 VFs removes every VF first, and one VF is bound to a driver: "
     "0000:01:00.1 (vfio-pci)"),
    ([{"address": LAB_PF, "num_vfs": 1}, {"address": "1:0.0", "num_vfs": 1}], {},
     "pfs[1].address '1:0.0' is not a PCI address"),
    ([{"address": LAB_PF, "num_vfs": 1}, {"address": "0000:01:00.0", "num_vfs": 2}], {},
     "pfs[1]: 0000:01:00.0 is already pfs[0]; give each PF once"),
    ([{"address": LAB_PF, "num_vfs": 1}], {"unit_name": "../evil"},
     "unit_name '../evil': give a systemd service name"),
    ([{"address": LAB_PF, "num_vfs": 1}], {"timeout": 0}, "timeout 0: give a number of seconds above 0"),
])
def test_refusals_change_nothing(run_module, tmp_path: Path, pfs: list, extra: dict, message: str) -> None:
    _refused_unchanged(run_module, lab_tree(tmp_path / "root", num_vfs=1, vf_driver="vfio-pci"), pfs, extra, message)


def test_garbage_in_sriov_totalvfs_is_named_as_garbage(run_module, tmp_path: Path) -> None:
    """It used to say that sriov_totalvfs was missing, pointing at the BIOS."""
    root = lab_tree(tmp_path / "root", num_vfs=1, vf_driver="vfio-pci")
    (root / "sys/bus/pci/devices" / LAB_PF / "sriov_totalvfs").write_text("garbage\n")
    _refused_unchanged(run_module, root, [{"address": LAB_PF, "num_vfs": 1}], {},
                       "0000:01:00.0: /sys/bus/pci/devices/0000:01:00.0/sriov_totalvfs holds 'garbage', not a number")


def _refused_unchanged(run_module, root: Path, pfs: list, extra: dict, message: str) -> None:
    before = snapshot(root)
    result = run_module(MODULE, dict(args(root, pfs=pfs), **extra))
    assert result["rc"] != 0 and result["failed"] is True, result
    assert message in result["msg"]
    assert any(message in problem for problem in result["problems"])
    assert snapshot(root) == before


def test_every_pf_is_checked_before_any_write(run_module, tmp_path: Path) -> None:
    """The first PF is fine, the second is not: the first is not touched either."""
    root = lab_tree(tmp_path / "root")
    before = snapshot(root)
    result = run_module(MODULE, args(root, pfs=[{"address": LAB_PF, "num_vfs": 2},
                                                {"address": "0000:00:10.0", "num_vfs": 1}]))
    assert result["failed"] is True and result["msg"].startswith("nothing was changed: 0000:00:10.0 is not")
    assert snapshot(root) == before


def test_force_destroys_bound_vfs(run_module, tmp_path: Path) -> None:
    root = lab_tree(tmp_path / "root", num_vfs=1, vf_driver="vfio-pci")
    with KernelStandIn(root):
        result = run_module(MODULE, args(root, pfs=[{"address": LAB_PF, "num_vfs": 3}], force=True, persist=False))
    assert result["rc"] == 0 and result["changed"] is True, result
    assert result["pfs"][0]["vfs_before"] == ["0000:01:00.1"]
    assert result["vfs"] == ["0000:01:00.1", "0000:01:00.2", "0000:01:00.3"]
    assert not (root / "sys/bus/pci/devices/0000:01:00.1/driver").exists(), "the new VF has no driver yet"


def test_wait_timeout_fails_naming_pf_vfs_and_timeout(run_module, tmp_path: Path) -> None:
    root = lab_tree(tmp_path / "root")
    result = run_module(MODULE, args(root, pfs=[{"address": LAB_PF, "num_vfs": 2}], timeout=1))
    assert result["failed"] is True
    assert result["msg"] == ("0000:01:00.0: sriov_numvfs is 2, but VF(s) 0000:01:00.1, 0000:01:00.2 did not "
                             "appear in /sys/bus/pci/devices within 1 s; the PF driver may have failed to enable "
                             "them (see dmesg), or they come up slowly: raise timeout")
    assert not (root / CONFIG).exists(), "nothing is persisted that did not work"


def test_empty_pfs_removes_the_persistence(run_module, tmp_path: Path) -> None:
    root = lab_tree(tmp_path / "root", num_vfs=1)
    assert run_module(MODULE, args(root, pfs=[{"address": LAB_PF, "num_vfs": 1}]))["changed"] is True
    assert (root / UNIT).exists()
    result = run_module(MODULE, args(root, pfs=[], _ansible_diff=True))
    assert result["changed"] is True and result["unit_changed"] is True and result["persisted"] is False
    assert not (root / UNIT).exists() and not (root / CONFIG).exists() and not (root / SCRIPT).exists()
    assert result["diff"][2]["after_header"] == "/%s (absent)" % UNIT


def test_missing_root_fails_clearly(run_module, tmp_path: Path) -> None:
    result = run_module(MODULE, {"root": str(tmp_path / "nowhere"), "pfs": []})
    assert result["failed"] is True and "does not exist or is not a directory" in result["msg"]


# --------------------------------------------------------------------------
# The sriov role
# --------------------------------------------------------------------------

def run_role(tmp_path: Path, root: Path, pfs: list, *extra: str) -> subprocess.CompletedProcess:
    playbook = tmp_path / "sriov.yml"
    playbook.write_text(
        "- hosts: localhost\n  gather_facts: false\n  roles:\n    - role: confidential_gpu.host.sriov\n")
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    command = [str(Path(sys.executable).with_name("ansible-playbook")), str(playbook),
               "-e", json.dumps({"sriov_root": str(root), "sriov_pfs": pfs, "sriov_timeout": 10}), *extra]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


def recap_changed(proc: subprocess.CompletedProcess) -> int:
    line = next(li for li in proc.stdout.splitlines() if li.startswith("localhost") and "changed=" in li)
    return int(line.split("changed=")[1].split()[0])


def test_role_persists_existing_vfs_then_changes_nothing(tmp_path: Path) -> None:
    root = lab_tree(tmp_path / "root", num_vfs=2)
    pfs = [{"address": LAB_PF, "num_vfs": 2, "drivers_autoprobe": False}]
    first = run_role(tmp_path, root, pfs)
    assert first.returncode == 0, first.stdout + first.stderr
    assert recap_changed(first) == 1
    assert "0000:01:00.0 (nvme): 2 of 4 VFs 0000:01:00.1 0000:01:00.2" in first.stdout
    assert (root / CONFIG).read_text().splitlines()[-1] == "0000:01:00.0 2 0"
    assert os.readlink(root / WANTS_LINK) == "/" + UNIT, "the module enables the unit below the tree too"
    again = run_role(tmp_path, root, pfs)
    assert again.returncode == 0 and recap_changed(again) == 0, again.stdout


def test_role_refuses_more_vfs_than_total(tmp_path: Path) -> None:
    root = lab_tree(tmp_path / "root")
    before = snapshot(root)
    proc = run_role(tmp_path, root, [{"address": LAB_PF, "num_vfs": 5}])
    assert proc.returncode != 0
    assert "5 VFs asked for, but its sriov_totalvfs is 4" in proc.stdout
    assert snapshot(root) == before


def test_role_hands_each_pf_vfs_to_pci_driver(tmp_path: Path) -> None:
    root = lab_tree(tmp_path / "root", num_vfs=2, vf_driver="vfio-pci")
    pfs = [{"address": LAB_PF, "num_vfs": 2, "vf_driver": "vfio-pci"}]
    proc = run_role(tmp_path, root, pfs)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "TASK [confidential_gpu.host.sriov : Bind the VFs to their drivers]" in proc.stdout
    for vf in ("0000:01:00.1", "0000:01:00.2"):
        assert (root / "etc/driverctl.d" / ("pci-" + vf)).read_text().strip() == "vfio-pci"
    assert (root / CONFIG).read_text().splitlines()[-1] == "0000:01:00.0 2 0", "autoprobe off with a vf_driver"
    again = run_role(tmp_path, root, pfs)
    assert again.returncode == 0 and recap_changed(again) == 0, again.stdout

    more = run_role(tmp_path, root, [{"address": LAB_PF, "num_vfs": 3, "vf_driver": "vfio-pci"}],
                    "--check", "-e", "sriov_force=true")
    assert more.returncode == 0, more.stdout + more.stderr
    assert "check mode: 0000:01:00.1, 0000:01:00.2, 0000:01:00.3 would be created and then bound to vfio-pci" \
        in more.stdout
