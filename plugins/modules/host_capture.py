#!/usr/bin/python
# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: host_capture
short_description: Write a replayable capture of what the info modules read from a host
version_added: "0.2.0"
description:
  - Writes one xz-compressed tarball at O(dest) holding exactly what M(confidential_gpu.host.pci_topology_info)
    and M(confidential_gpu.host.cc_host_info) read, below C(root/) (PCI functions with their config space and
    links, IOMMU groups and units, module parameters, NUMA nodes, hugepage pools, the C(/proc) files, the
    kernel's module lists, the names of the firmware's ACPI tables and the device nodes they test), what
    C(playbooks/prepare.yml --check) reads besides (the GRUB configuration, C(/etc/os-release), the files
    prepare writes under C(/etc) and C(/usr/local), C(driver_override) and SR-IOV attributes), the output of
    C(lspci) and C(nvidia-smi) under C(commands/) where those tools are installed, and a manifest
    C(CAPTURE.json) (host, time, kernel, collection version, the sha256 of every file).
  - Nothing else is read. No key, no other file of C(/etc), no mount table, route or console state goes in,
    so a replay names no host-critical device.
  - Either info module, and C(playbooks/prepare.yml --check), replays the capture with the unpacked archive's
    top directory as root. C(playbooks/capture.yml) runs this module and fetches the tarball.
author:
  - confidential_gpu.host maintainers (@confidential-gpu)
options:
  dest:
    description:
      - Where to write the tarball on the host. Its directory must exist. An existing file is replaced.
      - Left out, the tarball is C(capture.tar.xz) in a new private temporary directory (mode 0700) whose path
        RV(dest) returns; the caller removes it (C(playbooks/capture.yml) does after the fetch).
    type: path
  root:
    description:
      - Root of the host's file system to capture. A root other than C(/) is a captured or synthetic tree,
        not this host, so O(commands) are not run for it.
    type: path
    default: /
  name:
    description: The host's name in the manifest.
    type: str
    required: true
  commands:
    description: Run C(lspci) and C(nvidia-smi) (those installed) and keep their output under C(commands/).
    type: bool
    default: true
  collection_version:
    description: The collection's version, recorded in the manifest (C(playbooks/capture.yml) passes it).
    type: str
attributes:
  check_mode:
    support: full
    description: Reads the same files and returns the manifest it would write; runs no command, writes nothing.
  diff_mode:
    support: none
    description: The tarball is a new binary snapshot at every run; there is no text to diff.
  platform:
    support: full
    platforms: posix
    description: Linux hosts with sysfs and procfs, or any host given a host tree as O(root).
notes:
  - Run it as root (C(become)); unprivileged readers see only the first 64 bytes of a function's config space.
  - Every run writes a new snapshot (its time differs), so the task reports C(changed).
seealso:
  - module: confidential_gpu.host.pci_topology_info
  - module: confidential_gpu.host.cc_host_info
"""

EXAMPLES = r"""
- name: Capture the host into a private temporary directory
  confidential_gpu.host.host_capture:
    name: "{{ inventory_hostname }}"
  become: true
  register: capture

- name: Bring it to the controller
  ansible.builtin.fetch:
    src: "{{ capture.dest }}"
    dest: "captures/{{ inventory_hostname }}.tar.xz"
    flat: true

- name: Replay the unpacked capture on the controller
  confidential_gpu.host.pci_topology_info:
    root: /srv/captures/gpu-node-17
  delegate_to: localhost
"""

RETURN = r"""
dest:
  description: The tarball written; in check mode O(dest), or null when O(dest) is left out.
  returned: always
  type: str
  sample: /var/tmp/capture.tar.xz
manifest:
  description: The manifest written as C(CAPTURE.json) at the top of the tarball.
  returned: always
  type: dict
  contains:
    name:
      description: O(name).
      type: str
    captured_at:
      description: UTC time of the capture.
      type: str
      sample: "2026-12-01T10:00:00Z"
    kernel:
      description: The running kernel's release (C(/proc/sys/kernel/osrelease)).
      type: str
      sample: 6.8.0-49-generic
    collection_version:
      description: O(collection_version).
      type: str
      sample: 0.2.0
    pci_functions:
      description: How many PCI functions were captured.
      type: int
    files:
      description: Every regular file of the tarball (but the manifest) and its sha256.
      type: dict
      sample: {"root/proc/cmdline": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}
    links:
      description: Every symbolic link of the tarball and its target, as written.
      type: dict
    commands:
      description: Each command's exit status; null when it was not installed or timed out.
      type: dict
    left_out:
      description: What could not be captured, or only in part, and why.
      type: list
      elements: str
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.confidential_gpu.host.plugins.module_utils.host_capture import (
    COMMANDS, plan_capture, write_capture)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "dest": {"type": "path"},
            "root": {"type": "path", "default": "/"},
            "name": {"type": "str", "required": True},
            "commands": {"type": "bool", "default": True},
            "collection_version": {"type": "str"},
        },
        supports_check_mode=True,
    )
    params = module.params
    if not os.path.isdir(params["root"]):
        module.fail_json(msg="root %s is not a directory: give / or the top of a host tree" % params["root"])
    dest = params["dest"]
    if dest and not os.path.isdir(os.path.dirname(dest) or "."):
        module.fail_json(msg="cannot write %s: its directory %s does not exist; create it or choose another dest"
                         % (dest, os.path.dirname(dest)))
    if module.check_mode:
        module.exit_json(changed=True, dest=dest,
                         manifest=plan_capture(params["root"], params["name"], params["collection_version"]))
    if not dest:
        dest = os.path.join(tempfile.mkdtemp(prefix="confidential-gpu-capture-"), "capture.tar.xz")
    commands = list(COMMANDS) if params["commands"] else []
    try:
        manifest = write_capture(dest, params["root"], params["name"], commands, params["collection_version"])
    except OSError as error:
        module.fail_json(msg="cannot write %s: %s" % (dest, error.strerror or error))
    module.exit_json(changed=True, dest=dest, manifest=manifest)


if __name__ == "__main__":
    main()
