# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plan GPU confidential-computing (CC) and Protected PCIe (PPCIe) mode changes.

Pure functions, run on the controller: the ``gpu_cc_mode`` role queries each
GPU and NVSwitch with NVIDIA's gpu-admin-tools (``nvidia_gpu_tools.py``) on the
host and hands the outputs here, with the modes the user wants.  The result is
the current modes, the ordered steps that reach the wanted ones, and the
reasons to refuse (mixed modes on a node, CC with PPCIe, unsupported devices).

What the tool prints (NVIDIA/gpu-admin-tools, ``cli/per_gpu.py`` and
``cli/per_gpu_nvswitch.py``; log lines go to stderr as
``<time> INFO     <device> ...``):

- ``--query-cc-mode``: ``<device> CC mode is on|off|devtools``, or the error
  ``Querying CC mode is not supported on <device>`` (NVSwitches print nothing);
- ``--query-ppcie-mode``: ``<device> PPCIe mode is on|off``, or the error
  ``Querying PPCIe mode is not supported on <device>``;
- a GPU the nvidia driver uses: ``The nvidia driver appears to be using <device>, aborting``.

Order of the steps (the order NVIDIA's k8s-cc-manager follows: PPCIe goes off on
every device before CC changes; CC goes off on every GPU before PPCIe goes on):
PPCIe off, then CC, then PPCIe on; by PCI address within each phase.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Sequence

CC_MODES = ("on", "off", "devtools")
PPCIE_MODES = ("on", "off")

_CC_IS = re.compile(r"\bCC mode is (on|off|devtools)\b")
_PPCIE_IS = re.compile(r"\bPPCIe mode is (on|off)\b")
_CC_UNSUPPORTED = "Querying CC mode is not supported on"
_PPCIE_UNSUPPORTED = ("Querying PPCIe mode is not supported on", "does not support PPCIe on current FW")
_DRIVER_IN_USE = re.compile(r"The nvidia driver appears to be using .*, aborting")

SET_OPTIONS = {
    "cc": ("--set-cc-mode=%s", "--reset-after-cc-mode-switch"),
    "ppcie": ("--set-ppcie-mode=%s", "--reset-after-ppcie-mode-switch"),
}


def _last(pattern: re.Pattern, text: str) -> Optional[str]:
    found = pattern.findall(text)
    return found[-1] if found else None


def _tail(text: str, lines: int = 6) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:]) or "no output"


def parse_query(query: Dict[str, Any]) -> Dict[str, Any]:
    """One device's query -> its modes, or an error.

    ``query`` has ``rc``, ``stdout``, ``stderr`` (and ``msg`` when the command
    could not run) with ``address`` and ``role`` (``gpu`` or ``nvswitch``),
    either at the top or in ``item``, as a looped command task registers them.
    ``cc``/``ppcie`` are the mode, or ``None`` when the device does not support
    that setting (a GPU without CC, a board without PPCIe) or it does not apply
    (CC on an NVSwitch).
    """
    looped = query.get("item")
    item: Dict[str, Any] = looped if isinstance(looped, dict) else {}
    address = str(query.get("address", item.get("address", "?")))
    role = str(query.get("role", item.get("role", "gpu")))
    text = "\n".join(str(query.get(key) or "") for key in ("stdout", "stderr", "msg"))
    device: Dict[str, Any] = {"address": address, "role": role, "error": None}
    if _DRIVER_IN_USE.search(text):
        device["error"] = ("%s is used by the nvidia driver, so nvidia_gpu_tools.py refuses it: unbind it (bind it "
                           "to vfio-pci) or set gpu_cc_mode_ignore_nvidia_driver" % address)
        return device
    device["cc"] = _last(_CC_IS, text) if role == "gpu" else None
    device["cc_supported"] = role == "gpu" and _CC_UNSUPPORTED not in text
    device["ppcie"] = _last(_PPCIE_IS, text)
    # A GPU without CC stops the tool before its PPCIe query; PPCIe (Hopper) needs CC support anyway.
    device["ppcie_supported"] = not any(marker in text for marker in _PPCIE_UNSUPPORTED) and (
        role != "gpu" or device["cc_supported"])
    missing = []
    if device["cc_supported"] and device["cc"] is None:
        missing.append("CC mode")
    if device["ppcie_supported"] and device["ppcie"] is None:
        missing.append("PPCIe mode")
    if missing:
        device["error"] = ("could not read the %s of %s %s from nvidia_gpu_tools.py (exit status %s): %s"
                           % (" and ".join(missing), role, address, query.get("rc"), _tail(text)))
    return device


def _normalise(value: Any, choices: Sequence[str], name: str, errors: List[str]) -> Optional[str]:
    """'' / None -> None (leave as is); YAML's on/off booleans -> 'on'/'off'; anything else must be a choice."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        value = "on" if value else "off"
    text = str(value).strip().lower()
    if text not in choices:
        errors.append("%s is %r: use one of %s, or leave it empty to keep the current mode"
                      % (name, value, ", ".join(choices)))
        return None
    return text


def _wanted(cc: Optional[str], ppcie: Optional[str], errors: List[str]) -> Dict[str, Optional[str]]:
    """The node-wide target: CC on/devtools implies PPCIe off, PPCIe on implies CC off."""
    if cc in ("on", "devtools") and ppcie == "on":
        errors.append("CC mode %s and PPCIe mode on exclude each other: PPCIe (Hopper HGX multi-GPU passthrough) "
                      "runs with CC off on every GPU; choose one" % cc)
        return {"cc": None, "ppcie": None}
    if cc in ("on", "devtools"):
        ppcie = "off"
    if ppcie == "on":
        cc = "off"
    return {"cc": cc, "ppcie": ppcie}


def _target(device: Dict[str, Any], setting: str, want: Optional[str], selected: bool,
            errors: List[str]) -> Optional[str]:
    """The mode ``device`` ends in for ``setting`` (``None``: unsupported)."""
    current = device[setting]
    if not device[setting + "_supported"]:
        if selected and want is not None and want != "off":
            name = "CC" if setting == "cc" else "PPCIe"
            errors.append("%s %s does not support %s mode (nvidia_gpu_tools.py says querying it is not "
                          "supported): leave it out of gpu_cc_mode_devices or choose %s off"
                          % (device["role"], device["address"], name, name))
        return None
    if not selected or want is None:
        return current
    return want


def _check_uniform(devices: List[Dict[str, Any]], setting: str, errors: List[str]) -> None:
    modes: Dict[str, List[str]] = {}
    for device in devices:
        mode = device["target_" + setting]
        if mode is not None:
            modes.setdefault(mode, []).append(device["address"])
    if len(modes) > 1:
        name = "CC" if setting == "cc" else "PPCIe"
        listed = "; ".join("%s: %s" % (mode, ", ".join(addresses)) for mode, addresses in sorted(modes.items()))
        errors.append("the plan would leave %s modes mixed on this node (%s): all GPUs of a node run in one mode; "
                      "include every device in gpu_cc_mode_devices (empty selects all)" % (name, listed))


def _steps(devices: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    ordered = sorted(devices, key=lambda device: device["address"])
    phases = (
        ("ppcie", lambda d: d["target_ppcie"] == "off" and d["ppcie"] not in (None, "off")),
        ("cc", lambda d: d["target_cc"] is not None and d["target_cc"] != d["cc"]),
        ("ppcie", lambda d: d["target_ppcie"] == "on" and d["ppcie"] != "on"),
    )
    steps = []
    for setting, needed in phases:
        for device in ordered:
            if needed(device):
                mode = device["target_" + setting]
                set_option, reset_option = SET_OPTIONS[setting]
                steps.append({
                    "address": device["address"], "role": device["role"], "setting": setting,
                    "from": device[setting], "mode": mode, "options": [set_option % mode, reset_option],
                })
    return steps


def plan(queries: Sequence[Dict[str, Any]], cc: Any = None, ppcie: Any = None,
         selected: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Current modes (from the queries) + wanted modes -> ``{devices, wanted, steps, errors, warnings, changed}``.

    ``selected``: the addresses the run may change (empty or ``None``: every
    queried device).  Devices outside it keep their modes, and still count
    when checking that a node ends in one mode.
    """
    errors: List[str] = []
    warnings: List[str] = []
    wanted = _wanted(_normalise(cc, CC_MODES, "gpu_cc_mode_cc", errors),
                     _normalise(ppcie, PPCIE_MODES, "gpu_cc_mode_ppcie", errors), errors)
    devices = [parse_query(query) for query in queries]
    errors += [device["error"] for device in devices if device["error"]]
    chosen = set(selected or [device["address"] for device in devices])
    unknown = sorted(chosen - {device["address"] for device in devices})
    if unknown:
        errors.append("gpu_cc_mode_devices names %s, which are not GPUs or NVSwitches of this host"
                      % ", ".join(unknown))
    if errors:
        return {"devices": devices, "wanted": wanted, "steps": [], "errors": errors, "warnings": warnings,
                "changed": False}
    for device in devices:
        device["selected"] = device["address"] in chosen
        device["target_cc"] = _target(device, "cc", wanted["cc"], device["selected"], errors) \
            if device["role"] == "gpu" else None
        device["target_ppcie"] = _target(device, "ppcie", wanted["ppcie"], device["selected"], errors)
    gpus = [device for device in devices if device["role"] == "gpu"]
    for setting, among in (("cc", gpus), ("ppcie", devices)):
        if wanted[setting] is not None:
            _check_uniform(among, setting, errors)
        elif len({d[setting] for d in among if d[setting] is not None}) > 1:
            name = "CC" if setting == "cc" else "PPCIe"
            warnings.append("devices of this host are in different %s modes (%s); set gpu_cc_mode_%s to bring them "
                            "into one" % (name, ", ".join(sorted({d[setting] for d in among if d[setting]})), setting))
    if wanted["ppcie"] == "on" and not any(device["role"] == "nvswitch" for device in devices):
        errors.append("PPCIe mode on is for Hopper HGX boards, whose GPUs and NVSwitches go into PPCIe together; "
                      "this host has no NVSwitch: use CC mode on for single-GPU passthrough")
    cc_on = [d["address"] for d in devices if d.get("target_cc") in ("on", "devtools")]
    ppcie_on = [d["address"] for d in devices if d.get("target_ppcie") == "on"]
    if cc_on and ppcie_on and not errors:
        errors.append("the plan would leave CC on (%s) next to PPCIe on (%s): PPCIe needs CC off on every GPU"
                      % (", ".join(cc_on), ", ".join(ppcie_on)))
    steps = [] if errors else _steps(devices)
    return {"devices": devices, "wanted": wanted, "steps": steps, "errors": errors, "warnings": warnings,
            "changed": bool(steps)}


def describe(result: Dict[str, Any]) -> List[str]:
    """Plan as lines for people: one per device, then one per step."""
    lines = []
    for device in result["devices"]:
        if device.get("error"):
            continue
        modes = []
        if device["role"] == "gpu":
            modes.append("CC %s" % (device["cc"] or "unsupported"))
        modes.append("PPCIe %s" % (device["ppcie"] or "unsupported"))
        lines.append("%s %s: %s" % (device["role"], device["address"], ", ".join(modes)))
    for number, step in enumerate(result["steps"], 1):
        lines.append("step %d: %s %s: %s %s -> %s (%s)" % (
            number, step["role"], step["address"], "CC" if step["setting"] == "cc" else "PPCIe",
            step["from"], step["mode"], " ".join(step["options"])))
    if not result["steps"] and not result["errors"]:
        lines.append("no change needed")
    return lines


def gpu_cc_plan(queries: Sequence[Dict[str, Any]], cc: Any = None, ppcie: Any = None,
                selected: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The filter: :func:`plan` plus ``summary`` (the plan in lines, for the log)."""
    result = plan(queries, cc=cc, ppcie=ppcie, selected=selected)
    result["summary"] = describe(result)
    return result


class FilterModule:
    """GPU CC / PPCIe mode planning."""

    def filters(self) -> Dict[str, Any]:
        return {"gpu_cc_plan": gpu_cc_plan}
