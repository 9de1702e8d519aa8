"""Run playbooks/prepare.yml (or another playbook) on a fake host tree, and read what it wrote.

The host is a directory tree that the roles read through ``confidential_gpu_root``;
boot tools are the stand-ins of tests/lib/standins, found through
``kernel_args_command_path``.  Used by the kernel_cmdline module tests and the
prepare playbook tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

from fake_sriov import LAB_PF, sriov_pf
from host_critical_tree import lab_vm, lab_vm_functions
from hugepages_tree import HugepagesTree

REPO = Path(__file__).resolve().parents[2]
# The GRUB drop-in kernel_args writes, relative to the host root.
DROPIN = "etc/default/grub.d/99-confidential-gpu.cfg"
# /proc/cpuinfo of a one-CPU host of the given vendor_id.
CPUINFO = "processor\t: 0\nvendor_id\t: %s\ncpu family\t: 25\nmodel name\t: test CPU\nflags\t\t: fpu\n\n"


GRUB = 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=""\nGRUB_CMDLINE_LINUX="%s"\n'
PROC_CMDLINE = "BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=UUID=0a1b ro %s\n"


def debian_grub_host(root: Path, cmdline: str = "console=ttyS0,115200n8", vendor: str = "GenuineIntel") -> Path:
    """Debian 12 booted by GRUB with ``cmdline`` (in /etc/default/grub and in /proc/cmdline) on a ``vendor`` CPU."""
    files = {"etc/os-release": 'ID=debian\nVERSION_ID="12"\n', "etc/default/grub": GRUB % cmdline,
             "proc/cmdline": PROC_CMDLINE % cmdline, "proc/cpuinfo": CPUINFO % vendor,
             "boot/grub/grub.cfg": "# installed\n"}
    for path, content in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(content)
    return root


def playbook(path: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    command = [str(Path(sys.executable).with_name("ansible-playbook")), str(path), *extra]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


def prepare(root: Path, bin_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    # cc_host off: this fake Intel host can run neither TDX guests nor IOMMUFD, and these tests are about the
    # boot arguments and the reboot (tests/unit/roles/test_cc_host_role.py covers cc_host in prepare's place)
    return playbook(REPO / "playbooks/prepare.yml", "-e", "confidential_gpu_root=%s" % root,
                    "-e", "cc_host_technology=none", "-e", json.dumps({"cc_host_iommufd": False}),
                    "-e", json.dumps({"kernel_args_command_path": [str(bin_dir)]}), *extra)


def recap_changed(proc: subprocess.CompletedProcess) -> int:
    line = next(li for li in proc.stdout.splitlines() if li.startswith("localhost") and "changed=" in li)
    return int(line.split("changed=")[1].split()[0])


def dropin_linux(root: Path) -> str:
    text = (root / DROPIN).read_text()
    return text.split("    GRUB_CMDLINE_LINUX='")[1].split("'")[0]


PREPARED_CMDLINE = "console=ttyS0,115200n8 intel_iommu=on iommu=pt modprobe.blacklist=nouveau"


def prepared_lab(root: Path, num_vfs: int = 2) -> Path:
    """The lab VM (tests/lib/host_critical_tree) after prepare and its reboot: the display and its audio function
    on vfio-pci, the NVMe PF with ``num_vfs`` VFs, the IOMMU on as the boot arguments ask, hugepages on both
    nodes (tests/lib/hugepages_tree)."""
    functions = []
    for function in lab_vm_functions(gpu_driver="vfio-pci", audio_driver="vfio-pci"):
        if function.address == LAB_PF:
            functions.append(sriov_pf(LAB_PF, num_vfs=num_vfs, group=8))
        elif function.address.startswith(LAB_PF[:-1]) and int(function.address[-1]) > num_vfs:
            continue  # a VF beyond num_vfs
        else:
            functions.append(function)
    lab_vm(root, functions)
    HugepagesTree(root)
    return debian_grub_host(root, PREPARED_CMDLINE)


def lab_prepare_variables(root: Path, bin_dir: Path, **changes: object) -> Dict[str, object]:
    """What prepare.yml is asked for on the prepared lab VM (prepared_lab): the GPU on vfio-pci, 16 2M pages per
    node, the NVMe PF's 2 VFs; ``changes`` override any."""
    variables: Dict[str, object] = {
        "confidential_gpu_root": str(root), "cc_host_technology": "none", "cc_host_iommufd": False,
        "kernel_args_command_path": [str(bin_dir)], "kernel_args_iommu_passthrough": "on",
        "vfio_addresses": ["0000:02:00.0"], "vfio_initramfs_command": "true",
        "hugepages_pools": [{"size": "2M", "node": 0, "count": 16}, {"size": "2M", "node": 1, "count": 16}],
        "sriov_pfs": [{"address": LAB_PF, "num_vfs": 2}], "sriov_timeout": 10, "pcie_acs_profile": "report"}
    variables.update(changes)
    return variables
