"""Read ``lspci -D -vvv`` output into the fields the discovery module reports.

lspci (pciutils) is the reference decoder of PCI configuration space; tests
run it on the same tree (``-A linux-sysfs -O sysfs.path=...``) or the same
host and compare its decoding with the module's, field by field.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any, Dict, List, Optional

DEVICE_RE = re.compile(r"^((?:[0-9a-f]{4,}:)?[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) ")
EXPRESS_RE = re.compile(r"Express (?:\(v\d+\) )?(?P<type>[A-Za-z/ -]+?)(?: \(Slot[+-]\))?, (?:MSI|IntMsgNum)")
SPEED_RE = re.compile(r"Speed (\S+?)(?:GT/s)?[ ,]")
WIDTH_RE = re.compile(r"Width x(\d+)")
FLAG_RE = re.compile(r"(\w+)([+-])")

PORT_TYPES = {
    "Endpoint": "endpoint",
    "Legacy Endpoint": "legacy_endpoint",
    "Root Port": "root_port",
    "Upstream Port": "upstream_port",
    "Downstream Port": "downstream_port",
    "PCI-Express to PCI/PCI-X Bridge": "pcie_to_pci_bridge",
    "PCI/PCI-X to PCI-Express Bridge": "pci_to_pcie_bridge",
    "Root Complex Integrated Endpoint": "rc_integrated_endpoint",
    "Root Complex Event Collector": "rc_event_collector",
}
ACS_NAMES = {
    "SrcValid": "source_validation",
    "TransBlk": "translation_blocking",
    "ReqRedir": "request_redirect",
    "CmpltRedir": "completion_redirect",
    "UpstreamFwd": "upstream_forwarding",
    "EgressCtrl": "egress_control",
    "DirectTrans": "direct_translated_p2p",
}


def run_lspci(sysfs_bus_pci: Optional[str] = None) -> str:
    """``lspci -D -vvv`` of a tree (its ``sys/bus/pci``) or of this host."""
    command = ["lspci", "-D", "-vvv"]
    if sysfs_bus_pci is not None:
        command += ["-A", "linux-sysfs", "-O", "sysfs.path=" + sysfs_bus_pci]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def speed(text: str) -> Optional[float]:
    match = SPEED_RE.search(text + " ")
    if not match or match.group(1) == "unknown":
        return None
    return float(match.group(1))


def flags(text: str) -> Dict[str, bool]:
    return {name: sign == "+" for name, sign in FLAG_RE.findall(text)}


def parse_link(record: Dict[str, Any], key: str, text: str) -> None:
    width = WIDTH_RE.search(text)
    record[key + "_speed_gts"] = speed(text)
    record[key + "_width"] = int(width.group(1)) if width else None


def parse_line(record: Dict[str, Any], label: str, text: str) -> None:
    """Fold one decoded line into the device's record."""
    if label == "LnkCap":
        parse_link(record, "max_link", text)
    elif label == "LnkSta":
        parse_link(record, "link", text)
    elif label in ("ACSCap", "ACSCtl"):
        decoded = flags(text)
        record[label] = {ACS_NAMES[name]: value for name, value in decoded.items() if name in ACS_NAMES}
    elif label == "ATSCap":
        record["ats_queue_depth"] = int(text.split(":")[-1].strip(), 16)
    elif label == "ATSCtl":
        record["ats_enabled"] = flags(text).get("Enable")
        record["ats_stu"] = int(text.rsplit(":", 1)[-1].strip(), 16)
    elif label == "IOVCtl":
        decoded = flags(text)
        record["sriov_vf_enabled"] = decoded.get("Enable")
        record["sriov_ari_hierarchy"] = decoded.get("ARIHierarchy")
    elif label == "PRICtl":
        record["pri_enabled"] = flags(text).get("Enable")
    elif label == "PASIDCap":
        record["pasid_max_width"] = int(text.rsplit(":", 1)[-1].strip(), 16)
        record["pasid_exec"] = flags(text).get("Exec")
        record["pasid_priv"] = flags(text).get("Priv")
    elif label == "PASIDCtl":
        record["pasid_enabled"] = flags(text).get("Enable")
    elif label == "ARICap":
        record["ari_next_function"] = int(text.rsplit(":", 1)[-1].strip())


def parse_plain(record: Dict[str, Any], line: str) -> None:
    """Lines without a ``Label:`` tab prefix: SR-IOV counts, group, driver, NUMA node."""
    counts = re.search(r"Initial VFs: (\d+), Total VFs: (\d+), Number of VFs: (\d+)", line)
    if counts:
        record["sriov_initial_vfs"], record["sriov_total_vfs"], record["sriov_num_vfs"] = map(int, counts.groups())
    offsets = re.search(r"VF offset: (\d+), stride: (\d+), Device ID: ([0-9a-f]{4})", line)
    if offsets:
        record["sriov_vf_offset"] = int(offsets.group(1))
        record["sriov_vf_stride"] = int(offsets.group(2))
        record["sriov_vf_device_id"] = offsets.group(3)
    simple = re.match(r"\t(IOMMU group|NUMA node|Kernel driver in use): (\S+)", line)
    if simple:
        record[simple.group(1)] = simple.group(2)
    capacity = re.search(r"Page Request Capacity: ([0-9a-f]+), Page Request Allocation: ([0-9a-f]+)", line)
    if capacity:
        record["pri_capacity"] = int(capacity.group(1), 16)
        record["pri_allocation"] = int(capacity.group(2), 16)


def parse_lspci(text: str) -> Dict[str, Dict[str, Any]]:
    """address -> decoded record for every function in ``lspci -vvv`` output (with -D or without: domain 0000)."""
    devices: Dict[str, Dict[str, Any]] = {}
    record: Dict[str, Any] = {}
    for line in text.splitlines():
        header = DEVICE_RE.match(line)
        if header:
            address = header.group(1) if header.group(1).count(":") == 2 else "0000:" + header.group(1)
            record = devices.setdefault(address, {"capabilities": []})
            continue
        cap = re.match(r"\tCapabilities: \[([0-9a-f]+)(?: v\d+)?\] (.*)", line)
        if cap:
            record["capabilities"].append(cap.group(2))
            express = EXPRESS_RE.search(cap.group(2))
            if express:
                record["port_type"] = PORT_TYPES.get(express.group("type"), express.group("type"))
            continue
        labelled = re.match(r"\t\t(\w+):\s+(.*)", line)
        if labelled:
            parse_line(record, labelled.group(1), labelled.group(2))
        parse_plain(record, line)
    return devices


def has_capability(record: Dict[str, Any], name: str) -> bool:
    return any(cap.startswith(name) for cap in record["capabilities"])


def capability_names(records: Dict[str, Dict[str, Any]]) -> List[str]:
    return sorted({cap.split(":")[0] for record in records.values() for cap in record["capabilities"]})
