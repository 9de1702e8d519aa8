# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The argument spec of the kata_runtime_config module, which its action plugin validates against.

The module itself runs nowhere (its action plugin does the work on the controller, with tomlkit); the Kata
configuration model, paths, versions and merge rules are in ``plugin_utils/kata_model.py``. Standard library only.
"""

from __future__ import annotations

from typing import Any, Dict

METHODS = ("auto", "dropin", "copy")
PCIE_MODES = ("none", "flatten", "replicate")
DEFAULT_PREFIX = "/opt/kata"
DEFAULT_DROPIN_NAME = "40-confidential-gpu"

ARGUMENT_SPEC: Dict[str, Any] = {
    "shim": {"type": "str", "required": True},
    "prefix": {"type": "path", "default": DEFAULT_PREFIX},
    "root": {"type": "path", "default": "/"},
    "kata_version": {"type": "str"},
    "method": {"type": "str", "default": "auto", "choices": list(METHODS)},
    "dropin_name": {"type": "str", "default": DEFAULT_DROPIN_NAME},
    "settings": {"type": "dict", "default": {}},
    "kernel_params": {"type": "list", "elements": "str", "default": []},
    "kernel_params_absent": {"type": "list", "elements": "str", "default": []},
    "pcie_mode": {"type": "str", "default": "none", "choices": list(PCIE_MODES)},
    "topology": {"type": "dict"},
    "devices": {"type": "list", "elements": "str", "default": ["gpu"]},
}
