# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs the hugepages module with the boot program and unit it installs, read from the collection's files/."""

from __future__ import annotations

from ansible_collections.confidential_gpu.host.plugins.plugin_utils.shipped_files import ShippedFilesAction


class ActionModule(ShippedFilesAction):
    MODULE = "confidential_gpu.host.hugepages"
    MAPPING_LISTS = ("pools",)
    SHIPPED = ("confidential-gpu-hugepages.sh", "confidential-gpu-hugepages.service")
