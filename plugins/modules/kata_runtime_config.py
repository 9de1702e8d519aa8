#!/usr/bin/python
# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kata_runtime_config
short_description: Set a Kata Containers shim's settings, kernel parameters and PCIe layout, comments kept
version_added: "0.1.0"
description:
  - Configures one Kata runtime class (shim) such as C(qemu-nvidia-gpu-snp) or C(qemu-nvidia-gpu-tdx), that is the
    settings of its C([hypervisor.<name>]), C([runtime]), C([agent.kata]) and C([factory]) tables, guest kernel
    parameters, and how passed-through PCIe devices are laid out in the guest (O(pcie_mode)).
  - "Runs on the controller (an action): the shim's configuration and its drop-ins are read from the target and
    parsed with the Python library C(tomlkit), and files are written through C(ansible.builtin.copy) and
    C(ansible.builtin.file) on the target, so the target needs no TOML library."
  - "Kata 2.5.0 and later (O(method=dropin)): the Go runtime merges the files of the C(config.d/) directory beside
    its configuration file (symlinks resolved first) over it in name order, each key replacing the value before it
    (C(decodeDropIns) in C(src/runtime/pkg/katautils/config.go), since Kata 2.5.0). So that each shim has drop-ins
    of its own, the shim's directory is C(<prefix>/share/defaults/kata-containers/runtimes/<shim>/) (the layout
    kata-deploy uses since 3.27), with C(configuration-<shim>.toml) and C(config.d/). Two drop-ins are written
    there: C(<dropin_name>.toml) (settings and PCIe keys) and C(<dropin_name>-kernel-params.toml). Where
    kata-deploy laid the shim out (the shipped C(configuration-<shim>.toml) is a link into C(runtimes/<shim>/)),
    its files are left alone; otherwise the shipped file is copied there unchanged, as kata-deploy does."
  - "Since a drop-in's C(kernel_params) replaces the whole value, the kernel parameter drop-in repeats the
    parameters in effect before it (the base configuration and the drop-ins that sort before it, such as
    kata-deploy's C(30-kernel-params.toml)), in their order, then adds O(kernel_params) that are not there yet."
  - "Releases before 2.5.0 (O(method=copy)): C(runtimes/<shim>/configuration-<shim>.toml) becomes a managed copy of the
    shipped file with the values set in place; every comment, every other key and the order of the file are
    upstream's. Drop-ins of this module left from an earlier run are removed."
  - RV(config_path) is the file containerd's C(ConfigPath) for the C(kata-<shim>) handler must name.
  - With O(pcie_mode=flatten) or O(pcie_mode=replicate), the devices of O(devices) are planned on the host's
    topology (O(topology)); the plan is printed in check mode and returned as RV(pcie_plan). A plan with errors
    (more ports than Kata's limit of 16, a device whose IOMMU group cannot be passed through, an unknown device)
    fails the task before anything is written.
  - Bad input (an unknown table, a key this module owns, a value of another type than the base holds, a kernel
    parameter with a space) fails before anything is written.
author:
  - confidential_gpu.host maintainers (@confidential-gpu)
options:
  shim:
    description:
      - The Kata shim (runtime class without the C(kata-) prefix), e.g. C(qemu-nvidia-gpu), C(qemu-nvidia-gpu-snp),
        C(qemu-nvidia-gpu-tdx), C(qemu-snp), C(qemu-tdx).
      - Shims of runtime-rs (names ending in C(-runtime-rs)) are refused.
    type: str
    required: true
  prefix:
    description:
      - Where Kata is installed; the configurations are in C(<prefix>/share/defaults/kata-containers/).
      - An absolute path without C(..) components or control characters; with O(root) other than C(/), a
        symbolic link on the way to the shim's directory that resolves outside O(root) is refused (nothing
        is written).
    type: path
    default: /opt/kata
  root:
    description:
      - Root of the target's file system; every path is taken below it (tests, a tree prepared offline).
    type: path
    default: /
  kata_version:
    description:
      - The installed Kata release, e.g. C(3.27.0), or the output of C(kata-runtime --version) (the first version
        number in it counts). Decides O(method=auto).
    type: str
  method:
    description:
      - C(dropin) writes drop-ins in C(runtimes/<shim>/config.d/) (Kata 2.5.0 and later); C(copy) writes a managed
        copy of the configuration (earlier releases).
      - C(auto) picks C(dropin) for O(kata_version) 2.5.0 or later and C(copy) for earlier ones; without
        O(kata_version) it picks C(dropin) when C(runtimes/<shim>/configuration-<shim>.toml) exists and fails
        otherwise, asking for O(kata_version).
    type: str
    choices: [auto, dropin, copy]
    default: auto
  dropin_name:
    description:
      - File name (without C(.toml)) of this module's drop-ins. Kata merges C(config.d/) in name order and the last
        value wins; the default sorts after kata-deploy's generated drop-ins (C(10-) to C(30-)) and before its user
        overrides (C(50-)). Later drop-ins that set the same keys are reported in warnings.
    type: str
    default: 40-confidential-gpu
  settings:
    description:
      - "Values to set, as tables of the configuration, e.g. C({hypervisor: {qemu: {default_memory: 16384}},
        runtime: {create_container_timeout: 1200}, agent: {kata: {dial_timeout: 1200}}})."
      - Each value must have the type the base configuration holds (a string stays a string); keys the base does
        not have are written with a warning (Kata ignores unknown keys).
      - C(kernel_params), C(cold_plug_vfio), C(hot_plug_vfio), C(pcie_root_port) and C(pcie_switch_port) are refused
        here; O(kernel_params), O(kernel_params_absent) and O(pcie_mode) set them.
    type: dict
    default: {}
  kernel_params:
    description:
      - Guest kernel parameters to add, one word each (C(key=value) or C(flag)); those already in effect are not
        repeated. The parameters in effect before stay first, in their order.
    type: list
    elements: str
    default: []
  kernel_params_absent:
    description:
      - Guest kernel parameters to take out of the base ones, exact (C(pci=nocrs)) or by key (C(pci), every value).
    type: list
    elements: str
    default: []
  pcie_mode:
    description:
      - C(none) leaves the PCIe settings alone.
      - C(flatten) puts every passed-through function on its own guest root port
        (C(cold_plug_vfio = "root-port"), C(pcie_root_port) = ports needed).
      - C(replicate) puts them on downstream ports of an emulated PCIe switch (C(cold_plug_vfio = "switch-port"),
        C(pcie_switch_port) = ports needed), so that GPUs and NICs that share a switch on the host share one in the
        guest, where the NVIDIA driver looks for it to enable GPUDirect P2P and RDMA.
      - "Ports needed: every PCI Express function of the IOMMU groups of O(devices), host and PCI-to-PCI bridges
        left out, as Kata counts them. Kata accepts at most 16 root ports or 16 switch ports."
      - When the configuration in effect enables C(hot_plug_vfio), it is set to C(no-port) (Kata allows one of the
        two).
    type: str
    choices: [none, flatten, replicate]
    default: none
  topology:
    description:
      - The registered result of M(confidential_gpu.host.pci_topology_info) on this host, unfiltered (group members
        and GPU-NIC affinity are taken from it). Required unless O(pcie_mode=none).
    type: dict
  devices:
    description:
      - The devices one pod gets, for planning. Each item is a PCI address (C(0000:41:00.0) or C(41:00.0)) or a
        selector; C(gpu), C(nvswitch), C(nic) select every physical function of that role, C(gpu_nics) the NICs that
        share a switch or root port with the selected GPUs (the closest ones).
    type: list
    elements: str
    default: [gpu]
attributes:
  action:
    support: full
    description: Runs on the controller; reads and writes on the target through stat, find, slurp, file and copy.
  check_mode:
    support: full
    description: Changes nothing; reports what it would write and prints the PCIe plan.
  diff_mode:
    support: full
    description: Shows each drop-in or the managed copy before and after, and drop-ins that would be removed.
  platform:
    support: full
    platforms: posix
    description: Linux hosts with Kata Containers' Go runtime (C(containerd-shim-kata-v2)).
notes:
  - Needs C(tomlkit) on the controller.
  - The runtime reads every file of C(config.d/), whatever its name; this module never leaves backups there.
  - In switch-port mode Kata builds one emulated switch with all the ports, whatever the host looks like; the plan
    warns when the devices of a pod come from several places of the host topology.
  - Kata counts the functions it cold-plugs itself and takes the larger of that and C(pcie_root_port) /
    C(pcie_switch_port); the value written is a floor, and the plan tells before scheduling whether a pod exceeds
    the limit.
seealso:
  - module: confidential_gpu.host.pci_topology_info
  - name: Kata Containers virtualization reference architecture (PCIe root and switch ports, limits)
    description: Why Kata allows at most 16 root ports or 16 switch ports.
    link: https://github.com/kata-containers/kata-containers/blob/main/docs/design/kata-vra.md
"""

EXAMPLES = r"""
- name: Read the topology once
  confidential_gpu.host.pci_topology_info:
  register: topology

- name: SNP runtime class with its GPUs and their NICs behind one emulated switch
  confidential_gpu.host.kata_runtime_config:
    shim: qemu-nvidia-gpu-snp
    kata_version: "3.27.0"
    pcie_mode: replicate
    topology: "{{ topology }}"
    devices: [gpu, gpu_nics]
    kernel_params: [nvrc.log=debug]
    settings:
      hypervisor:
        qemu:
          default_memory: 32768
  register: kata_snp

- name: Point containerd's handler at the file Kata reads
  ansible.builtin.debug:
    msg: "ConfigPath = {{ kata_snp.config_path }}"

- name: Kata 3.20 (no per-shim drop-ins), a managed copy, one GPU per pod on root ports
  confidential_gpu.host.kata_runtime_config:
    shim: qemu-nvidia-gpu-tdx
    kata_version: "{{ kata_runtime_version.stdout }}"
    pcie_mode: flatten
    topology: "{{ topology }}"
    devices: ["0000:41:00.0"]
"""

RETURN = r"""
method:
  description: How the settings were written, C(dropin) or C(copy).
  returned: success
  type: str
  sample: dropin
method_reason:
  description: Why that method (the version or the layout found).
  returned: success
  type: str
  sample: Kata 3.27.0 reads config.d/ drop-ins (since 2.5.0)
config_path:
  description: The configuration file Kata must be given for this shim (containerd's C(ConfigPath)), below no root.
  returned: success
  type: str
  sample: /opt/kata/share/defaults/kata-containers/runtimes/qemu-nvidia-gpu-snp/configuration-qemu-nvidia-gpu-snp.toml
base_config:
  description: The file the settings were computed from.
  returned: success
  type: str
  sample: /opt/kata/share/defaults/kata-containers/configuration-qemu-nvidia-gpu-snp.toml
hypervisor:
  description: Name of the configuration's C([hypervisor.<name>]) table.
  returned: success
  type: str
  sample: qemu
kernel_params:
  description: The guest kernel parameters in effect after this run (the configuration's, then the added ones).
  returned: success
  type: list
  elements: str
  sample: [cgroup_no_v1=all, pci=realloc, pci=nocrs, pci=assign-busses, nvrc.smi.srs=1, nvrc.log=debug]
settings:
  description: The values this module sets besides C(kernel_params), as tables (PCIe keys included).
  returned: success
  type: dict
  sample: {hypervisor: {qemu: {cold_plug_vfio: switch-port, pcie_root_port: 0, pcie_switch_port: 8}}}
files:
  description: Files this module manages on the target (below no root).
  returned: success
  type: list
  elements: str
removed:
  description: Drop-ins of this module removed (or, in check mode, to remove) because nothing asks for them any more.
  returned: success
  type: list
  elements: str
pcie_plan:
  description: The PCIe plan; null with O(pcie_mode=none).
  returned: success, and when the plan fails the task
  type: dict
  contains:
    mode:
      description: C(flatten) or C(replicate).
      type: str
    vfio_mode:
      description: How the ports were counted, C(group) (legacy VFIO, whole IOMMU groups) or C(iommufd) (VFIO
        cdev, the devices themselves); see the P(confidential_gpu.host.kata_pcie_plan#filter) filter.
      type: str
    kept_on_vfio:
      description: With C(iommufd), members of the devices' IOMMU groups that stay on the host, bound to vfio-pci.
      type: list
      elements: str
    cold_plug_vfio:
      description: C(root-port) or C(switch-port).
      type: str
    pcie_root_port:
      description: Root ports written (0 in replicate mode).
      type: int
    pcie_switch_port:
      description: Switch downstream ports written (0 in flatten mode).
      type: int
    ports:
      description: Ports the pod's functions need.
      type: int
    max_ports:
      description: Kata's limit (16).
      type: int
    requested:
      description: Addresses O(devices) selected, in order.
      type: list
      elements: str
    devices:
      description: Every function that goes to the guest, with C(address), C(role), C(iommu_group), C(numa_node),
        C(requested), C(member_of) (the requested device whose group brought it) and C(needs_port).
      type: list
      elements: dict
    left_to_host:
      description: Bridges in the groups, which stay with the host.
      type: list
      elements: str
    layout:
      description: The functions grouped by where they meet on the host, each with C(bridge) (the deepest bridge
        they share, null for a function alone), C(link) (C(PIX) behind one switch, C(PXB) below one root port),
        C(gpus), C(nics) and C(other).
      type: list
      elements: dict
    errors:
      description: Why the plan cannot be used (the task fails).
      type: list
      elements: str
    warnings:
      description: What the guest will not see as on the host, group members that come along, groups not on
        vfio-pci yet.
      type: list
      elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.confidential_gpu.host.plugins.module_utils.kata_config import ARGUMENT_SPEC


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    module.fail_json(msg="confidential_gpu.host.kata_runtime_config runs as an action on the controller; call it "
                         "as a task (its action plugin was not found, is the collection installed whole?)")


if __name__ == "__main__":
    main()
