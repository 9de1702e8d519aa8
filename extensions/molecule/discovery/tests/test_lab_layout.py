"""The lab VM is what docs/lab.md says it is (tests/lab/labctl builds it): the lab's self-check.

It ran as a scenario of its own (`default`, which also rebooted into an edited GRUB command line); that a GRUB change
takes effect across a reboot is the `boot` scenario's subject, so these checks share the discovery scenario's VM.
"""

from __future__ import annotations

from testinfra.host import Host

# guest PCI address -> vendor:device (docs/lab.md, "Layout")
LAYOUT = {
    "0000:00:03.0": "1af4:1001",  # virtio-blk boot disk
    "0000:00:04.0": "1af4:1000",  # virtio-net management NIC
    "0000:00:10.0": "1b36:000c",  # root ports rp1..rp4
    "0000:00:10.1": "1b36:000c",
    "0000:00:10.2": "1b36:000c",
    "0000:00:10.3": "1b36:000c",
    "0000:01:00.0": "1b36:0010",  # NVMe PF with SR-IOV
    "0000:02:00.0": "1234:1111",  # "GPU": bochs display, function 0
    "0000:02:00.1": "8086:293e",  # its HDA audio function
    "0000:03:00.0": "104c:8232",  # switch upstream port
    "0000:04:00.0": "104c:8233",  # switch downstream ports
    "0000:04:01.0": "104c:8233",
    "0000:05:00.0": "1234:11e8",  # edu, behind 04:00.0
    "0000:06:00.0": "1af4:1050",  # virtio-gpu, behind 04:01.0
    "0000:00:05.0": "1b36:000b",  # PCIe expander bridge pxb1 (NUMA node 1)
    "0000:80:00.0": "1b36:000c",  # its root port rp5
    "0000:81:00.0": "8086:10d3",  # e1000e NIC behind rp5
}
# groups of more than one function
SHARED_GROUPS = [
    ["0000:00:1f.0", "0000:00:1f.2", "0000:00:1f.3"],  # ICH9 LPC + SATA + SMBus
    ["0000:02:00.0", "0000:02:00.1"],  # GPU + audio
    ["0000:04:00.0", "0000:05:00.0"],  # downstream port + endpoint (no ACS)
    ["0000:04:01.0", "0000:06:00.0"],
]


def test_kernel_command_line_is_the_images(host: Host) -> None:
    args = host.file("/proc/cmdline").content_string.split()
    assert args[0].startswith("BOOT_IMAGE=")  # booted by the guest's GRUB (tests/lab/guest/grub)
    assert {"intel_iommu=on", "iommu=pt", "console=ttyS0,115200n8"} <= set(args)


def test_pci_layout(host: Host) -> None:
    found = {}
    for line in host.check_output("lspci -D -n").splitlines():
        address, _cls, ids = line.split()[:3]
        found[address] = ids
    for address, ids in LAYOUT.items():
        assert found.get(address) == ids, address


def test_multi_function_iommu_groups(host: Host) -> None:
    out = host.check_output("for g in /sys/kernel/iommu_groups/*; do echo $(ls $g/devices); done")
    groups = [sorted(line.split()) for line in out.splitlines()]
    shared = sorted(g for g in groups if len(g) > 1)
    assert shared == SHARED_GROUPS


def test_sriov_nvme_and_numa(host: Host) -> None:
    assert host.file("/sys/bus/pci/devices/0000:01:00.0/sriov_totalvfs").content_string.strip() == "4"
    assert host.file("/sys/devices/system/node/online").content_string.strip() == "0-1"
    assert host.file("/sys/class/iommu/dmar0").exists
    for address, node in (("0000:81:00.0", "1"), ("0000:80:00.0", "1"), ("0000:00:10.0", "-1")):
        assert host.file(f"/sys/bus/pci/devices/{address}/numa_node").content_string.strip() == node, address


def test_initramfs_uses_dep_modules(host: Host) -> None:
    conf = host.file("/etc/initramfs-tools/initramfs.conf").content_string
    assert "MODULES=dep" in conf.splitlines()
