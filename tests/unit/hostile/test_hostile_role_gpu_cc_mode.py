"""Hostile input against role gpu_cc_mode: each case is refused naming the variable and the fix before the tool
runs or anything is downloaded, credentials in URLs are never printed, and the case's one-GPU tree
(tests/lib/gpu_cc_lab.py) stays byte-identical.

All cases run in one ansible-playbook process (tests/lib/hostile_roles.py); each is its own test here.
"""

from __future__ import annotations

from typing import List

from hostile_roles import Case, role_refusal_test
from role_roots import ROLE_ROOTS

ROLE = "gpu_cc_mode"
SPEC = "Validation of arguments failed"
SECRET = "s3cr3tTOKEN"
SHA = "a" * 64
TOOL = {"gpu_cc_mode_cc": "on", "gpu_cc_mode_tool": "/x/nvidia_gpu_tools.py", "gpu_cc_mode_tool_sha256": SHA}

CASES: List[Case] = [
    Case("cc-unknown", {"gpu_cc_mode_cc": "maybe", "gpu_cc_mode_tool": "/usr/bin/true"},
         ['gpu_cc_mode_cc is "maybe": use on, off or devtools']),
    Case("tool-and-url", dict(TOOL, gpu_cc_mode_release_url="https://u:%s@e.invalid/a.tar.gz" % SECRET),
         ["gpu_cc_mode_tool and gpu_cc_mode_release_url are both set"], [SECRET]),
    Case("url-userinfo", {"gpu_cc_mode_cc": "on", "gpu_cc_mode_release_url": "https://u:%s@e.invalid/a.tar.gz" % SECRET,
                          "gpu_cc_mode_release_sha256": "abc"},
         ['gpu_cc_mode_release_sha256 is "abc"', "https://***@e.invalid/a.tar.gz", "as 64 hex digits"], [SECRET]),
    Case("url-signed-query", {"gpu_cc_mode_cc": "on",
                              "gpu_cc_mode_release_url": "https://e.invalid/a.tar.gz?X-Amz-Signature=" + SECRET,
                              "gpu_cc_mode_release_sha256": "abc"},
         ["X-Amz-Signature=***", "as 64 hex digits"], [SECRET]),
    Case("tool-sha-shell", dict(TOOL, gpu_cc_mode_tool_sha256="; id"),
         ['gpu_cc_mode_tool_sha256 is "; id": give the SHA-256 of /x/nvidia_gpu_tools.py as 64 hex digits']),
    Case("devices-wildcard", dict(TOOL, gpu_cc_mode_devices=["*"]),
         ["gpu_cc_mode_devices names *, which case", "does not have as an NVIDIA GPU or NVSwitch"]),
    Case("devices-traversal", dict(TOOL, gpu_cc_mode_devices=["../../0000:03:00.0"]),
         ["gpu_cc_mode_devices names ../../0000:03:00.0"]),
    Case("timeout-word", {"gpu_cc_mode_step_timeout": "long"}, [SPEC, "'gpu_cc_mode_step_timeout' is of type str"]),
    Case("ignore-driver-word", {"gpu_cc_mode_ignore_nvidia_driver": "perhaps"},
         [SPEC, "'gpu_cc_mode_ignore_nvidia_driver' is of type str"]),
]


test_gpu_cc_mode_role_refuses = role_refusal_test(ROLE, CASES, ROLE_ROOTS[ROLE])
