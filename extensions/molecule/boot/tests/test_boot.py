"""After converge and idempotence: the arguments are active, after exactly one reboot."""

from __future__ import annotations

from testinfra.host import Host

ADDED = ["hugepagesz=2M", "hugepages=64", "vfio-pci.disable_idle_d3=1"]


def cmdline(host: Host) -> list[str]:
    return host.file("/proc/cmdline").content_string.split()


def test_added_arguments_are_active(host: Host) -> None:
    args = cmdline(host)
    assert all(arg in args for arg in ADDED), args
    assert args.index("hugepagesz=2M") < args.index("hugepages=64")  # the kernel reads them in order


def test_image_arguments_are_kept(host: Host) -> None:
    assert {"console=ttyS0,115200n8", "intel_iommu=on", "iommu=pt"} <= set(cmdline(host))


def test_exactly_one_reboot_for_converge_and_none_for_idempotence(host: Host) -> None:
    boots = host.file("/var/lib/lab-boots").content_string.split()
    assert len(boots) == 2 and boots[0] != boots[1], boots
    assert boots[-1] == host.file("/proc/sys/kernel/random/boot_id").content_string.strip()


def test_kernel_gave_the_hugepages(host: Host) -> None:
    assert host.file("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages").content_string.strip() == "64"


def test_written_through_a_grub_drop_in(host: Host) -> None:
    dropin = host.file("/etc/default/grub.d/99-confidential-gpu.cfg")
    assert dropin.exists and "vfio-pci.disable_idle_d3=1" in dropin.content_string
    assert "vfio-pci.disable_idle_d3=1" in host.file("/boot/grub/grub.cfg").content_string


def test_management_nic_and_boot_disk_kept_working(host: Host) -> None:
    assert host.file("/sys/bus/pci/devices/0000:00:04.0/driver").linked_to.endswith("/virtio-pci")
    assert host.file("/sys/bus/pci/devices/0000:00:03.0/driver").linked_to.endswith("/virtio-pci")
    assert "default via" in host.check_output("ip route show default")
    root = host.mount_point("/")
    assert root.exists and root.device.startswith("/dev/vda") and "rw" in root.options
    host.run_test("touch /var/tmp/lab-write-check && rm /var/tmp/lab-write-check")
