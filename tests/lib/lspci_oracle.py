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


# The module's devices against lspci's records, field by field (tests/unit/test_lspci_oracle.py and the
# replays of real hosts use the same comparison).

def mismatches(ours: Dict[str, Any], theirs: Dict[str, Any]) -> List[str]:
    """Every field where the module and lspci disagree, as readable lines."""
    problems: List[str] = []

    def check(address: str, what: str, mine: Any, reference: Any) -> None:
        if mine != reference:
            problems.append("%s %s: module %r, lspci %r" % (address, what, mine, reference))

    for address, ref in theirs.items():
        dev = ours.get(address)
        if dev is None:
            problems.append("%s: lspci shows it, the module does not" % address)
            continue
        check_identity(address, dev, ref, check)
        check_express(address, dev, ref, check)
        check_acs_ats(address, dev, ref, check)
        check_sriov(address, dev, ref, check)
        check_pri_pasid_ari(address, dev, ref, check)
    problems += ["%s: the module shows it, lspci does not" % address for address in ours if address not in theirs]
    return problems


def check_identity(address: str, dev: Dict[str, Any], ref: Dict[str, Any], check) -> None:
    check(address, "iommu group", dev["iommu_group"], int(ref["IOMMU group"]) if "IOMMU group" in ref else None)
    check(address, "driver", dev["driver"], ref.get("Kernel driver in use"))
    check(address, "numa node", dev["numa_node"], int(ref["NUMA node"]) if "NUMA node" in ref else None)


def check_express(address: str, dev: Dict[str, Any], ref: Dict[str, Any], check) -> None:
    pcie = dev["pcie"]
    check(address, "port type", pcie and pcie["port_type"], ref.get("port_type"))
    if pcie is None:
        return
    for key in ("link_speed_gts", "link_width", "max_link_speed_gts", "max_link_width"):
        check(address, key, pcie[key], ref.get(key))


def check_acs_ats(address: str, dev: Dict[str, Any], ref: Dict[str, Any], check) -> None:
    acs = dev.get("acs")  # absent when the function has none
    check(address, "ACS present", acs is not None, has_capability(ref, "Access Control Services"))
    if acs is not None and "ACSCap" in ref:
        check(address, "ACSCap", acs["capabilities"], ref["ACSCap"])
        check(address, "ACSCtl", acs["enabled"], ref["ACSCtl"])
    ats = dev.get("ats")
    check(address, "ATS present", ats is not None, has_capability(ref, "Address Translation Service"))
    if ats is not None and "ats_enabled" in ref:
        check(address, "ATS enabled", ats["enabled"], ref["ats_enabled"])
        check(address, "ATS queue depth", ats["invalidate_queue_depth"], ref["ats_queue_depth"])
        check(address, "ATS STU", ats["smallest_translation_unit"], ref["ats_stu"])


def check_sriov(address: str, dev: Dict[str, Any], ref: Dict[str, Any], check) -> None:
    sriov = dev["sriov"]
    check(address, "SR-IOV present", sriov is not None, has_capability(ref, "Single Root I/O Virtualization"))
    if sriov is None or "sriov_total_vfs" not in ref:
        return
    for key in ("initial_vfs", "total_vfs", "num_vfs", "vf_offset", "vf_stride", "vf_device_id"):
        check(address, "SR-IOV " + key, sriov[key], ref["sriov_" + key])
    check(address, "SR-IOV VF enable", sriov["vf_enabled"], ref["sriov_vf_enabled"])
    check(address, "SR-IOV ARI hierarchy", sriov["ari_capable_hierarchy"], ref["sriov_ari_hierarchy"])


def check_pri_pasid_ari(address: str, dev: Dict[str, Any], ref: Dict[str, Any], check) -> None:
    check(address, "PRI present", dev.get("pri") is not None, has_capability(ref, "Page Request Interface"))
    if dev.get("pri") is not None and "pri_enabled" in ref:
        check(address, "PRI enabled", dev["pri"]["enabled"], ref["pri_enabled"])
        check(address, "PRI capacity", dev["pri"]["outstanding_capacity"], ref["pri_capacity"])
    check(address, "PASID present", dev.get("pasid") is not None, has_capability(ref, "Process Address Space ID"))
    if dev.get("pasid") is not None and "pasid_enabled" in ref:
        check(address, "PASID enabled", dev["pasid"]["enabled"], ref["pasid_enabled"])
        check(address, "PASID width", dev["pasid"]["max_width"], ref["pasid_max_width"])
    check(address, "ARI present", dev.get("ari") is not None,
          has_capability(ref, "Alternative Routing-ID Interpretation"))
    if dev.get("ari") is not None and "ari_next_function" in ref:
        check(address, "ARI next function", dev["ari"]["next_function"], ref["ari_next_function"])
