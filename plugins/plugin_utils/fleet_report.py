# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet report's JSON (issue 20 points 2 and 4; keys documented in docs/report.md).

Input per host: what the discovery role keeps (``discovery_pci`` from pci_topology_info, ``discovery_cc`` from
cc_host_info) and, when the report ran role validate's readiness part, its ``validate_checks``. Output: one
dict with stable keys, no time stamps inside host entries, so two reports of an unchanged host are equal, and
:func:`host_changes` compares a host with its entry in the previous report.
"""

from __future__ import annotations

import typing as t

SCHEMA = 1
# Host states, worst first: the summary table is grouped in this order.
STATES = ("failed", "not_ready", "ready_no_cc", "ready_cc")
ENDPOINT_ROLES = ("gpu", "nvswitch", "nic", "storage")
VERDICTS = ("vfio_ready", "snp_ready", "tdx_ready")
Host = t.Dict[str, t.Any]


def _group_viability(pci: t.Mapping[str, t.Any]) -> t.Dict[int, bool]:
    return {group["id"]: bool(group["viable"]) for group in pci.get("iommu_groups", [])}


def _pairs(pci: t.Mapping[str, t.Any]) -> t.Dict[str, t.Mapping[str, t.Any]]:
    """Each GPU's closest NIC (the first entry per GPU in gpu_nic_affinity) and how they connect."""
    pairs: t.Dict[str, t.Mapping[str, t.Any]] = {}
    for entry in pci.get("gpu_nic_affinity", []):
        pairs.setdefault(entry["gpu"], entry)
    return pairs


def _device(dev: t.Mapping[str, t.Any], viable: t.Mapping[int, bool]) -> Host:
    group = dev.get("iommu_group")
    return {"address": dev["address"], "device_id": "%s:%s" % (dev["vendor_id"], dev["device_id"]),
            "driver": dev.get("driver"), "iommu_group": group, "viable": group is not None and viable.get(group, False),
            "numa_node": dev.get("numa_node"),
            "host_critical": [item["kind"] for item in dev.get("host_critical") or []]}


def _gpu(dev: t.Mapping[str, t.Any], viable: t.Mapping[int, bool], pairs: t.Mapping[str, t.Any]) -> Host:
    entry = _device(dev, viable)
    pair = pairs.get(dev["address"])
    entry["nic"] = pair["nic"] if pair else None
    entry["link"] = pair["link"] if pair else None
    return entry


def _groups(pci: t.Mapping[str, t.Any]) -> t.List[Host]:
    """The IOMMU groups that hold a GPU, NVSwitch, NIC or storage function: the ones a passthrough plan cares for."""
    wanted = {dev.get("iommu_group") for dev in pci.get("devices", []) if dev["role"] in ENDPOINT_ROLES}
    return [{"id": group["id"], "devices": list(group["devices"]), "viable": bool(group["viable"]),
             "reasons": list(group.get("reasons", [])),
             "host_critical": [item["address"] for item in group.get("host_critical", [])]}
            for group in pci.get("iommu_groups", []) if group["id"] in wanted]


def drawn_functions(pci: t.Mapping[str, t.Any]) -> t.List[Host]:
    """The functions the picture shows: GPUs, NVSwitches, NIC and storage physical functions, host-critical ones,
    and every bridge on their paths from the root bus (other functions and SR-IOV VFs are counted, not drawn)."""
    devices = {dev["address"]: dev for dev in pci.get("devices", [])}
    wanted: t.Set[str] = set()
    for dev in devices.values():
        if (dev["role"] in ENDPOINT_ROLES or dev.get("host_critical")) and not dev.get("physfn"):
            wanted.update(dev.get("path") or [dev["address"]])
    return [{"address": a, "role": devices[a]["role"], "parent": devices[a].get("parent"),
             "device_id": "%s:%s" % (devices[a]["vendor_id"], devices[a]["device_id"]),
             "driver": devices[a].get("driver"), "iommu_group": devices[a].get("iommu_group"),
             "numa_node": devices[a].get("numa_node"),
             "port_type": (devices[a].get("pcie") or {}).get("port_type")}
            for a in sorted(wanted) if a in devices]


def validate_part(checks: t.Optional[t.Sequence[t.Mapping[str, t.Any]]]) -> t.Optional[Host]:
    """Role validate's verdict (``fail`` when one check failed) and its checks; None when it did not run."""
    if checks is None:
        return None
    items = [{"name": c["name"], "state": c["state"], "detail": c.get("detail", ""), "fix": c.get("fix", "")}
             for c in checks]
    return {"verdict": "fail" if any(c["state"] == "fail" for c in items) else "pass", "checks": items}


def host_state(entry: t.Mapping[str, t.Any]) -> str:
    """failed (no data), not_ready (vfio_ready false, a GPU in a group that cannot be passed through, or a failed
    validate check), ready_cc (also SEV-SNP or TDX ready), else ready_no_cc."""
    if entry.get("failure"):
        return "failed"
    cc = entry["cc"]
    validate = entry.get("validate")
    if (not cc["vfio_ready"] or any(not gpu["viable"] for gpu in entry["gpus"])
            or (validate and validate["verdict"] == "fail")):
        return "not_ready"
    return "ready_cc" if cc["snp_ready"] or cc["tdx_ready"] else "ready_no_cc"


def host_entry(pci: t.Optional[t.Mapping[str, t.Any]], cc: t.Optional[t.Mapping[str, t.Any]],
               checks: t.Optional[t.Sequence[t.Mapping[str, t.Any]]] = None, failure: str = "") -> Host:
    """One host's entry; ``failure`` (or no discovery data) makes a ``failed`` entry that says why."""
    if not pci or not cc:
        return {"state": "failed", "failure": failure or "no discovery data (the host failed or was unreachable)",
                "gpus": [], "nvswitches": [], "nics": [], "iommu_groups": [], "host_critical": [], "cc": None,
                "validate": None, "prepare_would_change": [], "counts": None, "pcie_tree": []}
    viable = _group_viability(pci)
    pairs = _pairs(pci)
    devices = pci.get("devices", [])
    physical = [dev for dev in devices if not dev.get("physfn")]
    verdicts = cc["verdicts"]
    validate = validate_part(checks)
    entry: Host = {
        "failure": "",
        "gpus": [_gpu(dev, viable, pairs) for dev in devices if dev["role"] == "gpu"],
        "nvswitches": [_device(dev, viable) for dev in devices if dev["role"] == "nvswitch"],
        "nics": [_device(dev, viable) for dev in physical if dev["role"] == "nic"],
        "iommu_groups": _groups(pci),
        "host_critical": [{"address": dev["address"], "kind": item["kind"], "reason": item["reason"]}
                          for dev in devices for item in dev.get("host_critical") or []],
        "cc": {"iommu_enabled": bool(cc["iommu"]["enabled"]),
               **{name: bool(verdicts[name]) for name in VERDICTS},
               "reasons": {name: list(verdicts[name + "_reasons"]) for name in VERDICTS}},
        "validate": validate,
        "prepare_would_change": [{"check": c["name"], "detail": c["detail"], "fix": c["fix"]}
                                 for c in (validate or {}).get("checks", []) if c["state"] == "fail"],
        "counts": dict(pci.get("summary", {})),
        "pcie_tree": drawn_functions(pci),
    }
    entry["state"] = host_state(entry)
    return entry


def _by_address(items: t.Iterable[t.Mapping[str, t.Any]]) -> t.Dict[str, t.Mapping[str, t.Any]]:
    return {item["address"]: item for item in items}


def host_changes(before: t.Optional[t.Mapping[str, t.Any]], now: t.Mapping[str, t.Any]) -> t.List[Host]:
    """What changed on a host since its previous entry: ``{kind, detail}`` each, empty when nothing did."""
    if before is None:
        return [{"kind": "host_added", "detail": "not in the previous report"}]
    changes: t.List[Host] = []
    old_gpus, new_gpus = _by_address(before.get("gpus", [])), _by_address(now.get("gpus", []))
    changes += [{"kind": "gpu_added", "detail": "GPU %s (%s)" % (a, new_gpus[a]["device_id"])}
                for a in sorted(set(new_gpus) - set(old_gpus))]
    changes += [{"kind": "gpu_removed", "detail": "GPU %s (%s)" % (a, old_gpus[a]["device_id"])}
                for a in sorted(set(old_gpus) - set(new_gpus))]
    changes += _viability_changes(before, now)
    changes += _verdict_changes(before, now)
    return changes


def _viability_changes(before: t.Mapping[str, t.Any], now: t.Mapping[str, t.Any]) -> t.List[Host]:
    """GPUs and NVSwitches on both reports whose IOMMU group's viability flipped (a group's number may change
    with the group: the device is what stays)."""
    changes: t.List[Host] = []
    groups = {g["id"]: g for g in now.get("iommu_groups", [])}
    for kind in ("gpus", "nvswitches"):
        old = _by_address(before.get(kind, []))
        for dev in now.get(kind, []):
            if dev["address"] not in old or old[dev["address"]]["viable"] == dev["viable"]:
                continue
            group = groups.get(dev["iommu_group"], {"devices": [], "reasons": []})
            changes.append({"kind": "group_now_viable" if dev["viable"] else "group_no_longer_viable",
                            "detail": "%s %s: IOMMU group %s (%s)%s" % (
                                kind[:-1].replace("gpu", "GPU").replace("nvswitch", "NVSwitch"), dev["address"],
                                dev["iommu_group"], ", ".join(group["devices"]),
                                ": " + "; ".join(group["reasons"]) if group["reasons"] else "")})
    return changes


def _verdict(entry: t.Mapping[str, t.Any], name: str) -> t.Optional[t.Any]:
    if name == "validate":
        return (entry.get("validate") or {}).get("verdict")
    if name == "state":
        return entry.get("state")
    return (entry.get("cc") or {}).get(name)


def _verdict_changes(before: t.Mapping[str, t.Any], now: t.Mapping[str, t.Any]) -> t.List[Host]:
    changes: t.List[Host] = []
    for name in ("vfio_ready", "snp_ready", "tdx_ready", "validate", "state"):
        old, new = _verdict(before, name), _verdict(now, name)
        if old is not None and new is not None and old != new:
            changes.append({"kind": "verdict_flipped" if name != "state" else "state_changed",
                            "detail": "%s: %s -> %s" % (name, _word(old), _word(new))})
    return changes


def _word(value: t.Any) -> str:
    return ("yes" if value else "no") if isinstance(value, bool) else str(value)


def fleet_report(hosts: t.Mapping[str, Host], previous: t.Optional[t.Mapping[str, t.Any]] = None,
                 generated: str = "", previous_name: str = "") -> Host:
    """The whole report: host entries with their changes since ``previous`` (a report of this schema)."""
    before = (previous or {}).get("hosts", {}) if previous else None
    entries: Host = {}
    for name in sorted(hosts):
        entry = dict(hosts[name])
        entry["changes"] = host_changes(before.get(name), entry) if before is not None else []
        entries[name] = entry
    removed = sorted(set(before or {}) - set(hosts))
    states = {state: sorted(n for n, e in entries.items() if e["state"] == state) for state in STATES}
    return {
        "schema": SCHEMA,
        "generated": generated,
        "previous": {"generated": previous.get("generated", ""), "name": previous_name} if previous else None,
        "summary": {"hosts": len(entries), **{state: len(names) for state, names in states.items()},
                    "changed": sum(1 for e in entries.values() if e["changes"]), "removed": len(removed)},
        "hosts": entries,
        "removed_hosts": removed,
    }
