#!/bin/sh
# Managed by confidential_gpu.host.pci_driver.
# Called by udev (/etc/udev/rules.d/70-confidential-gpu-vfio.rules) with the address of a PCI function that was
# just added (boot, hotplug, SR-IOV VF): binds it to the driver named in /etc/driverctl.d/pci-<address> (the
# driverctl file format), so that the override holds with or without driverctl installed.
# Installed by confidential_gpu.host.pci_driver from the collection's files/pci-override.sh.
# Usage: pci-override 0000:bb:dd.f
# CONFIDENTIAL_GPU_ROOT (default empty) is put before /etc and /sys, for trying it on a tree; modprobe then
# does not run.
set -u
root="${CONFIDENTIAL_GPU_ROOT:-}"
dev="${1:?usage: pci-override <pci address>}"
conf="$root/etc/driverctl.d/pci-$dev"
sys="$root/sys/bus/pci/devices/$dev"
[ -s "$conf" ] || exit 0
[ -e "$sys/driver_override" ] || exit 0
drv=""
IFS= read -r drv < "$conf" || [ -n "$drv" ] || exit 0
[ -n "$drv" ] || exit 0
driver_of() {
    if [ -L "$sys/driver" ]; then basename "$(readlink "$sys/driver")"; fi
}
cur=$(driver_of)
[ "$cur" = "$drv" ] && exit 0
printf '%s' "$drv" > "$sys/driver_override" || exit 1
if [ ! -d "$root/sys/bus/pci/drivers/$drv" ] && [ -z "$root" ]; then
    modprobe -q "$drv" || true
fi
# A driver may leave the function on its own between the read above and the unbind (a probe that fails
# late, as nvme's does on a VF that is not ready: in drivers/nvme/host/pci.c of Linux 6.1, nvme_reset_work()
# ends in nvme_remove_dead_ctrl(), which queues the release of the driver): the unbind then fails with ENODEV.
# Wait up to 10 s for the driver to be gone.
if [ -n "$cur" ] && ! printf '%s' "$dev" > "$root/sys/bus/pci/drivers/$cur/unbind" 2>/dev/null; then
    tries=0
    while [ "$(driver_of)" = "$cur" ]; do
        tries=$((tries + 1))
        [ "$tries" -le 50 ] || { echo "pci-override: $dev stays on $cur: unbind failed" >&2; exit 1; }
        sleep 0.2
    done
fi
if [ ! -L "$sys/driver" ]; then
    printf '%s' "$dev" > "$root/sys/bus/pci/drivers_probe" || exit 1
fi
exit 0
