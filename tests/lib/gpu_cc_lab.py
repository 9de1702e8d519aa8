"""Helpers for the GPU CC mode tests: nodes for the nvidia_gpu_tools.py stand-in, and running it.

A node is the stand-in's state (see tests/lib/standins/nvidia_gpu_tools.py):
``{"devices": {address: {"kind": "gpu"|"nvswitch", "cc": ..., "ppcie": ...}}}``.
The addresses match the GPUs and NVSwitches that ``fake_sysfs.gpu_server``
lays out, so a role test can give pci_topology_info the same host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

STANDIN = Path(__file__).resolve().parent / "standins" / "nvidia_gpu_tools.py"
STATE_ENV = "NVIDIA_GPU_TOOLS_STANDIN_STATE"


def node(gpus: List[str], nvswitches: Sequence[str] = (), cc: str = "off", ppcie: str = "off",
         overrides: Optional[Dict[str, Dict[str, Any]]] = None) -> Dict[str, Any]:
    """A node whose devices are all in ``cc``/``ppcie``; ``overrides`` changes fields by address."""
    devices: Dict[str, Dict[str, Any]] = {}
    for address in gpus:
        devices[address] = {"kind": "gpu", "cc": cc, "ppcie": ppcie, "driver": "vfio-pci"}
    for address in nvswitches:
        devices[address] = {"kind": "nvswitch", "ppcie": ppcie, "driver": "nvidia-nvswitch"}
    for address, fields in (overrides or {}).items():
        devices[address].update(fields)
    return {"devices": devices}


def write_state(path: Path, state: Dict[str, Any]) -> Path:
    path.write_text(json.dumps(state, indent=1, sort_keys=True))
    calls = Path(str(path) + ".calls")
    if calls.exists():
        calls.unlink()
    return path


def read_state(path: Path) -> Dict[str, Any]:
    return json.loads(path.read_text())


def calls(path: Path) -> List[List[str]]:
    """The argument lists the stand-in was called with, in order."""
    log = Path(str(path) + ".calls")
    if not log.exists():
        return []
    return [json.loads(line)["argv"] for line in log.read_text().splitlines()]


def run_tool(state_file: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, **{STATE_ENV: str(state_file)})
    return subprocess.run([sys.executable, str(STANDIN), *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def query_all(state_file: Path, addresses: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    """Query every device the way the role does; results shaped like a looped command task's."""
    devices = read_state(state_file)["devices"]
    results = []
    for address in addresses or sorted(devices):
        role = devices[address].get("kind", "gpu")
        options = ["--query-cc-mode", "--query-ppcie-mode"] if role == "gpu" else ["--query-ppcie-mode"]
        proc = run_tool(state_file, "--gpu-bdf=" + address, *options)
        results.append({"item": {"address": address, "role": role}, "rc": proc.returncode,
                        "stdout": proc.stdout, "stderr": proc.stderr})
    return results


def apply_steps(state_file: Path, steps: List[Dict[str, Any]]) -> List[subprocess.CompletedProcess]:
    """Run the planned steps through the stand-in, stopping at the first failure."""
    done = []
    for step in steps:
        proc = run_tool(state_file, "--gpu-bdf=" + step["address"], *step["options"])
        done.append(proc)
        if proc.returncode != 0:
            break
    return done


def fake_host(root: Path, gpus: int, nvswitches: int = 0, gpu_driver: Optional[str] = "vfio-pci") -> Dict[str, Any]:
    """A fake sysfs tree of a GPU server below ``root`` and the matching stand-in node (all modes off).

    GPUs are bound to ``gpu_driver`` (vfio-pci by default: the tool refuses GPUs the nvidia driver holds).
    """
    from fake_sysfs import ServerShape, build_tree, gpu_server

    functions = gpu_server(ServerShape(gpus=gpus, nvswitches=nvswitches, sockets=2 if gpus > 1 else 1))
    gpu_addresses, switch_addresses = [], []
    for function in functions:
        if function.config[:2] != b"\xde\x10":
            continue
        if function.driver == "nvidia":
            function.driver = gpu_driver
            gpu_addresses.append(function.address)
        else:
            switch_addresses.append(function.address)
    build_tree(root, functions)
    state = node(gpu_addresses, switch_addresses)
    for address in gpu_addresses:
        state["devices"][address]["driver"] = gpu_driver
    return state
