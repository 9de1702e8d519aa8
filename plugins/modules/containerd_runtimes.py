#!/usr/bin/python
# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: containerd_runtimes
short_description: Edit a containerd configuration file in place, only its imports list and runtime handler tables
version_added: "0.1.0"
description:
  - Reads a containerd configuration file from the host, changes only what it is asked to and writes it back,
    keeping every other line, comment and table as it was. The editing runs on the controller (an action
    plugin using C(tomlkit)); the host needs no TOML library.
  - O(imports_present) and O(imports_absent) edit the top-level C(imports) list, for drop-in files.
    containerd 2.x merges imported files into the main one table by table; containerd 1.x replaces a whole
    plugin section (such as the CRI plugin's) with the imported file's, so on 1.x handlers go into the main
    file through O(runtimes) instead (the C(kata) role chooses for you).
  - O(runtimes) sets runtime handler tables under C(plugins.<CRI plugin>.containerd.runtimes.<name>), each
    replaced whole when it differs from the one given; O(runtimes_absent) removes handlers. The CRI plugin is
    C(io.containerd.grpc.v1.cri) in configuration version 2 and C(io.containerd.cri.v1.runtime) in version 3,
    read from the file's C(version).
  - With no edit asked for, only reads the file and returns what it holds (RV(exists), RV(version), RV(ours),
    RV(imports), RV(runtimes)); a missing file is then not an error.
  - Fails, changing nothing, on a file that is not valid TOML, on a configuration version without a known CRI
    plugin when handlers are to be written (version 1), and on a missing file when an edit is asked for.
author:
  - confidential_gpu.host maintainers (@confidential-gpu)
options:
  path:
    description:
      - The containerd configuration file, as the host sees it (C(/etc/containerd/config.toml)).
      - An absolute path without C(..) components or control characters; with O(root) other than C(/), a
        symbolic link on the way below O(root) that resolves outside O(root) is refused too (nothing is read or
        written), so that the edit never lands outside O(root).
    type: str
    required: true
  root:
    description:
      - Root of the host's file system; O(path) is read and written below it. Paths written into the file
        (O(imports_present)) are left as given, since containerd reads them on the host.
    type: str
    default: /
  imports_present:
    description:
      - Paths that must be in the top-level C(imports) list; added after the ones there.
      - containerd resolves a relative path next to the file and expands globs; an empty path or one holding a
        control character (newline, tab) is refused, here and in O(imports_absent).
    type: list
    elements: str
    default: []
  imports_absent:
    description: Paths that must not be in the top-level C(imports) list.
    type: list
    elements: str
    default: []
  runtimes:
    description:
      - Runtime handler tables to set, by handler name. Each value is the whole table (nested dictionaries
        become sub-tables, such as C(options)); a handler whose table differs is replaced.
      - A handler name is what a Kubernetes RuntimeClass's C(handler) names, so it must be a lowercase RFC 1123
        DNS label (C(a-z), C(0-9) and C(-), starting and ending with a letter or digit, at most 63 characters);
        other names are refused. The same holds for O(runtimes_absent).
    type: dict
    default: {}
  runtimes_absent:
    description: Runtime handler names to remove.
    type: list
    elements: str
    default: []
  tables:
    description:
      - Keys to set in other tables, each given as its O(tables[].path) and the O(tables[].values) to set there;
        the table is created when missing and its other keys are kept. Used for what guest image pull needs
        (C(proxy_plugins.nydus), C(disable_snapshot_annotations)).
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: The table's keys from the top, e.g. C([proxy_plugins, nydus]).
        type: list
        elements: str
        required: true
      values:
        description: Keys and plain values to set in the table.
        type: dict
        required: true
  plugin_id:
    description:
      - The CRI plugin whose C(containerd.runtimes) table holds the handlers; by default the one of the
        file's configuration version.
    type: str
  backup:
    description: Keep a timestamped copy of the file before changing it.
    type: bool
    default: false
attributes:
  action:
    support: full
    description: Runs on the controller as an action plugin; the host only answers C(stat), C(slurp) and C(copy).
  check_mode:
    support: full
    description: Reports what would change and writes nothing.
  diff_mode:
    support: full
    description: Shows the file's change.
  platform:
    support: full
    platforms: posix
    description: Any host whose containerd configuration the controller can read and write.
notes:
  - Needs the C(tomlkit) Python library on the controller.
"""

EXAMPLES = r"""
- name: Import a drop-in from containerd's main configuration (containerd 2.x)
  confidential_gpu.host.containerd_runtimes:
    path: /etc/containerd/config.toml
    imports_present: [/etc/containerd/conf.d/confidential-gpu-kata.toml]
    backup: true

- name: Register a Kata handler in the main file (containerd 1.x, configuration version 2)
  confidential_gpu.host.containerd_runtimes:
    path: /etc/containerd/config.toml
    runtimes:
      kata-qemu-nvidia-gpu-snp:
        runtime_type: io.containerd.kata-qemu-nvidia-gpu-snp.v2
        runtime_path: /opt/kata/bin/containerd-shim-kata-v2
        privileged_without_host_devices: true
        pod_annotations: ["io.katacontainers.*"]
        options:
          ConfigPath: /opt/kata/share/defaults/kata-containers/configuration-qemu-nvidia-gpu-snp.toml

- name: Read the main configuration's version and imports
  confidential_gpu.host.containerd_runtimes:
    path: /etc/containerd/config.toml
  register: containerd_main
"""

RETURN = r"""
path:
  description: The file, as the host sees it.
  returned: always
  type: str
  sample: /etc/containerd/config.toml
exists:
  description: Whether the file exists.
  returned: always
  type: bool
ours:
  description: Whether the file was written in full by this collection (its first line is the collection's marker).
  returned: always
  type: bool
version:
  description: The file's configuration version (1 when it has no C(version) key); null when the file is missing.
  returned: always
  type: int
  sample: 2
plugin_id:
  description: The CRI plugin whose handlers were read or written; null when the version has none.
  returned: always
  type: str
  sample: io.containerd.grpc.v1.cri
imports:
  description: The top-level C(imports) list after the change.
  returned: always
  type: list
  elements: str
  sample: [/etc/containerd/conf.d/confidential-gpu-kata.toml]
runtimes:
  description: The runtime handler tables under the CRI plugin after the change, by name.
  returned: always
  type: dict
changed_runtimes:
  description: Handler names whose table was set or removed.
  returned: when the file exists
  type: list
  elements: str
  sample: [kata-qemu-nvidia-gpu-snp]
changed_tables:
  description: Tables of O(tables) in which a key was set.
  returned: when the file exists
  type: list
  elements: str
  sample: [proxy_plugins.nydus]
backup_file:
  description: The backup copy, when O(backup) is true and the file changed.
  returned: changed and backup
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.confidential_gpu.host.plugins.module_utils.containerd_spec import ARGUMENT_SPEC


def main() -> None:
    """The work is done by the action plugin of the same name; run directly, the module only says so."""
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
    )
    module.fail_json(msg="containerd_runtimes runs as an action plugin on the controller; call it from a "
                         "play as confidential_gpu.host.containerd_runtimes, not as a module on its own")


if __name__ == "__main__":
    main()
