# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SEV-SNP launch measurements of Kata Containers guests (the filters of plugins/filter/kata_measurement_inputs.py).

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

from ansible_collections.confidential_gpu.host.plugins.plugin_utils.kata_model import (
    apply_dropins,
    parse,
    parse_version,
)
from ansible_collections.confidential_gpu.host.plugins.plugin_utils.toml_file import TomlError

# The Go runtime's composition of the guest kernel command line (QEMU -append), read at the release tags
# 3.9.0 to 4.1.0 of github.com/kata-containers/kata-containers (docs/attestation.md lists what changed when).
# Outside this range the line is not composed: the filter says so instead of guessing.
KATA_MODELLED = ((3, 9, 0), (4, 1))  # from 3.9.0 through every 4.1.x
# src/runtime/virtcontainers/qemu_amd64.go, var kernelParams (identical 3.9.0 .. 4.1.0).
KATA_AMD64_KERNEL_PARAMS = (
    "tsc=reliable", "no_timer_check", "rcupdate.rcu_expedited=1", "i8042.direct=1", "i8042.dumbkbd=1",
    "i8042.nopnp=1", "i8042.noaux=1", "noreplace-smp", "reboot=k", "cryptomgr.notests", "net.ifnames=0",
    "pci=lastbus=0",
)
# qemu_amd64.go newQemuArch: appended to the arch parameters when enable_iommu (config.IOMMU) is set.
KATA_IOMMU_PARAMS = ("intel_iommu=on", "iommu=pt")
# qemu_arch_base.go appendConsole (called from qemu.go buildDevices, after handleImagePath).
KATA_CONSOLE_PARAMS = ("console=hvc0", "console=hvc1")
KATA_LEGACY_CONSOLE_PARAMS = ("console=ttyS0",)
# qemu_arch_base.go kernelParamsNonDebug/kernelParamsDebug, and the systemd ones handleImagePath adds for images.
KATA_NON_DEBUG_PARAMS = ("quiet",)
KATA_DEBUG_PARAMS = ("debug",)
KATA_SYSTEMD_NON_DEBUG_PARAMS = ("systemd.show_status=false",)
KATA_SYSTEMD_DEBUG_PARAMS = ("systemd.show_status=true", "systemd.log_level=debug")
# katautils/create.go systemdKernelParam, used by getKernelParams when needSystemd (ImagePath != "").
KATA_SYSTEMD_PARAMS = (
    "systemd.unit=kata-containers.target", "systemd.mask=systemd-networkd.service",
    "systemd.mask=systemd-networkd.socket",
)
# govmm/vmm_amd64.go MaxVCPUs: katautils/config.go defaultMaxVCPUs never exceeds it.
KATA_AMD64_MAX_VCPUS = 240
# hypervisor.go verityBlockSizeBytes (3.27.0 .. 4.1.0).
VERITY_BLOCK_BYTES = 512
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


def _dropin_texts(dropins: Any, name: Optional[str]) -> List[Tuple[str, str]]:
    """Drop-ins as (label, text): a list of TOML texts (in list order), or of {path, content} dicts or slurp
    results ({source, content, encoding: base64}), taken in path order as the runtime reads config.d."""
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
    """nr_cpus= as katautils/config.go defaultMaxVCPUs sets it: default_maxvcpus, or the host's CPU count when
    that is 0 or larger, never more than govmm's MaxVCPUs (240 on amd64)."""
    maximum = 0 if value is None else _positive_int(value, "default_maxvcpus", name)
    if host_cpus is None:
        if maximum > 0:
            return min(maximum, KATA_AMD64_MAX_VCPUS), []
        return None, ["default_maxvcpus is 0, so Kata sets nr_cpus= to the host's CPU count, which was not given"]
    host = _positive_int(host_cpus, "host_cpus", name)
    if maximum <= 0 or maximum >= host:
        maximum = host
    return min(maximum, KATA_AMD64_MAX_VCPUS), []


def _kata_version(value: Any) -> Tuple[Optional[Tuple[int, int, int]], Optional[str]]:
    """The Go runtime release whose composition applies, or why none does."""
    version = parse_version(value) if value else None
    if version is None:
        return None, ("the Kata version is not known%s: the kernel command line Kata composes differs between "
                      "releases; give the version (attestation_kata_version, or kata-runtime --version on the host)"
                      % (" (%r is not a version)" % value if value else ""))
    low, high = KATA_MODELLED
    if version < low or version[:2] > high:
        return None, ("Kata %d.%d.%d: the kernel command line is composed only for the Go runtime %d.%d.%d to "
                      "%d.%d.x, whose code it follows; take the line from a running sandbox "
                      "(attestation_cmdline_source: running) or give it as cmdline" % (version + low + high))
    return version, None


def _verity_root_params(text: str, rootfs_type: str, disable_nvdimm: bool) -> Tuple[List[str], Optional[str]]:
    """hypervisor.go ParseKernelVerityParams and the dm-verity branch of GetKernelRootParams (3.27.0 .. 4.1.0)."""
    if PLACEHOLDER.match(text) or "@" in text:
        return [], "kernel_verity_params is a placeholder (%s), not a release's dm-verity root hash" % text.strip()
    values: Dict[str, str] = {}
    for field in text.split(","):
        field = field.strip()
        if not field:
            continue
        key, sep, value = field.partition("=")
        if not sep:
            return [], "kernel_verity_params entry %r is not key=value (Kata refuses it)" % field
        values[key] = value
    numbers: Dict[str, int] = {}
    for key in ("data_blocks", "data_block_size", "hash_block_size"):
        if not values.get(key, "").isdigit() or int(values[key]) == 0:
            return [], "kernel_verity_params %s is missing or not a positive number (Kata refuses it)" % key
        numbers[key] = int(values[key])
    if not values.get("root_hash") or not values.get("salt"):
        return [], "kernel_verity_params lacks root_hash or salt (Kata refuses it)"
    if numbers["data_block_size"] % VERITY_BLOCK_BYTES or numbers["hash_block_size"] % VERITY_BLOCK_BYTES:
        return [], "kernel_verity_params block sizes must be multiples of 512 (Kata refuses them)"
    root, hashes = ("/dev/vda1", "/dev/vda2") if disable_nvdimm else ("/dev/pmem0p1", "/dev/pmem0p2")
    sectors = numbers["data_block_size"] // 512 * numbers["data_blocks"]
    table = "dm-verity,,,ro,0 %d verity 1 %s %s %d %d %d 0 sha256 %s %s" % (
        sectors, root, hashes, numbers["data_block_size"], numbers["hash_block_size"], numbers["data_blocks"],
        values["root_hash"], values["salt"])
    flags = "ro" if rootfs_type in ("erofs", "xfs") else "data=ordered,errors=remount-ro ro"
    return ['dm-mod.create="%s"' % table, "root=/dev/dm-0", "rootflags=" + flags, "rootfstype=" + rootfs_type], None


def _root_params(hv: Mapping[str, Any], version: Tuple[int, int, int],
                 disable_nvdimm: bool) -> Tuple[List[str], Optional[str]]:
    """hypervisor.go GetKernelRootParams as qemu_arch_base.go handleImagePath calls it: DAX on amd64 when the image
    is an NVDIMM (qemu_amd64.go sets dax: true), the virtio-blk disk otherwise."""
    rootfs_type = str(hv.get("rootfs_type", "") or "") or "ext4"
    if rootfs_type not in ("ext4", "xfs", "erofs"):
        return [], "unsupported rootfs_type %r (Kata knows ext4, xfs, erofs)" % rootfs_type
    verity = str(hv.get("kernel_verity_params", "") or "")
    if verity.strip() and version >= (3, 27, 0):  # the Go runtime reads kernel_verity_params since 3.27.0
        return _verity_root_params(verity, rootfs_type, disable_nvdimm)
    dax = not disable_nvdimm
    params = ["root=/dev/vda1" if disable_nvdimm else "root=/dev/pmem0p1"]
    # Before 3.17.0 an xfs root fell through to the ext4 flags (hypervisor.go, case XFS: fallthrough).
    if rootfs_type == "erofs" or (rootfs_type == "xfs" and version >= (3, 17, 0)):
        params.append("rootflags=dax ro" if dax else "rootflags=ro")
    else:
        params.append("rootflags=dax,data=ordered,errors=remount-ro ro" if dax
                      else "rootflags=data=ordered,errors=remount-ro ro")
    params.append("rootfstype=" + rootfs_type)
    return params, None


def _param_fields(text: str) -> List[str]:
    """hypervisor.go KernelParamFields: split at spaces outside double quotes."""
    fields: List[str] = []
    current: List[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == " " and not quoted:
            fields.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    fields.append("".join(current).strip())
    return [field for field in fields if field]


def _agent_params(agent: Mapping[str, Any], version: Tuple[int, int, int]) -> List[str]:
    """kata_agent.go KataAgentKernelParams, from the [agent.kata] keys the release reads (katautils/config.go,
    type agent): cdh_api_timeout since 3.9.0, launch_process_timeout since 3.29.0, visible_cdi_devices since
    3.32.0. container_pipe_size comes only from an annotation."""
    params: List[str] = []
    if agent.get("enable_debug", False):
        params.append("agent.log=debug")
    if agent.get("enable_tracing", False):
        params.append("agent.trace=true")
    if agent.get("debug_console_enabled", False):
        params.extend(["agent.debug_console", "agent.debug_console_vport=1026"])
    if int(agent.get("cdh_api_timeout", 0) or 0) > 0:
        params.append("agent.cdh_api_timeout=%d" % int(agent["cdh_api_timeout"]))
    if version >= (3, 29, 0) and int(agent.get("launch_process_timeout", 0) or 0) > 0:
        params.append("agent.launch_process_timeout=%d" % int(agent["launch_process_timeout"]))
    if version >= (3, 32, 0) and agent.get("visible_cdi_devices", False):
        params.append("agent.visible_cdi_devices=true")
    return params


def _extension_params(hv: Mapping[str, Any], version: Tuple[int, int, int]) -> Tuple[List[str], Optional[str]]:
    """qemu.go kernelParameters (4.0.0 ..): one kata.extension.<name>.verity_params per guest_extension_images."""
    images = hv.get("guest_extension_images") or []
    if not images or version < (4, 0, 0):
        return [], None
    params: List[str] = []
    for image in images:
        name = str(image.get("name", "")) if isinstance(image, Mapping) else ""
        if not re.match(r"^[A-Za-z0-9_-]+$", name):
            return [], "guest_extension_images entry %r has no valid name (Kata refuses it)" % (image,)
        value = str(image.get("verity_params", "") or "")
        key = "kata.extension.%s.verity_params" % name
        params.append("%s=%s" % (key, value) if value else key)
    return params, None


def _compose_cmdline(hv: Mapping[str, Any], agent: Mapping[str, Any], version: Tuple[int, int, int],
                     nr_cpus: Optional[int]) -> Tuple[Optional[str], List[str]]:
    """The -append line in the Go runtime's order: qemu.go kernelParameters = the arch's q.kernelParams (fixed
    parameters, IOMMU, root from handleImagePath, console from appendConsole) + quiet/debug (+ the systemd status
    ones for images) + panic=1 + nr_cpus (not for confidential guests since 3.32.0) + selinux + the HypervisorConfig
    KernelParams that katautils/config.go SetKernelParams built (systemd unit for images, scsi_mod.scan=none for
    virtio-scsi, the agent's, then the user's kernel_params) + guest extensions (4.x)."""
    confidential = bool(hv.get("confidential_guest", False))
    # qemu_amd64.go newQemuArch: confidential guests never use NVDIMM; katautils/config.go: nor does microvm.
    disable_nvdimm = (bool(hv.get("disable_image_nvdimm", False)) or confidential
                      or str(hv.get("machine_type", "") or "") == "microvm")
    debug = bool(hv.get("enable_debug", False))
    image = bool(hv.get("image"))
    problems: List[str] = []
    params: List[str] = list(KATA_AMD64_KERNEL_PARAMS)
    if hv.get("enable_iommu", False):
        params.extend(KATA_IOMMU_PARAMS)
    if image:
        root, problem = _root_params(hv, version, disable_nvdimm)
        params.extend(root)
        if problem:
            problems.append(problem)
    params.extend(KATA_LEGACY_CONSOLE_PARAMS if hv.get("use_legacy_serial", False) else KATA_CONSOLE_PARAMS)
    params.extend(KATA_DEBUG_PARAMS if debug else KATA_NON_DEBUG_PARAMS)
    if image:
        params.extend(KATA_SYSTEMD_DEBUG_PARAMS if debug else KATA_SYSTEMD_NON_DEBUG_PARAMS)
    params.append("panic=1")
    if not (confidential and version >= (3, 32, 0)):
        if nr_cpus is None:
            problems.append("nr_cpus= cannot be computed (see default_maxvcpus)")
        params.append("nr_cpus=%s" % nr_cpus)
    params.append("selinux=%d" % (0 if hv.get("disable_guest_selinux", False) else 1))
    if image:
        params.extend(KATA_SYSTEMD_PARAMS)
    if str(hv.get("block_device_driver", "") or "virtio-scsi") == "virtio-scsi":
        params.append("scsi_mod.scan=none")
    params.extend(_agent_params(agent, version))
    for field in _param_fields(str(hv.get("kernel_params", "") or "")):
        if field.startswith("="):
            problems.append("kernel_params entry %r has no key (Kata refuses it)" % field)
        params.append(field)
    extensions, problem = _extension_params(hv, version)
    params.extend(extensions)
    if problem:
        problems.append(problem)
    if problems:
        return None, problems
    return " ".join(params), []


def _merged_config(config: Any, dropins: Any, name: Optional[str]) -> Tuple[Dict[str, Any], Mapping[str, Any]]:
    try:
        merged = apply_dropins(parse(config, "the configuration"),
                               [(label, parse(text, label)) for label, text in _dropin_texts(dropins, name)])
    except TomlError as error:
        raise _fail(name, str(error)) from None
    hypervisor = merged.get("hypervisor")
    if not isinstance(hypervisor, Mapping) or not isinstance(hypervisor.get("qemu"), Mapping):
        others = ", ".join(sorted(hypervisor)) if isinstance(hypervisor, Mapping) else "none"
        raise _fail(name, "no [hypervisor.qemu] table (hypervisors: %s); the command line is composed for QEMU "
                          "guests only" % others)
    return merged, hypervisor["qemu"]


def _agent_table(merged: Mapping[str, Any]) -> Mapping[str, Any]:
    agent = merged.get("agent")
    return agent.get("kata", {}) if isinstance(agent, Mapping) else {}


def _cmdline_of(merged: Mapping[str, Any], hv: Mapping[str, Any], kata_version: Any, nr_cpus: Optional[int],
                nr_cpu_problems: List[str]) -> Tuple[Optional[str], List[str]]:
    version, problem = _kata_version(kata_version)
    if version is None:
        return None, [str(problem)]
    confidential = bool(hv.get("confidential_guest", False))
    needs_nr_cpus = not (confidential and version >= (3, 32, 0))
    cmdline, problems = _compose_cmdline(hv, _agent_table(merged), version, nr_cpus)
    if needs_nr_cpus and nr_cpus is None:
        problems = nr_cpu_problems + problems
    return cmdline, problems


def kata_kernel_cmdline(config: Any, dropins: Any = None, kata_version: Any = None,
                        host_cpus: Optional[int] = None, name: Optional[str] = None) -> str:
    """The guest kernel command line (QEMU -append) Kata's Go runtime composes from a QEMU configuration on amd64;
    fails, saying why, where it cannot be known."""
    merged, hv = _merged_config(config, dropins, name)
    nr_cpus, nr_problems = _resolve_max_vcpus(hv.get("default_maxvcpus"), host_cpus, name)
    cmdline, problems = _cmdline_of(merged, hv, kata_version, nr_cpus, nr_problems)
    if cmdline is None:
        raise _fail(name, "the kernel command line cannot be composed: " + "; ".join(problems))
    return cmdline


def kata_measurement_inputs(config: Any, dropins: Any = None, name: Optional[str] = None,
                            host_cpus: Optional[int] = None, kata_version: Any = None) -> Dict[str, Any]:
    """The SNP measurement inputs of one Kata QEMU runtime configuration.

    ``config`` is the base TOML text; ``dropins`` the config.d drop-ins (texts, or ``{path, content}``
    dicts, applied in path order; a key in a drop-in replaces the base value); ``host_cpus`` the host's
    CPU count (``nproc``), used when ``default_maxvcpus`` is 0; ``kata_version`` the Go runtime's release
    (``3.32.0`` or ``kata-runtime --version`` output), whose composition of the command line is followed.
    """
    merged, hv = _merged_config(config, dropins, name)
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
    problems: List[str] = []
    vcpus, vcpu_problems = _resolve_vcpus(hv.get("default_vcpus"), name)
    nr_cpus, max_problems = _resolve_max_vcpus(hv.get("default_maxvcpus"), host_cpus, name)
    problems.extend(vcpu_problems)
    cmdline, cmdline_problems = _cmdline_of(merged, hv, kata_version, nr_cpus, max_problems)
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
