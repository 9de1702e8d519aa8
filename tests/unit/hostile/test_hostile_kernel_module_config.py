"""Hostile input against kernel_module_config: each case is refused naming the option and the fix, and the root
(holding files of a first run) stays byte-identical."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

MODULE = "kernel_module_config"
NAMES = {"modprobe_conf": "confidential-gpu-kvm-amd.conf", "modules_load_conf": "confidential-gpu.conf"}
CONF_FIX = "must be a file name (letters, digits, _ . -) ending in .conf"

CASES: List[Tuple[str, Dict[str, Any], List[str]]] = [
    ("modprobe-conf-traversal", dict(NAMES, modprobe_conf="../../etc/shadow.conf"),
     ["modprobe_conf '../../etc/shadow.conf'", CONF_FIX]),
    ("modules-load-conf-slash", dict(NAMES, modules_load_conf="a/b.conf"), ["modules_load_conf 'a/b.conf'", CONF_FIX]),
    ("modules-load-conf-newline", dict(NAMES, modules_load_conf="x.conf\ny.conf"), [CONF_FIX]),
    ("conf-not-conf", dict(NAMES, modprobe_conf="kvm.txt"), ["modprobe_conf 'kvm.txt'", CONF_FIX]),
    ("conf-hidden", dict(NAMES, modules_load_conf=".conf"), [CONF_FIX]),
    ("load-newline", dict(NAMES, load=["ccp\ninstall ccp /bin/sh"]), ["load: module name", "letters, digits"]),
    ("load-blank", dict(NAMES, load=["ccp iommufd"]), ["load: module name 'ccp iommufd'"]),
    ("options-module-name", dict(NAMES, options={"kvm amd": "sev=1"}), ["options: module name 'kvm amd'"]),
    ("options-newline", dict(NAMES, options={"kvm_amd": "sev=1\ninstall kvm_amd /bin/sh"}),
     ["options of kvm_amd", "name or name=value words"]),
    ("options-comment", dict(NAMES, options={"kvm_amd": "sev=1 #x"}), ["options of kvm_amd"]),
    ("options-empty-words", dict(NAMES, options={"kvm_amd": ""}), ["options of kvm_amd: ''"]),
]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with both files of an SEV-SNP host in place, for all cases (each asserts it changed nothing)."""
    root = tmp_path_factory.mktemp("kernel_module_config") / "root"
    (root / "etc/modprobe.d").mkdir(parents=True)
    (root / "etc/modules-load.d").mkdir(parents=True)
    (root / "etc/modprobe.d/confidential-gpu-kvm-amd.conf").write_text("options kvm_amd sev_snp=1\n")
    (root / "etc/modules-load.d/confidential-gpu.conf").write_text("ccp\n")
    return root


@pytest.mark.parametrize("args, fragments", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_kernel_module_config_refuses(refuses, prepared: Path, args: Dict[str, Any], fragments: List[str]) -> None:
    refuses(MODULE, dict(args, root=str(prepared)), prepared, *fragments)
