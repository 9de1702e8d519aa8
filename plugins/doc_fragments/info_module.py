# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation shared by the collection's read-only info modules."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  root:
    description:
      - Root of the host's file system, where C(sys/), C(proc/) and C(dev/) are found.
      - Point it at a captured or synthetic tree to read that instead of the live host.
    type: path
    default: /
attributes:
  check_mode:
    support: full
    description: Reads only; runs the same in check mode.
  diff_mode:
    support: none
    description: Changes nothing, so there is nothing to diff.
  platform:
    support: full
    platforms: posix
    description: Linux hosts with sysfs and procfs, or any host given a captured tree as O(root).
  action_group:
    support: full
    membership:
      - confidential_gpu.host.facts
    description: Use C(group/confidential_gpu.host.facts) in C(module_defaults) to set defaults for this module.
"""
