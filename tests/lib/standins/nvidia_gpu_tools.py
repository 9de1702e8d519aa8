"""Stand-in for NVIDIA's gpu-admin-tools ``nvidia_gpu_tools.py`` (test use only).

The real tool pokes GPU registers through sysfs, so tests run this instead.  It
follows the tool's source (github.com/NVIDIA/gpu-admin-tools, ``cli/main.py``,
``cli/per_gpu.py``, ``cli/per_gpu_nvswitch.py``, ``pci/devices.py``) for the
options the ``gpu_cc_mode`` role uses:

- it prints ``NVIDIA GPU Tools version ...`` and ``Command line arguments: [...]``
  on stdout, then logs to stderr in the tool's format
  (``%(asctime)s.%(msecs)03d %(levelname)-8s %(message)s``);
- ``--gpu-bdf=SUBSTRING`` selects the one GPU or NVSwitch whose address contains
  it (``find_gpus`` returns NVSwitches too); none or several is an error, exit 1;
- a GPU the nvidia driver is bound to is refused unless ``--ignore-nvidia-driver``;
- GPUs: ``--set-cc-mode=on|off|devtools`` stages the mode ("It will be active
  after GPU reset"); with ``--reset-after-cc-mode-switch`` the GPU is reset and
  the new mode checked (a mismatch raises, exit 1); ``--query-cc-mode`` logs
  ``<GPU> CC mode is <mode>`` (the active mode) or, on a GPU without CC, the
  error ``Querying CC mode is not supported on <GPU>`` and exits 1;
- GPUs and NVSwitches: a warning for CC/PPCIe not off, then ``--set-ppcie-mode``
  and ``--reset-after-ppcie-mode-switch`` likewise, then ``--query-ppcie-mode``
  (``<device> PPCIe mode is <mode>``);
- devices print as ``GPU <bdf> <name> <devid> BAR0 0x...`` and
  ``NvSwitch <bdf> <name> <devid> BAR0 0x...``.

Stricter than the tool, so that tests catch a wrong order: PPCIe may go on only
while every GPU has CC off, and CC may go on (or devtools) only while no device
has PPCIe on, as NVIDIA's k8s-cc-manager states ("Before enabling PPCIe, CC mode
must be disabled on all devices"; "When setting CC mode ... PPCIe mode must be
disabled on all devices first").

State lives in the JSON file named by NVIDIA_GPU_TOOLS_STANDIN_STATE:
``{"devices": {"0000:03:00.0": {"kind": "gpu", "cc": "off", "ppcie": "off", ...}}}``
with optional per-device ``name``, ``device_id``, ``driver``, ``cc_supported``,
``ppcie_supported`` and ``fail_reset`` (the reset does not apply the mode).
Every call is appended as a JSON line (``argv``) to ``<state file>.calls``.
"""

import argparse
import json
import logging
import os
import sys
from logging import error, info, warning

VERSION = "v2026.02.24o-standin"


class GpuError(Exception):
    pass


def state_path():
    path = os.environ.get("NVIDIA_GPU_TOOLS_STANDIN_STATE")
    if not path:
        print("NVIDIA_GPU_TOOLS_STANDIN_STATE is not set: the stand-in only acts on a test state file",
              file=sys.stderr)
        sys.exit(1)
    return path


def load():
    with open(state_path(), encoding="utf-8") as handle:
        return json.load(handle)


def save(state):
    with open(state_path(), "w", encoding="utf-8") as handle:
        json.dump(state, handle, indent=1, sort_keys=True)


def record(argv):
    with open(state_path() + ".calls", "a", encoding="utf-8") as log:
        log.write(json.dumps({"argv": argv}) + "\n")


def label(bdf, device):
    kind = "GPU" if device.get("kind", "gpu") == "gpu" else "NvSwitch"
    name = device.get("name", "H100-SXM" if kind == "GPU" else "LS10")
    devid = device.get("device_id", "0x2330" if kind == "GPU" else "0x22a3")
    return "%s %s %s %s BAR0 0x%x" % (kind, bdf, name, devid, 0x90000000 + (int(bdf.split(":")[1], 16) << 24))


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="nvidia_gpu_tools.py")
    parser.add_argument("--gpu-bdf")
    parser.add_argument("--log", choices=["debug", "info", "warning", "error", "critical"], default="info")
    parser.add_argument("--mmio-access-type", choices=["devmem", "sysfs"], default="sysfs")
    parser.add_argument("--query-cc-mode", action="store_true")
    parser.add_argument("--query-ppcie-mode", action="store_true")
    parser.add_argument("--set-cc-mode", choices=["off", "on", "devtools"])
    parser.add_argument("--reset-after-cc-mode-switch", action="store_true")
    parser.add_argument("--set-ppcie-mode", choices=["off", "on"])
    parser.add_argument("--reset-after-ppcie-mode-switch", action="store_true")
    parser.add_argument("--ignore-nvidia-driver", action="store_true")
    return parser.parse_args(argv)


def select(state, pattern):
    matches = sorted(bdf for bdf in state["devices"] if pattern in bdf)
    if not matches:
        error("Matching for %s found nothing", pattern)
        sys.exit(1)
    if len(matches) > 1:
        error("Matching for %s found more than one GPU %s", pattern,
              ", ".join(label(bdf, state["devices"][bdf]) for bdf in matches))
        sys.exit(1)
    return matches[0]


def guard_order(state, setting, mode):
    """The ordering NVIDIA's k8s-cc-manager states; see the module docstring."""
    devices = state["devices"].values()
    gpu_cc = [d.get("cc", "off") for d in devices if d.get("kind", "gpu") == "gpu"]
    if setting == "ppcie" and mode == "on" and any(cc != "off" for cc in gpu_cc):
        raise GpuError("stand-in: PPCIe may go on only after CC is off on every GPU")
    if setting == "cc" and mode != "off" and any(d.get("ppcie") == "on" for d in devices):
        raise GpuError("stand-in: CC may go %s only after PPCIe is off on every device" % mode)


def set_mode(state, bdf, setting, mode, reset):
    device = state["devices"][bdf]
    name = "CC" if setting == "cc" else "PPCIe"
    guard_order(state, setting, mode)
    device["pending_" + setting] = mode
    save(state)
    what = "GPU" if setting == "cc" else "GPU or switch"
    info("%s %s mode set to %s. It will be active after %s reset.", label(bdf, device), name, mode, what)
    if not reset:
        return
    if not device.get("fail_reset"):
        device[setting] = device.pop("pending_" + setting)
    save(state)
    if device[setting] != mode:
        raise GpuError("%s failed to switch to %s mode %s, current mode is %s."
                       % (label(bdf, device), name, mode, device[setting]))
    info("%s was reset to apply the new %s mode.", label(bdf, device), name)


def per_gpu(state, bdf, opts):
    device = state["devices"][bdf]
    me = label(bdf, device)
    if device.get("driver") == "nvidia":
        if not opts.ignore_nvidia_driver:
            error("The nvidia driver appears to be using %s, aborting. Specify --ignore-nvidia-driver to ignore "
                  "this check.", me)
            return False
        warning("The nvidia driver appears to be using %s, but --ignore-nvidia-driver was specified, continuing.", me)
    cc_supported = device.get("cc_supported", True)
    if opts.set_cc_mode:
        if not cc_supported:
            error("Configuring CC not supported on %s", me)
            return False
        set_mode(state, bdf, "cc", opts.set_cc_mode, opts.reset_after_cc_mode_switch)
    if opts.query_cc_mode:
        if not cc_supported:
            error("Querying CC mode is not supported on %s", me)
            return False
        info("%s CC mode is %s", me, device.get("cc", "off"))
    return True


def per_gpu_or_nvswitch(state, bdf, opts):
    device = state["devices"][bdf]
    me = label(bdf, device)
    ppcie_supported = device.get("ppcie_supported", True)
    if device.get("kind", "gpu") == "gpu" and device.get("cc_supported", True) and device.get("cc", "off") != "off":
        warning("%s has CC mode %s, some functionality may not work", me, device["cc"])
    if ppcie_supported and device.get("ppcie", "off") != "off":
        warning("%s has PPCIe mode %s, some functionality may not work", me, device["ppcie"])
    if opts.set_ppcie_mode:
        if not ppcie_supported:
            error("Configuring PPCIe not supported on %s", me)
            return False
        set_mode(state, bdf, "ppcie", opts.set_ppcie_mode, opts.reset_after_ppcie_mode_switch)
    if opts.query_ppcie_mode:
        if not ppcie_supported:
            error("Querying PPCIe mode is not supported on %s", me)
            return False
        info("%s PPCIe mode is %s", me, device.get("ppcie", "off"))
    return True


def main(argv):
    print("NVIDIA GPU Tools version %s" % VERSION)
    print("Command line arguments: %s" % ([sys.argv[0]] + argv))
    sys.stdout.flush()
    opts = parse_args(argv)
    logging.basicConfig(level=getattr(logging, opts.log.upper()),
                        format="%(asctime)s.%(msecs)03d %(levelname)-8s %(message)s", datefmt="%Y-%m-%d,%H:%M:%S")
    record(argv)
    state = load()
    if opts.gpu_bdf is None:
        print("GPUs:")
        for index, bdf in enumerate(sorted(state["devices"])):
            print(" ", index, label(bdf, state["devices"][bdf]))
        info("No GPU specified, select GPU with --gpu, --gpu-bdf, or --gpu-name")
        return 0
    bdf = select(state, opts.gpu_bdf)
    print("Topo:")
    print("  ", label(bdf, state["devices"][bdf]))
    sys.stdout.flush()
    info("Selected %s", label(bdf, state["devices"][bdf]))
    if state["devices"][bdf].get("kind", "gpu") == "gpu" and not per_gpu(state, bdf, opts):
        return 1
    if not per_gpu_or_nvswitch(state, bdf, opts):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
