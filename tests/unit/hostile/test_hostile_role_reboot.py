"""Hostile input against role reboot: each case is refused naming the variable and the fix. No case may reboot
this machine: consent is never given together with a pending reboot (test_no_case_reboots checks the table).

All cases run in one ansible-playbook process (tests/lib/hostile_roles.py); each is its own test here.
"""

from __future__ import annotations

from typing import List

from hostile_roles import Case, role_refusal_test
from role_roots import ROLE_ROOTS

ROLE = "reboot"
SPEC = "Validation of arguments failed"
PENDING = {"reboot_required": True, "reboot_fail_without_consent": True}

CASES: List[Case] = [
    Case("consent-word", {"reboot_consent": "maybe", "reboot_required": False},
         [SPEC, "'reboot_consent' is of type str", "not a valid boolean"]),
    Case("required-word", {"reboot_required": "sometimes"}, [SPEC, "'reboot_required' is of type str"]),
    Case("timeout-word", {"reboot_timeout": "soon", "reboot_required": False},
         [SPEC, "'reboot_timeout' is of type str", "to an int"]),
    Case("reasons-string", dict(PENDING, reboot_reasons="kernel args changed"),
         [SPEC, "'reboot_reasons' is of type str", "to dict"]),
    Case("verify-args-string", {"reboot_verify_args": "present", "reboot_required": False},
         [SPEC, "'reboot_verify_args' is of type str", "to dict"]),
    # AWX strings for booleans: normalised, so the pending reboot without consent fails as asked
    Case("strings-normalised", {"reboot_required": "true", "reboot_fail_without_consent": "yes",
                                "reboot_reasons": [{"key": "iommu"}]},
         ["needs a reboot to apply its kernel arguments (iommu) and reboot_consent is false",
          "rerun with -e reboot_consent=true"]),
    Case("timeout-negative", dict(PENDING, reboot_timeout=-1), ["reboot_timeout is -1", "1 or more seconds"]),
    Case("drain-timeout-zero", dict(PENDING, reboot_k8s_drain_timeout=0),
         ["reboot_k8s_drain_timeout is 0", "1 or more seconds"]),
    Case("node-name-shell", dict(PENDING, reboot_k8s_node_name="node1; reboot"),
         ["reboot_k8s_node_name \"node1; reboot\" is not a Kubernetes node name"]),
    Case("node-name-newline", dict(PENDING, reboot_k8s_node_name="node1\nnode2"),
         ["reboot_k8s_node_name \"node1\\nnode2\" is not a Kubernetes node name"]),
]


def test_no_case_reboots() -> None:
    """The table never pairs consent with a pending reboot: the role would reboot this machine."""
    for case in CASES:
        assert case.variables.get("reboot_consent") in (None, False, "maybe"), case.name


test_reboot_role_refuses = role_refusal_test(ROLE, CASES, ROLE_ROOTS[ROLE])
