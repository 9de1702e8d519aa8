# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The internal option of the modules that install files of the collection's files/ (plugin_utils/shipped_files.py)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  _shipped_files:
    description: Internal, set by the action plugin; the collection's C(files/) by name. Do not set it.
    type: dict
    default: {}
"""
