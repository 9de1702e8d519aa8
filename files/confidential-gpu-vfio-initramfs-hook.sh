#!/bin/sh
# Managed by confidential_gpu.host.pci_driver.
# Puts @DRIVER@ into the initramfs. mkinitramfs copies /etc/modprobe.d/confidential-gpu-vfio.conf
# in too, so a GPU driver that loads from the initramfs pulls @DRIVER@ in first
# (softdep) and @DRIVER@ claims the devices by ID (ids=) before that driver can.
PREREQ=""
prereqs() { echo "$PREREQ"; }
case "$1" in
prereqs) prereqs; exit 0 ;;
esac
# shellcheck source=/dev/null
. /usr/share/initramfs-tools/hook-functions
manual_add_modules @MODULES@
