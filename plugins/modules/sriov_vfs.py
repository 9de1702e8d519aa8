#!/usr/bin/python
# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sriov_vfs
short_description: Create SR-IOV virtual functions on physical functions, now and at every boot
version_added: "0.1.0"
description:
  - Sets the number of virtual functions (VFs) of each SR-IOV physical function (PF) in O(pfs) through the
    PF's C(sriov_numvfs) in sysfs, and optionally its C(sriov_drivers_autoprobe), then waits until the VFs are
    in C(/sys/bus/pci/devices) and returns their addresses.
  - The kernel refuses to change a non-zero VF count to another one directly (C(EBUSY)), so a change from N to
    M VFs writes C(0) and then M, and only when the count differs. Every existing VF of that PF is destroyed.
  - C(sriov_drivers_autoprobe) is written first, since it decides whether drivers probe the VFs created after
    it; existing VFs keep their drivers.
  - Every PF is read and checked before anything is written; a request that fails any check (an address that
    is no device, a device that is no SR-IOV PF, more VFs than C(sriov_totalvfs), a PF without a driver, VFs
    bound to a driver that a change would destroy) fails and changes nothing, naming each problem.
  - "With O(persist), writes three files that re-create the VFs at boot: C(/etc/confidential-gpu/sriov.conf)
    (one line per PF: address, VF count, autoprobe), the POSIX sh script
    C(/usr/local/libexec/confidential-gpu/sriov-apply) that applies it the same way (autoprobe, then 0 and N
    only when different, then waits for the VFs), and the systemd oneshot unit
    C(/etc/systemd/system/<unit_name>) ordered before C(network-pre.target), C(containerd.service) and
    C(kubelet.service). The script and unit are the collection's C(files/), which the action plugin of the same
    name hands over. The module owns the unit's whole lifecycle: it enables it (the C(WantedBy=) links that
    C(systemctl enable) makes, below O(root) too), runs C(systemctl daemon-reload) after a change when O(root)
    is the running host's, and removes unit and links."
  - The files describe exactly the PFs of this call, so give every PF of the host in one call.
author:
  - confidential_gpu.host maintainers (@confidential-gpu)
extends_documentation_fragment:
  - confidential_gpu.host.shipped_files
options:
  pfs:
    description: The PFs to configure and their VF counts. An empty list configures nothing and removes the
      persistence files.
    type: list
    elements: dict
    required: true
    suboptions:
      address:
        description: The PF's PCI address, C(DDDD:BB:DD.F) (a missing domain means C(0000)).
        type: str
        required: true
      num_vfs:
        description:
          - The number of VFs the PF must have, from 0 to its C(sriov_totalvfs). 0 removes its VFs.
        type: int
        required: true
      drivers_autoprobe:
        description:
          - Whether drivers probe the PF's VFs when they are created (C(sriov_drivers_autoprobe)). Set it to
            false for VFs meant for vfio-pci, so that the PF's own VF driver (such as C(mlx5_core)) does not
            take them first; a VF with a C(driver_override) is still probed.
          - Unset leaves it as the kernel has it (1 after boot).
        type: bool
  persist:
    description:
      - Keep the VFs across reboots with the configuration file, script and systemd unit described above.
      - False removes those files and the unit's enablement links (C(*.wants/<unit_name>)) when they exist;
        the VFs present now stay.
    type: bool
    default: true
  unit_name:
    description:
      - Name of the systemd unit written with O(persist), in C(/etc/systemd/system/).
      - A run with another name leaves the unit of the old name in place; remove it with O(persist=false) and the
        old name first.
    type: str
    default: confidential-gpu-sriov.service
  timeout:
    description:
      - Seconds to wait for each write to C(sriov_numvfs) to return and then for the VFs to appear. The boot
        script waits as long for each PF and its driver.
      - A write that does not return in time (the kernel holds it while a VF is open by a VFIO user) fails the
        module with the process still waiting.
      - From 1 to 3600 (one hour); a value outside that range is refused and nothing is changed.
    type: int
    default: 60
  force:
    description:
      - Change the VF count of a PF even when some of its VFs are bound to a driver (a guest on vfio-pci, a
        host network interface on C(mlx5_core)). Without it such a change is refused, since it destroys those VFs.
    type: bool
    default: false
  root:
    description:
      - Root of the host's file system; C(sys/) and C(etc/) are read and written below it.
      - A tree that is not a live sysfs creates no VFs when written. With VF counts that differ from the tree's,
        the module waits for VFs that never come and fails after O(timeout).
    type: path
    default: /
attributes:
  check_mode:
    support: full
    description: Writes nothing; RV(pfs) shows the writes that would be made and the VFs expected (computed from
      the PF's VF offset and stride), RV(files) the files that would change.
  diff_mode:
    support: full
    description: Shows each changed PF's C(sriov_drivers_autoprobe) and C(sriov_numvfs) before and after, and
      the configuration file, script and unit before and after.
  platform:
    support: full
    platforms: posix
    description: Linux hosts with sysfs (SR-IOV attributes since Linux 3.8, C(sriov_drivers_autoprobe) since
      4.12) and, for O(persist), systemd.
notes:
  - A change of a PF's VF count refuses (unless O(force)) when any of its VFs is bound to a driver. A VF on
    vfio-pci may be in a guest; removing it then waits in the kernel until the guest lets it go, which is why
    the writes run in a child process bounded by O(timeout).
  - With O(root) other than C(/), a PF attribute or a file of O(persist) reached through a symbolic link that
    resolves outside O(root) is refused, naming the link, before anything is read or written.
  - The kernel creates VFs only through the PF's driver (its C(sriov_configure)); a PF without a driver is
    refused.
  - "NVIDIA ConnectX NICs limit C(sriov_totalvfs) in firmware: C(SRIOV_EN) and C(NUM_OF_VFS), set with
    C(mlxconfig) (C(mstconfig) from mstflint) and active after a firmware reset or reboot. The module does not
    change firmware; see the collection's C(docs/sriov.md)."
  - The boot script waits up to O(timeout) seconds for each PF, so a PF that is gone delays the units ordered
    after it (the network, containerd, kubelet) by that long, and the unit fails.
seealso:
  - module: confidential_gpu.host.pci_topology_info
  - name: Linux PCI sysfs ABI (sriov_numvfs, sriov_drivers_autoprobe)
    description: The attributes this module reads and writes.
    link: https://www.kernel.org/doc/Documentation/ABI/testing/sysfs-bus-pci
"""

EXAMPLES = r"""
- name: Two VFs on the lab's NVMe controller, kept across reboots
  confidential_gpu.host.sriov_vfs:
    pfs:
      - address: "0000:01:00.0"
        num_vfs: 2
  register: sriov

- name: Show the VFs
  ansible.builtin.debug:
    var: sriov.vfs

- name: Eight VFs per ConnectX port for guests, host driver kept off them
  confidential_gpu.host.sriov_vfs:
    pfs:
      - {address: "0000:41:00.0", num_vfs: 8, drivers_autoprobe: false}
      - {address: "0000:41:00.1", num_vfs: 8, drivers_autoprobe: false}
  register: sriov

- name: Preview a change on a captured tree
  confidential_gpu.host.sriov_vfs:
    root: /srv/captures/gpu-node-07
    pfs: [{address: "0000:41:00.0", num_vfs: 4}]
  check_mode: true
"""

RETURN = r"""
pfs:
  description: Every PF of O(pfs), in that order.
  returned: always
  type: list
  elements: dict
  contains:
    address:
      description: The PF's address, normalized.
      type: str
      sample: "0000:01:00.0"
    driver:
      description: The PF's driver.
      type: str
      sample: nvme
    total_vfs:
      description: C(sriov_totalvfs), the most VFs the PF allows.
      type: int
      sample: 4
    num_vfs_before:
      description: The VF count before this run.
      type: int
      sample: 0
    num_vfs:
      description: The VF count after this run (in check mode, the one it would have).
      type: int
      sample: 2
    drivers_autoprobe_before:
      description: C(sriov_drivers_autoprobe) before this run; null when the kernel has none.
      type: bool
      sample: true
    drivers_autoprobe:
      description: C(sriov_drivers_autoprobe) after this run.
      type: bool
      sample: true
    vfs_before:
      description: Addresses of the VFs before this run.
      type: list
      elements: str
      sample: []
    vfs:
      description:
        - Addresses of the VFs after this run, in VF order. In check mode, when the count changes, the addresses
          the kernel will give them (from the PF's VF offset and stride).
      type: list
      elements: str
      sample: ["0000:01:00.1", "0000:01:00.2"]
    recreated:
      description: Whether the VF count changes, which removes the existing VFs and creates new ones.
      type: bool
      sample: true
    changed:
      description: Whether anything of this PF was (or would be) written.
      type: bool
      sample: true
    applied:
      description: Whether the writes were made (false in check mode).
      type: bool
      sample: true
    writes:
      description: The writes, in order, each with the sysfs C(path) (below O(root)) and the C(value).
      type: list
      elements: dict
      sample: [{"path": "/sys/bus/pci/devices/0000:01:00.0/sriov_numvfs", "value": "2"}]
vfs:
  description: Addresses of all VFs of RV(pfs), PF after PF.
  returned: always
  type: list
  elements: str
  sample: ["0000:01:00.1", "0000:01:00.2"]
files:
  description: Persistence files and enablement links written or removed (in check mode, that would be), as
    host paths.
  returned: always
  type: list
  elements: str
  sample: ["/etc/confidential-gpu/sriov.conf", "/usr/local/libexec/confidential-gpu/sriov-apply",
           "/etc/systemd/system/confidential-gpu-sriov.service"]
unit_name:
  description: The systemd unit's name.
  returned: always
  type: str
  sample: confidential-gpu-sriov.service
unit_path:
  description: The systemd unit's file, as a host path.
  returned: always
  type: str
  sample: /etc/systemd/system/confidential-gpu-sriov.service
unit_changed:
  description: Whether the unit file or its enablement links changed (or would); the module then ran
    C(systemctl daemon-reload) when O(root) is the running host's.
  returned: always
  type: bool
  sample: true
persisted:
  description: Whether the persistence files are in place after this run (O(persist) with at least one PF).
  returned: always
  type: bool
  sample: true
problems:
  description: When the module fails, each problem found, one per item.
  returned: failure
  type: list
  elements: str
  sample: ["0000:01:00.0: 5 VFs asked for, but its sriov_totalvfs is 4; ask for at most 4 (...)"]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.confidential_gpu.host.plugins.module_utils.module_result import hand_over
from ansible_collections.confidential_gpu.host.plugins.module_utils.sriov import (
    DEFAULT_TIMEOUT,
    DEFAULT_UNIT,
    SriovError,
    manage,
    parse_pfs,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils import systemd_units
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot, HostRootError

ARGUMENT_SPEC = {
    "pfs": {"type": "list", "elements": "dict", "required": True, "options": {
        "address": {"type": "str", "required": True},
        "num_vfs": {"type": "int", "required": True},
        "drivers_autoprobe": {"type": "bool"},
    }},
    "persist": {"type": "bool", "default": True},
    "unit_name": {"type": "str", "default": DEFAULT_UNIT},
    "timeout": {"type": "int", "default": DEFAULT_TIMEOUT},
    "force": {"type": "bool", "default": False},
    "root": {"type": "path", "default": "/"},
    **systemd_units.SHIPPED_FILES_OPTION,
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    host = None
    try:
        wants = parse_pfs(params["pfs"])
        host = HostRoot(params["root"])
        result = manage(host, wants, params["persist"], params["unit_name"], params["timeout"], params["force"],
                        module.check_mode, params["_shipped_files"])
        reload_error = result["unit_changed"] and not module.check_mode and systemd_units.daemon_reload(
            module.run_command, params["root"])
        if reload_error:
            raise SriovError(reload_error)
    except SriovError as error:
        module.fail_json(msg=str(error), problems=error.problems, pfs=error.results)
    except HostRootError as error:
        module.fail_json(msg=str(error), problems=[str(error)], pfs=[])
    else:
        module.exit_json(**hand_over(module, host, result))


if __name__ == "__main__":
    main()
