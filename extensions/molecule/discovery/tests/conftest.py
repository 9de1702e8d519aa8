"""Fixtures of the discovery checks.

The module results come from converge (<ephemeral dir>/results/*.json); the
oracle is the lab VM's own view, read over SSH with testinfra's ansible
backend: `lspci -D -PP -nn -vvv` (as root, so the full configuration space)
and sysfs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from lab_oracle import Devices, Lspci, parse_lspci
from testinfra.host import Host

RESULTS = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", ".")) / "results"


def _load(name: str) -> dict:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        pytest.fail(f"{path} missing: run converge first (molecule converge -s discovery)")
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def pci() -> dict:
    """pci_topology_info's result."""
    return _load("pci_topology_info")


@pytest.fixture(scope="session")
def cc() -> dict:
    """cc_host_info's result."""
    return _load("cc_host_info")


@pytest.fixture(scope="module")
def devices(pci: dict) -> Devices:
    return {d["address"]: d for d in pci["devices"]}


@pytest.fixture(scope="module")
def lspci(host: Host) -> Lspci:
    return parse_lspci(host.check_output("lspci -D -PP -nn -vvv"))


@pytest.fixture(scope="module")
def sysfs_groups(host: Host) -> dict[int, list[str]]:
    out = host.check_output("for g in /sys/kernel/iommu_groups/*; do echo ${g##*/} $(ls $g/devices); done")
    return {int(line.split()[0]): sorted(line.split()[1:]) for line in out.splitlines()}
