"""Fake SR-IOV physical functions for tests, and a stand-in for the kernel's side of ``sriov_numvfs``.

:func:`sriov_pf` is a PF as sysfs shows it: the SR-IOV capability in config space and the
``sriov_*`` attributes of ``drivers/pci/iov.c``.  :func:`lab_tree` lays out the lab VM's NVMe
controller (``0000:01:00.0``, 4 VFs at most, VF offset 1, stride 1) behind its root port, with
``num_vfs`` VFs already there.

A fake tree has no kernel: writing ``sriov_numvfs`` only changes a file.  :class:`KernelStandIn`
plays the kernel's part for a test that needs VFs to appear: a thread that watches the PFs'
``sriov_numvfs`` files and, when a count changes, removes the old VFs and lays out the new ones
as ``pci_iov_add_virtfn`` does (the function's directory beside the PF, its
``/sys/bus/pci/devices`` link, ``virtfnN`` in the PF, ``physfn`` in the VF).  Unlike the kernel,
whose write returns once the VFs are removed or added, it lags a poll behind the write (10 ms), and
it may not see a ``0`` written just before another count.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from fake_sysfs import ConfigBuilder, FakeFunction, bridge_function, build_tree, virtual_function
from tree_state import tree_state

# The sriov tests compare trees before and after with this name.
snapshot = tree_state

LAB_PF = "0000:01:00.0"
NVME = (0x1B36, 0x0010, 0x010802)
CONNECTX = (0x15B3, 0x1021, 0x020000)


def vf_address(pf: str, offset: int, stride: int, index: int) -> str:
    domain, bus, slot = pf.split(":")
    device, function = slot.split(".")
    rid = (int(bus, 16) << 8) + (int(device, 16) << 3) + int(function) + offset + index * stride
    return "%s:%02x:%02x.%d" % (domain, (rid >> 8) & 0xFF, (rid >> 3) & 0x1F, rid & 7)


def sriov_pf(address: str, total_vfs: int = 4, num_vfs: int = 0, driver: Optional[str] = "nvme",
             ids: Sequence[int] = NVME, offset: int = 1, stride: int = 1, vf_device: int = 0x0010,
             autoprobe: Optional[int] = 1, group: Optional[int] = None) -> FakeFunction:
    """A PF with its SR-IOV capability and sysfs attributes (``autoprobe`` None: no such attribute)."""
    vendor, device, class_code = ids
    config = ConfigBuilder(vendor, device, class_code).express("endpoint", 8.0, 4)
    config.sriov(total_vfs, num_vfs, offset, stride, vf_device)
    extra = {
        "sriov_totalvfs": b"%d\n" % total_vfs,
        "sriov_numvfs": b"%d\n" % num_vfs,
        "sriov_offset": b"%d\n" % offset,
        "sriov_stride": b"%d\n" % stride,
        "sriov_vf_device": b"%x\n" % vf_device,
    }
    if autoprobe is not None:
        extra["sriov_drivers_autoprobe"] = b"%d\n" % autoprobe
    return FakeFunction(address=address, config=config.bytes(), driver=driver, iommu_group=group,
                        extra_files=extra)


def lab_functions(num_vfs: int = 0, vf_driver: Optional[str] = None, pf_driver: Optional[str] = "nvme",
                  autoprobe: Optional[int] = 1) -> List[FakeFunction]:
    """The lab's root port 00:10.0, its NVMe PF 01:00.0 and ``num_vfs`` VFs (01:00.1...)."""
    root_port = bridge_function("0000:00:10.0", 0x1B36, 0x000C, "root_port", 1, 1)
    root_port.iommu_group = 2
    pf = sriov_pf(LAB_PF, num_vfs=num_vfs, driver=pf_driver, autoprobe=autoprobe, group=3)
    functions = [root_port, pf]
    for index in range(num_vfs):
        vf = virtual_function(vf_address(LAB_PF, 1, 1, index), LAB_PF, NVME[0], NVME[1], NVME[2], vf_driver)
        vf.iommu_group = 10 + index
        functions.append(vf)
    return functions


def lab_tree(root: Path, num_vfs: int = 0, vf_driver: Optional[str] = None, pf_driver: Optional[str] = "nvme",
             autoprobe: Optional[int] = 1) -> Path:
    return build_tree(root, lab_functions(num_vfs, vf_driver, pf_driver, autoprobe))


class KernelStandIn:
    """Creates and removes VFs in a fake tree when a PF's ``sriov_numvfs`` file changes (see the module doc)."""

    def __init__(self, root: Path, pfs: Sequence[str] = (LAB_PF,)) -> None:
        self.root = root
        self.pfs = list(pfs)
        self.stop = threading.Event()
        self.seen: Dict[str, List[int]] = {pf: [] for pf in self.pfs}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> KernelStandIn:
        for pf in self.pfs:
            self.seen[pf].append(self._count(pf))
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self._sync()  # a count written just before the end is laid out too, as the kernel would have

    def _sync(self) -> None:
        for pf in self.pfs:
            count = self._count(pf)
            if count >= 0 and count != self.seen[pf][-1]:
                self.seen[pf].append(count)
                self.set_vfs(pf, count)

    def _pf_dir(self, pf: str) -> Path:
        return (self.root / "sys/bus/pci/devices" / pf).resolve()

    def _count(self, pf: str) -> int:
        try:
            return int((self._pf_dir(pf) / "sriov_numvfs").read_text() or "0")
        except (OSError, ValueError):
            return -1

    def _run(self) -> None:
        while not self.stop.is_set():
            self._sync()
            time.sleep(0.01)

    def set_vfs(self, pf: str, count: int) -> List[str]:
        """Remove the PF's VFs, then lay out ``count`` new ones; their addresses."""
        pf_dir = self._pf_dir(pf)
        devices = self.root / "sys/bus/pci/devices"
        for link in sorted(pf_dir.glob("virtfn*")):
            vf_dir = link.resolve()
            (devices / vf_dir.name).unlink()
            link.unlink()
            shutil.rmtree(vf_dir)
        offset = int((pf_dir / "sriov_offset").read_text())
        stride = int((pf_dir / "sriov_stride").read_text())
        created = []
        for index in range(count):
            address = vf_address(pf, offset, stride, index)
            function = virtual_function(address, pf, NVME[0], NVME[1], NVME[2], None)
            vf_dir = pf_dir.parent / address
            vf_dir.mkdir()
            (vf_dir / "config").write_bytes(function.config)
            for name, content in function.extra_files.items():
                (vf_dir / name).write_bytes(content)
            os.symlink(os.path.relpath(pf_dir, vf_dir), vf_dir / "physfn")
            os.symlink(os.path.relpath(vf_dir, pf_dir), pf_dir / ("virtfn%d" % index))
            os.symlink(os.path.relpath(vf_dir, devices), devices / address)
            created.append(address)
        return created
