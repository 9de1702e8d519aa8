# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plan the PCIe layout of a Kata guest from the host's topology.

Input: the result of ``pci_topology_info`` (``devices``, ``iommu_groups``,
``gpu_nic_affinity``), the devices a pod gets (addresses, or the selectors
``gpu``, ``nvswitch``, ``nic``, ``gpu_nics``) and a mode:

- ``flatten``: every device on its own PCIe root port of the guest
  (``cold_plug_vfio = "root-port"``, ``pcie_root_port`` = ports needed);
- ``replicate``: every device on a downstream port of an emulated PCIe switch
  (``cold_plug_vfio = "switch-port"``, ``pcie_switch_port`` = ports needed),
  so that a GPU and the NIC it shares a switch with on the host share one in
  the guest too.

The count follows Kata's Go runtime (``createPCIeTopology`` in
``src/runtime/virtcontainers/qemu.go``, tags 3.26.0 to 4.1.0), which depends on
how the device is handed over (the VFIO mode):

- ``group`` (legacy VFIO, ``/dev/vfio/<group>``): a passed device brings its
  whole IOMMU group (``GetAllVFIODevicesFromIOMMUGroup``); host bridges (class
  0600) and PCI-to-PCI bridges (0604) of the group stay with the host; every
  other member that is a PCI Express function takes one port;
- ``iommufd`` (VFIO device cdev, ``/dev/vfio/devices/vfioN``): "There is only
  one device per VFIO device in the case of IOMMUFD" (``GetDeviceFromVFIODev``
  in ``src/runtime/pkg/device/drivers/utils.go``): only the devices handed to
  the pod are counted, one port each when PCI Express.  The other members of
  their groups stay on the host, still bound to vfio-pci (the kernel opens a
  device only while its whole group is owned by VFIO).  Confidential guests
  need it: from 3.26.0 ``createPCIeTopology`` refuses a group path with
  "ConfidentialGuest needs IOMMUFD".

A device the host cannot lose (``host_critical`` from ``pci_topology_info``:
boot disk controller, default-route NIC, console) is refused unless the pod
names it by address, as ``pci_driver`` refuses it unless
``allow_host_critical`` names it.  Kata refuses more than 16 root ports or
16 switch ports (``maxPCIeRootPort`` / ``maxPCIeSwitchPort`` in
``qemu_arch_base.go``: each port reserves 4 KiB of the 64 KiB I/O space), and in
switch-port mode it builds one root port, one upstream port and that many
downstream ports (``genericAppendPCIeSwitchPort``).

Pure functions of their input; standard library only (runs anywhere, Python >= 3.8).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from ansible_collections.confidential_gpu.host.plugins.module_utils import pci_device
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_device import (
    VF,
    Selector,
    kind_of,
    normalize_address,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_topology import (
    bridge_link,
    common_bridge,
    pcie_bridges_crossed,
    port_kinds,
)

MODES = ("flatten", "replicate")
# How Kata gets the devices: legacy VFIO group files or iommufd device cdevs (createPCIeTopology, qemu.go).
VFIO_MODES = ("group", "iommufd")
# Kata's limit for either kind of port (virtcontainers/qemu_arch_base.go).
KATA_MAX_PCIE_PORTS = 16
ROLE_SELECTORS = ("gpu", "nvswitch", "nic")
PAIRED_NIC_SELECTOR = "gpu_nics"
# GPU-NIC links close enough to count as a pair: at most one PCIe bridge (PIX) or several below one root
# port (PXB), nvidia-smi topo's classes.
PAIR_LINKS = ("PIX", "PXB")


class PlanError(ValueError):
    """The input cannot be planned at all (not a topology, unknown mode)."""


def check_input(topology: Any, mode: str, vfio_mode: str = "group") -> None:
    """Refuse what is not a pci_topology_info result or not a mode."""
    if mode not in MODES:
        raise PlanError("PCIe mode %r is not one of %s" % (mode, ", ".join(MODES)))
    if vfio_mode not in VFIO_MODES:
        raise PlanError("VFIO mode %r is not one of %s (group: /dev/vfio/<group>, iommufd: /dev/vfio/devices/vfioN)"
                        % (vfio_mode, ", ".join(VFIO_MODES)))
    if not isinstance(topology, dict) or not isinstance(topology.get("devices"), list) \
            or not isinstance(topology.get("iommu_groups"), list):
        raise PlanError("the topology must be the result of confidential_gpu.host.pci_topology_info "
                        "(a dict with 'devices' and 'iommu_groups' lists); register it unfiltered")


def paired_nics(topology: Dict[str, Any], gpu: str) -> List[str]:
    """NIC PFs closest to a GPU when they share its switch or root port (best link only)."""
    pairs = [pair for pair in topology.get("gpu_nic_affinity") or [] if pair.get("gpu") == gpu
             and pair.get("link") in PAIR_LINKS]
    if not pairs:
        return []
    best = min((PAIR_LINKS.index(pair["link"]), pair.get("bridges_between") or 0) for pair in pairs)
    return [pair["nic"] for pair in pairs
            if (PAIR_LINKS.index(pair["link"]), pair.get("bridges_between") or 0) == best]


def select(topology: Dict[str, Any], selectors: Sequence[str], by_address: Dict[str, Dict[str, Any]],
           errors: List[str], warnings: List[str]) -> List[str]:
    """Requested addresses, in the order given: each selector is a pci_device Selector of one address or one role
    (roles pick physical functions, not VFs), and the pod gets them all."""
    chosen: List[str] = []

    def add(address: str) -> None:
        if address not in chosen:
            chosen.append(address)

    for selector in selectors:
        text = str(selector).strip()
        if text in ROLE_SELECTORS:
            found = [dev["address"] for dev in Selector(roles=(text,)).select(topology["devices"], to_guest=True)
                     if kind_of(dev) != VF]
            if not found:
                warnings.append("selector %r matches no physical function on this host" % text)
            for address in found:
                add(address)
        elif text == PAIRED_NIC_SELECTOR:
            continue
        elif ":" in text and normalize_address(text) in by_address:
            add(normalize_address(text))
        elif ":" in text:
            errors.append("device %s is not on this host (no such PCI function in the topology)" % text)
        else:
            errors.append("device selector %r is neither a PCI address nor one of %s"
                          % (text, ", ".join(ROLE_SELECTORS + (PAIRED_NIC_SELECTOR,))))
    if PAIRED_NIC_SELECTOR in [str(s).strip() for s in selectors]:
        gpus = [address for address in chosen if by_address[address].get("role") == "gpu"]
        if not gpus:
            errors.append("selector 'gpu_nics' needs GPUs in the selection (add 'gpu' or GPU addresses)")
        for gpu in gpus:
            nics = paired_nics(topology, gpu)
            if not nics:
                warnings.append("GPU %s has no NIC behind its switch or root port; gpu_nics adds none for it" % gpu)
            for nic in nics:
                add(nic)
    return chosen


def named_addresses(selectors: Sequence[str], by_address: Dict[str, Dict[str, Any]]) -> Set[str]:
    """The functions the selectors name by PCI address (not by role)."""
    return {normalize_address(str(text)) for text in selectors
            if ":" in str(text) and normalize_address(str(text)) in by_address}


def check_host_critical(member: str, requested_by: str, info: Optional[Dict[str, Any]], named: Set[str],
                        errors: List[str], warnings: List[str]) -> None:
    """Refuse a function the host cannot lose unless the pod names it by address (warn then)."""
    reasons = [entry.get("reason") or entry.get("kind") or "host-critical"
               for entry in (info or {}).get("host_critical") or []]
    if not reasons:
        return
    how = "" if member == requested_by else " (it shares an IOMMU group with %s)" % requested_by
    if member in named:
        warnings.append("%s is host-critical (%s) and named by address: the host loses it while the pod runs"
                        % (member, "; ".join(reasons)))
        return
    errors.append("%s%s is host-critical: %s; pci_driver will not take it from the host: leave it out of the pod, "
                  "or name it by address here and in pci_driver's allow_host_critical if losing it is intended"
                  % (member, how, "; ".join(reasons)))


def expand_groups(requested: Sequence[str], topology: Dict[str, Any], by_address: Dict[str, Dict[str, Any]],
                  errors: List[str], warnings: List[str], vfio_mode: str = "group",
                  named: Optional[Set[str]] = None) -> Tuple[List[Dict[str, Any]], List[str], List[str]]:
    """Functions that go to the guest, bridges left behind, and group members kept on vfio-pci by the host.

    ``group``: the requested ones and every member of their groups;
    ``iommufd``: the requested ones only, their group companions stay on the host.
    """
    named = set(requested) if named is None else named
    companions: List[str] = []
    groups = {group["id"]: group for group in topology["iommu_groups"]}
    # Members missing from a filtered topology are counted as PCIe endpoints.
    members = {gid: [by_address.get(member) or {"address": member} for member in group.get("devices") or []]
               for gid, group in groups.items()}
    expansion = {gid: (endpoints, bridges) for gid, endpoints, bridges
                 in pci_device.expand_groups([by_address[address] for address in requested], members)}
    passed: List[Dict[str, Any]] = []
    seen: Set[str] = set()
    left: List[str] = []
    for address in requested:
        dev = by_address[address]
        gid = dev.get("iommu_group")
        if gid is None:
            errors.append("%s has no IOMMU group: the IOMMU is off, so nothing can be passed through; enable it "
                          "(role kernel_args: intel_iommu=on for VT-d, amd_iommu=off gone for AMD-Vi) and reboot"
                          % address)
            continue
        group = groups.get(gid)
        if group is None:
            errors.append("IOMMU group %s of %s is missing from the topology; pass the unfiltered "
                          "pci_topology_info result" % (gid, address))
            continue
        if not group.get("viable", True):
            errors.append("%s cannot be passed through: IOMMU group %s is not viable (%s)"
                          % (address, gid, "; ".join(group.get("reasons") or ["no reason given"])))
            continue
        if not group.get("bound_to_vfio", False):
            warnings.append("IOMMU group %s of %s is not on vfio-pci yet; bind it before a pod starts" % (gid, address))
        endpoints, bridges = expansion[gid]
        left.extend(member for member in bridges if member not in left)
        for member in endpoints:
            if member in seen:
                continue
            info = by_address.get(member)
            check_host_critical(member, address, info, named, errors, warnings)
            if vfio_mode == "iommufd" and member != address and member not in requested:
                if member not in companions:
                    companions.append(member)
                    warnings.append("%s stays on the host, bound to vfio-pci: it shares IOMMU group %s with %s, "
                                    "and iommufd hands the guest only the device itself" % (member, gid, address))
                continue
            seen.add(member)
            if info is None:
                warnings.append("%s (IOMMU group %s) is not in the topology; counted as a PCIe function"
                                % (member, gid))
            elif member != address and member not in requested:
                warnings.append("%s comes along with %s: they share IOMMU group %s" % (member, address, gid))
            passed.append({
                "address": member,
                "role": (info or {}).get("role"),
                "iommu_group": gid,
                "numa_node": (info or {}).get("numa_node"),
                "requested": member in requested,
                "member_of": None if member in requested else address,
                "needs_port": info is None or info.get("pcie") is not None,
            })
    return passed, left, [member for member in companions if member not in seen]


def host_clusters(passed: Sequence[Dict[str, Any]], by_address: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Passed functions grouped by the deepest bridge they share on the host (a switch or a root port)."""
    addresses = [dev["address"] for dev in passed]
    parent = {address: address for address in addresses}

    def find(address: str) -> str:
        while parent[address] != address:
            parent[address] = parent[parent[address]]
            address = parent[address]
        return address

    paths = {address: (by_address.get(address) or {}).get("path") or [address] for address in addresses}
    for index, left in enumerate(addresses):
        for right in addresses[index + 1:]:
            if common_bridge(paths[left], paths[right]) is not None:
                parent[find(left)] = find(right)
    port_types: Dict[str, Optional[str]] = dict(port_kinds([dev for dev in by_address.values() if dev.get("path")]))
    clusters: Dict[str, List[str]] = {}
    for address in addresses:
        clusters.setdefault(find(address), []).append(address)
    layout = []
    for members in clusters.values():
        bridge: Optional[str] = None
        if len(members) > 1:
            shared = paths[members[0]][:-1]
            for member in members[1:]:
                other = paths[member][:-1]
                depth = 0
                while depth < min(len(shared), len(other)) and shared[depth] == other[depth]:
                    depth += 1
                shared = shared[:depth]
            bridge = shared[-1] if shared else None
        roles = {address: (by_address.get(address) or {}).get("role") for address in members}
        layout.append({
            "bridge": bridge,
            "link": bridge_link(pcie_bridges_crossed([paths[member] for member in members], port_types))
            if len(members) > 1 else None,
            "gpus": [a for a in members if roles[a] == "gpu"],
            "nics": [a for a in members if roles[a] == "nic"],
            "other": [a for a in members if roles[a] not in ("gpu", "nic")],
        })
    return layout


def layout_warnings(mode: str, layout: Sequence[Dict[str, Any]], ports: int) -> List[str]:
    """What the guest will not see of the host's pairing, per mode."""
    warnings = []
    paired = [cluster for cluster in layout if cluster["gpus"] and cluster["nics"]]
    if mode == "flatten":
        for cluster in paired:
            warnings.append("flatten puts every device on its own root port: GPU %s and NIC %s share %s on the "
                            "host, which the guest will not see (GPUDirect RDMA is not detected); replicate keeps "
                            "them behind one switch" % (", ".join(cluster["gpus"]), ", ".join(cluster["nics"]),
                                                        cluster["bridge"]))
    elif len(layout) > 1 and ports:
        warnings.append("Kata builds one emulated switch with %d downstream ports for the whole pod: devices from "
                        "%d separate places of the host topology share it in the guest; give a pod the devices of "
                        "one place for a faithful replica" % (ports, len(layout)))
    return warnings


def plan_pcie(topology: Dict[str, Any], selectors: Sequence[str], mode: str,
              max_ports: int = KATA_MAX_PCIE_PORTS, vfio_mode: str = "group") -> Dict[str, Any]:
    """The guest's PCIe layout for ``selectors`` on this host: Kata settings, devices, ports, layout, errors.

    ``vfio_mode`` is how Kata gets the devices: ``group`` (legacy VFIO) or
    ``iommufd`` (VFIO cdev, what confidential guests need).
    """
    check_input(topology, mode, vfio_mode)
    errors: List[str] = []
    warnings: List[str] = []
    by_address = {dev["address"]: dev for dev in topology["devices"]}
    requested = select(topology, selectors, by_address, errors, warnings)
    if not requested and not errors:
        errors.append("no device selected: give PCI addresses or selectors (%s)"
                      % ", ".join(ROLE_SELECTORS + (PAIRED_NIC_SELECTOR,)))
    passed, left, companions = expand_groups(requested, topology, by_address, errors, warnings, vfio_mode,
                                             named_addresses(selectors, by_address))
    ports = sum(1 for dev in passed if dev["needs_port"])
    layout = host_clusters(passed, by_address)
    kind = "root" if mode == "flatten" else "switch"
    if ports > max_ports:
        counted = [dev["address"] for dev in passed if dev["needs_port"]]
        errors.append(
            "%d PCIe %s ports needed (%s) but Kata allows at most %d (each port reserves 4 KiB of the guest's "
            "64 KiB I/O space, and the runtime refuses to start the VM beyond that): give each pod fewer devices "
            "(split the GPUs over pods), leave out functions the workload does not use, or split shared IOMMU "
            "groups (ACS on the bridges above them) so that fewer companions come along%s"
            % (ports, kind, ", ".join(counted), max_ports,
               "; with iommufd (VFIO cdev) Kata counts only the devices themselves" if vfio_mode == "group" else ""))
    elif passed and not ports:
        warnings.append("none of the passed functions is a PCI Express function: no port is needed")
    warnings.extend(layout_warnings(mode, layout, ports))
    return {
        "mode": mode,
        "vfio_mode": vfio_mode,
        "cold_plug_vfio": "root-port" if mode == "flatten" else "switch-port",
        "pcie_root_port": ports if mode == "flatten" else 0,
        "pcie_switch_port": ports if mode == "replicate" else 0,
        "ports": ports,
        "max_ports": max_ports,
        "requested": requested,
        "devices": passed,
        "left_to_host": left,
        "kept_on_vfio": companions,
        "layout": layout,
        "errors": errors,
        "warnings": warnings,
    }


def plan_lines(plan: Dict[str, Any]) -> List[str]:
    """The plan for people, one line each (printed in check mode)."""
    kind = "root port" if plan["mode"] == "flatten" else "switch downstream port"
    by_iommufd = plan.get("vfio_mode") == "iommufd"
    lines = ["PCIe %s: cold_plug_vfio=%s pcie_root_port=%d pcie_switch_port=%d (%d of %d ports%s)"
             % (plan["mode"], plan["cold_plug_vfio"], plan["pcie_root_port"], plan["pcie_switch_port"],
                plan["ports"], plan["max_ports"], ", iommufd: the devices themselves" if by_iommufd else "")]
    for dev in plan["devices"]:
        how = "requested" if dev["requested"] else "group member of %s" % dev["member_of"]
        lines.append("  %s %-8s group %s, %s, %s" % (dev["address"], dev["role"] or "?", dev["iommu_group"], how,
                                                     "own %s" % kind if dev["needs_port"] else "no port (not PCIe)"))
    for cluster in plan["layout"]:
        if cluster["bridge"]:
            members = cluster["gpus"] + cluster["nics"] + cluster["other"]
            lines.append("  host: %s share %s (%s)" % (", ".join(members), cluster["bridge"], cluster["link"]))
    lines.extend("  bridge %s stays with the host" % address for address in plan["left_to_host"])
    lines.extend("  %s stays with the host on vfio-pci (its group goes to the pod by iommufd)" % address
                 for address in plan.get("kept_on_vfio") or [])
    lines.extend("  warning: %s" % text for text in plan["warnings"])
    lines.extend("  error: %s" % text for text in plan["errors"])
    return lines
