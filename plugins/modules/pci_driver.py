#!/usr/bin/python
# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pci_driver
short_description: Bind PCI functions (whole IOMMU groups) to vfio-pci or another driver, now and at every boot
version_added: "0.1.0"
description:
  - Selects PCI functions by address, C(vendor:device) ID, role or IOMMU group (combined as the options say; a
    bridge or host-only function only when named by address, and then refused), widens the selection to every
    endpoint of each function's IOMMU group (a GPU's audio function goes with the GPU) and binds them
    to O(driver) at runtime and persistently. Bridges in a group stay on their driver (C(pcieport)); VFIO accepts
    them there.
  - "Runtime: for each function not on O(driver) yet, C(driver_override), then C(unbind) from its driver, then
    C(/sys/bus/pci/drivers_probe), then the C(driver) link is awaited. The unbind runs in a child process with
    O(timeout): while a process holds the device (C(nvidia-persistenced), a CUDA job, a VM on C(/dev/vfio/N)) the
    kernel blocks it, and the module fails naming the device and how to find the process instead of hanging.
    The driver's module is loaded with C(modprobe) when C(/sys/bus/pci/drivers/<driver>) is missing (live host
    only). Functions already on O(driver) are left alone."
  - "Persistent (O(persist)): one driverctl-compatible file per function, C(/etc/driverctl.d/pci-<address>)
    holding the driver name (the format C(driverctl set-override) writes), plus a udev rule
    C(/etc/udev/rules.d/70-confidential-gpu-vfio.rules) that runs the installed helper
    C(/usr/local/libexec/confidential-gpu/pci-override) when one of these functions is added (boot, hotplug,
    SR-IOV VFs created at boot): it applies that file the same way, with or without driverctl installed."
  - "Optional early binding (O(early_binding)): C(/etc/modprobe.d/confidential-gpu-vfio.conf) with
    C(options vfio-pci ids=...) and C(softdep <driver> pre: vfio-pci) for the drivers the devices had (and
    C(nvidia), C(nouveau) for NVIDIA GPUs); a drop-in that puts the driver's modules into the initramfs,
    for each generator the host has (C(/etc/initramfs-tools/hooks/confidential-gpu-vfio), a hook that runs
    C(manual_add_modules vfio_pci vfio_iommu_type1); C(/etc/dracut.conf.d/confidential-gpu-vfio.conf) with
    C(force_drivers+=)), so that the copy of the modprobe.d file in the initramfs works there too; then
    O(initramfs_command), only when one of these files changed."
  - "Safety, checked before anything is written: a group that is not viable is refused, with each member, its
    driver and why (an ISA/LPC or host bridge in the group, a bridge on a driver VFIO does not accept); so is a
    host-critical function: the controller of the disk holding C(/), C(/boot) or C(/boot/efi), the NIC of a
    default route (through bonds, VLANs, bridges), the device of the active console framebuffer (fbcon's
    framebuffers, the boot VGA device under a firmware framebuffer or vgacon), unless O(allow_host_critical)
    names its address; so is a function the group would take that was not selected, when it is a NIC or a storage
    controller (roles as M(confidential_gpu.host.pci_topology_info) assigns them) or sits in another slot than
    every selected function, unless O(allow_group_members) names it. The selected devices' own other functions
    (same bus and device, like a GPU's audio function), bridges and functions already on O(driver) need no
    naming. A refusal fails the task and changes nothing; RV(refused) lists why."
  - O(state=absent) removes the overrides (this module's files naming O(driver), the udev rule lines, the IDs in
    the modprobe.d file and, with the last ID, the initramfs drop-ins), clears C(driver_override) and unbinds the
    functions from O(driver), then probes so that their default driver takes them again.
author:
  - confidential_gpu.host maintainers (@confidential-gpu)
extends_documentation_fragment:
  - confidential_gpu.host.device_selection
  - confidential_gpu.host.shipped_files
options:
  root:
    description:
      - Root of the host's file system; C(sys/), C(proc/), C(dev/) and C(etc/) are read and written below it.
      - With a root other than C(/), C(modprobe) is not run and the initramfs is updated only when
        O(initramfs_command) names a command.
    type: path
    default: /
  driver:
    description: The driver the functions go to (present) or leave (absent).
    type: str
    default: vfio-pci
  state:
    description: C(present) binds the functions to O(driver); C(absent) gives them back to their default driver.
    type: str
    choices: [present, absent]
    default: present
  whole_group:
    description:
      - Act on every endpoint of each selected function's IOMMU group. VFIO opens a group only when all its
        endpoints are on a VFIO driver (or on none), so turning this off leaves a group VFIO cannot open until the
        others are released; the module warns then.
    type: bool
    default: true
  allow_host_critical:
    description: Addresses of host-critical functions (boot disk controller, default-route NIC, console) that this
      run may bind anyway. The host loses them.
    type: list
    elements: str
    default: []
  allow_group_members:
    description:
      - Addresses of functions that this run may take with the selected ones because they share an IOMMU group,
        though they were not selected (NICs and storage controllers, even functions of a selected device, and
        functions in other slots). Without them named, such a group is refused, with each function, its role and
        driver, and the bridges above them that do not isolate them (no ACS), as M(confidential_gpu.host.pcie_acs)
        judges them.
      - The selected devices' other functions in the same slot (a GPU's audio function) need no naming.
    type: list
    elements: str
    default: []
  persist:
    description:
      - Write the driverctl-compatible overrides and the udev rule, so that the binding holds after a reboot and
        for functions added later. With C(false) the persistent files are left as they are.
    type: bool
    default: true
  early_binding:
    description:
      - Also write C(/etc/modprobe.d/confidential-gpu-vfio.conf) (C(options <driver> ids=) and C(softdep) lines),
        so that O(driver) claims the devices before their own driver loads; C(vfio-pci) and C(pci-stub) only.
      - C(ids=) is per vendor:device, not per address, and would claim every device with that ID. An ID that an
        unselected function on the host also has is left out, with a warning; the udev rule still binds the
        selected function at boot.
      - The modprobe.d file works in the initramfs only if the driver is in it too, so the module also writes the
        initramfs drop-in for each generator whose configuration directory exists (C(/etc/initramfs-tools),
        C(/etc/dracut.conf.d)), and warns when there is neither. Without the driver there, a GPU driver loaded
        from the initramfs takes the device first.
      - With C(false) existing files are left as they are (O(state=absent) still takes the released devices' IDs
        out).
      - The file serves one driver. Early binding to a second one while it holds another driver's IDs is refused,
        in one run's O(bindings) as across runs; bind those devices with O(early_binding=false).
    type: bool
    default: false
  initramfs_command:
    description:
      - Command that rebuilds the initramfs after the modprobe.d file or an initramfs drop-in changed, so that the
        initramfs matches.
        C(auto) is C(update-initramfs -u) on Debian and Ubuntu and C(dracut -f) on EL and Fedora (from
        C(/etc/os-release)); an empty string runs nothing.
      - If the command fails, those files are put back as they were, so that the next run tries again.
    type: str
    default: auto
  timeout:
    description: Seconds to wait for each unbind, probe and bind, and for C(modprobe).
    type: float
    default: 30
  bindings:
    description:
      - Several selections, each with its own driver, in one run instead of the top-level selection (give one or
        the other). The host is read once; each binding is planned, in order, on the host as the bindings before
        it leave it, so the run does what as many runs in a row would. Every binding is checked before anything
        is written, so one refusal refuses the run and nothing changes. The persistent files are written once,
        the initramfs updated at most once, then the functions move binding by binding.
      - A function that a later binding would move off the driver an earlier binding puts it on is refused
        (C(conflict)), since every run would move it twice.
      - An option a binding leaves out takes the top-level value (O(driver), O(whole_group), O(persist), ...).
        O(root), O(state), O(timeout) and O(initramfs_command) are the run's, not a binding's.
    type: list
    elements: dict
    default: []
    suboptions:
      addresses:
        description: As the top-level O(addresses).
        type: list
        elements: str
      pci_ids:
        description: As the top-level O(pci_ids).
        type: list
        elements: str
      roles:
        description: As the top-level O(roles).
        type: list
        elements: str
        choices: [gpu, nvswitch, nic, bridge, storage, other]
      iommu_groups:
        description: As the top-level O(iommu_groups).
        type: list
        elements: int
      driver:
        description: As the top-level O(driver).
        type: str
      whole_group:
        description: As the top-level O(whole_group).
        type: bool
      allow_host_critical:
        description: As the top-level O(allow_host_critical).
        type: list
        elements: str
      allow_group_members:
        description: As the top-level O(allow_group_members).
        type: list
        elements: str
      persist:
        description: As the top-level O(persist).
        type: bool
      early_binding:
        description: As the top-level O(early_binding).
        type: bool
attributes:
  check_mode:
    support: full
    description: Changes nothing; returns the plan (RV(devices) with the action each would get, RV(files),
      RV(commands)) and refuses exactly as a real run would.
  diff_mode:
    support: full
    description: Shows each persistent file before and after.
  platform:
    support: full
    platforms: posix
    description: Linux hosts with sysfs, udev and C(driver_override) (Linux >= 3.16).
notes:
  - An address or IOMMU group the host does not have fails the module; so does a selection that names nothing.
  - Addresses must exist when the module runs; the udev rule then also binds them when they appear again, such as
    SR-IOV VFs that a boot-time unit creates (create the VFs first, then call this module).
  - "If driverctl is installed, its own udev rule applies the same C(/etc/driverctl.d) files as well; both end with
    the function on the same driver."
  - The udev rule is not part of the initramfs; a driver loaded from the initramfs can hold a device until the rule
    moves it when the root file system's udev starts. O(early_binding) keeps it from taking the device at all.
  - Runtime binding of functions not yet on O(driver) needs a real kernel; against a tree (O(root)) it writes the
    sysfs files and waits for a driver link that nothing creates.
seealso:
  - module: confidential_gpu.host.pci_topology_info
  - module: confidential_gpu.host.kernel_cmdline
  - name: driverctl
    description: The override file format and tool this module's files are compatible with.
    link: https://gitlab.com/driverctl/driverctl
  - name: VFIO - Virtual Function I/O
    description: Groups, viability and binding devices to vfio-pci.
    link: https://docs.kernel.org/driver-api/vfio.html
"""

EXAMPLES = r"""
- name: Every NVIDIA GPU to vfio-pci, with its audio function, now and at every boot
  confidential_gpu.host.pci_driver:
    roles: [gpu]
  register: vfio

- name: Show the VFIO nodes a Kata or QEMU configuration needs
  ansible.builtin.debug:
    var: vfio.vfio_nodes

- name: GPUs and NVSwitches of an HGX host for multi-GPU confidential computing, bound early at boot
  confidential_gpu.host.pci_driver:
    roles: [gpu, nvswitch]
    early_binding: true

- name: One GPU by address, preview first
  confidential_gpu.host.pci_driver:
    addresses: ["0000:3b:00.0"]
  check_mode: true
  diff: true

- name: Two SR-IOV VFs created by the sriov role, each in its own group
  confidential_gpu.host.pci_driver:
    addresses: ["0000:01:00.1", "0000:01:00.2"]
    timeout: 10

- name: The VFs of a ConnectX PF to their NIC driver and the GPUs to vfio-pci, in one call
  confidential_gpu.host.pci_driver:
    bindings:
      - addresses: ["0000:c1:00.2", "0000:c1:00.3"]
        driver: mlx5_core
      - roles: [gpu]

- name: A GPU that also drives the console; the host loses it on purpose
  confidential_gpu.host.pci_driver:
    addresses: ["0000:03:00.0"]
    allow_host_critical: ["0000:03:00.0"]

- name: A GPU whose IOMMU group also holds a NIC in another slot (no ACS above them); the guest gets both
  confidential_gpu.host.pci_driver:
    addresses: ["0000:03:00.0"]
    allow_group_members: ["0000:04:00.0"]

- name: Give the GPUs back to their default driver (nvidia) and remove the overrides
  confidential_gpu.host.pci_driver:
    roles: [gpu]
    state: absent
"""

RETURN = r"""
devices:
  description:
    - Every function the run looked at, by address; bridges of the touched groups with action C(keep).
    - With O(bindings), one entry per function over all of them, with its driver before the run, and the action
      and driver of the last binding that moves it.
  returned: always
  type: list
  elements: dict
  contains:
    address:
      description: The function's address.
      type: str
      sample: "0000:3b:00.0"
    group:
      description: Its IOMMU group; null when the IOMMU is off.
      type: int
      sample: 42
    pci_id:
      description: Vendor and device ID, C(vvvv:dddd).
      type: str
      sample: "10de:2330"
    role:
      description: Role as M(confidential_gpu.host.pci_topology_info) assigns it.
      type: str
      sample: gpu
    driver_before:
      description: Driver bound before the run; null when none.
      type: str
      sample: nvidia
    driver_after:
      description: Driver bound after the run (in check mode, the driver it would have; null for a release, whose
        default driver is known only after the probe).
      type: str
      sample: vfio-pci
    action:
      description: C(bind) (moved to the driver), C(release) (taken from it, state absent), C(none) (already as
        wanted, left alone) or C(keep) (a bridge of the group, left with the host).
      type: str
      sample: bind
groups:
  description: The IOMMU groups of the selected functions.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Group number.
      type: int
    devices:
      description: Every member.
      type: list
      elements: str
    endpoints:
      description: Members that are not bridges (those that move with the group).
      type: list
      elements: str
    bridges:
      description: Members that are bridges (they stay).
      type: list
      elements: str
    viable:
      description: Whether the group can be given to one guest as a whole.
      type: bool
    reasons:
      description: Why it is not viable.
      type: list
      elements: str
  sample: [{id: 3, devices: ["0000:02:00.0", "0000:02:00.1"], endpoints: ["0000:02:00.0", "0000:02:00.1"],
            bridges: [], viable: true, reasons: []}]
files:
  description: Persistent files written or removed (in check mode, that would be), as host paths.
  returned: always
  type: list
  elements: str
  sample: ["/etc/driverctl.d/pci-0000:02:00.0", "/etc/udev/rules.d/70-confidential-gpu-vfio.rules"]
commands:
  description: Commands run, or in check mode that would run (C(modprobe), the initramfs update), as word lists.
  returned: always
  type: list
  elements: list
  sample: [["modprobe", "vfio-pci"], ["update-initramfs", "-u"]]
vfio_nodes:
  description: After binding to vfio-pci, the group nodes C(/dev/vfio/<group>) that exist, and the VFIO device
    nodes C(/dev/vfio/devices/vfioN) (VFIO cdev, used with iommufd) of the functions. Empty in check mode.
  returned: always
  type: list
  elements: str
  sample: ["/dev/vfio/3", "/dev/vfio/devices/vfio0", "/dev/vfio/devices/vfio1"]
initramfs_updated:
  description: Whether O(initramfs_command) ran (the modprobe.d file or an initramfs drop-in changed).
  returned: always
  type: bool
  sample: false
refused:
  description:
    - Why the run was refused (it failed and changed nothing); empty on success.
    - C(kind) is C(not_viable) (with C(members), each with C(address), C(driver) and C(why)), C(host_critical),
      C(group_member) (functions the group would take that were not selected nor named in
      O(allow_group_members); C(members), each with C(address), C(driver), C(role) and C(why) they share the
      group), C(bridge) (a bridge selected by address), C(no_iommu_group) or C(conflict) (a function that two
      O(bindings) give different drivers).
  returned: always
  type: list
  elements: dict
  sample: [{kind: host_critical, group: 2, address: "0000:00:04.0", driver: virtio-pci,
            reason: "0000:00:04.0 (driver virtio-pci, selected) is host-critical: it carries the default route
            (interface enp0s4)", fix: "the host would lose it; if that is intended, name it: allow_host_critical:
            ['0000:00:04.0']"}]
"""


from ansible.module_utils.basic import AnsibleModule
from ansible_collections.confidential_gpu.host.plugins.module_utils.module_result import hand_over
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_device import SELECTION_OPTIONS
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_driver import build_intents, manage_all
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_driver_model import (
    PciDriverError,
    PciDriverRefused,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.systemd_units import SHIPPED_FILES_OPTION
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot, HostRootError

ARGUMENT_SPEC = {
    "root": {"type": "path", "default": "/"},
    **SELECTION_OPTIONS,
    "driver": {"type": "str", "default": "vfio-pci"},
    "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
    "whole_group": {"type": "bool", "default": True},
    "allow_host_critical": {"type": "list", "elements": "str", "default": []},
    "allow_group_members": {"type": "list", "elements": "str", "default": []},
    "persist": {"type": "bool", "default": True},
    "early_binding": {"type": "bool", "default": False},
    "initramfs_command": {"type": "str", "default": "auto"},
    "timeout": {"type": "float", "default": 30.0},
    "bindings": {"type": "list", "elements": "dict", "default": [], "options": {
        **{key: {key2: value for key2, value in option.items() if key2 != "default"}
           for key, option in SELECTION_OPTIONS.items()},
        "driver": {"type": "str"},
        "whole_group": {"type": "bool"},
        "allow_host_critical": {"type": "list", "elements": "str"},
        "allow_group_members": {"type": "list", "elements": "str"},
        "persist": {"type": "bool"},
        "early_binding": {"type": "bool"},
    }},
    **SHIPPED_FILES_OPTION,
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    host = None
    try:
        if params["timeout"] <= 0:
            raise PciDriverError("timeout must be more than 0 seconds, not %s" % params["timeout"])
        intents = build_intents(params)
        host = HostRoot(params["root"])
        result = manage_all(host, intents, module.check_mode, params["timeout"], params["initramfs_command"])
    except PciDriverRefused as error:
        module.fail_json(msg=str(error), **hand_over(module, host, {"refused": error.refused, "changed": False}))
    except (PciDriverError, HostRootError) as error:
        module.fail_json(msg=str(error), **hand_over(module, host, {"refused": []}))
    else:
        module.exit_json(**hand_over(module, host, result))


if __name__ == "__main__":
    main()
