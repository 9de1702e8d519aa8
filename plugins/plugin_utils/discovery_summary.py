# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Role discovery's two summaries of one host, from pci_topology_info's result (with its ``cc_host`` part).

- :func:`compact_summary`: the fact ``discovery_summary`` and the ``set_stats`` data (keys documented in
  roles/discovery/meta/argument_specs.yml and docs/discovery.md). Nothing in it changes from run to run unless the
  host does (no time stamps), so reports and fact caches differ only when the host did.
- :func:`summary_lines`: the printed summary (and the report's ``<host>.txt``): the devices that matter for
  passthrough, the groups, then readiness.

Python rather than Jinja templates: on a fleet each host rendered two templates, about a third of discovery's
controller time (docs/report.md, "Where the time goes"). Missing keys read as absent, so a result gathered with
fewer subsets still summarises.
"""

from __future__ import annotations

import typing as t

VERDICTS = ("vfio_ready", "snp_ready", "tdx_ready")
PASSTHROUGH_ROLES = ("gpu", "nvswitch", "nic")


def _viable_by_group(pci: t.Mapping[str, t.Any]) -> t.Dict[t.Any, bool]:
    return {group["id"]: group["viable"] for group in pci.get("iommu_groups") or []}


def compact_summary(pci: t.Mapping[str, t.Any], host: str) -> t.Dict[str, t.Any]:
    """The compact per-host summary of a pci_topology_info result gathered with ``cc_host``."""
    cc, summary = pci["cc_host"], pci["summary"]
    viable = _viable_by_group(pci)
    gpus = [{"address": dev["address"], "device_id": "%s:%s" % (dev["vendor_id"], dev["device_id"]),
             "driver": dev["driver"], "iommu_group": dev["iommu_group"],
             "viable": bool(viable.get(dev["iommu_group"])),
             "numa_node": dev["numa_node"], "host_critical": bool(dev.get("host_critical"))}
            for dev in pci["devices"] if dev["role"] == "gpu"]
    verdicts = cc["verdicts"]
    return {
        "host": host,
        "gpu_count": summary["gpus"],
        "gpus": gpus,
        "gpus_on_vfio": sum(1 for gpu in gpus if gpu["driver"] == "vfio-pci"),
        "nvswitch_count": summary["nvswitches"],
        "nic_count": summary["nics"],
        "iommu_enabled": cc["iommu"]["enabled"],
        "iommu_groups_not_viable": summary["groups_not_viable"],
        "host_critical": summary.get("host_critical", 0),
        **{name: verdicts[name] for name in VERDICTS},
        "reasons": {name: verdicts[name + "_reasons"] for name in VERDICTS},
    }


def _or(value: t.Any, fallback: str) -> t.Any:
    """``value``, or ``fallback`` where it is null."""
    return fallback if value is None else value


def device_lines(dev: t.Mapping[str, t.Any], viable: t.Mapping[t.Any, bool]) -> t.List[str]:
    """A GPU's, NVSwitch's or NIC's two lines: identity, driver, group, NUMA node, VFs; then its path."""
    group = dev["iommu_group"]
    line = "  %-8s %s %s:%s driver=%s group=%s" % (dev["role"], dev["address"], dev["vendor_id"], dev["device_id"],
                                                   dev["driver"] or "none", _or(group, "-"))
    if group is not None:
        line += " (%s)" % ("viable" if viable.get(group) else "NOT viable")
    if dev.get("host_critical"):
        line += " HOST-CRITICAL (%s)" % ", ".join(item["kind"] for item in dev["host_critical"])
    line += " numa=%s" % _or(dev["numa_node"], "-")
    if dev.get("sriov"):
        line += " vfs=%s/%s" % (dev["sriov"]["num_vfs"], dev["sriov"]["total_vfs"])
    path = "           path %s" % " > ".join(dev["path"])
    if dev["role"] == "gpu" and dev.get("closest_nics"):
        path += "; closest NICs %s" % ", ".join(dev["closest_nics"])
    return [line, path]


def group_lines(pci: t.Mapping[str, t.Any]) -> t.List[str]:
    """Shared viable groups (what else goes with a device), then groups not viable that hold an endpoint."""
    roles = {dev["address"]: dev["role"] for dev in pci["devices"]}
    groups = pci.get("iommu_groups") or []
    lines = []
    for group in groups:
        if group["viable"] and len(group["devices"]) > 1:
            critical = list(dict.fromkeys(item["address"] for item in group.get("host_critical") or []))
            lines.append("  group %s is shared: %s (viable; %s%s)" % (
                group["id"], ", ".join(group["devices"]),
                "bound to vfio-pci" if group["bound_to_vfio"] else "not all on vfio-pci yet",
                "; holds host-critical " + ", ".join(critical) if critical else ""))
    for group in groups:
        if not group["viable"] and any(roles.get(address) != "bridge" for address in group["devices"]):
            lines.append("  group %s not viable: %s" % (group["id"], "; ".join(group["reasons"])))
    return lines


def readiness_lines(cc: t.Mapping[str, t.Any]) -> t.List[str]:
    """IOMMU, hugepages and the three verdicts with their reasons."""
    iommu = cc["iommu"]
    pools = cc["hugepages"]["pools"]
    lines = [
        "IOMMU: %s, default domain %s, iommufd %s, VFIO cdev %s" % (
            "on (%s)" % iommu["type"] if iommu["enabled"] else "off", iommu.get("default_domain_type") or "-",
            "yes" if iommu["iommufd"] else "no", "yes" if iommu["vfio_cdev"] else "no"),
        "Hugepages: %s" % (", ".join("%s %s (%s free)" % (pool["size"], pool["total"], pool["free"])
                                     for pool in pools) or "none"),
    ]
    for name in VERDICTS:
        lines.append("%-10s %s" % (name, "yes" if cc["verdicts"][name] else "no"))
        lines.extend("           - %s" % reason for reason in cc["verdicts"][name + "_reasons"])
    return lines


def summary_lines(pci: t.Mapping[str, t.Any], host: str) -> t.List[str]:
    """The human summary of one host, one line per list item."""
    cc, summary = pci["cc_host"], pci["summary"]
    lines = [
        "%s: %s (%s), kernel %s" % (host, cc["cpu"].get("model_name") or "unknown CPU", cc["cpu"]["vendor"],
                                    cc["kernel"].get("release") or "unknown"),
        "PCI: %s functions, %s GPUs, %s NVSwitches, %s NICs, %s IOMMU groups (%s with endpoints not viable)" % (
            summary["functions"], summary["gpus"], summary["nvswitches"], summary["nics"], summary["iommu_groups"],
            summary["groups_not_viable"]),
    ]
    if summary.get("host_critical"):
        lines.append("Host-critical: %s functions in %s IOMMU groups; the host would lose them (pci_driver refuses "
                     "them unless allow_host_critical names them)"
                     % (summary["host_critical"], summary["groups_host_critical"]))
    devices = pci["devices"]
    lines.extend("  host-critical %s (%s): %s" % (dev["address"], dev["role"],
                                                  "; ".join(item["reason"] for item in dev["host_critical"]))
                 for dev in devices if dev.get("host_critical"))
    viable = _viable_by_group(pci)
    for dev in devices:
        if dev["role"] in PASSTHROUGH_ROLES and not dev.get("physfn"):
            lines.extend(device_lines(dev, viable))
    return lines + group_lines(pci) + readiness_lines(cc)
