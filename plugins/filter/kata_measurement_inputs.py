# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side filters for SEV-SNP launch measurements of Kata Containers guests.

- ``kata_measurement_inputs``: what a Kata QEMU runtime configuration (TOML, with its config.d drop-ins)
  puts into an SEV-SNP launch measurement: firmware, kernel, initrd, the kernel command line QEMU gets
  with ``-append``, the vCPU count and type.
- ``qemu_measurement_inputs``: the same, read from the argv of a running QEMU (``/proc/<pid>/cmdline``).
- ``sev_snp_measure_args``: the ``sev-snp-measure`` arguments for one vCPU count.
- ``snp_reference_values`` and ``rvps_sample_message``: the Trustee RVPS reference-value message.

Facts the composition follows are in docs/attestation.md, with their sources.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from ansible.errors import AnsibleFilterError

try:
    import tomlkit
    from tomlkit.exceptions import TOMLKitError
    HAS_TOMLKIT = True
except ImportError:  # pragma: no cover - tomlkit is pinned in requirements.txt
    HAS_TOMLKIT = False

# kata-containers src/runtime/virtcontainers/qemu_amd64.go, kernelParams (amd64, QEMU).
KATA_AMD64_KERNEL_PARAMS = (
    "tsc=reliable", "no_timer_check", "rcupdate.rcu_expedited=1", "i8042.direct=1", "i8042.dumbkbd=1",
    "i8042.nopnp=1", "i8042.noaux=1", "noreplace-smp", "reboot=k", "cryptomgr.notests", "net.ifnames=0",
    "pci=lastbus=0",
)
# qemu_amd64.go adds these when enable_iommu is set.
KATA_IOMMU_PARAMS = ("intel_iommu=on", "iommu=pt")
# katautils getKernelParams: an image-based guest boots systemd (needSystemd = ImagePath != "").
KATA_SYSTEMD_PARAMS = (
    "systemd.unit=kata-containers.target", "systemd.mask=systemd-networkd.service",
    "systemd.mask=systemd-networkd.socket",
)
# qemu_amd64.go cpuModel(): SNP guests get EPYC-v4 ("until QEMU cpu model 'host' supports AMD SEV-SNP").
KATA_SNP_CPU_MODEL = "EPYC-v4"
# Trustee RVPS Message (rvps/src/lib.rs MESSAGE_VERSION) and the sample extractor's type.
RVPS_MESSAGE_VERSION = "0.1.0"
RVPS_SAMPLE_TYPE = "sample"
# The name the Trustee attestation-service default CPU policy queries for the SNP launch measurement.
SNP_LAUNCH_MEASUREMENT = "snp_launch_measurement"
MEASUREMENT_BYTES = 48
PLACEHOLDER = re.compile(r"^\s*<.*>\s*$", re.S)


def _fail(name: Optional[str], message: str) -> AnsibleFilterError:
    prefix = "runtime class %s: " % name if name else ""
    return AnsibleFilterError(prefix + message)


def _parse_toml(text: Any, what: str, name: Optional[str]) -> Dict[str, Any]:
    if not HAS_TOMLKIT:
        raise _fail(name, "the tomlkit Python library is missing on the controller: pip install tomlkit")
    if not isinstance(text, str):
        raise _fail(name, "%s must be TOML text, got %s" % (what, type(text).__name__))
    try:
        return tomlkit.parse(text).unwrap()
    except TOMLKitError as exc:
        raise _fail(name, "%s is not valid TOML: %s" % (what, exc)) from None


def _merge(base: Dict[str, Any], dropin: Mapping[str, Any]) -> Dict[str, Any]:
    """Kata's drop-in rule: tables merge key by key, a key set in a drop-in replaces the base value."""
    merged = dict(base)
    for key, value in dropin.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _dropin_texts(dropins: Any, name: Optional[str]) -> List[Tuple[str, str]]:
    """Drop-ins as (label, text): a list of TOML texts, or of {path, content} dicts or slurp results
    ({source, content, encoding: base64}), taken in path order."""
    if dropins is None:
        return []
    if not isinstance(dropins, (list, tuple)):
        raise _fail(name, "dropins must be a list of TOML texts or of {path, content} dicts")
    items: List[Tuple[str, str]] = []
    for index, entry in enumerate(dropins):
        if not isinstance(entry, Mapping):
            items.append(("drop-in %d" % index, entry))
            continue
        label = str(entry.get("path") or entry.get("source") or "drop-in %d" % index)
        if "content" not in entry:
            raise _fail(name, "drop-in %s has no content" % label)
        content = entry["content"]
        if entry.get("encoding") == "base64":  # an ansible.builtin.slurp result
            try:
                content = base64.b64decode(content).decode("utf-8")
            except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
                raise _fail(name, "drop-in %s cannot be decoded: %s" % (label, exc)) from None
        items.append((label, content))
    if dropins and all(isinstance(entry, Mapping) for entry in dropins):
        items.sort(key=lambda item: item[0])
    return items


def _positive_int(value: Any, what: str, name: Optional[str]) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(name, "%s must be a number, got %r" % (what, value))
    return int(math.ceil(value))


def _resolve_vcpus(value: Any, name: Optional[str]) -> Tuple[Optional[int], List[str]]:
    """default_vcpus as Kata reads it: unset or 0 is 1, a fraction rounds up, a negative value means
    "all physical cores" (host-dependent, so no single count)."""
    if value is None:
        return 1, []
    count = _positive_int(value, "default_vcpus", name)
    if count < 0:
        return None, ["default_vcpus is %s (the host's core count): list the counts in attestation_vcpu_counts"
                      % value]
    return max(count, 1), []


def _resolve_max_vcpus(value: Any, host_cpus: Optional[int], name: Optional[str]) -> Tuple[Optional[int], List[str]]:
    """nr_cpus= as Kata sets it: default_maxvcpus, or the host's CPU count when that is 0 or larger."""
    maximum = 0 if value is None else _positive_int(value, "default_maxvcpus", name)
    if host_cpus is None:
        if maximum > 0:
            return maximum, []
        return None, ["default_maxvcpus is 0, so Kata sets nr_cpus= to the host's CPU count, which was not given"]
    host = _positive_int(host_cpus, "host_cpus", name)
    if maximum <= 0 or maximum > host:
        return host, []
    return maximum, []


def _root_params(rootfs_type: str, disable_nvdimm: bool) -> List[str]:
    """kata-containers virtcontainers/hypervisor.go GetKernelRootParams (no DAX: confidential guests
    have NVDIMM disabled)."""
    params = ["root=/dev/vda1" if disable_nvdimm else "root=/dev/pmem0p1"]
    if rootfs_type == "erofs":
        params.append("rootflags=ro")
    elif rootfs_type in ("", "ext4", "xfs"):
        params.append("rootflags=data=ordered,errors=remount-ro ro")
    else:
        raise AnsibleFilterError("unsupported rootfs_type %r (Kata knows ext4, xfs, erofs)" % rootfs_type)
    params.append("rootfstype=%s" % (rootfs_type or "ext4"))
    return params


def _compose_cmdline(hv: Mapping[str, Any], agent: Mapping[str, Any], confidential: bool,
                     nr_cpus: Optional[int]) -> Tuple[Optional[str], List[str]]:
    problems: List[str] = []
    verity = str(hv.get("kernel_verity_params", "") or "")
    if verity.strip():
        problems.append(
            "kernel_verity_params is set%s: the dm-verity root arguments Kata derives from it are release-specific "
            "and not composed here; take the command line from a running sandbox (attestation_cmdline_source: "
            "running) or give it as cmdline" % (" to a placeholder" if PLACEHOLDER.match(verity) else ""))
    if nr_cpus is None:
        problems.append("nr_cpus= cannot be computed (see default_maxvcpus)")
    if problems:
        return None, problems
    disable_nvdimm = bool(hv.get("disable_image_nvdimm", False)) or confidential
    params: List[str] = list(KATA_AMD64_KERNEL_PARAMS)
    if hv.get("enable_iommu", False):
        params.extend(KATA_IOMMU_PARAMS)
    params.append("debug" if hv.get("enable_debug", False) else "quiet")
    params.append("panic=1")
    params.append("nr_cpus=%d" % nr_cpus)
    params.append("selinux=%d" % (0 if hv.get("disable_guest_selinux", True) else 1))
    if hv.get("image"):
        params.extend(KATA_SYSTEMD_PARAMS)
        params.extend(_root_params(str(hv.get("rootfs_type", "") or ""), disable_nvdimm))
    params.extend(str(hv.get("kernel_params", "") or "").split())
    if agent.get("enable_debug", False):
        params.append("agent.log=debug")
    if agent.get("debug_console_enabled", False):
        params.extend(["agent.debug_console", "agent.debug_console_vport=1026"])
    return " ".join(params), []


def kata_measurement_inputs(config: Any, dropins: Any = None, name: Optional[str] = None,
                            host_cpus: Optional[int] = None) -> Dict[str, Any]:
    """The SNP measurement inputs of one Kata QEMU runtime configuration.

    ``config`` is the base TOML text; ``dropins`` the config.d drop-ins (texts, or ``{path, content}``
    dicts, applied in path order; a key in a drop-in replaces the base value); ``host_cpus`` the host's
    CPU count (``nproc``), used when ``default_maxvcpus`` is 0.
    """
    merged = _parse_toml(config, "the configuration", name)
    for label, text in _dropin_texts(dropins, name):
        merged = _merge(merged, _parse_toml(text, label, name))
    hypervisor = merged.get("hypervisor")
    if not isinstance(hypervisor, Mapping) or not isinstance(hypervisor.get("qemu"), Mapping):
        others = ", ".join(sorted(hypervisor)) if isinstance(hypervisor, Mapping) else "none"
        raise _fail(name, "no [hypervisor.qemu] table (hypervisors: %s); SNP launch measurements are computed "
                          "for QEMU guests only" % others)
    hv = hypervisor["qemu"]
    confidential = bool(hv.get("confidential_guest", False))
    snp = bool(hv.get("sev_snp_guest", False))
    if not (confidential and snp):
        flags = (str(confidential).lower(), str(snp).lower())
        raise _fail(name, "not an SEV-SNP runtime class (confidential_guest=%s, sev_snp_guest=%s): measure only "
                          "classes whose configuration sets both to true" % flags)
    firmware = str(hv.get("firmware", "") or "")
    kernel = str(hv.get("kernel", "") or "")
    initrd = str(hv.get("initrd", "") or "")
    image = str(hv.get("image", "") or "")
    if not firmware:
        raise _fail(name, "firmware is empty: an SNP guest needs an OVMF built with AMD SEV support (AmdSevX64, "
                          "Kata ships /opt/kata/share/ovmf/AMDSEV.fd); set firmware in the configuration")
    if not kernel:
        raise _fail(name, "kernel is empty: Kata boots the guest kernel directly (-kernel), set kernel")
    if initrd and image:
        raise _fail(name, "both initrd (%s) and image (%s) are set; Kata refuses that, keep one" % (initrd, image))
    agent = merged.get("agent", {}).get("kata", {}) if isinstance(merged.get("agent"), Mapping) else {}
    problems: List[str] = []
    vcpus, vcpu_problems = _resolve_vcpus(hv.get("default_vcpus"), name)
    nr_cpus, max_problems = _resolve_max_vcpus(hv.get("default_maxvcpus"), host_cpus, name)
    problems.extend(vcpu_problems)
    cmdline, cmdline_problems = _compose_cmdline(hv, agent, confidential, nr_cpus)
    problems.extend(max_problems)
    problems.extend(cmdline_problems)
    return {
        "runtime_class": name,
        "hypervisor": str(hv.get("path", "") or ""),
        "firmware": firmware,
        "kernel": kernel,
        "initrd": initrd,
        "image": image,
        "cmdline": cmdline,
        "kernel_params": str(hv.get("kernel_params", "") or ""),
        "kernel_verity_params": str(hv.get("kernel_verity_params", "") or ""),
        "default_vcpus": vcpus,
        "nr_cpus": nr_cpus,
        "vcpu_type": KATA_SNP_CPU_MODEL,
        "cpu_features": str(hv.get("cpu_features", "") or ""),
        "snp_guest_policy": hv.get("snp_guest_policy"),
        "snp_id_block": str(hv.get("snp_id_block", "") or ""),
        "static_sandbox_resource_mgmt": bool(merged.get("runtime", {}).get("static_sandbox_resource_mgmt", False))
        if isinstance(merged.get("runtime"), Mapping) else False,
        "annotations": list(hv.get("enable_annotations", []) or []),
        "problems": problems,
    }


def _qemu_argv(argv: Any) -> List[str]:
    if isinstance(argv, str):
        parts = argv.split("\0")
        if parts and parts[-1] == "":
            parts.pop()
        return parts
    if isinstance(argv, (list, tuple)) and all(isinstance(arg, str) for arg in argv):
        return list(argv)
    raise AnsibleFilterError("a QEMU command line must be a list of arguments or NUL-separated text "
                             "(the content of /proc/<pid>/cmdline)")


def _option_value(value: str, key: str) -> Optional[str]:
    for part in value.split(","):
        if part.startswith(key + "="):
            return part[len(key) + 1:]
    return None


def _smp_cpus(value: str) -> Optional[int]:
    first = value.split(",", 1)[0]
    if first.isdigit():
        return int(first)
    cpus = _option_value(value, "cpus")
    return int(cpus) if cpus and cpus.isdigit() else None


def qemu_measurement_inputs(argv: Any) -> Dict[str, Any]:
    """The SNP measurement inputs of a QEMU command line: -bios, -kernel, -initrd, -append, -smp, -cpu
    and whether an sev-snp-guest object with kernel-hashes=on is there."""
    args = _qemu_argv(argv)
    result: Dict[str, Any] = {
        "hypervisor": args[0] if args else "", "firmware": "", "kernel": "", "initrd": "", "cmdline": "",
        "vcpus": None, "vcpu_type": "", "snp": False, "kernel_hashes": False, "append_given": False,
    }
    options = {"-bios": "firmware", "-kernel": "kernel", "-initrd": "initrd"}
    index = 1
    while index < len(args):
        arg = args[index]
        value = args[index + 1] if index + 1 < len(args) else None
        if arg in options and value is not None:
            result[options[arg]] = value
        elif arg == "-append" and value is not None:
            result["cmdline"] = value
            result["append_given"] = True
        elif arg == "-smp" and value is not None:
            result["vcpus"] = _smp_cpus(value)
        elif arg == "-cpu" and value is not None:
            result["vcpu_type"] = value.split(",", 1)[0]
        elif arg == "-object" and value is not None and value.split(",", 1)[0] == "sev-snp-guest":
            result["snp"] = True
            result["kernel_hashes"] = _option_value(value, "kernel-hashes") == "on"
        else:
            index += 1
            continue
        index += 2
    return result


def sev_snp_measure_args(inputs: Mapping[str, Any], vcpus: Any, vcpu_type: Optional[str] = None,
                         guest_features: str = "0x1", vmm_type: str = "QEMU",
                         files: Optional[Mapping[str, str]] = None) -> List[str]:
    """The sev-snp-measure arguments (after the program) for one vCPU count.

    ``files`` maps firmware/kernel/initrd to controller paths (the fetched copies); the target paths in
    ``inputs`` are used where it has none.
    """
    count = _positive_int(vcpus, "vcpus", inputs.get("runtime_class"))
    if count < 1:
        raise _fail(inputs.get("runtime_class"), "vcpus must be 1 or more, got %s" % vcpus)
    paths = dict(files or {})

    def path(key: str) -> str:
        return str(paths.get(key) or inputs.get(key) or "")

    if not path("firmware"):
        raise _fail(inputs.get("runtime_class"), "no firmware to measure")
    model = str(vcpu_type or inputs.get("vcpu_type") or KATA_SNP_CPU_MODEL)
    args = ["--mode", "snp", "--vcpus", str(count), "--vcpu-type", model,
            "--vmm-type", vmm_type, "--guest-features", str(guest_features), "--ovmf", path("firmware"),
            "--output-format", "hex"]
    if path("kernel"):
        args.extend(["--kernel", path("kernel")])
        if path("initrd"):
            args.extend(["--initrd", path("initrd")])
        # An empty -append is measured too (as a lone NUL); always pass it so the tool hashes what QEMU hashes.
        args.append("--append=%s" % (inputs.get("cmdline") or ""))
    return args


def _measurement_bytes(measurement: Any) -> bytes:
    if not isinstance(measurement, str):
        raise AnsibleFilterError("a launch measurement must be a hex string, got %r" % (measurement,))
    text = measurement.strip().lower()
    try:
        raw = binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        raise AnsibleFilterError("launch measurement %r is not hex" % measurement) from None
    if len(raw) != MEASUREMENT_BYTES:
        raise AnsibleFilterError("launch measurement %r has %d bytes, an SNP measurement has %d"
                                 % (measurement, len(raw), MEASUREMENT_BYTES))
    return raw


def snp_reference_values(measurements: Union[str, Sequence[str]], encodings: Iterable[str] = ("hex",),
                         name: str = SNP_LAUNCH_MEASUREMENT) -> Dict[str, List[str]]:
    """``{name: [values]}``: each measurement in each encoding (hex, base64), without duplicates, in order."""
    if isinstance(measurements, str):
        measurements = [measurements]
    encodings = list(encodings)
    unknown = [encoding for encoding in encodings if encoding not in ("hex", "base64")]
    if unknown or not encodings:
        raise AnsibleFilterError("measurement encodings must be hex and/or base64, got %s" % (encodings,))
    values: List[str] = []
    for measurement in measurements:
        raw = _measurement_bytes(measurement)
        for encoding in encodings:
            value = raw.hex() if encoding == "hex" else base64.b64encode(raw).decode("ascii")
            if value not in values:
                values.append(value)
    return {name: values}


def rvps_sample_message(reference_values: Mapping[str, Any]) -> Dict[str, str]:
    """A Trustee RVPS message of type "sample" (for ``rvps-tool register --path``): the payload is the
    base64 of the JSON ``{name: [values]}`` map."""
    if not isinstance(reference_values, Mapping) or not reference_values:
        raise AnsibleFilterError("reference values must be a non-empty mapping of name to values")
    payload = json.dumps(dict(reference_values), sort_keys=True, separators=(",", ":"))
    return {
        "version": RVPS_MESSAGE_VERSION,
        "type": RVPS_SAMPLE_TYPE,
        "payload": base64.b64encode(payload.encode("utf-8")).decode("ascii"),
    }


class FilterModule:
    """SEV-SNP launch measurement inputs and Trustee reference values."""

    def filters(self) -> Dict[str, Any]:
        return {
            "kata_measurement_inputs": kata_measurement_inputs,
            "qemu_measurement_inputs": qemu_measurement_inputs,
            "sev_snp_measure_args": sev_snp_measure_args,
            "snp_reference_values": snp_reference_values,
            "rvps_sample_message": rvps_sample_message,
        }
