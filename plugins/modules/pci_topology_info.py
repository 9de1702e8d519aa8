#!/usr/bin/python
# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pci_topology_info
short_description: Read a host's PCI topology, IOMMU groups and PCIe capabilities
version_added: "0.1.0"
description:
  - Reads every PCI function of the host once, straight from sysfs, and returns it as data
    that later roles plan from.
  - For each function it reports identity, driver, IOMMU group, NUMA node, its bridge path from
    the root port down (from the function's real sysfs path), a role (C(gpu), C(nvswitch),
    C(nic), C(bridge), C(storage), C(other)), and capabilities decoded from configuration space
    (PCIe port type and link, ACS, ATS, PRI, PASID, SR-IOV, ARI, Resizable BAR).
  - ACS of Intel Sunrise Point-H, Union Point and 7th/8th gen mobile PCH root ports is decoded with the 32-bit
    register layout the Linux kernel uses for them (control at +8), which C(lspci) does not apply.
  - Names the functions the host cannot lose (its boot disk's controller, its default-route NIC, the device
    that draws its console) per function and per group, with the reason, from the same check
    M(confidential_gpu.host.pci_driver) applies; mounts, routes and consoles are read once.
  - Judges each IOMMU group for passthrough, and pairs every GPU with the NICs closest to it
    (deepest common bridge, then NUMA node), in the link classes of C(nvidia-smi topo -m).
  - Configuration space is read as far as the decoding needs it (the first 256 bytes, then the
    header and decoded registers of each extended capability), not all 4 KiB of it; every 4 bytes
    read is a config access on the host, a trap to the hypervisor in a guest.
  - Read-only. Reading configuration space beyond 64 bytes needs root; without it the module
    returns what it could read and one warning that names the functions.
extends_documentation_fragment:
  - confidential_gpu.host.info_module
  - confidential_gpu.host.device_selection
options:
  gather_subset:
    description:
      - The parts of the result to return, read as M(ansible.builtin.setup) reads its
        O(ansible.builtin.setup#module:gather_subset) (ansible-core 2.19), with parts V(capabilities) (each function's
        decoded capabilities, RV(devices[].pcie) to RV(devices[].resizable_bar)), V(host_critical) (the
        host-critical check and its keys), V(iommu_groups), V(gpu_nic_affinity) (with RV(devices[].closest_nics)),
        and V(all).
      - V(cc_host) is not part of V(all) and is returned only when named. It adds the facts of
        M(confidential_gpu.host.cc_host_info) under RV(cc_host), read from the same O(root), so a caller that needs
        both reads the host in one module run (role C(discovery) does; each module run costs a Python start).
      - V(acs) is not part of V(all) either. It adds RV(acs), what M(confidential_gpu.host.pcie_acs) reads besides
        the topology, so that role C(pcie_acs) can plan from this result (with V(all)) instead of reading the host
        again (C(playbooks/prepare.yml) does).
      - A name adds its part to the minimum, which is always returned (each function's identity, place, driver, group,
        NUMA node, role and kind, and RV(summary)); V(!name) leaves a part out, V(!all) every part; a name given
        explicitly stays; a list of exclusions only starts from V(all). So V(!all) returns the minimum, and
        V([!all, iommu_groups]) the minimum and the groups.
      - An unknown name fails, naming it and the accepted ones.
    type: list
    elements: str
    default: [all]
author:
  - confidential_gpu.host maintainers (@confidential-gpu)
notes:
  - The selectors choose what is returned (all functions when none is given; an address or group the host does
    not have returns nothing); the topology (paths, groups, affinity) is always computed
    over the whole host.
  - A O(root) without C(sys/bus/pci) returns no functions with a warning that names the root. When
    O(root) is the top of a capture made by C(scripts/capture-host) (C(CAPTURE.json) beside C(root/)), the
    module reads its C(root/) directory and warns.
  - C(viable) in a group means the group can be given to one guest as a whole once its endpoints
    are on vfio-pci; C(bound_to_vfio) means VFIO would accept it now.
seealso:
  - module: confidential_gpu.host.cc_host_info
"""

EXAMPLES = r"""
- name: Read the whole PCI topology
  confidential_gpu.host.pci_topology_info:
  register: topology

- name: Show every GPU with its IOMMU group, NUMA node and closest NICs
  ansible.builtin.debug:
    msg: "{{ item.address }} group {{ item.iommu_group }} node {{ item.numa_node }} nics {{ item.closest_nics }}"
  loop: "{{ topology.devices | selectattr('role', 'equalto', 'gpu') }}"

- name: Only the functions' identity and place, without capabilities, groups, affinity or the host-critical check
  confidential_gpu.host.pci_topology_info:
    gather_subset: ["!all"]
  register: minimal

- name: Only NVIDIA H100 SXM5 GPUs and the NVSwitches (an ID and a role add up; docs/discovery.md)
  confidential_gpu.host.pci_topology_info:
    pci_ids: ["10de:2330"]
    roles: [nvswitch]
  register: hgx

- name: Fail when a GPU's IOMMU group cannot be passed through
  # Only the groups that hold a GPU: a group of bridges alone is never viable (nothing to pass through).
  vars:
    gpus: "{{ topology.devices | selectattr('role', 'equalto', 'gpu') | list }}"
    gpu_group_ids: "{{ gpus | map(attribute='iommu_group') | list }}"
    gpu_groups: "{{ topology.iommu_groups | selectattr('id', 'in', gpu_group_ids) | list }}"
  ansible.builtin.assert:
    that:
      - gpus | selectattr('iommu_group', 'none') | list | length == 0
      - gpu_groups | rejectattr('viable') | list | length == 0
    fail_msg: >-
      GPUs in no IOMMU group (IOMMU off):
      {{ gpus | selectattr('iommu_group', 'none') | map(attribute='address') | list }};
      GPU groups not viable: {{ gpu_groups | rejectattr('viable') | map(attribute='reasons') | flatten }}

- name: Read a captured host offline (the root/ directory of what scripts/capture-host writes)
  confidential_gpu.host.pci_topology_info:
    root: /srv/captures/gpu-node-17/root
  delegate_to: localhost
"""

RETURN = r"""
devices:
  description: The selected PCI functions, sorted by address.
  returned: always
  type: list
  elements: dict
  contains:
    address:
      description: Domain, bus, device and function, lower case.
      type: str
      sample: "0000:3b:00.0"
    vendor_id:
      description: Vendor ID, four lower-case hex digits without C(0x).
      type: str
      sample: "10de"
    device_id:
      description: Device ID, four lower-case hex digits.
      type: str
      sample: "2330"
    class_id:
      description: Class code (base class, subclass, programming interface), six hex digits.
      type: str
      sample: "030200"
    subsystem_vendor_id:
      description: Subsystem vendor ID (from the header, or the bridge's SSVID capability); null when unknown.
      type: str
      sample: "10de"
    subsystem_device_id:
      description: Subsystem device ID; null when unknown.
      type: str
      sample: "16c1"
    driver:
      description: Name of the bound driver, null when none.
      type: str
      sample: vfio-pci
    iommu_group:
      description: IOMMU group number, null when the IOMMU is off.
      type: int
      sample: 42
    numa_node:
      description: NUMA node of the function, null when the platform does not say.
      type: int
      sample: 0
    parent:
      description: Address of the bridge directly above, null for functions on a root bus.
      type: str
      sample: "0000:3a:00.0"
    path:
      description: Addresses from the root port (or root bus function) down to this function, itself last.
      type: list
      elements: str
      sample: ["0000:00:01.1", "0000:01:00.0", "0000:02:00.0", "0000:03:00.0"]
    physfn:
      description: For an SR-IOV virtual function, the address of its physical function; null otherwise.
      type: str
      sample: "0000:41:00.0"
    role:
      description: C(gpu) (NVIDIA class 0300/0302), C(nvswitch) (NVIDIA class 0680), C(nic) (class 02),
        C(bridge) (class 06), C(storage) (class 01) or C(other).
      type: str
      sample: gpu
    kind:
      description: C(host_only) (host bridge 0600, ISA/LPC bridge 0601), C(bridge) (a type 1 or 2 header, or
        class 0604/0607/0609 when the header was not readable), C(vf) (an SR-IOV virtual function) or
        C(endpoint). Bridges and host-only functions stay with the host when their group goes to a guest.
      type: str
      sample: endpoint
    closest_nics:
      description: For GPUs, the NIC physical functions that are closest (see RV(gpu_nic_affinity)).
      type: list
      elements: str
      returned: for GPUs, when V(gpu_nic_affinity) is gathered
      sample: ["0000:3c:00.0"]
    pcie:
      description: PCI Express capability; null for conventional PCI functions.
      type: dict
      returned: when V(capabilities) is gathered
      contains:
        port_type:
          description: C(endpoint), C(legacy_endpoint), C(root_port), C(upstream_port), C(downstream_port),
            C(pcie_to_pci_bridge), C(pci_to_pcie_bridge), C(rc_integrated_endpoint) or C(rc_event_collector).
          type: str
          sample: endpoint
        link_speed_gts:
          description: Negotiated link speed in GT/s; null when there is no link register.
          type: float
          sample: 32.0
        link_width:
          description: Negotiated link width (lanes).
          type: int
          sample: 16
        max_link_speed_gts:
          description: Highest speed the link supports, GT/s.
          type: float
          sample: 32.0
        max_link_width:
          description: Widest link the port supports.
          type: int
          sample: 16
    acs:
      returned: when the function has it and V(capabilities) is gathered (absent, not null, when it has none)
      description: Access Control Services.
      type: dict
      contains:
        capability:
          description: ACS capability register.
          type: int
          sample: 95
        control:
          description: ACS control register.
          type: int
          sample: 29
        register_layout:
          description: C(standard), or C(intel_pch_dword) for Intel PCH root ports with 32-bit ACS registers.
          type: str
        capabilities:
          description: Decoded capability flags C(source_validation), C(translation_blocking), C(request_redirect),
            C(completion_redirect), C(upstream_forwarding), C(egress_control), C(direct_translated_p2p).
          type: dict
        enabled:
          description: The same flags decoded from the control register.
          type: dict
        egress_control_vector_size:
          description: Size of the egress control vector.
          type: int
    ats:
      returned: when the function has it and V(capabilities) is gathered (absent, not null, when it has none)
      description: Address Translation Services.
      type: dict
      contains:
        enabled:
          description: ATS enabled.
          type: bool
        invalidate_queue_depth:
          description: Invalidate queue depth (0 means 32).
          type: int
        page_aligned_request:
          description: Page aligned request supported.
          type: bool
        global_invalidate:
          description: Global invalidate supported.
          type: bool
        smallest_translation_unit:
          description: Smallest translation unit field of ATS control.
          type: int
    pri:
      returned: when the function has it and V(capabilities) is gathered (absent, not null, when it has none)
      description: Page Request Interface. Keys C(enabled), C(response_failure),
        C(unexpected_response), C(stopped), C(prg_response_pasid_required), C(outstanding_capacity),
        C(outstanding_allocation).
      type: dict
    pasid:
      returned: when the function has it and V(capabilities) is gathered (absent, not null, when it has none)
      description: Process Address Space ID. Keys C(enabled), C(max_width),
        C(execute_supported), C(privileged_supported), C(execute_enabled), C(privileged_enabled).
      type: dict
    sriov:
      description: Single Root I/O Virtualization; null when absent.
      type: dict
      returned: when V(capabilities) is gathered
      contains:
        initial_vfs:
          description: InitialVFs.
          type: int
        total_vfs:
          description: TotalVFs, the most VFs the function offers.
          type: int
          sample: 16
        num_vfs:
          description: NumVFs, the VFs currently configured.
          type: int
        vf_offset:
          description: Routing ID offset of the first VF.
          type: int
        vf_stride:
          description: Routing ID stride between VFs.
          type: int
        vf_device_id:
          description: Device ID of the VFs, four hex digits.
          type: str
          sample: "101e"
        vf_enabled:
          description: VF Enable is set.
          type: bool
        vf_memory_space_enabled:
          description: VF MSE is set.
          type: bool
        ari_capable_hierarchy:
          description: ARI Capable Hierarchy is set.
          type: bool
    ari:
      returned: when the function has it and V(capabilities) is gathered (absent, not null, when it has none)
      description: Alternative Routing-ID Interpretation. Keys C(next_function),
        C(mfvc_function_groups), C(acs_function_groups).
      type: dict
    resizable_bar:
      returned: when the function has it and V(capabilities) is gathered (absent, not null, when it has none)
      description: Resizable BARs. Each has C(bar), C(size_bytes), C(supported_sizes_bytes).
      type: list
      elements: dict
    host_critical:
      description:
        - Why the host cannot lose this function, one entry each, empty when it can; the same check
          M(confidential_gpu.host.pci_driver) refuses with unless
          O(confidential_gpu.host.pci_driver#module:allow_host_critical) names the address.
        - C(kind) is C(boot_disk) (controls the disk of C(/), C(/boot) or C(/boot/efi)), C(default_route) (carries a
          default route, also through a bond, VLAN or bridge), or C(console) (draws the active console); C(reason)
          says it in words. The PF of a critical VF gets its VF's kind.
      type: list
      elements: dict
      returned: when V(host_critical) is gathered
      sample: [{kind: boot_disk, reason: "it controls the disk holding / (/dev/nvme0n1p2)"}]
iommu_groups:
  description: IOMMU groups that hold a selected function, sorted by id.
  returned: when V(iommu_groups) is gathered
  type: list
  elements: dict
  contains:
    id:
      description: Group number (C(/sys/kernel/iommu_groups/<id>)).
      type: int
    devices:
      description: Addresses of every function in the group.
      type: list
      elements: str
    viable:
      description: The group can be passed to one guest as a whole once its endpoints are bound to vfio-pci. Not
        when it holds a host or ISA/LPC bridge, only bridges, or a bridge on a driver VFIO does not accept (one
        without C(driver_managed_dma); C(pcieport), C(pci-stub) and no driver are accepted); the same verdict
        M(confidential_gpu.host.pci_driver) refuses a group for.
      type: bool
    reasons:
      description: Why the group is not viable, one sentence per blocking function; empty when viable.
      type: list
      elements: str
    bound_to_vfio:
      description: Every endpoint is on vfio-pci or pci-stub, or has no driver; VFIO would accept the group now.
        The devices' C(driver) says which endpoints still need binding.
      type: bool
    host_critical:
      description: The members the host cannot lose (C(address), C(kind), C(reason), as in the devices'
        C(host_critical)); empty when none. C(viable) says whether VFIO could take the group, this whether
        the host can give it away.
      type: list
      elements: dict
      returned: when V(host_critical) is gathered
gpu_nic_affinity:
  description: Every GPU paired with every NIC physical function, each GPU's closest NIC first.
  returned: when V(gpu_nic_affinity) is gathered
  type: list
  elements: dict
  contains:
    gpu:
      description: GPU address.
      type: str
    nic:
      description: NIC physical function address.
      type: str
    common_bridge:
      description: Deepest bridge above both, null when they share none.
      type: str
    bridges_between:
      description: Bridge functions (switch ports counted one by one) a transfer between the two crosses, null
        without a common bridge.
      type: int
    link:
      description: As C(nvidia-smi topo -m) prints it. C(PIX) at most one PCIe bridge between the two (one switch,
        whose ports count once, or one root port), C(PXB) several below one root port (nested switches),
        C(PHB) same host bridge, C(NODE) same NUMA node, C(SYS) across NUMA nodes.
      type: str
    same_numa_node:
      description: Both report the same NUMA node.
      type: bool
cc_host:
  description: The facts M(confidential_gpu.host.cc_host_info) returns, read from the same O(root), with the same
    keys (RV(confidential_gpu.host.cc_host_info#module:cpu) to RV(confidential_gpu.host.cc_host_info#module:verdicts));
    see that module for them.
  returned: when O(gather_subset) names V(cc_host)
  type: dict
  sample: {"iommu": {"enabled": true}, "verdicts": {"vfio_ready": true, "vfio_ready_reasons": []}}
acs:
  description:
    - What M(confidential_gpu.host.pcie_acs) reads from the host besides the topology, over every bridge on a
      function's path. Filter P(confidential_gpu.host.pcie_acs_plan#filter) plans from it and this result.
  returned: when O(gather_subset) names V(acs)
  type: dict
  contains:
    config_sizes:
      description: Bytes of config space readable, by bridge address, for the bridges without an ACS capability
        (256 or 4096; 64 for a reader that is not root).
      type: dict
    multifunction:
      description: The multi-function bit of the header, by bridge address, for the bridges whose kernel ACS quirk
        reads it.
      type: dict
    ivrs:
      description: Whether the ACPI IVRS table (AMD-Vi) exists.
      type: bool
    cmdline:
      description: C(/proc/cmdline); null when it cannot be read.
      type: str
    os_release:
      description: C(/proc/sys/kernel/osrelease); null when it cannot be read.
      type: str
    functions:
      description: How many functions the host has (the plan needs all of them; a result filtered by the
        selectors holds fewer).
      type: int
  sample: {"config_sizes": {"0000:03:00.0": 4096}, "multifunction": {}, "ivrs": false,
           "cmdline": "BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=LABEL=root ro intel_iommu=on",
           "os_release": "6.1.0-28-amd64", "functions": 25}
summary:
  description: Counts over the selected functions; C(groups_not_viable) counts groups that hold a function
    other than a bridge (host, ISA or PCI bridge) and cannot be passed through; C(host_critical) functions and
    C(groups_host_critical) groups the host cannot lose (these two when V(host_critical) is gathered).
  returned: always
  type: dict
  sample: {"functions": 53, "gpus": 8, "nvswitches": 4, "nics": 10, "iommu_groups": 40, "groups_not_viable": 1,
           "host_critical": 2, "groups_host_critical": 2}
"""

from typing import Any, Dict, FrozenSet

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.confidential_gpu.host.plugins.module_utils.cc_host import gather_facts

from ansible_collections.confidential_gpu.host.plugins.module_utils.host_critical import mark_host_critical
from ansible_collections.confidential_gpu.host.plugins.module_utils.module_result import hand_over
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_device import (
    SELECTION_OPTIONS,
    Selector,
    invalid_filters,
    stays_with_host,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_topology import (
    PCI_DEVICES,
    filter_topology,
    gathered_subsets,
    read_host_facts,
    read_topology,
    shape_devices,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot, HostRootError, open_host_root


def summarize(topology: Dict[str, Any], subsets: FrozenSet[str]) -> Dict[str, int]:
    roles = [dev["role"] for dev in topology["devices"]]
    kept = {dev["address"] for dev in topology["devices"] if stays_with_host(dev)}
    summary = {
        "functions": len(roles),
        "gpus": roles.count("gpu"),
        "nvswitches": roles.count("nvswitch"),
        "nics": roles.count("nic"),
        "iommu_groups": len(topology["iommu_groups"]),
        "groups_not_viable": sum(1 for group in topology["iommu_groups"] if not group["viable"] and any(
            address not in kept for address in group["devices"])),
    }
    if "host_critical" in subsets:
        summary["host_critical"] = sum(1 for dev in topology["devices"] if dev["host_critical"])
        summary["groups_host_critical"] = sum(1 for group in topology["iommu_groups"] if group["host_critical"])
    return summary


def check_pci_bus(host: HostRoot) -> None:
    """A root without sys/bus/pci/devices reads as a host with no PCI functions: say so, naming the root (a
    wrong path, a capture's top, a container without the host's /sys); playbooks on trees of boot files only
    still run."""
    if host.exists(PCI_DEVICES):
        return
    host.listdir_required(PCI_DEVICES)  # there but unlistable (a symlink loop): its own error names why
    host.warn("%s has no %s, so no PCI functions are returned: pass the host's root ('/'), a tree that holds "
              "sys/bus/pci, or the root/ directory of a capture made by scripts/capture-host"
              % (host.root, PCI_DEVICES.lstrip("/")))


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type="path", default="/"),
            gather_subset=dict(type="list", elements="str", default=["all"]),
            **SELECTION_OPTIONS,
        ),
        supports_check_mode=True,
    )
    params = module.params
    problems = invalid_filters(params["addresses"], params["pci_ids"])
    if problems:
        module.fail_json(msg="invalid filter: " + "; ".join(problems))
    try:
        subsets = gathered_subsets(params["gather_subset"])
    except ValueError as error:
        module.fail_json(msg=str(error))
    try:
        host = open_host_root(params["root"] or "/", PCI_DEVICES)
        check_pci_bus(host)
        topology = read_topology(host, capabilities="capabilities" in subsets,
                                 affinity="gpu_nic_affinity" in subsets)
    except HostRootError as error:
        module.fail_json(msg=str(error))
    if "host_critical" in subsets:
        mark_host_critical(host, topology)
    acs = dict(read_host_facts(host, topology["devices"]), functions=len(topology["devices"])) \
        if "acs" in subsets else None
    topology = filter_topology(topology, Selector.of(params["addresses"], params["pci_ids"], params["roles"],
                                                     params["iommu_groups"]))
    summary = summarize(topology, subsets)
    shape_devices(topology["devices"], subsets)
    for part in ("iommu_groups", "gpu_nic_affinity"):
        if part not in subsets:
            del topology[part]
    if "cc_host" in subsets:
        topology["cc_host"] = gather_facts(host)
    if acs is not None:
        topology["acs"] = acs
    module.exit_json(changed=False, summary=summary, **hand_over(module, host, topology))


if __name__ == "__main__":
    main()
