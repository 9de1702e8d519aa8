#!/usr/bin/python
# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kernel_cmdline
short_description: Manage kernel boot arguments in the boot loader's configuration, configured and active apart
version_added: "0.1.0"
description:
  - Ensures kernel arguments are present in or absent from the boot configuration, with key/value semantics
    the way the kernel reads them; C(intel_iommu=on,sm_on) is not C(intel_iommu=on), C(vfio-pci.ids) and
    C(vfio_pci.ids) are the same key, quoted values (C(foo="a b")) are one argument.
  - A key listed once in O(present) gets exactly that value; every other value of it is removed. Keys in
    O(multi_value_keys) (C(hugepagesz), C(hugepages), C(console), C(memmap)) get exactly the listed values, in
    order; C(hugepagesz) and C(hugepages) keep their order relative to each other, since C(hugepages=N) applies
    to the C(hugepagesz=) before it.
  - Reads the I(configured) arguments (what the boot loader will give the default kernel at the next boot,
    computed from the boot configuration itself) and the I(active) ones (C(/proc/cmdline)) and returns both;
    RV(reboot_required) is true when they differ.
  - "Backends, detected from files below O(root) unless O(backend) names one: C(grub) (Debian, Ubuntu: a
    drop-in in C(/etc/default/grub.d/), then C(update-grub) or C(grub-mkconfig) only when it changed),
    C(grubby) (EL, Fedora: C(grubby --update-kernel=ALL), every boot entry, plus C(/etc/kernel/cmdline) when
    it exists), C(systemd_boot) (C(/etc/kernel/cmdline), then C(kernel-install add) for every installed kernel),
    C(rpm_ostree) (C(rpm-ostree kargs) on the default deployment)."
  - Refuses to remove (or replace a value of) C(root), C(ro), C(rw), C(console), C(rootflags), C(rootfstype)
    and C(ostree) unless O(allow_removing) names the key.
  - Bad input (a malformed argument, two values for one key, a key both present and absent, an unknown
    backend) fails before anything is read or written. A configured line with an unbalanced double quote
    (C(/etc/kernel/cmdline), the GRUB variables, a grubby entry, C(rpm-ostree kargs)) fails before anything is
    written or run, naming the file and the fix.
  - When a boot tool fails after the module wrote its file (the GRUB drop-in or C(/etc/kernel/cmdline)), the
    file is put back and the message says so.
  - "With the C(grub) backend and O(root) C(/), C(/etc/default/grub) and C(/etc/default/grub.d/*.cfg) are
    sourced with C(/bin/sh), as C(grub-mkconfig) sources them. With any other O(root) (a tree, possibly captured
    from another host) they are never run: a parser reads comments, assignments (C(VAR=...) with single,
    double or no quotes, C($VAR), C(${VAR}), C(${VAR-}) expansion of earlier values) and the C(if)/C(else)/C(fi)
    of the module's own drop-in; a variable set by command substitution (C($(...)), backticks) is not computed,
    and the run fails naming the file and line when C(GRUB_CMDLINE_LINUX*) depends on one; any other statement
    fails the same way. RV(grub_reader) says which way was used."
author:
  - confidential_gpu.host maintainers (@confidential-gpu)
options:
  present:
    description:
      - Arguments that must be in the boot configuration, one per item, C(key) or C(key=value).
      - A value with spaces is given in double quotes (C(foo="a b")); unquoted, it would be two arguments.
      - Values with spaces or GRUB script characters (C(;), C(&), C(|)) are written in double quotes.
        Values holding quotes, a backslash, C($) or a backtick are refused.
      - C(vfio-pci.ids) (or C(vfio_pci.ids)) is checked as vfio-pci reads it (Linux
        C(drivers/vfio/pci/vfio_pci.c), function C(vfio_pci_fill_ids())); comma-separated entries, each
        C(vendor:device[:subvendor[:subdevice[:class[:class_mask]]]]) in hex (vendor and device at most 4 digits),
        1023 characters in all. An entry vfio-pci would skip (C(10de:*), C(zzzz:2330), an empty one) is refused.
    type: list
    elements: str
    default: []
  absent:
    description:
      - Arguments that must not be in the boot configuration. C(key) removes every value of the key (and the
        bare flag); C(key=value) removes only that value.
      - With the C(grub) backend this also removes arguments written in C(/etc/default/grub) or another
        drop-in, by re-assigning the variable in this module's drop-in.
    type: list
    elements: str
    default: []
  backend:
    description:
      - Which boot configuration to edit. C(auto) picks C(rpm_ostree) when C(/run/ostree-booted) exists,
        C(systemd_boot) when C(loader/loader.conf) exists in C(/efi), C(/boot/efi) or C(/boot), C(grubby) on
        EL and Fedora (C(/etc/os-release) ID or ID_LIKE C(rhel), C(fedora), C(centos)), C(grub) on Debian and
        Ubuntu with C(/etc/default/grub); anything else fails and says what it saw.
    type: str
    choices: [auto, grub, grubby, systemd_boot, rpm_ostree]
    default: auto
  root:
    description:
      - Root of the host's file system; boot configuration files are read and written below it.
      - With a root other than C(/), O(command_path) is required, since the real boot-loader tools act on
        the running system and not on the tree.
    type: path
    default: /
  allow_removing:
    description:
      - Protected keys (C(root), C(ro), C(rw), C(console), C(rootflags), C(rootfstype), C(ostree)) that
        this run may remove or change.
      - Each item is a kernel parameter name alone (letters, digits, C(_), C(-), C(.)); an item with C(=),
        whitespace, quotes or a pattern such as C(*) is refused.
    type: list
    elements: str
    default: []
  multi_value_keys:
    description:
      - Keys that may appear several times on the command line, each occurrence counting.
      - Each item is a kernel parameter name alone (letters, digits, C(_), C(-), C(.)); an item with C(=),
        whitespace or quotes is refused.
    type: list
    elements: str
    default: [console, hugepagesz, hugepages, memmap]
  grub_dropin_name:
    description:
      - File name of this module's drop-in in C(/etc/default/grub.d/) (C(grub) backend). It must end in
        C(.cfg) and should sort after the other drop-ins, which C(grub-mkconfig) sources in name order.
    type: str
    default: 99-confidential-gpu.cfg
  command_path:
    description:
      - Directories searched for C(update-grub), C(grub-mkconfig), C(grubby), C(kernel-install) and
        C(rpm-ostree). Default C(/usr/local/sbin), C(/usr/local/bin), C(/usr/sbin), C(/usr/bin), C(/sbin),
        C(/bin).
      - Commands run with C(CONFIDENTIAL_GPU_ROOT) set to O(root) in their environment (stand-in tools for tests
        use it; the real tools ignore it).
    type: list
    elements: path
attributes:
  check_mode:
    support: full
    description: Changes nothing; RV(commands) lists the commands it would run and RV(configured) what the
      boot configuration would hold. Read-only commands (C(grubby --info), C(rpm-ostree kargs)) still run.
  diff_mode:
    support: full
    description: Shows the drop-in or C(/etc/kernel/cmdline) before and after, and for C(grubby) and
      C(rpm_ostree) the arguments of each changed entry, one per line.
  platform:
    support: full
    platforms: posix
    description: Linux hosts booted by GRUB (Debian, Ubuntu, EL, Fedora), systemd-boot or rpm-ostree.
notes:
  - With the C(grub) backend the arguments go to C(GRUB_CMDLINE_LINUX), which Debian and Ubuntu give every
    entry, recovery ones included, so that a recovery boot sees the same devices. An argument to replace or
    remove that lives in C(GRUB_CMDLINE_LINUX_DEFAULT) is edited there.
  - The drop-in re-assigns the variables only while the values before it are the ones it was written for;
    after a later edit of C(/etc/default/grub) it adds its arguments only and C(update-grub) prints a warning
    until the module runs again.
  - When C(/proc/cmdline) cannot be read (a tree given as O(root)), RV(active) is null and RV(reboot_required)
    means that this run changed the configuration.
seealso:
  - module: confidential_gpu.host.cc_host_info
  - name: kernel-install(8)
    description: Where systemd-boot hosts take their kernel command line from.
    link: https://www.freedesktop.org/software/systemd/man/latest/kernel-install.html
"""

EXAMPLES = r"""
- name: IOMMU on and nouveau kept away (Ubuntu 24.04, Debian 12, RHEL 9, systemd-boot alike)
  confidential_gpu.host.kernel_cmdline:
    present:
      - intel_iommu=on
      - iommu=pt
      - modprobe.blacklist=nouveau
  register: boot

- name: Say when a reboot is due
  ansible.builtin.debug:
    msg: "reboot needed for {{ boot.pending | map(attribute='key') | join(', ') }}"
  when: boot.reboot_required

- name: Two hugepage pools; the order of hugepagesz and hugepages is kept
  confidential_gpu.host.kernel_cmdline:
    present: [hugepagesz=1G, hugepages=16, hugepagesz=2M, hugepages=1024]

- name: Take iommu=pt out again, wherever it is written (also /etc/default/grub)
  confidential_gpu.host.kernel_cmdline:
    absent: [iommu=pt]

- name: RHEL 9 host, every installed kernel, preview the grubby call first
  confidential_gpu.host.kernel_cmdline:
    backend: grubby
    present: [amd_iommu=on, "vfio-pci.ids=10de:2330"]
  check_mode: true
  register: plan

- name: Show what would run
  ansible.builtin.debug:
    var: plan.commands

- name: A systemd-boot host (kernel-install, /etc/kernel/cmdline)
  confidential_gpu.host.kernel_cmdline:
    backend: systemd_boot
    present: [nohibernate, kvm_intel.tdx=1]
"""

RETURN = r"""
backend:
  description: The backend used (detected or given).
  returned: always
  type: str
  sample: grub
configured:
  description:
    - The arguments the boot configuration gives the default kernel after this run (in check mode, what it
      would give), as written. For C(grub), C(GRUB_CMDLINE_LINUX) then C(GRUB_CMDLINE_LINUX_DEFAULT) as
      C(grub-mkconfig) reads them (C(root=) and C(ro) are added by GRUB and are not in it); for C(grubby), the
      default entry's arguments with C(root=) first.
  returned: always
  type: list
  elements: str
  sample: ["console=ttyS0,115200n8", "intel_iommu=on", "iommu=pt", "modprobe.blacklist=nouveau"]
configured_before:
  description: RV(configured) as it was before this run.
  returned: always
  type: list
  elements: str
  sample: ["console=ttyS0,115200n8", "intel_iommu=on", "iommu=pt"]
active:
  description: The running kernel's arguments (C(/proc/cmdline)); null when it cannot be read.
  returned: always
  type: list
  elements: str
  sample: ["BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64", "root=UUID=0a1b", "ro", "console=ttyS0,115200n8",
           "intel_iommu=on", "iommu=pt"]
pending:
  description:
    - Keys whose configured values differ from the active ones, the ones a reboot would change. Every key of
      RV(configured) and of the request counts; keys only the running kernel has (added by the boot loader,
      like C(BOOT_IMAGE) and GRUB's C(root=) and C(ro)) do not.
  returned: always
  type: list
  elements: dict
  contains:
    key:
      description: The key as written.
      type: str
      sample: modprobe.blacklist
    configured:
      description: Its values in the boot configuration (null for a bare flag).
      type: list
      elements: str
      sample: ["nouveau"]
    active:
      description: Its values on the running kernel.
      type: list
      elements: str
      sample: []
reboot_required:
  description: True when RV(pending) is not empty (or, when RV(active) is null, when this run changed something).
  returned: always
  type: bool
  sample: true
commands:
  description: The changing commands run, or in check mode the ones that would run, each as a list of words.
  returned: always
  type: list
  elements: list
  sample: [["update-grub"]]
grub_reader:
  description:
    - How the GRUB settings files were read, C(grub) backend only; null for the other backends.
    - C(sh) (sourced with C(/bin/sh), O(root) is C(/)) or C(parser) (read without a shell, any other O(root)).
  returned: always
  type: str
  sample: sh
files:
  description: Files written or removed (in check mode, that would be), as host paths.
  returned: always
  type: list
  elements: str
  sample: ["/etc/default/grub.d/99-confidential-gpu.cfg"]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.confidential_gpu.host.plugins.module_utils.boot_backend import Runner
from ansible_collections.confidential_gpu.host.plugins.module_utils.host_write import SYSTEM_PATH
from ansible_collections.confidential_gpu.host.plugins.module_utils.kernel_args_model import (
    DEFAULT_MULTI_VALUE_KEYS,
    KernelCmdlineError,
    build_request,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.kernel_cmdline import manage
from ansible_collections.confidential_gpu.host.plugins.module_utils.module_result import hand_over
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot, HostRootError

ARGUMENT_SPEC = {
    "present": {"type": "list", "elements": "str", "default": []},
    "absent": {"type": "list", "elements": "str", "default": []},
    "backend": {"type": "str", "default": "auto", "choices": ["auto", "grub", "grubby", "systemd_boot", "rpm_ostree"]},
    "root": {"type": "path", "default": "/"},
    "allow_removing": {"type": "list", "elements": "str", "default": []},
    "multi_value_keys": {"type": "list", "elements": "str", "default": list(DEFAULT_MULTI_VALUE_KEYS), "no_log": False},
    "grub_dropin_name": {"type": "str", "default": "99-confidential-gpu.cfg"},
    "command_path": {"type": "list", "elements": "path"},
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    try:
        request = build_request(params["present"], params["absent"], params["multi_value_keys"],
                                params["allow_removing"])
        host = HostRoot(params["root"])
        if host.root != "/" and not params["command_path"]:
            raise KernelCmdlineError("root is %s: give command_path too, or the real boot-loader tools would change "
                                     "this machine's boot configuration instead of the tree's" % host.root)
        runner = Runner(params["command_path"] or SYSTEM_PATH, module.check_mode, host.root)
        result = manage(host, runner, params["backend"], request, params["grub_dropin_name"])
    except (KernelCmdlineError, HostRootError) as error:
        module.fail_json(msg=str(error), backend=params["backend"])
    else:
        module.exit_json(**hand_over(module, host, result))


if __name__ == "__main__":
    main()
