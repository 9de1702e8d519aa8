# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hand back a saved module result through exit_json, for benchmarks/discovery.py (not part of the collection).

Timed as an AnsiballZ payload, it is what any module returning that result
costs before it reads anything: Ansible's start-up and result handling
(``remove_values`` and the profile encoder), plus a ``json.load`` of the file.
"""

from __future__ import annotations

import json

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: result_replay
short_description: Return a module result saved as JSON, unchanged
description:
  - Loads a result that a module returned and returns it again through C(exit_json), its warnings
    through C(warn). For benchmarks/discovery.py, which times it as Ansible's own share of a module run.
options:
  path:
    description: JSON file holding the result (without C(invocation)).
    type: path
    required: true
author:
  - contributors to confidential_gpu.host
"""


def main() -> None:
    module = AnsibleModule(argument_spec=dict(path=dict(type="path", required=True)), supports_check_mode=True)
    with open(module.params["path"], encoding="utf-8") as saved:
        result = json.load(saved)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
