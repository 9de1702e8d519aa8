"""Names the collection checks the way Kubernetes does, against Kubernetes' own definitions
(tests/fixtures/kubernetes/validation-dns1123.go, verbatim from apimachinery's validation.go):

- a containerd runtime handler is what a RuntimeClass's ``handler`` names: a DNS-1123 label
  (plugins/plugin_utils/containerd_config.py);
- role reboot's ``reboot_k8s_node_name`` is a node name: a DNS-1123 subdomain (roles/reboot/tasks/main.yml).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Pattern, Tuple

import pytest
import tomlkit
import yaml
from ansible_collections.confidential_gpu.host.plugins.plugin_utils.containerd_config import ConfigError, edit_runtimes
from conftest import REPO

EXCERPT = REPO / "tests" / "fixtures" / "kubernetes" / "validation-dns1123.go"
NAMES: List[str] = [
    "kata-qemu-nvidia-gpu-snp", "kata", "a", "0", "9-a", "a" * 63, "a" * 64, "Kata", "kata_qemu", "kata.qemu",
    "-kata", "kata-", "", "kata qemu", "kata\n", "node-1.example.com", "a." * 126 + "a", "a." * 126 + "ab",
    ("a" * 63 + ".") * 3 + "a" * 61, ("a" * 63 + ".") * 3 + "a" * 62, "a..b", ".a", "a.", "NODE",
]


def go_constants(path: Path) -> Dict[str, str]:
    """The excerpt's constants, string expressions joined and Go escapes (only ``\\\\``) undone."""
    values: Dict[str, str] = {}
    for line in path.read_text().splitlines():
        name, _type, expression = re.match(r"const (\w+) (\w+) = (.+)$", line).groups()
        parts = re.findall(r'"((?:[^"\\]|\\.)*)"|(\w+)', expression)
        values[name] = "".join(literal.replace("\\\\", "\\") if literal else values.get(ident, ident)
                               for literal, ident in parts)
    return values


def kubernetes_accepts(kind: str, name: str) -> bool:
    constants = go_constants(EXCERPT)
    pattern, limit = {"label": ("dns1123LabelFmt", "DNS1123LabelMaxLength"),
                      "subdomain": ("dns1123SubdomainFmt", "DNS1123SubdomainMaxLength")}[kind]
    return len(name) <= int(constants[limit]) and re.fullmatch(constants[pattern], name) is not None


def handler_accepted(name: str) -> bool:
    try:
        edit_runtimes(tomlkit.parse("version = 2\n"), "io.containerd.grpc.v1.cri", {}, [name], "/config.toml")
    except ConfigError:
        return False
    return True


def reboot_node_name_rule() -> Tuple[Pattern[str], int]:
    """The pattern and length bound of role reboot's node-name check, read from its tasks."""
    tasks = yaml.safe_load((REPO / "roles" / "reboot" / "tasks" / "main.yml").read_text())
    checks = [line for task in tasks for line in task.get("ansible.builtin.assert", {}).get("that", [])]
    condition = next(line for line in checks if "reboot_k8s_node_name is match" in line)
    assert "'\\n' not in reboot_k8s_node_name" in condition, "match() with $ lets a trailing newline through"
    pattern = re.search(r"match\('([^']+)'\)", condition).group(1)
    limit = int(re.search(r"reboot_k8s_node_name \| length <= (\d+)", condition).group(1))
    return re.compile(pattern), limit


def test_the_excerpt_reads_as_kubernetes_defines_it() -> None:
    constants = go_constants(EXCERPT)
    assert constants["dns1123SubdomainFmt"] == r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
    assert (constants["DNS1123LabelMaxLength"], constants["DNS1123SubdomainMaxLength"]) == ("63", "253")


@pytest.mark.parametrize("name", NAMES, ids=range(len(NAMES)))
def test_runtime_handler_names_are_dns1123_labels(name: str) -> None:
    assert handler_accepted(name) == kubernetes_accepts("label", name), name


@pytest.mark.parametrize("name", NAMES, ids=range(len(NAMES)))
def test_reboot_node_names_are_dns1123_subdomains(name: str) -> None:
    pattern, limit = reboot_node_name_rule()
    ours = len(name) <= limit and pattern.match(name) is not None and "\n" not in name
    assert ours == kubernetes_accepts("subdomain", name), name
