#!/usr/bin/python
# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pcie_acs
short_description: Report and plan PCIe ACS on the bridges above GPUs and NICs, for confidential guests or P2P
version_added: "0.1.0"
description:
  - Reads the PCI topology once (as M(confidential_gpu.host.pci_topology_info) does) and reports, for every bridge on
    the path of the selected devices, its Access Control Services capability and control registers with a verdict,
    and for the selected devices their ATS capability.
  - "The verdict (RV(bridges[].isolation)) follows the kernel's own test when it builds IOMMU groups: root ports and
    switch downstream ports must have source validation, P2P request redirect, P2P completion redirect and upstream
    forwarding enabled, where they implement them (C(enabled), C(partial), C(disabled)), or have no ACS at all
    (C(no_acs)); switch upstream ports need none (C(not_needed)); PCI and PCI-X bridges never isolate the devices
    behind them (C(pci_bridge)); C(unknown) when the extended configuration space could not be read."
  - "The kernel's device-specific ACS quirks (C(pci_dev_acs_enabled[]) in drivers/pci/quirks.c, as of Linux
    v6.12.118) answer first, as in the kernel: a port they isolate is C(quirk) (no violation), for example Intel PCH,
    Ampere, Cavium, QCOM, NXP or Loongson root ports without an ACS capability; C(quirk_inactive) is an Intel PCH
    root port whose quirk the kernel turns on only with the IOMMU on; C(quirk_not_isolating) a port whose quirk says
    it does not isolate (Zhaoxin ports outside the listed IDs). RV(bridges[].quirk) names the kernel function."
  - O(profile=confidential) turns every bridge that does not isolate the devices below it into a violation with its
    fix, and also the kernel command line when it weakens ACS (C(pci=disable_acs_redir=), C(pci=config_acs=),
    C(pcie_acs_override=)).
  - O(profile=p2p) finds the switch downstream ports that peer-to-peer traffic between two selected devices enters
    (the two ports below the switch where their paths meet) and returns the boot argument for them as
    RV(kernel_args) for role C(confidential_gpu.host.kernel_args). By default (O(p2p_mode=direct_translated), the way
    Kata's virtualization reference architecture, docs/design/kata-vra.md, describes it) that is
    C(pci=config_acs=) enabling ACS Direct Translated P2P with request and completion redirect kept, so the IOMMU
    groups stay split and only ATS-translated requests go straight to the peer. C(disable_acs_redir) and
    C(config_acs) turn redirect off instead, which merges the groups below those ports. Pairs that meet only in the
    root complex get no argument.
  - C(pci=) is one boot argument whose value is a comma-separated list of options. The other C(pci=) options of the
    current command line (O(current_cmdline), else C(/proc/cmdline)) are kept in front of the ACS option, and the
    ACS options there are replaced, so the argument is whole and a second run gives the same one.
  - Reads only, unless O(runtime_write) is set.
author:
  - confidential_gpu.host maintainers (@confidential-gpu)
extends_documentation_fragment:
  - confidential_gpu.host.device_selection
options:
  root:
    description:
      - Root of the host's file system, where C(sys/) and C(proc/) are found.
      - Point it at a captured or synthetic tree to read that instead of the live host.
    type: path
    default: /
  profile:
    description:
      - C(report) reads and judges only.
      - C(confidential) also returns RV(violations) (every bridge that does not isolate the devices below it, and
        ACS-weakening boot arguments), and the boot arguments that remove those from the command line.
      - C(p2p) also returns RV(p2p_ports) and the C(pci=) boot argument for them (O(p2p_mode)).
    type: str
    choices: [report, confidential, p2p]
    default: report
  p2p_mode:
    description:
      - Which kernel option O(profile=p2p) writes.
      - C(direct_translated) (C(pci=config_acs=FLAGS@A;FLAGS@B)) sets Direct Translated P2P and, explicitly, source
        validation, request redirect, completion redirect and upstream forwarding on each port that implements them
        (for a port with all of them C(1x111x1)); the kernel takes an C(x) bit from firmware's value, not from what
        it enabled itself, so the isolation bits are written as C(1). The kernel's isolation test (REQ_ACS_FLAGS)
        still holds and the IOMMU groups stay as they are. Ports without Direct Translated P2P are left out.
        Warns about selected endpoints below the ports without ATS, C(pci=noats), translation blocking or egress
        control left on, and a running kernel older than 6.11 (which ignores C(config_acs=)).
      - C(disable_acs_redir) (C(pci=disable_acs_redir=A;B)) clears request redirect, completion redirect and egress
        control on the ports, in every kernel since 4.19.
      - C(config_acs) (C(pci=config_acs=FLAGS@A;FLAGS@B)) applies O(config_acs_flags) to every port; bits given as
        C(x) take the value firmware left (drivers/pci/pci.c C(__pci_config_acs)); it needs Linux 6.11 or later.
    type: str
    choices: [direct_translated, disable_acs_redir, config_acs]
    default: direct_translated
  config_acs_flags:
    description:
      - The ACS flags of C(pci=config_acs=), one character per bit, most significant first, as the kernel reads them
        from the right - bit 6 Direct Translated P2P, 5 Egress Control, 4 Upstream Forwarding, 3 Completion
        Redirect, 2 Request Redirect, 1 Translation Blocking, 0 Source Validation; C(0) clears, C(1) sets, C(x)
        keeps the value firmware left (not the one the kernel enabled). Shorter strings are padded with C(x) on the
        left. Used with O(p2p_mode=config_acs) only.
      - The default C(x0x00xx) clears redirect and egress control like C(disable_acs_redir), and leaves source
        validation and upstream forwarding as firmware set them.
    type: str
    default: x0x00xx
  device_format:
    description:
      - How the ports are named in the boot argument. C(address) gives C(0000:04:00.0). C(path) gives the kernel's
        path form, the root-bus function followed by the device.function of each bridge down to the port
        (C(0000:00:10.2/00.0/00.0)), which keeps naming the same port when bus numbers change.
    type: str
    choices: [address, path]
    default: address
  current_cmdline:
    description:
      - The kernel command line whose C(pci=) options are kept (and whose ACS options are judged) instead of the
        running kernel's C(/proc/cmdline); for example the configured line that
        M(confidential_gpu.host.kernel_cmdline) returns, when it differs from the active one.
    type: str
  runtime_write:
    description:
      - Labs only. Also write the ACS control register of the ports the profile names, through sysfs C(config)
        (at the ACS capability + 6, or + 8 for the Intel PCH root ports with 32-bit registers) -
        O(profile=confidential) sets the isolation flags the port implements on every root and downstream port
        above the selected devices, O(profile=p2p) clears redirect on RV(p2p_ports) (or applies
        O(config_acs_flags)).
      - This does not regroup devices - IOMMU groups are computed at boot, so they stay as they were until a reboot
        with the matching boot arguments. Needs root on the live host.
    type: bool
    default: false
  fail_on_violation:
    description: With O(profile=confidential), fail when RV(violations) is not empty (the result is returned too).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Reads as usual; with O(runtime_write), RV(runtime_changes) lists the writes it would make and
      nothing is written.
  diff_mode:
    support: full
    description: With O(runtime_write), shows each changed ACS control register before and after.
  platform:
    support: full
    platforms: posix
    description: Linux hosts with sysfs and procfs, or any host given a captured tree as O(root).
notes:
  - With no selector at all, the GPUs, NVSwitches and NICs are selected. An address or IOMMU group the host does
    not have fails the module.
  - Reading ACS needs the extended configuration space, which only root can read; run it with C(become).
    Bridges whose ACS could not be read are C(unknown) and, with O(profile=confidential), violations.
  - The kernel isolates the devices below some root ports without ACS through device quirks (some Intel and AMD
    chipsets); such ports are still C(no_acs) here, and RV(violations) show their IOMMU group.
  - Turning redirect off (O(profile=p2p)) removes isolation between the devices below those ports and may put them
    in one IOMMU group; it is the opposite of what confidential guests need.
  - Kernels 6.11 to early 2025 (before the fix "PCI - Fix Extend ACS configurability") may apply a list of several
    ports only in part; C(dmesg) then says "Can't parse ACS command line parameter".
seealso:
  - module: confidential_gpu.host.pci_topology_info
  - module: confidential_gpu.host.kernel_cmdline
  - name: The kernel's pci= parameters (disable_acs_redir, config_acs)
    description: Documentation/admin-guide/kernel-parameters.txt in the Linux source.
    link: https://docs.kernel.org/admin-guide/kernel-parameters.html
"""

EXAMPLES = r"""
- name: Report ACS and ATS above every GPU and NIC
  confidential_gpu.host.pcie_acs:
  become: true
  register: acs

- name: Fail when a bridge above the H100s does not isolate them
  confidential_gpu.host.pcie_acs:
    pci_ids: ["10de:2330"]
    profile: confidential
    fail_on_violation: true
  become: true

- name: Boot argument for GPUDirect between the GPUs and NICs behind the same switches (Direct Translated P2P)
  confidential_gpu.host.pcie_acs:
    roles: [gpu, nic]
    profile: p2p
  become: true
  register: p2p

- name: Hand it to the one writer of boot arguments
  ansible.builtin.include_role:
    name: confidential_gpu.host.kernel_args
  vars:
    pcie_acs_kernel_args: "{{ p2p.kernel_args }}"
    pcie_acs_kernel_args_absent: "{{ p2p.kernel_args_absent }}"

- name: P2P with redirect off (merges the IOMMU groups below the ports), ports named by path
  confidential_gpu.host.pcie_acs:
    roles: [gpu, nic]
    profile: p2p
    p2p_mode: disable_acs_redir
    device_format: path
  become: true
"""

RETURN = r"""
profile:
  description: The profile used.
  returned: always
  type: str
  sample: confidential
devices:
  description: The selected devices, sorted by address.
  returned: always
  type: list
  elements: dict
  contains:
    address:
      description: Domain, bus, device and function.
      type: str
      sample: "0000:05:00.0"
    vendor_id:
      description: Vendor ID, four hex digits.
      type: str
      sample: "10de"
    device_id:
      description: Device ID, four hex digits.
      type: str
      sample: "2330"
    role:
      description: Role, as M(confidential_gpu.host.pci_topology_info) gives it.
      type: str
      sample: gpu
    iommu_group:
      description: IOMMU group number, null when the IOMMU is off.
      type: int
      sample: 11
    bridges:
      description: The bridges above it, root port first.
      type: list
      elements: str
      sample: ["0000:00:10.2", "0000:03:00.0", "0000:04:00.0"]
    ats:
      description: Address Translation Services (keys C(enabled), C(invalidate_queue_depth), C(page_aligned_request),
        C(global_invalidate), C(smallest_translation_unit)); null when absent.
      type: dict
bridges:
  description: Every bridge on the path of a selected device, sorted by address.
  returned: always
  type: list
  elements: dict
  contains:
    address:
      description: The bridge's address.
      type: str
      sample: "0000:04:00.0"
    vendor_id:
      description: Vendor ID.
      type: str
      sample: "104c"
    device_id:
      description: Device ID.
      type: str
      sample: "8233"
    port_type:
      description: PCIe port type (C(root_port), C(upstream_port), C(downstream_port), C(pcie_to_pci_bridge)...);
        null for a conventional PCI bridge or when unreadable.
      type: str
      sample: downstream_port
    iommu_group:
      description: The bridge's IOMMU group.
      type: int
      sample: 9
    devices_below:
      description: The selected devices below it.
      type: list
      elements: str
      sample: ["0000:05:00.0"]
    acs:
      description: ACS registers (C(capability), C(control), C(register_layout), and their flags decoded as
        C(capabilities) and C(enabled), as in M(confidential_gpu.host.pci_topology_info)); null when the bridge has
        no ACS capability. After a runtime write, the value read back.
      type: dict
    isolation:
      description: C(enabled), C(partial), C(disabled), C(no_acs), C(not_needed), C(pci_bridge), C(unknown),
        C(quirk), C(quirk_inactive) or C(quirk_not_isolating) (see the description).
      type: str
      sample: no_acs
    quirk:
      description: The kernel quirk function (drivers/pci/quirks.c, Linux v6.12.118) that decides for this bridge,
        or null when its ACS registers decide. C(pci_quirk_intel_spt_pch_acs) names the Intel PCH ports whose ACS
        registers are read 32 bits wide.
      type: str
      sample: pci_quirk_intel_pch_acs
    missing:
      description: Isolation flags the port implements but has off (C(source_validation), C(request_redirect),
        C(completion_redirect), C(upstream_forwarding)).
      type: list
      elements: str
      sample: []
violations:
  description: With O(profile=confidential), what keeps the selected devices from being isolated; empty otherwise.
  returned: always
  type: list
  elements: dict
  contains:
    bridge:
      description: The bridge, null for a command-line violation.
      type: str
      sample: "0000:04:00.0"
    kind:
      description: C(partial), C(disabled), C(no_acs), C(pci_bridge), C(unknown), C(quirk_inactive),
        C(quirk_not_isolating) or C(cmdline).
      type: str
      sample: no_acs
    missing:
      description: The flags that are off.
      type: list
      elements: str
    devices:
      description: The selected devices below the bridge.
      type: list
      elements: str
    msg:
      description: What is wrong, naming the bridge, its IDs and the devices below it.
      type: str
      sample: "0000:04:00.0 (downstream_port 104c:8233) above 0000:05:00.0 has no ACS capability: ..."
    fix:
      description: What to do about it.
      type: str
    clears_at_boot:
      description:
        - True when the next boot with the IOMMU on and without ACS-weakening arguments ends it - the kernel enables
          ACS isolation on every port that has ACS only when an IOMMU driver asks for it, so C(partial) and
          C(disabled) ports clear when the IOMMU is off now (RV(iommu_enabled)) or a C(cmdline) violation is in
          force; the C(cmdline) violation itself clears once role C(kernel_args) drops the arguments.
        - C(quirk_inactive) clears when the IOMMU is off now.
        - C(no_acs), C(pci_bridge), C(unknown) and C(quirk_not_isolating) never clear at boot.
        - Role C(pcie_acs) with C(pcie_acs_defer_to_reboot) (as C(prepare.yml) sets it) checks these after the
          reboot instead of failing before it.
      type: bool
      sample: true
iommu_enabled:
  description: Whether the running kernel has an IOMMU on (PCI functions are in IOMMU groups).
  returned: always
  type: bool
  sample: true
p2p_ports:
  description: With O(profile=p2p), the switch downstream ports named in the boot argument.
  returned: always
  type: list
  elements: str
  sample: ["0000:02:00.0", "0000:02:01.0"]
kernel_args:
  description:
    - Boot arguments for M(confidential_gpu.host.kernel_cmdline) O(confidential_gpu.host.kernel_cmdline#module:present)
      (role C(kernel_args) takes them as C(pcie_acs_kernel_args)) - with O(profile=p2p) the whole C(pci=) argument
      with the ACS option; with O(profile=confidential) the C(pci=) argument without its ACS options when the current
      command line has some and other options too. Empty when nothing changes.
  returned: always
  type: list
  elements: str
  sample: ["pci=noaer,disable_acs_redir=0000:02:00.0;0000:02:01.0"]
kernel_args_absent:
  description: Keys to remove from the boot arguments (C(pci) when it held only ACS options,
    C(pcie_acs_override)), for O(confidential_gpu.host.kernel_cmdline#module:absent).
  returned: always
  type: list
  elements: str
  sample: []
pci_options:
  description: The C(pci=) options of the current command line.
  returned: always
  type: dict
  contains:
    source:
      description: Where they were read (C(/proc/cmdline) or C(current_cmdline)); null when unreadable.
      type: str
      sample: /proc/cmdline
    current:
      description: Every option, in order.
      type: list
      elements: str
      sample: ["noaer", "disable_acs_redir=0000:02:00.0"]
    kept:
      description: The options other than ACS ones, kept in front of the ACS option.
      type: list
      elements: str
      sample: ["noaer"]
    acs:
      description: The C(disable_acs_redir=) and C(config_acs=) options.
      type: list
      elements: str
      sample: ["disable_acs_redir=0000:02:00.0"]
    override:
      description: C(pcie_acs_override) arguments (an out-of-tree patch that fakes ACS).
      type: list
      elements: str
      sample: []
runtime_changes:
  description: With O(runtime_write), the ACS control registers written (in check mode, that would be).
  returned: always
  type: list
  elements: dict
  contains:
    address:
      description: The port.
      type: str
    offset:
      description: Offset of the control register in configuration space.
      type: int
      sample: 262
    width:
      description: Register width in bytes (4 for the Intel PCH layout).
      type: int
      sample: 2
    before:
      description: Control register before.
      type: int
      sample: 0
    after:
      description: Control register read back after the write (in check mode, the value to write).
      type: int
      sample: 29
notes:
  description: What the planning decided and why (pairs without a port, ports without anything to turn off, pci=
    options kept).
  returned: always
  type: list
  elements: str
"""

from typing import Any, Dict

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.confidential_gpu.host.plugins.module_utils.module_result import hand_over
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_device import SELECTION_OPTIONS
from ansible_collections.confidential_gpu.host.plugins.module_utils.pcie_acs import (
    DEFAULT_CONFIG_ACS_FLAGS,
    DEFAULT_P2P_MODE,
    DEVICE_FORMATS,
    P2P_MODES,
    PROFILES,
    PcieAcsError,
    build_request,
    plan,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot, HostRootError

ARGUMENT_SPEC = {
    "root": {"type": "path", "default": "/"},
    **SELECTION_OPTIONS,
    "profile": {"type": "str", "default": "report", "choices": list(PROFILES)},
    "p2p_mode": {"type": "str", "default": DEFAULT_P2P_MODE, "choices": list(P2P_MODES)},
    "config_acs_flags": {"type": "str", "default": DEFAULT_CONFIG_ACS_FLAGS},
    "device_format": {"type": "str", "default": "address", "choices": list(DEVICE_FORMATS)},
    "current_cmdline": {"type": "str"},
    "runtime_write": {"type": "bool", "default": False},
    "fail_on_violation": {"type": "bool", "default": False},
}


def finish(module: AnsibleModule, host: HostRoot, result: Dict[str, Any]) -> None:
    hand_over(module, host, result, show_diff=bool(result["runtime_changes"]))
    violations = result["violations"]
    if module.params["fail_on_violation"] and violations:
        module.fail_json(msg="%d ACS violation(s) above the selected devices: %s" % (
            len(violations), " | ".join("%s; fix: %s" % (v["msg"], v["fix"]) for v in violations)), **result)
    module.exit_json(**result)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    try:
        request = build_request(params["profile"], params["addresses"], params["pci_ids"], params["roles"],
                                params["p2p_mode"], params["config_acs_flags"], params["device_format"],
                                params["current_cmdline"], params["runtime_write"], params["iommu_groups"])
        host = HostRoot(params["root"])
        result = plan(host, request, module.check_mode)
    except (PcieAcsError, HostRootError) as error:
        module.fail_json(msg=str(error), profile=params["profile"])
    else:
        finish(module, host, result)


if __name__ == "__main__":
    main()
