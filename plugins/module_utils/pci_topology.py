# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A host's PCI topology as data: functions, bridge paths, IOMMU groups, roles.

One pass over ``/sys/bus/pci/devices`` (through :class:`HostRoot`, so any
root prefix works): for each function the sysfs path gives its bridge path,
``config`` gives identity and capabilities, and the ``driver``,
``iommu_group``, ``physfn`` and ``numa_node`` attributes give the rest.
IOMMU groups are then judged for passthrough, and GPUs are paired with the
NICs closest to them.

Standard library only: this runs on target hosts with Python >= 3.8.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Set, Tuple, TypeVar

from ansible_collections.confidential_gpu.host.plugins.module_utils.acs_quirks import reads_header
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_config import (
    HEADER_SIZE,
    LEGACY_SIZE,
    ConfigSpace,
    OnDemandConfigSpace,
    decode_config,
    decode_model_config,
    extended_capabilities,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_device import (
    ADDRESS_RE,
    Selector,
    device_role,
    function_kind,
    group_verdict,
    is_bridge,
    members_by_group,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot

T = TypeVar("T")

PCI_DEVICES = "/sys/bus/pci/devices"
PCI_DRIVERS = "/sys/bus/pci/drivers"
PROC_CMDLINE = "/proc/cmdline"
PROC_OSRELEASE = "/proc/sys/kernel/osrelease"
ACPI_IVRS = "/sys/firmware/acpi/tables/IVRS"
HOST_BRIDGE_DIR_RE = re.compile(r"^pci[0-9a-f]{4,}:[0-9a-f]{2}$")


def split_sysfs_path(real_path: str) -> Tuple[List[str], Optional[str]]:
    """PCI addresses in a device's sysfs path (root port first) and its ``pciDDDD:BB`` root complex."""
    chain: List[str] = []
    root_complex = None
    for part in real_path.split("/"):
        if len(part) >= 12 and part[-2] == "." and ADDRESS_RE.match(part):
            chain.append(part)
        elif root_complex is None and part.startswith("pci") and HOST_BRIDGE_DIR_RE.match(part):
            root_complex = part
    return chain, root_complex


def bound_drivers(host: HostRoot) -> Dict[str, str]:
    """Address -> driver name, from the drivers' directories (one listing per driver, not a link per function)."""
    drivers: Dict[str, str] = {}
    for name in host.listdir(PCI_DRIVERS):
        for entry in host.listdir("%s/%s" % (PCI_DRIVERS, name)):
            if ":" in entry and ADDRESS_RE.match(entry):
                drivers[entry] = name
    return drivers


def read_config_space(host: HostRoot, address: str, use: Callable[[ConfigSpace], T]) -> T:
    """``use`` applied to the function's config space, read on demand from sysfs (OnDemandConfigSpace).

    When ``config`` cannot be opened or read, ``use`` gets an empty space and
    the host a warning naming the file.
    """
    config_path = "%s/%s/config" % (PCI_DEVICES, address)
    try:
        fd = os.open(host.path(config_path), os.O_RDONLY)
        try:
            return use(OnDemandConfigSpace(fd))
        finally:
            os.close(fd)
    except OSError as error:
        host.warn("%s: cannot read %s (%s); identity taken from the sysfs attributes, capabilities "
                  "not decoded" % (address, config_path, error.strerror or error))
        return use(ConfigSpace(b""))


def config_with_capability_headers(cfg: ConfigSpace) -> bytes:
    """The readable config bytes, with every extended capability header (and decoded registers) loaded."""
    extended_capabilities(cfg)
    return bytes(cfg.data[:cfg.size])


def read_config(host: HostRoot, address: str) -> bytes:
    """The function's readable config space: all 256 bytes of the header and capabilities (64 for a
    non-root reader), then 4096 with the extended capability list in place and the rest zero."""
    return read_config_space(host, address, config_with_capability_headers)


def config_size(host: HostRoot, address: str, cache: Dict[str, bytes]) -> int:
    if address not in cache:
        cache[address] = read_config(host, address)
    return len(cache[address])


def hex_id(value: Optional[str]) -> int:
    return int(value, 16) if value else -1


def read_host_facts(host: HostRoot, devices: Sequence[Dict[str, Any]],
                    below: Optional[Sequence[Dict[str, Any]]] = None) -> Dict[str, Any]:
    """What the plan reads from the host besides the topology (``devices``), for the bridges above ``below``
    (default: every device): each config space's readable size where the ACS capability is missing (to tell
    "absent" from "unreadable"), the multi-function bit of the bridges whose kernel quirk reads the header,
    whether the ACPI IVRS table exists, the kernel command line and release.  The plan itself
    (pcie_acs.plan_from_facts) reads nothing, so it runs as well on discovery's facts of the same run."""
    by_address = {dev["address"]: dev for dev in devices}
    configs: Dict[str, bytes] = {}
    sizes: Dict[str, int] = {}
    multifunction: Dict[str, bool] = {}
    paths = (dev.get("path") or [] for dev in (devices if below is None else below))
    for address in sorted({address for path in paths for address in path[:-1]}):
        bridge = by_address.get(address, {})
        if not bridge.get("acs"):
            sizes[address] = config_size(host, address, configs)
        if reads_header(hex_id(bridge.get("vendor_id")), hex_id(bridge.get("device_id"))):
            config_size(host, address, configs)
            header = configs[address][0x0E:0x0F]
            multifunction[address] = bool(header and header[0] & 0x80)
    return {"config_sizes": sizes, "multifunction": multifunction, "ivrs": host.exists(ACPI_IVRS),
            "cmdline": host.read_text(PROC_CMDLINE), "os_release": host.read_text(PROC_OSRELEASE)}


def warn_short_configs(host: HostRoot, devices: Sequence[Dict[str, Any]], sizes: Dict[str, int]) -> None:
    """One warning for all functions whose config space came back cut short (a non-root reader gets 64 bytes)."""
    short = [dev["address"] for dev in devices if 0 < sizes[dev["address"]] < LEGACY_SIZE]
    if not short:
        return
    shown = ", ".join("%s (%d bytes)" % (address, sizes[address]) for address in short[:4])
    more = " and %d more" % (len(short) - 4) if len(short) > 4 else ""
    host.warn("config space of %d function(s) readable only in part (not root?): %s%s; their capabilities "
              "(PCIe, ACS, ATS, SR-IOV) are not decoded: run the module as root" % (len(short), shown, more))


def hex_attribute(host: HostRoot, address: str, name: str, digits: int) -> Optional[str]:
    """A 0x-prefixed hex sysfs attribute (vendor, class...) as bare lower-case hex."""
    path = "%s/%s/%s" % (PCI_DEVICES, address, name)
    text = host.read_text(path)
    if text is None:
        return None
    try:
        return "%0*x" % (digits, int(text, 16))
    except ValueError:
        host.warn("%s: %s holds %r, not a hex number; ignored" % (address, path, text[:40]))
        return None


def identity_from_attributes(host: HostRoot, address: str, info: Dict[str, Any]) -> None:
    """Fill identity fields the config bytes did not provide from sysfs attributes."""
    for key, name, digits in (
        ("vendor_id", "vendor", 4),
        ("device_id", "device", 4),
        ("class_id", "class", 6),
        ("subsystem_vendor_id", "subsystem_vendor", 4),
        ("subsystem_device_id", "subsystem_device", 4),
    ):
        if info.get(key) is None:
            info[key] = hex_attribute(host, address, name, digits)


def numa_node_of(host: HostRoot, address: str) -> Optional[int]:
    """NUMA node of the function; None when the platform says -1 (unknown) or the file is bad."""
    path = "%s/%s/numa_node" % (PCI_DEVICES, address)
    try:
        fd = os.open(host.path(path), os.O_RDONLY)
        try:
            raw = os.read(fd, 64)
        finally:
            os.close(fd)
    except OSError:
        return None
    try:
        value = int(raw)
    except ValueError:
        host.warn("%s: %s holds %r, not an integer; ignored" % (address, path, raw[:40].decode("utf-8", "replace")))
        return None
    return value if value >= 0 else None


def device_sysfs_path(host: HostRoot, address: str) -> str:
    """The function's place under /sys/devices.

    The kernel's /sys/bus/pci/devices entries are symlinks like
    ``../../../devices/pci0000:00/0000:00:01.0/0000:01:00.0``: one readlink
    gives the whole bridge path, where resolving it would stat every level.
    """
    link = host.readlink("%s/%s" % (PCI_DEVICES, address))
    if link is not None and "/devices/" in link and ".." not in link.split("/devices/", 1)[1]:
        return "/sys/devices/" + link.split("/devices/", 1)[1]
    return host.realpath("%s/%s" % (PCI_DEVICES, address))


def link_name(path: str) -> Optional[str]:
    """Last component of a symlink's target (a driver's or group's name), None when absent."""
    try:
        return os.readlink(path).rsplit("/", 1)[-1]
    except OSError:
        return None


def read_function(host: HostRoot, address: str, drivers: Dict[str, str], capabilities: bool = True) -> Dict[str, Any]:
    """Everything one function tells about itself, in the module's device format.

    With ``capabilities`` false the capabilities the model does not need are
    left ``None`` (decode_config). Keys starting with ``_`` are working data for the topology pass and are
    removed before the result is returned.  This runs once per function, so
    it reads with plain ``os`` calls on precomputed paths.
    """
    base = host.path("%s/%s" % (PCI_DEVICES, address))
    real_path = device_sysfs_path(host, address)
    chain, root_complex = split_sysfs_path(real_path)
    chain = chain or [address]
    info = read_config_space(host, address, decode_config if capabilities else decode_model_config)
    config_size = info["config_size"]
    short = config_size < LEGACY_SIZE
    if config_size < HEADER_SIZE:
        identity_from_attributes(host, address, info)
    group = link_name(base + "/iommu_group")
    device: Dict[str, Any] = {
        "address": address,
        "vendor_id": info["vendor_id"],
        "device_id": info["device_id"],
        "class_id": info["class_id"],
        "subsystem_vendor_id": info["subsystem_vendor_id"],
        "subsystem_device_id": info["subsystem_device_id"],
        "driver": drivers.get(address),
        "iommu_group": int(group) if group is not None and group.isdigit() else None,
        "numa_node": numa_node_of(host, address),
        "parent": chain[-2] if len(chain) > 1 else None,
        "path": chain,
        "physfn": link_name(base + "/physfn") if short else None,
        "role": device_role(info["vendor_id"], info["class_id"]),
        "kind": None,
        "pcie": info["pcie"],
        "acs": info["acs"],
        "ats": info["ats"],
        "pri": info["pri"],
        "pasid": info["pasid"],
        "sriov": info["sriov"],
        "ari": info["ari"],
        "resizable_bar": info["resizable_bar"],
        "_header_type": info["header_type"],
        "_root_complex": root_complex,
        "_config_size": config_size,
    }
    return device


def virtual_function_addresses(pf: Dict[str, Any]) -> List[str]:
    """Addresses of a PF's enabled VFs, from its SR-IOV capability (as the kernel computes them)."""
    sriov = pf["sriov"]
    if not sriov or not sriov["vf_enabled"] or not sriov["num_vfs"] or sriov["vf_offset"] is None:
        return []
    domain, bus, slot = pf["address"].split(":")
    device, function = slot.split(".")
    routing_id = (int(bus, 16) << 8) | (int(device, 16) << 3) | int(function)
    addresses = []
    for index in range(sriov["num_vfs"]):
        vf_id = routing_id + sriov["vf_offset"] + index * (sriov["vf_stride"] or 0)
        addresses.append("%s:%02x:%02x.%d" % (domain, (vf_id >> 8) & 0xFF, (vf_id >> 3) & 0x1F, vf_id & 7))
    return addresses


def link_virtual_functions(host: HostRoot, devices: Sequence[Dict[str, Any]]) -> None:
    """Set ``physfn`` of VFs and the IDs their config space hides.

    A VF's Vendor and Device ID registers read 0xffff (PCIe SR-IOV); the
    kernel takes them from the PF (vendor, SR-IOV VF Device ID).  Doing the
    same from the PFs' capabilities costs no extra file reads.
    """
    by_address = {dev["address"]: dev for dev in devices}
    for pf in devices:
        for vf_address in virtual_function_addresses(pf):
            vf = by_address.get(vf_address)
            if vf is None:
                continue
            vf["physfn"] = pf["address"]
            if vf["vendor_id"] in (None, "ffff"):
                vf["vendor_id"], vf["device_id"] = pf["vendor_id"], pf["sriov"]["vf_device_id"]
                vf["role"] = device_role(vf["vendor_id"], vf["class_id"])
    for dev in devices:
        if dev["vendor_id"] == "ffff":
            dev["vendor_id"] = dev["device_id"] = None
            identity_from_attributes(host, dev["address"], dev)
            dev["physfn"] = link_name(host.path("%s/%s/physfn" % (PCI_DEVICES, dev["address"])))
            dev["role"] = device_role(dev["vendor_id"], dev["class_id"])


def read_functions(host: HostRoot, capabilities: bool = True) -> List[Dict[str, Any]]:
    """Every PCI function of the host, sorted by address (``capabilities``: as read_function)."""
    drivers = bound_drivers(host)
    devices = [read_function(host, address, drivers, capabilities) for address in host.listdir_required(PCI_DEVICES)
               if ADDRESS_RE.match(address)]
    link_virtual_functions(host, devices)
    for dev in devices:
        dev["kind"] = function_kind(dev["class_id"], dev.pop("_header_type"), dev["physfn"])
    return devices


def build_groups(devices: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """IOMMU groups with their members and passthrough verdicts, by group id."""
    members = members_by_group(devices)
    return [dict({"id": gid, "devices": [dev["address"] for dev in members[gid]]}, **group_verdict(members[gid]))
            for gid in sorted(members)]


def common_bridge(path_a: Sequence[str], path_b: Sequence[str]) -> Optional[str]:
    """Deepest bridge both functions sit below (None when they share none)."""
    shared = None
    for left, right in zip(path_a[:-1], path_b[:-1]):
        if left != right:
            break
        shared = left
    return shared


# nvidia-smi topo's link classes, closest first.
LINK_ORDER = ("PIX", "PXB", "PHB", "NODE", "SYS")


def port_kinds(devices: Sequence[Dict[str, Any]]) -> Dict[str, str]:
    """Address -> PCIe port type of every bridge, inferred from the hierarchy where config space did not say.

    Without a readable PCIe capability (a non-root reader sees 64 bytes) the
    kind follows from the position, as PCIe builds it: a bridge on a root bus
    is a root port, one below an upstream port a downstream port, any other an
    upstream port.
    """
    bridges = [dev for dev in devices if is_bridge(dev)]
    kinds: Dict[str, str] = {}
    for dev in bridges:
        known = (dev["pcie"] or {}).get("port_type")
        if known:
            kinds[dev["address"]] = known
    for dev in sorted(bridges, key=lambda dev: len(dev["path"])):
        if dev["address"] in kinds:
            continue
        parent = dev["path"][-2] if len(dev["path"]) > 1 else None
        if parent is None:
            kinds[dev["address"]] = "root_port"
        else:
            kinds[dev["address"]] = "downstream_port" if kinds.get(parent) == "upstream_port" else "upstream_port"
    return kinds


def pcie_bridges_crossed(paths: Sequence[Sequence[str]], port_types: Dict[str, Optional[str]]) -> Optional[int]:
    """PCIe bridges that connect functions below their deepest shared bridge, as nvidia-smi counts them.

    nvidia-smi topo's legend: PIX "Connection traversing at most a single PCIe
    bridge", PXB "Connection traversing multiple PCIe bridges (without
    traversing the PCIe Host Bridge)"; NVML's nvmlGpuTopologyLevel_t (nvml.h)
    says the same in switches: NVML_TOPOLOGY_SINGLE "all devices that only need
    traverse a single PCIe switch", NVML_TOPOLOGY_MULTIPLE "all devices that
    need not traverse a host bridge".  So a switch counts once: its downstream
    ports belong to the switch of their upstream port; a root port counts as
    one bridge.  None when the functions share no bridge.
    """
    shared: List[str] = list(paths[0][:-1]) if paths else []
    for path in paths[1:]:
        depth = 0
        while depth < min(len(shared), len(path) - 1) and shared[depth] == path[depth]:
            depth += 1
        shared = shared[:depth]
    if not shared:
        return None
    start = len(shared) - 1
    bridges = set()
    for path in paths:
        for index in range(start, len(path) - 1):
            bridge, above = path[index], path[index - 1] if index > 0 else None
            if above is not None and port_types.get(bridge) == "downstream_port" \
                    and port_types.get(above) == "upstream_port":
                bridges.add(above)
            else:
                bridges.add(bridge)
    return len(bridges)


def bridge_link(crossed: Optional[int]) -> Optional[str]:
    """PIX for at most one PCIe bridge between functions, PXB for several; None when they share no bridge."""
    if crossed is None:
        return None
    return "PIX" if crossed <= 1 else "PXB"


def link_between(left: Dict[str, Any], right: Dict[str, Any], port_types: Dict[str, Optional[str]]) -> str:
    """nvidia-smi style link class of two functions (as read by read_functions): PIX, PXB, PHB, NODE or SYS."""
    below_bridge = bridge_link(pcie_bridges_crossed([left["path"], right["path"]], port_types))
    if below_bridge is not None:
        return below_bridge
    if left["_root_complex"] is not None and left["_root_complex"] == right["_root_complex"]:
        return "PHB"
    if left["numa_node"] is not None and left["numa_node"] == right["numa_node"]:
        return "NODE"
    return "SYS"


def gpu_nic_affinity(devices: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Every GPU paired with every NIC physical function, closest first."""
    gpus = [dev for dev in devices if dev["role"] == "gpu"]
    nics = [dev for dev in devices if dev["role"] == "nic" and dev["physfn"] is None]
    port_types: Dict[str, Optional[str]] = dict(port_kinds(devices))
    pairs: List[Dict[str, Any]] = []
    for gpu in gpus:
        ranked = []
        for nic in nics:
            bridge = common_bridge(gpu["path"], nic["path"])
            depth = gpu["path"].index(bridge) + 1 if bridge else 0
            hops = len(gpu["path"]) + len(nic["path"]) - 2 * depth - 1 if bridge else None
            ranked.append({
                "gpu": gpu["address"],
                "nic": nic["address"],
                "common_bridge": bridge,
                "bridges_between": hops,
                "link": link_between(gpu, nic, port_types),
                "same_numa_node": gpu["numa_node"] is not None and gpu["numa_node"] == nic["numa_node"],
            })
        ranked.sort(key=lambda pair: (LINK_ORDER.index(pair["link"]), pair["bridges_between"] or 0, pair["nic"]))
        pairs.extend(ranked)
    return pairs


def closest_nics(pairs: Sequence[Dict[str, Any]], gpu: str) -> List[str]:
    """The NICs that share the deepest bridge (or NUMA node) with a GPU."""
    mine = [pair for pair in pairs if pair["gpu"] == gpu]
    if not mine:
        return []
    best = (mine[0]["link"], mine[0]["bridges_between"])
    return [pair["nic"] for pair in mine if (pair["link"], pair["bridges_between"]) == best]


def read_topology(host: HostRoot, capabilities: bool = True, affinity: bool = True) -> Dict[str, Any]:
    """Functions, IOMMU groups and GPU-NIC affinity of the host below ``host.root``.

    A caller that returns neither the capabilities nor the affinity (pci_topology_info's ``gather_subset``) leaves
    them out: ``capabilities`` false decodes only what the model needs (read_function), ``affinity`` false gives
    no pairs and no ``closest_nics``.
    """
    devices = read_functions(host, capabilities)
    warn_short_configs(host, devices, {dev["address"]: dev["_config_size"] for dev in devices})
    groups = build_groups(devices)
    pairs = gpu_nic_affinity(devices) if affinity else []
    for dev in devices:
        if affinity and dev["role"] == "gpu":
            dev["closest_nics"] = closest_nics(pairs, dev["address"])
        del dev["_root_complex"], dev["_config_size"]
    return {"devices": devices, "iommu_groups": groups, "gpu_nic_affinity": pairs}


def filter_topology(topology: Dict[str, Any], selector: Selector) -> Dict[str, Any]:
    """Keep the selected devices, the groups they are in and the pairs they are part of."""
    if selector.empty():
        return topology
    wanted = selector.select(topology["devices"])
    chosen = {dev["address"] for dev in wanted}
    group_ids = {dev["iommu_group"] for dev in wanted}
    return {
        "devices": wanted,
        "iommu_groups": [group for group in topology["iommu_groups"] if group["id"] in group_ids],
        "gpu_nic_affinity": [pair for pair in topology["gpu_nic_affinity"]
                             if pair["gpu"] in chosen or pair["nic"] in chosen],
    }


# What pci_topology_info's gather_subset chooses from, read as ansible.builtin.setup reads its gather_subset
# (ansible-core 2.19.14: lib/ansible/modules/setup.py, module_utils/facts/collector.py get_collector_names):
# names add to the minimum (the functions' identity and place, the summary), "all" adds every subset, "!name"
# removes one, "!all" every one, a name given explicitly stays, and exclusions alone start from all.
SUBSETS = ("capabilities", "host_critical", "iommu_groups", "gpu_nic_affinity")
# Parts outside "all", returned only when named: cc_host (cc_host_info's facts, so that a caller needing both reads
# the host in one module run; each module run costs a Python start and its payload, about 0.25 CPU s) and acs
# (what pcie_acs reads besides the topology, so that role pcie_acs plans from discovery's result).
NAMED_ONLY_SUBSETS = ("cc_host", "acs")
CAPABILITY_KEYS = ("pcie", "acs", "ats", "pri", "pasid", "sriov", "ari", "resizable_bar")
# Capabilities returned only when the function has them (null values are not materialised).
ABSENT_WHEN_NULL = ("acs", "ats", "pri", "pasid", "ari", "resizable_bar")


def gathered_subsets(requested: Sequence[str]) -> FrozenSet[str]:
    """The subsets a gather_subset list asks for; ValueError names a value that is none."""
    added: Set[str] = set()
    removed: Set[str] = set()
    named: Set[str] = set()
    for value in requested:
        name = value[1:] if value.startswith("!") else value
        if name not in SUBSETS + NAMED_ONLY_SUBSETS + ("all", "min"):
            raise ValueError("gather_subset: %r is not a subset; accepted: all, min, %s (each also as !name)"
                             % (value, ", ".join(SUBSETS + NAMED_ONLY_SUBSETS)))
        names = set(SUBSETS) if name == "all" else set() if name == "min" else {name}
        (removed if value.startswith("!") else added).update(names)
        named.update(names if not value.startswith("!") and name != "all" else ())
    if all(value.startswith("!") for value in requested):
        added.update(SUBSETS)
    return frozenset((added - removed) | named)


def unshape_devices(devices: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Devices of a result gathered with V(capabilities), as :func:`read_topology` has them (null capabilities
    back), for planning code that runs on the controller from a module's result."""
    return [dict({key: None for key in ABSENT_WHEN_NULL}, **dev) for dev in devices]


def shape_devices(devices: Sequence[Dict[str, Any]], subsets: FrozenSet[str]) -> None:
    """Leave out of each device what was not gathered, and the capabilities it does not have."""
    for dev in devices:
        for key in CAPABILITY_KEYS if "capabilities" not in subsets else ABSENT_WHEN_NULL:
            if key in dev and (dev[key] is None or "capabilities" not in subsets):
                del dev[key]
        if "gpu_nic_affinity" not in subsets:
            dev.pop("closest_nics", None)
        if "host_critical" not in subsets:
            dev.pop("host_critical", None)
