"""After converge, refusals, one reboot and a second idempotent converge: devices are in place."""

from __future__ import annotations

import os

from testinfra.host import Host

VFIO = ["0000:02:00.0", "0000:02:00.1", "0000:01:00.1"]
PF = "0000:01:00.0"


def driver(host: Host, address: str) -> str:
    link = host.run("readlink /sys/bus/pci/devices/%s/driver" % address)
    return os.path.basename(link.stdout.strip()) if link.rc == 0 else ""


def group(host: Host, address: str) -> str:
    return os.path.basename(host.check_output("readlink /sys/bus/pci/devices/%s/iommu_group" % address))


def test_exactly_one_reboot(host: Host) -> None:
    boots = host.file("/var/lib/lab-boots").content_string.split()
    assert len(boots) == 2 and boots[0] != boots[1], boots


def test_gpu_stand_in_and_vf_are_on_vfio_pci(host: Host) -> None:
    assert {address: driver(host, address) for address in VFIO} == {address: "vfio-pci" for address in VFIO}


def test_vfio_group_nodes_exist(host: Host) -> None:
    for address in VFIO:
        assert host.run("test -c /dev/vfio/%s" % group(host, address)).rc == 0, address


def test_two_vfs_came_back(host: Host) -> None:
    assert host.file("/sys/bus/pci/devices/%s/sriov_numvfs" % PF).content_string.strip() == "2"
    assert host.file("/sys/bus/pci/devices/0000:01:00.2").exists
    assert not host.file("/sys/bus/pci/devices/0000:01:00.3").exists


def test_boot_units_ran(host: Host) -> None:
    for unit in ("confidential-gpu-sriov.service", "confidential-gpu-hugepages.service"):
        service = host.service(unit)
        assert service.is_enabled and service.systemd_properties["Result"] == "success", unit


def test_hugepages_on_both_nodes(host: Host) -> None:
    for node in (0, 1):
        path = "/sys/devices/system/node/node%d/hugepages/hugepages-2048kB/nr_hugepages" % node
        assert host.file(path).content_string.strip() == "64", node


INITRD = "/boot/initrd.img-$(uname -r)"
OUR_MODPROBE = "etc/modprobe.d/confidential-gpu-vfio.conf"


def test_initramfs_carries_vfio_pci_and_its_modprobe_file(host: Host) -> None:
    """Early binding: the real update-initramfs ran the hook, so the initramfs holds what the softdep needs."""
    listing = host.check_output("lsinitramfs %s" % INITRD).splitlines()
    names = {os.path.basename(path) for path in listing}
    assert {"vfio-pci.ko", "vfio_iommu_type1.ko", "vfio.ko"} <= names, sorted(n for n in names if "vfio" in n)
    assert any(path.endswith(OUR_MODPROBE) for path in listing), "mkinitramfs copies /etc/modprobe.d in"
    conf = host.check_output('d=$(mktemp -d) && unmkinitramfs %s "$d" && cat "$d"/main/%s "$d"/%s 2>/dev/null; '
                             'rm -rf "$d"' % (INITRD, OUR_MODPROBE, OUR_MODPROBE))
    assert "options vfio-pci ids=1234:1111,8086:293e" in conf.splitlines(), conf


def test_host_devices_untouched(host: Host) -> None:
    assert driver(host, "0000:00:04.0") == "virtio-pci"
    assert driver(host, "0000:00:03.0") == "virtio-pci"
    assert driver(host, "0000:00:1f.2") == "ahci"
    assert driver(host, "0000:06:00.0") == "virtio-pci"
    assert host.run("ip route show default").stdout.strip()
