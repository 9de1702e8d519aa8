#!/usr/bin/python
# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kernel_module_config
short_description: Kernel module options and the modules loaded at boot, as one set of two files
version_added: "0.2.0"
description:
  - Writes C(/etc/modprobe.d/<modprobe_conf>) with one C(options <module> <words>) line per module of O(options)
    (kmod's C(modprobe.d(5)) format), and C(/etc/modules-load.d/<modules_load_conf>) with the modules of O(load),
    one a line, which C(systemd-modules-load.service) loads at boot (systemd's C(modules-load.d(5))).
  - A file whose list is empty is removed; O(options) left out leaves the C(modprobe.d) file as it is.
  - Both files are planned in one pass and written only when their content or mode (C(0644)) differs, through a
    temporary file and a rename; missing directories are created with mode C(0755). One call instead of a
    C(file) and a C(copy) per file.
  - Loads, unloads and reloads nothing; the running kernel is the caller's (role C(cc_host) loads modules itself).
  - Refuses, before reading or writing anything, a file name that is not a plain C(.conf) name, a module name
    that is not letters, digits, C(_) and C(-), and option words that would break the line.
author:
  - confidential_gpu.host maintainers (@confidential-gpu)
options:
  root:
    description:
      - Root of the host's file system; C(/etc) is read and written below it.
      - Point it at a captured or synthetic tree to plan or write against that instead of the live host.
    type: path
    default: /
  modprobe_conf:
    description: File name in C(/etc/modprobe.d/) for O(options).
    type: str
    required: true
  modules_load_conf:
    description: File name in C(/etc/modules-load.d/) for O(load).
    type: str
    required: true
  options:
    description:
      - Module name to its option words (C(name=value) or C(name), separated by blanks), e.g. C(kvm_amd) to
        C(sev=1 sev_es=1 sev_snp=1). Written sorted by module name.
      - An empty dict removes the file; left out, the file is not touched.
    type: dict
  load:
    description: Modules to load at boot, in this order, each once. An empty list removes the file.
    type: list
    elements: str
    default: []
notes:
  - Supports check mode (reports the files that would change) and diff mode (their content before and after).
"""

EXAMPLES = r"""
- name: Give kvm_amd the SEV-SNP options and load ccp and iommufd at boot
  confidential_gpu.host.kernel_module_config:
    modprobe_conf: confidential-gpu-kvm-amd.conf
    modules_load_conf: confidential-gpu.conf
    options:
      kvm_amd: sev=1 sev_es=1 sev_snp=1
    load: [ccp, iommufd]

- name: Remove the boot list when no module needs it, leaving any modprobe.d file alone
  confidential_gpu.host.kernel_module_config:
    modprobe_conf: confidential-gpu-kvm-amd.conf
    modules_load_conf: confidential-gpu.conf
    load: []
"""

RETURN = r"""
files:
  description: Host paths of the files written or removed (in check mode, that would be).
  returned: always
  type: list
  elements: str
  sample: ["/etc/modprobe.d/confidential-gpu-kvm-amd.conf", "/etc/modules-load.d/confidential-gpu.conf"]
modprobe_conf:
  description: Host path of the C(modprobe.d) file.
  returned: always
  type: str
  sample: /etc/modprobe.d/confidential-gpu-kvm-amd.conf
modules_load_conf:
  description: Host path of the C(modules-load.d) file.
  returned: always
  type: str
  sample: /etc/modules-load.d/confidential-gpu.conf
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.confidential_gpu.host.plugins.module_utils.kernel_module_config import (
    KernelModuleConfigError,
    manage,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.module_result import hand_over
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot, HostRootError

ARGUMENT_SPEC = {
    "root": {"type": "path", "default": "/"},
    "modprobe_conf": {"type": "str", "required": True},
    "modules_load_conf": {"type": "str", "required": True},
    "options": {"type": "dict"},
    "load": {"type": "list", "elements": "str", "default": []},
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    options = None if params["options"] is None else {str(k): str(v) for k, v in params["options"].items()}
    host = None
    try:
        host = HostRoot(params["root"])
        result = manage(host, params["modprobe_conf"], params["modules_load_conf"], options, params["load"],
                        module.check_mode)
    except (KernelModuleConfigError, HostRootError) as error:
        module.fail_json(msg=str(error), **hand_over(module, host, {}))
    else:
        module.exit_json(**hand_over(module, host, result))


if __name__ == "__main__":
    main()
