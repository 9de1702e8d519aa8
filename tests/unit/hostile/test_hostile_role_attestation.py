"""Hostile input against role attestation: each case is refused at the role's entry naming the variable and the
fix, before sev-snp-measure runs; the case's output and work folders (on the controller) stay as they were.

All cases run in one ansible-playbook process (tests/lib/hostile_roles.py); each is its own test here.
"""

from __future__ import annotations

from typing import List

from hostile_roles import Case, role_refusal_test
from role_roots import ROLE_ROOTS

ROLE = "attestation"
SPEC = "Validation of arguments failed"
CLASSES = "attestation_runtime_classes must list runtime classes, each with a unique name (letters, digits, . _ -)"
CONFIG = "/opt/kata/share/defaults/kata-containers/configuration-qemu-snp.toml"

CASES: List[Case] = [
    Case("classes-string", {"attestation_runtime_classes": "kata-qemu-snp"},
         [SPEC, "'attestation_runtime_classes' is of type str"]),
    Case("class-name-traversal", {"attestation_runtime_classes": [{"name": "../../x", "config": CONFIG}]},
         [CLASSES, '"name": "../../x"']),
    Case("class-name-newline", {"attestation_runtime_classes": [{"name": "a\nb", "config": CONFIG}]},
         [CLASSES, '"name": "a\\nb"']),
    Case("class-without-config", {"attestation_runtime_classes": [{"name": "a"}]}, [CLASSES, '[{"name": "a"}]']),
    Case("vcpu-zero", {"attestation_vcpu_counts": [0]},
         ["attestation_vcpu_counts must be whole numbers of 1 or more, got [0]"]),
    Case("vcpu-word", {"attestation_vcpu_counts": ["two"]},
         [SPEC, "'attestation_vcpu_counts' is of type str", "to int"]),
    # an AWX comma-separated text is read as the list it names (survey_inputs), and its 0 is still refused
    Case("vcpu-string", {"attestation_vcpu_counts": "1,0"},
         ["attestation_vcpu_counts must be whole numbers of 1 or more, got [1, 0]"]),
    Case("source-unknown", {"attestation_cmdline_source": "guess"},
         [SPEC, "attestation_cmdline_source must be one of: auto, running, config, got: guess"]),
    Case("encoding-unknown", {"attestation_measurement_encodings": ["rot13"]},
         [SPEC, "attestation_measurement_encodings must be one or more of: hex, base64"]),
    Case("vmm-unknown", {"attestation_vmm_type": "xen"}, [SPEC, "attestation_vmm_type must be one of: QEMU, ec2, gce"]),
]


test_attestation_role_refuses = role_refusal_test(ROLE, CASES, ROLE_ROOTS[ROLE])
