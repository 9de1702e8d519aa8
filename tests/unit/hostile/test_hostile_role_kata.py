"""Hostile input against role kata: each case is refused naming the variable and the fix before anything runs or
is written below kata_root, credentials in release URLs are never printed, and the case's folder stays
byte-identical (the payload of a shell-shaped prefix would create a file in it).

All cases run in one ansible-playbook process (tests/lib/hostile_roles.py); each is its own test here.
"""

from __future__ import annotations

from typing import List

from hostile_roles import Case, role_refusal_test
from role_roots import ROLE_ROOTS

ROLE = "kata"
SPEC = "Validation of arguments failed"
SECRET = "s3cr3tTOKEN"
PREFIX_FIX = "kata_prefix must be a normalised absolute path"
SHA_FIX = "kata_release_sha256 must be the 64 hex digits of the release file's sha256"
EXISTING = {"kata_install_method": "existing", "kata_shims": ["qemu-nvidia-gpu-snp"]}

CASES: List[Case] = [
    Case("method-unknown", {"kata_install_method": "curl"},
         [SPEC, "kata_install_method must be one of: release, packages, existing, got: curl"]),
    Case("prefix-shell", dict(EXISTING, kata_prefix="/bin/sh -c 'touch {case}/pwned' x"), [PREFIX_FIX]),
    Case("prefix-traversal", dict(EXISTING, kata_prefix="/opt/../../tmp"), [PREFIX_FIX]),
    Case("url-userinfo", {"kata_version": "3.32.0", "kata_release_sha256": "zz",
                          "kata_release_base_url": "https://user:%s@example.invalid/kata" % SECRET},
         [SHA_FIX, "(got 'zz')"], [SECRET]),
    Case("url-signed-query", {"kata_version": "3.32.0", "kata_release_sha256": "nothex",
                              "kata_release_base_url": "https://example.invalid/k?X-Amz-Signature=" + SECRET},
         [SHA_FIX], [SECRET]),
    Case("shims-string", dict(EXISTING, kata_shims="qemu-nvidia-gpu-snp,../../x"),
         ["kata_shims holds names that are not shim names (lower-case letters, digits and -)"]),
    Case("pcie-mode-unknown", {"kata_pcie_mode": "bridge"},
         [SPEC, "kata_pcie_mode must be one of: none, flatten, replicate, got: bridge"]),
    Case("containerd-config-traversal", dict(EXISTING, kata_containerd_config="/../../../tmp/x.toml"),
         ["kata_containerd_config"]),
    Case("manage-containerd-word", {"kata_manage_containerd": "perhaps"},
         [SPEC, "'kata_manage_containerd' is of type str"]),
]


test_kata_role_refuses = role_refusal_test(ROLE, CASES, ROLE_ROOTS[ROLE])
