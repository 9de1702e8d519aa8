# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for planning Kata runtime classes from registered facts (documented in the .yml files beside)."""

from __future__ import annotations

import math
import posixpath
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ansible.errors import AnsibleFilterError

# The code behind these filters is imported when a filter runs, not when this file loads: ansible-core loads every
# filter file of the collection in each worker process whenever any collection filter is used (docs/design.md,
# "Controller code").


# Release asset names, from kata-containers tools/packaging/release/release.sh (_upload_kata_static_tarball,
# _upload_kata_go_static_tarball): kata-static-<v>-<arch>.tar.xz up to 3.20.0 (line 167), .tar.zst from 3.21.0
# (line 167); from 4.1.0 kata-static holds runtime-rs and kata-go-static-<v>-<arch>.tar.zst the Go runtime
# (lines 201 and 215; tools/packaging/kata-deploy/local-build/kata-release-tarball-inputs.sh puts shim-v2-go only
# into kata-go-static). 4.0.0 still ships one kata-static with both runtimes.
ZSTD_SINCE = (3, 21, 0)
GO_STATIC_SINCE = (4, 1, 0)
RELEASE_ARCHES = ("amd64", "arm64", "s390x", "ppc64le")

# Kata Go runtime defaults when a configuration leaves the guest size out or too small
# (src/runtime/pkg/katautils/config.go defaultMemSz()/defaultVCPUs(), config-settings.go.in, 4.1.0):
# default_memory below MinHypervisorMemory (256 MiB, virtcontainers/hypervisor.go) means 2048 MiB,
# default_vcpus 0 means 1.
KATA_DEFAULT_MEMORY_MIB = 2048
KATA_MIN_MEMORY_MIB = 256
KATA_DEFAULT_VCPUS = 1
# cold_plug_vfio values that put devices on ports at boot (no-port: none).
VFIO_PORTS = ("root-port", "switch-port", "bridge-port")
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|K|M|G|T)?\s*$")
_MEMORY_FACTOR = {None: 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
                  "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_CPU = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m)?\s*$")


def kata_pcie_plan(topology: Dict[str, Any], devices: Sequence[str] = ("gpu",),
                   mode: str = "flatten", vfio_mode: str = "group") -> Dict[str, Any]:
    """The PCIe plan of confidential_gpu.host.kata_runtime_config, with its printable lines under ``lines``."""
    from ansible_collections.confidential_gpu.host.plugins.module_utils.kata_pcie_plan import (
        PlanError,
        plan_lines,
        plan_pcie,
    )
    if isinstance(devices, str):
        devices = [devices]
    try:
        plan = plan_pcie(topology, list(devices), mode, vfio_mode=vfio_mode)
    except PlanError as error:
        raise AnsibleFilterError("kata_pcie_plan: %s" % error) from None
    plan["lines"] = plan_lines(plan)
    return plan


def kata_shims_for_host(cc_host: Dict[str, Any], gpu: bool = True) -> List[str]:
    """Kata runtime classes that fit a host's readiness verdicts (result of cc_host_info)."""
    from ansible_collections.confidential_gpu.host.plugins.plugin_utils.kata_model import shims_for_host
    if not isinstance(cc_host, dict):
        raise AnsibleFilterError("kata_shims_for_host: expects the registered result of "
                                 "confidential_gpu.host.cc_host_info, got %s" % type(cc_host).__name__)
    return shims_for_host(cc_host, gpu=bool(gpu))


# --- release assets ----------------------------------------------------------------------------------------

def kata_release_assets(version: str, arch: str = "amd64", shims: Sequence[str] = ()) -> List[str]:
    """The release files a static install of ``version`` needs for ``shims`` (Go shims when none are named)."""
    from ansible_collections.confidential_gpu.host.plugins.plugin_utils.kata_model import (
        parse_version,
        runs_on_runtime_rs,
    )
    parsed = parse_version(version)
    if parsed is None or not re.match(r"^\s*v?\d+\.\d+\.\d+\s*$", str(version)):
        raise AnsibleFilterError("kata_release_assets: kata_version %r is not a release number like 3.32.0" % version)
    if arch not in RELEASE_ARCHES:
        raise AnsibleFilterError("kata_release_assets: kata_release_arch %r is not one of Kata's release "
                                 "architectures (%s)" % (arch, ", ".join(RELEASE_ARCHES)))
    number = "%d.%d.%d" % parsed
    suffix = "tar.zst" if parsed >= ZSTD_SINCE else "tar.xz"
    if parsed < GO_STATIC_SINCE:
        return ["kata-static-%s-%s.%s" % (number, arch, suffix)]
    names = list(shims or [])
    rust = [shim for shim in names if runs_on_runtime_rs(shim)]
    assets = []
    if len(rust) < len(names) or not names:
        assets.append("kata-go-static-%s-%s.%s" % (number, arch, suffix))
    if rust:
        assets.append("kata-static-%s-%s.%s" % (number, arch, suffix))
    return assets


def kata_release_checksums(assets: Sequence[str], sha256: Union[str, Mapping[str, str]]) -> Dict[str, str]:
    """The sha256 (64 lower-case hex digits) of each asset: one string for one asset, or a mapping by name."""
    if isinstance(sha256, str):
        if len(assets) != 1:
            raise AnsibleFilterError(
                "kata_release_sha256 is one checksum but this release needs %d files (%s): give a mapping of "
                "file name to sha256, as published with the release" % (len(assets), ", ".join(assets)))
        given = {assets[0]: sha256}
    elif isinstance(sha256, Mapping):
        given = {str(name): str(value) for name, value in sha256.items()}
    else:
        raise AnsibleFilterError("kata_release_sha256 must be a sha256 or a mapping of file name to sha256")
    checksums = {}
    for asset in assets:
        value = re.sub(r"^sha256:", "", given.get(asset, "")).lower()
        if not re.match(r"^[0-9a-f]{64}$", value):
            raise AnsibleFilterError(
                "kata_release_sha256 has no sha256 for %s (64 hex digits, as published with the release); "
                "given: %s" % (asset, ", ".join("%s=%s" % item for item in sorted(given.items())) or "nothing"))
        checksums[asset] = value
    return checksums


# --- RuntimeClass overhead ---------------------------------------------------------------------------------

def memory_mib(quantity: Any) -> float:
    """A Kubernetes memory quantity (160Mi, 1Gi, 512M, bytes) in MiB."""
    match = _MEMORY.match(str(quantity))
    if not match:
        raise AnsibleFilterError("memory %r is not a Kubernetes quantity like 320Mi or 1Gi" % (quantity,))
    return float(match.group(1)) * _MEMORY_FACTOR[match.group(2)] / 2**20


def cpu_millis(quantity: Any) -> int:
    """A Kubernetes cpu quantity (250m, 1, 0.5) in millicores."""
    match = _CPU.match(str(quantity))
    if not match:
        raise AnsibleFilterError("cpu %r is not a Kubernetes quantity like 250m or 1" % (quantity,))
    value = float(match.group(1))
    return int(round(value if match.group(2) else value * 1000))


def guest_size(merged: Dict[str, Any], where: str) -> Tuple[Optional[int], Optional[float], str]:
    """(memory MiB, vCPUs, why) of a guest whose memory is fixed at boot, or (None, None, why) otherwise."""
    tables: Dict[str, Any] = merged["hypervisor"] if isinstance(merged.get("hypervisor"), dict) else {}
    if len(tables) != 1:
        raise AnsibleFilterError("%s should hold exactly one [hypervisor.<name>] table, found %s"
                                 % (where, ", ".join(sorted(tables)) or "none"))
    hypervisor = next(iter(tables.values()))
    confidential = hypervisor.get("confidential_guest") is True
    cold_plug = str(hypervisor.get("cold_plug_vfio", "no-port"))
    if not confidential and cold_plug not in VFIO_PORTS:
        return None, None, "guest memory grows with the pod's requests"
    memory = int(hypervisor.get("default_memory") or 0)
    if memory < KATA_MIN_MEMORY_MIB:
        memory = KATA_DEFAULT_MEMORY_MIB
    vcpus = float(hypervisor.get("default_vcpus") or 0)
    if vcpus < 0:
        raise AnsibleFilterError("%s: default_vcpus = %s means 'every host CPU' to Kata; give the number, or set "
                                 "kata_runtimeclass_overhead_by_shim for this class" % (where, vcpus))
    vcpus = vcpus or KATA_DEFAULT_VCPUS
    why = "confidential guest (no memory hot-plug)" if confidential else "VFIO devices cold-plugged (guest RAM pinned)"
    return memory, vcpus, why


def kata_pod_overhead(files: Mapping[str, str], config: str, vmm: Mapping[str, Any]) -> Dict[str, Any]:
    """``overhead.podFixed`` of a RuntimeClass from the Kata configuration its handler loads.

    ``files`` maps paths to their text: ``config`` (the handler's configuration, links resolved) and the files of
    the config.d/ beside it, merged over it in name order as the Go runtime merges them. A guest whose memory is
    fixed at boot (a confidential guest, or VFIO devices cold-plugged) adds its default_memory and default_vcpus to
    ``vmm`` (the VMM's own share); any other guest takes ``vmm`` as it is. Returns {"podFixed": {...}, "why": "..."}.
    """
    from ansible_collections.confidential_gpu.host.plugins.plugin_utils.kata_model import (
        dropins_beside,
        effective_config,
        parse,
    )
    from ansible_collections.confidential_gpu.host.plugins.plugin_utils.toml_file import TomlError
    if config not in files:
        raise AnsibleFilterError("kata_pod_overhead: %s is not among the files read" % config)
    vmm = dict(vmm or {})
    dropins = dropins_beside(files, config)
    try:
        base = parse(files[config], config)
        layers = [(name, parse(text, "%s/config.d/%s" % (posixpath.dirname(config), name))) for name, text in dropins]
    except TomlError as error:
        raise AnsibleFilterError("kata_pod_overhead: %s" % error) from None
    memory, vcpus, why = guest_size(effective_config(base, layers), config)
    if memory is None or vcpus is None:
        return {"podFixed": vmm, "why": why}
    mib = memory + memory_mib(vmm.get("memory", 0))
    millis = int(round(vcpus * 1000)) + cpu_millis(vmm.get("cpu", 0))
    fixed = dict(vmm, memory="%dMi" % math.ceil(mib),
                 cpu=("%d" % (millis // 1000)) if millis % 1000 == 0 else "%dm" % millis)
    return {"podFixed": fixed,
            "why": "%s: default_memory %d MiB, default_vcpus %g from %s%s, plus the VMM's %s and %s"
                   % (why, memory, vcpus, config, " and its config.d/" if dropins else "",
                      vmm.get("memory", "0"), vmm.get("cpu", "0"))}


class FilterModule:
    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {"kata_pcie_plan": kata_pcie_plan, "kata_shims_for_host": kata_shims_for_host,
                "kata_release_assets": kata_release_assets, "kata_release_checksums": kata_release_checksums,
                "kata_pod_overhead": kata_pod_overhead}
