#!/usr/bin/python
# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: hugepages
short_description: Hugepage pools per page size and NUMA node, at runtime and at boot
version_added: "0.1.0"
description:
  - Sets hugepage pools (C(2M), C(1G), any size the kernel offers) on named NUMA nodes through
    C(/sys/devices/system/node/node<N>/hugepages/hugepages-<size>kB/nr_hugepages), or system-wide through
    C(/sys/kernel/mm/hugepages/hugepages-<size>kB/nr_hugepages) when a pool's O(pools[].node) is null.
  - Writes a pool only when its page count differs, shrinking pools first, then the others largest pages first;
    reads back what the kernel gave and reports it per pool (RV(pools)). The kernel may give fewer pages than
    asked for when memory is fragmented or in use; such pools are listed in RV(shortfall) and the run fails or
    warns per O(on_shortfall).
  - Refuses, before changing anything, a request that would put more memory into hugepages on a node than the
    node's C(MemTotal) minus a reserve (the larger of O(reserve_mb) and O(reserve_percent)); pools the request
    does not name count at their current size. System-wide pools are checked against the whole host.
  - Fails, before changing anything, on a NUMA node or page size the host does not have, naming it.
  - With O(persist), writes a boot-time systemd unit (C(/etc/systemd/system/confidential-gpu-hugepages.service)),
    its program (C(/usr/local/sbin/confidential-gpu-hugepages), a POSIX shell script) and its pool list
    (C(/etc/confidential-gpu/hugepages.conf)), which set the same pools early at boot, before C(sysinit.target),
    C(kubelet.service) and C(containerd.service). Program and unit are the collection's C(files/), handed over by
    the action plugin of the same name. The module owns the unit's whole lifecycle; it enables it (the
    C(sysinit.target.wants) link that C(systemctl enable) makes, below O(root) too), runs C(systemctl
    daemon-reload) after a change when O(root) is the running host's, and removes unit and link.
  - With O(persist), returns in RV(kernel_args) the boot arguments that reserve the pools of the sizes in
    O(kernel_args_sizes) (C(1G) by default) at boot, when memory is not fragmented yet, for the
    C(confidential_gpu.host.kernel_args) role to write.
  - Pools not listed are left as they are at runtime and are not set at boot. With no pools at all and O(persist)
    true the module changes nothing, files included.
author:
  - confidential_gpu.host maintainers (@confidential-gpu)
extends_documentation_fragment:
  - confidential_gpu.host.shipped_files
options:
  root:
    description:
      - Root of the host's file system; C(/sys), C(/proc) and C(/etc) are read and written below it.
      - Point it at a captured or synthetic tree to plan or write against that instead of the live host.
    type: path
    default: /
  pools:
    description:
      - The pools to set, one item per page size and node.
      - A page size has either one system-wide item (O(pools[].node) null) or items for named nodes, not both.
    type: list
    elements: dict
    default: []
    suboptions:
      size:
        description: Page size, with a unit (C(2M), C(2MB), C(1G), C(2048kB)). A bare number is refused.
        type: str
        required: true
      count:
        description: Number of pages in the pool (0 empties it).
        type: int
        required: true
      node:
        description: NUMA node number; null for the system-wide pool, which the kernel spreads over the nodes.
        type: int
  reserve_mb:
    description:
      - Memory (MiB) per NUMA node that hugepages must leave free. The reserve of a node is the larger of this
        and O(reserve_percent) of its C(MemTotal).
    type: int
    default: 2048
  reserve_percent:
    description: Percent (0 to 99) of each node's C(MemTotal) that hugepages must leave free (see O(reserve_mb)).
    type: int
    default: 10
  on_shortfall:
    description:
      - What to do when the kernel gives a pool fewer pages than asked for. C(fail) fails the task (the pages
        the kernel gave stay allocated), C(warn) warns.
      - A short pool of a size that RV(kernel_args) reserves at the next boot only warns, so that the run can go
        on to write the boot arguments.
    type: str
    choices: [fail, warn]
    default: fail
  persist:
    description:
      - Write the boot-time unit, its program and its pool list, and return RV(kernel_args).
      - When false, the pools are set at runtime only; this module's unit, program and pool list are removed
        (with the unit's C(sysinit.target.wants) link) and RV(kernel_args) is empty.
    type: bool
    default: true
  kernel_args_sizes:
    description:
      - Page sizes reserved at boot through kernel arguments (RV(kernel_args)). Pages of 1 GiB are hard to find
        contiguous at runtime; reserving them at boot is the reliable way.
    type: list
    elements: str
    default: [1G]
attributes:
  check_mode:
    support: full
    description: Writes nothing; RV(pools) shows the plan (RV(pools[].allocated) is null for a pool it would
      write), RV(files) the files it would write, RV(kernel_args) the boot arguments.
  diff_mode:
    support: full
    description: Shows the page counts it writes and each file it writes or removes, before and after.
  platform:
    support: full
    platforms: posix
    description: Linux hosts with sysfs and systemd, or a tree given as O(root).
notes:
  - "Boot arguments use the kernel's node format for per-node pools (C(hugepagesz=1G hugepages=0:2,1:2)), which
    Linux has from 5.16 on (C(Documentation/admin-guide/mm/hugetlbpage.rst)). An older running kernel reads it
    as 0 pages, so there the module writes C(hugepages=N) (the kernel splits it evenly over the nodes with
    memory) when every such node asks the same count, and fails before any change otherwise."
  - The boot-time unit exits with status 1, and logs the pool to the journal, when the kernel gives fewer pages
    than the pool list asks for.
  - The lab and fake trees have no kernel behind them, so what is written there reads back unchanged.
seealso:
  - module: confidential_gpu.host.cc_host_info
  - module: confidential_gpu.host.kernel_cmdline
  - name: HugeTLB Pages (Linux kernel documentation)
    description: The sysfs files, the boot arguments and their node format.
    link: https://docs.kernel.org/admin-guide/mm/hugetlbpage.html
"""

EXAMPLES = r"""
- name: 512 pages of 2 MiB on each of two NUMA nodes, now and at every boot
  confidential_gpu.host.hugepages:
    pools:
      - {size: 2M, count: 512, node: 0}
      - {size: 2M, count: 512, node: 1}
  register: hugepages

- name: Four 1 GiB pages spread over the nodes, reserved at boot by kernel arguments; only warn when short now
  confidential_gpu.host.hugepages:
    pools:
      - {size: 1G, count: 4}
    on_shortfall: warn
  register: gigantic

- name: Hand the boot arguments to the kernel_args role
  ansible.builtin.set_fact:
    hugepages_kernel_args: "{{ gigantic.kernel_args }}"

- name: Preview on a big host, keeping 8 GiB per node out of hugepages
  confidential_gpu.host.hugepages:
    pools:
      - {size: 1G, count: 200, node: 0}
      - {size: 1G, count: 200, node: 1}
    reserve_mb: 8192
  check_mode: true
  diff: true
"""

RETURN = r"""
pools:
  description: Each requested pool, in the order given, with what the kernel holds after this run.
  returned: always
  type: list
  elements: dict
  contains:
    size:
      description: Page size as a label.
      type: str
      sample: 2M
    size_kb:
      description: Page size in kB.
      type: int
      sample: 2048
    node:
      description: NUMA node, null for the system-wide pool.
      type: int
      sample: 0
    requested:
      description: Pages asked for.
      type: int
      sample: 512
    before:
      description: Pages in the pool before this run.
      type: int
      sample: 0
    allocated:
      description: Pages in the pool after this run, read back from C(nr_hugepages); null in check mode for a pool
        that would be written.
      type: int
      sample: 512
    free:
      description: Pages of the pool not in use (C(free_hugepages)).
      type: int
      sample: 512
    surplus:
      description: Surplus pages (C(surplus_hugepages)), in use above the pool's size after shrinking it.
      type: int
      sample: 0
    changed:
      description: Whether this run wrote (or would write) the pool's count.
      type: bool
      sample: true
shortfall:
  description: Pools the kernel gave fewer pages than asked for.
  returned: always
  type: list
  elements: dict
  contains:
    size:
      description: Page size as a label.
      type: str
      sample: 1G
    size_kb:
      description: Page size in kB.
      type: int
      sample: 1048576
    node:
      description: NUMA node, null for the system-wide pool.
      type: int
      sample: 1
    requested:
      description: Pages asked for.
      type: int
      sample: 4
    allocated:
      description: Pages the kernel gave.
      type: int
      sample: 1
    missing:
      description: RV(shortfall[].requested) minus RV(shortfall[].allocated).
      type: int
      sample: 3
    at_boot:
      description: Whether RV(kernel_args) reserves this size at the next boot (such a pool only warns).
      type: bool
      sample: true
memory:
  description:
    - Hugepage memory per NUMA node after the request, against the node's memory and reserve. On a host without
      NUMA in sysfs one row has node null and the host's C(MemTotal); when system-wide pools are asked for, a
      last row with node null sums the nodes and adds those pools.
  returned: always
  type: list
  elements: dict
  contains:
    node:
      description: NUMA node, or null for the host.
      type: int
      sample: 0
    mem_total_kb:
      description: C(MemTotal) in kB.
      type: int
      sample: 4026532
    reserve_kb:
      description: Memory kept out of hugepages, in kB.
      type: int
      sample: 2097152
    limit_kb:
      description: The most hugepage memory allowed, in kB.
      type: int
      sample: 1929380
    hugepages_kb:
      description: Hugepage memory after the request, in kB.
      type: int
      sample: 1048576
kernel_args:
  description: Boot arguments that reserve the pools of O(kernel_args_sizes) at boot; empty when O(persist) is false.
  returned: always
  type: list
  elements: str
  sample: ["hugepagesz=1G", "hugepages=0:2,1:2"]
files:
  description: Files and the unit's enablement link written or removed (in check mode, that would be), as host
    paths.
  returned: always
  type: list
  elements: str
  sample: ["/usr/local/sbin/confidential-gpu-hugepages", "/etc/confidential-gpu/hugepages.conf",
           "/etc/systemd/system/confidential-gpu-hugepages.service"]
unit_name:
  description: Name of the boot-time unit.
  returned: always
  type: str
  sample: confidential-gpu-hugepages.service
unit_changed:
  description: Whether the unit file or its C(sysinit.target.wants) link was written or removed (or would be); the
    module then ran C(systemctl daemon-reload) when O(root) is the running host's.
  returned: always
  type: bool
  sample: true
persist:
  description: O(persist) as given.
  returned: always
  type: bool
  sample: true
"""


from ansible.module_utils.basic import AnsibleModule
from ansible_collections.confidential_gpu.host.plugins.module_utils.hugepages import (
    HugepagesError,
    Options,
    ShortfallError,
    manage,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.module_result import hand_over
from ansible_collections.confidential_gpu.host.plugins.module_utils import systemd_units
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot, HostRootError

ARGUMENT_SPEC = {
    "root": {"type": "path", "default": "/"},
    "pools": {"type": "list", "elements": "dict", "default": [], "options": {
        "size": {"type": "str", "required": True},
        "count": {"type": "int", "required": True},
        "node": {"type": "int"},
    }},
    "reserve_mb": {"type": "int", "default": 2048},
    "reserve_percent": {"type": "int", "default": 10},
    "on_shortfall": {"type": "str", "default": "fail", "choices": ["fail", "warn"]},
    "persist": {"type": "bool", "default": True},
    "kernel_args_sizes": {"type": "list", "elements": "str", "default": ["1G"]},
    **systemd_units.SHIPPED_FILES_OPTION,
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    options = Options(params["pools"], params["reserve_mb"], params["reserve_percent"], params["on_shortfall"],
                      params["persist"], params["kernel_args_sizes"])
    host = None
    try:
        host = HostRoot(params["root"])
        result = manage(host, options, module.check_mode, params["_shipped_files"])
        reload_error = result["unit_changed"] and not module.check_mode and systemd_units.daemon_reload(
            module.run_command, params["root"])
        if reload_error:
            raise HugepagesError(reload_error)
    except ShortfallError as error:
        module.fail_json(msg=str(error), **hand_over(module, host, error.result))
    except (HugepagesError, HostRootError) as error:
        module.fail_json(msg=str(error), **hand_over(module, host, {}))
    else:
        module.exit_json(**hand_over(module, host, result))


if __name__ == "__main__":
    main()
