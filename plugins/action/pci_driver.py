# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs the pci_driver module with the udev helper and initramfs drop-ins it installs, read from files/."""

from __future__ import annotations

from ansible_collections.confidential_gpu.host.plugins.plugin_utils.shipped_files import ShippedFilesAction


class ActionModule(ShippedFilesAction):
    MODULE = "confidential_gpu.host.pci_driver"
    MAPPING_LISTS = ("bindings",)
    SHIPPED = ("pci-override.sh", "confidential-gpu-vfio-initramfs-hook.sh", "confidential-gpu-vfio-dracut.conf")
