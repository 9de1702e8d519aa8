# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Confidential-computing readiness of a host, read from sysfs and procfs.

:func:`gather_facts` reads everything once through a :class:`HostRoot` and
returns one plain dict (the ``cc_host_info`` module's result, key for key).
:func:`evaluate` turns those facts into verdicts (``vfio_ready``,
``snp_ready``, ``tdx_ready``) with reasons that name the missing piece and its
fix; it reads no files, so it can be tested on hand-written facts.

Standard library only: this runs on target hosts with Python >= 3.8.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Set

from ansible_collections.confidential_gpu.host.plugins.module_utils.cmdline_tokens import parse_cmdline
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot

# /proc/cpuinfo flags reported in cpu.flags (always all of them, true or false).
CPU_FLAGS = (
    "hypervisor",
    "vmx",
    "svm",
    "sme",
    "sev",
    "sev_es",
    "sev_snp",
    "tdx_host_platform",
    "tdx_guest",
)

CPU_VENDORS = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}

# SEV-SNP came with Zen 3 EPYC (7003 series, "Milan", family 0x19); EPYC of families 0x17 and older (Naples,
# Rome) have SEV and SEV-ES at most.
SNP_FIRST_AMD_FAMILY = 0x19
# TDX came with 4th Gen Xeon Scalable (Sapphire Rapids, some SKUs only).  The family-6 server models of that
# generation and later (model numbers as in Linux's arch/x86/include/asm/intel-family.h); families above 6
# are newer than all of them.  Whether a given SKU and its firmware enable TDX only the running kernel can say.
TDX_INTEL_FAMILY6_MODELS = {
    0x8F: "Sapphire Rapids",
    0xCF: "Emerald Rapids",
    0xAD: "Granite Rapids",
    0xAE: "Granite Rapids-D",
    0xAF: "Sierra Forest",
    0xDD: "Clearwater Forest",
}

GPU_DRIVER_MODULES = ("nvidia", "nouveau", "vfio_pci")

# The ACPI table in which the firmware describes its IOMMU to the OS, and the IOMMU's vendor.  Linux lists every
# table under /sys/firmware/acpi/tables whether or not it turned the IOMMU on, so the table says which IOMMU a
# host has even while the kernel leaves it off; firmware with VT-d or AMD-Vi off leaves the table out.
ACPI_TABLES = "/sys/firmware/acpi/tables"
IOMMU_ACPI_TABLES = {"DMAR": "intel", "IVRS": "amd"}

# Result key -> sysfs attribute, for a hugepage pool and for its per-node share.
_POOL_COUNTS = (("total", "nr_hugepages"), ("free", "free_hugepages"),
                ("reserved", "resv_hugepages"), ("surplus", "surplus_hugepages"))
_NODE_POOL_COUNTS = (("total", "nr_hugepages"), ("free", "free_hugepages"), ("surplus", "surplus_hugepages"))

_HUGEPAGE_DIR = re.compile(r"^hugepages-(\d+)kB$")
_NODE_DIR = re.compile(r"^node(\d+)$")
_NODE_MEMTOTAL = re.compile(r"^Node\s+\d+\s+MemTotal:\s*(\S+)")
_MEMINFO_HUGEPAGESIZE = re.compile(r"^Hugepagesize:\s*(\d+)\s*kB", re.MULTILINE)
# The kernel build options the roles check, as the kernel's scripts/kconfig/confdata.c (Linux 6.12) writes them to
# the .config that distributions install as /boot/config-<release>: "CONFIG_X=y", "=m" or "=<value>"; an option
# turned off is a comment, "# CONFIG_X is not set".
KERNEL_CONFIG_OPTIONS = ("CONFIG_IOMMUFD", "CONFIG_VFIO_DEVICE_CDEV", "CONFIG_KVM_AMD_SEV", "CONFIG_INTEL_TDX_HOST")
# The modules whose install source the roles need. kmod 30's depmod writes /lib/modules/<release>/modules.dep
# ("kernel/drivers/.../name.ko[.xz|.zst]: dependencies") and the kernel build modules.builtin (one path a line).
KERNEL_MODULE_FILES = ("vfio_pci", "iommufd", "ccp")
# Where kmod 30 (man/modprobe.d.xml) and systemd 252 (man/modules-load.d.xml) read the administrator's .conf files.
MODULE_CONFIG_DIRS = (("modprobe_d", "/etc/modprobe.d"), ("modules_load_d", "/etc/modules-load.d"))
_KO_NAME = re.compile(r"(?:^|/)([^/\s]+)\.ko(?:\.[a-z0-9]+)?$")
_REMAPPED_IRQ = re.compile(r"(^|\s)IR-")

_TRUE_WORDS = ("y", "yes", "1", "on", "true")
_FALSE_WORDS = ("n", "no", "0", "off", "false")


# --------------------------------------------------------------------------
# Parsers (pure)
# --------------------------------------------------------------------------

def parse_bool_word(text: str) -> bool | None:
    """``Y``/``N``/``1``/``0``/``on``/``off`` -> bool; anything else ``None``."""
    word = text.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    return None


def parse_cpuinfo(text: str | None) -> tuple[dict[str, str], list[str]]:
    """First processor block of /proc/cpuinfo -> ({field: value}, flags)."""
    fields: dict[str, str] = {}
    for line in (text or "").splitlines():
        if not line.strip():
            if fields:
                break
            continue
        name, sep, value = line.partition(":")
        if sep:
            fields.setdefault(name.strip(), value.strip())
    return fields, fields.get("flags", "").split()


def parse_id_list(text: str) -> list[int]:
    """Kernel list format (``0-3,8,10-11``) -> sorted ids; ``ValueError`` on garbage."""
    ids: Set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        first, _sep, last = part.partition("-")
        start, stop = int(first), int(last or first)
        if stop < start:
            raise ValueError(part)
        ids.update(range(start, stop + 1))
    return sorted(ids)


def size_label(size_kb: int) -> str:
    """2048 -> ``2M``, 1048576 -> ``1G``, 64 -> ``64K``."""
    for unit, factor in (("T", 1 << 30), ("G", 1 << 20), ("M", 1 << 10)):
        if size_kb >= factor and size_kb % factor == 0:
            return f"{size_kb // factor}{unit}"
    return f"{size_kb}K"


# --------------------------------------------------------------------------
# Readers (one concern each, all through HostRoot)
# --------------------------------------------------------------------------

def _module_loaded(host: HostRoot, name: str) -> bool:
    return host.exists(f"/sys/module/{name}")


def _read_bool(host: HostRoot, host_path: str) -> bool | None:
    """A Y/N (or 1/0) sysfs attribute; ``None`` when absent, a warning when garbage."""
    text = host.read_text(host_path)
    if text is None or text == "":
        return None
    value = parse_bool_word(text)
    if value is None:
        host.warn(f"{host_path} holds {text[:40]!r}, not Y/N or 1/0; ignored")
    return value


def _to_int(host: HostRoot, source: str, text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        host.warn(f"{source} holds {text[:40]!r}, not an integer; ignored")
        return None


def kernel_version(release: str | None) -> tuple[int, int] | None:
    """(major, minor) of a kernel release such as ``5.15.0-91-generic``; None when it does not start so."""
    match = re.match(r"(\d+)\.(\d+)", (release or "").strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def read_kernel(host: HostRoot) -> dict[str, Any]:
    raw = host.read_text("/proc/cmdline")
    args, init_args = parse_cmdline(raw)
    release = host.read_text("/proc/sys/kernel/osrelease")
    return {
        "release": release,
        "cmdline": raw,
        "cmdline_args": args,
        "init_args": init_args,
        "config": read_kernel_config(host, release),
        "module_files": read_module_files(host, release),
        "module_config_files": {key: [name for name in host.listdir(directory) if name.endswith(".conf")]
                                for key, directory in MODULE_CONFIG_DIRS},
    }


def read_kernel_config(host: HostRoot, release: str | None) -> dict[str, str | None] | None:
    """KERNEL_CONFIG_OPTIONS as /boot/config-<release> sets them (None: not set); None without that file."""
    text = host.read_text(f"/boot/config-{release}") if release else None
    if text is None:
        return None
    config: dict[str, str | None] = dict.fromkeys(KERNEL_CONFIG_OPTIONS)
    for line in text.splitlines():
        name, equals, value = line.partition("=")
        if equals and name in config:
            config[name] = value
    return config


def read_module_files(host: HostRoot, release: str | None) -> dict[str, str | None]:
    """KERNEL_MODULE_FILES each as ``builtin``, ``module`` (a .ko file for the running release) or None."""
    sources: dict[str, str | None] = dict.fromkeys(KERNEL_MODULE_FILES)
    for source, listing in (("module", "modules.dep"), ("builtin", "modules.builtin")) if release else ():
        for line in (host.read_text(f"/lib/modules/{release}/{listing}") or "").splitlines():
            match = _KO_NAME.search(line.split(":", 1)[0].strip())
            name = match.group(1).replace("-", "_") if match else None
            if name in sources:
                sources[name] = source
    return sources


def read_cpu(host: HostRoot) -> dict[str, Any]:
    fields, flags = parse_cpuinfo(host.read_text("/proc/cpuinfo"))
    vendor_id = fields.get("vendor_id")
    family = fields.get("cpu family")
    model = fields.get("model")
    present = set(flags)
    return {
        "vendor": CPU_VENDORS.get(vendor_id or "", "other"),
        "vendor_id": vendor_id,
        "model_name": fields.get("model name"),
        "family": None if family is None else _to_int(host, "/proc/cpuinfo cpu family", family),
        "model": None if model is None else _to_int(host, "/proc/cpuinfo model", model),
        "flags": {flag: flag in present for flag in CPU_FLAGS},
    }


def _iommu_type(units: list[str], group_count: int) -> str | None:
    if any(unit.startswith("dmar") for unit in units):
        return "intel_dmar"
    if any(unit.startswith("ivhd") for unit in units):
        return "amd_vi"
    if units or group_count:
        return "other"
    return None


def _group_types(host: HostRoot, groups: list[str]) -> dict[str, int]:
    counts: Counter = Counter()
    for group in groups:
        value = host.read_text(f"/sys/kernel/iommu_groups/{group}/type")
        if value:
            counts[value] += 1
    return dict(sorted(counts.items()))


def _most_common(counts: dict[str, int]) -> str | None:
    if not counts:
        return None
    return max(sorted(counts), key=lambda name: counts[name])


def cmdline_passthrough(args: list[dict[str, str | None]]) -> bool | None:
    """Passthrough as the command line asks for it (last word wins); ``None`` when it does not say."""
    wanted: bool | None = None
    for arg in args:
        key = (arg["key"] or "").replace("-", "_")
        value = arg["value"] or ""
        if key == "iommu":
            for word in value.split(","):
                if word == "pt":
                    wanted = True
                elif word == "nopt":
                    wanted = False
        elif key == "iommu.passthrough":
            parsed = parse_bool_word(value)
            if parsed is not None:
                wanted = parsed
    return wanted


def amd_iommu_v2_page_table(args: list[dict[str, str | None]]) -> bool:
    """Whether ``amd_iommu=`` selects the v2 page table (last of ``pgtbl_v1``/``pgtbl_v2`` wins): Linux
    drivers/iommu/amd/init.c parse_amd_iommu_options() reads the comma-separated words by prefix."""
    v2 = False
    for arg in args:
        if (arg["key"] or "").replace("-", "_") != "amd_iommu":
            continue
        for word in (arg["value"] or "").split(","):
            if word.startswith("pgtbl_v1"):
                v2 = False
            elif word.startswith("pgtbl_v2"):
                v2 = True
    return v2


def _vfio_pci_source(host: HostRoot, kernel: dict[str, Any]) -> str | None:
    """``builtin``, ``loaded``, ``module`` (installed, not loaded) or ``None``."""
    installed = kernel["module_files"]["vfio_pci"]
    if installed == "builtin":
        return "builtin"
    return "loaded" if _module_loaded(host, "vfio_pci") else installed


def _interrupt_remapping(host: HostRoot) -> bool | None:
    """True when /proc/interrupts shows remapped (``IR-``) interrupt chips; ``None`` when unreadable."""
    try:
        with open(host.path("/proc/interrupts"), encoding="utf-8", errors="replace") as handle:
            return any(_REMAPPED_IRQ.search(line) for line in handle)
    except FileNotFoundError:
        return None
    except OSError as error:
        host.warn(f"cannot read /proc/interrupts: {error.strerror or error}")
        return None


def _iommu_acpi_table(tables: list[str]) -> str | None:
    return next((name for name in IOMMU_ACPI_TABLES if name in tables), None)


def read_iommu(host: HostRoot, kernel: dict[str, Any]) -> dict[str, Any]:
    units = host.listdir("/sys/class/iommu")
    acpi_tables = host.listdir(ACPI_TABLES)
    groups = [name for name in host.listdir("/sys/kernel/iommu_groups") if name.isdigit()]
    group_types = _group_types(host, groups)
    vfio_pci_source = _vfio_pci_source(host, kernel)
    return {
        "enabled": bool(units or groups),
        "type": _iommu_type(units, len(groups)),
        "units": units,
        "acpi_table": _iommu_acpi_table(acpi_tables),
        "acpi_tables_listed": bool(acpi_tables),
        "group_count": len(groups),
        "group_types": group_types,
        "default_domain_type": _most_common(group_types),
        "cmdline_passthrough": cmdline_passthrough(kernel["cmdline_args"]),
        "amd_v2_page_table": amd_iommu_v2_page_table(kernel["cmdline_args"]),
        "interrupt_remapping": _interrupt_remapping(host),
        "iommufd": host.exists("/dev/iommu"),
        "vfio_cdev": host.exists("/dev/vfio/devices"),
        "vfio_pci_available": vfio_pci_source is not None,
        "vfio_pci_source": vfio_pci_source,
    }


def read_sev(host: HostRoot) -> dict[str, Any]:
    params = "/sys/module/kvm_amd/parameters/"
    return {
        "kvm_amd_loaded": _module_loaded(host, "kvm_amd"),
        "kvm_amd_sev": _read_bool(host, params + "sev"),
        "kvm_amd_sev_es": _read_bool(host, params + "sev_es"),
        "kvm_amd_sev_snp": _read_bool(host, params + "sev_snp"),
        "dev_sev": host.exists("/dev/sev"),
        "ccp_loaded": _module_loaded(host, "ccp"),
    }


def read_tdx(host: HostRoot) -> dict[str, Any]:
    return {
        "kvm_intel_loaded": _module_loaded(host, "kvm_intel"),
        "kvm_intel_tdx": _read_bool(host, "/sys/module/kvm_intel/parameters/tdx"),
    }


def read_kvm(host: HostRoot) -> dict[str, Any]:
    return {"dev_kvm": host.exists("/dev/kvm")}


def read_gpu_drivers(host: HostRoot) -> dict[str, Any]:
    return {name: _module_loaded(host, name) for name in GPU_DRIVER_MODULES}


def _node_ids(host: HostRoot) -> list[int]:
    online = host.read_text("/sys/devices/system/node/online")
    if online:
        try:
            return parse_id_list(online)
        except ValueError:
            host.warn(f"/sys/devices/system/node/online holds {online[:40]!r}, not a node list; "
                      "using the node* directories")
    found = (_NODE_DIR.match(name) for name in host.listdir("/sys/devices/system/node"))
    return sorted(int(match.group(1)) for match in found if match)


def _node_mem_total_kb(host: HostRoot, node: int) -> int | None:
    source = f"/sys/devices/system/node/node{node}/meminfo"
    text = host.read_text(source)
    if text is None:
        return None
    for line in text.splitlines():
        match = _NODE_MEMTOTAL.match(line.strip())
        if match:
            return _to_int(host, source + " MemTotal", match.group(1))
    host.warn(f"{source} has no MemTotal line; ignored")
    return None


def read_numa(host: HostRoot) -> dict[str, Any]:
    nodes = []
    for node in _node_ids(host):
        nodes.append({
            "node": node,
            "cpulist": host.read_text(f"/sys/devices/system/node/node{node}/cpulist"),
            "mem_total_kb": _node_mem_total_kb(host, node),
        })
    return {"nodes": nodes}


def _hugepage_counts(host: HostRoot, base: str, names: tuple[tuple[str, str], ...]) -> dict[str, int | None]:
    return {key: host.read_int(f"{base}/{attribute}") for key, attribute in names}


def read_hugepages(host: HostRoot, node_ids: list[int]) -> dict[str, Any]:
    pools = []
    for entry in host.listdir("/sys/kernel/mm/hugepages"):
        match = _HUGEPAGE_DIR.match(entry)
        if not match:
            host.warn(f"/sys/kernel/mm/hugepages/{entry} is not a hugepages-<N>kB pool; ignored")
            continue
        size_kb = int(match.group(1))
        pool: dict[str, Any] = {"size_kb": size_kb, "size": size_label(size_kb)}
        pool.update(_hugepage_counts(host, "/sys/kernel/mm/hugepages/" + entry, _POOL_COUNTS))
        pool["nodes"] = []
        for node in node_ids:
            base = f"/sys/devices/system/node/node{node}/hugepages/{entry}"
            if host.exists(base):
                per_node: dict[str, Any] = {"node": node}
                per_node.update(_hugepage_counts(host, base, _NODE_POOL_COUNTS))
                pool["nodes"].append(per_node)
        pools.append(pool)
    meminfo = host.read_text("/proc/meminfo") or ""
    default = _MEMINFO_HUGEPAGESIZE.search(meminfo)
    return {
        "default_size_kb": int(default.group(1)) if default else None,
        "pools": sorted(pools, key=lambda item: item["size_kb"]),
    }


# --------------------------------------------------------------------------
# Verdicts (pure functions of the facts)
# --------------------------------------------------------------------------

def _iommu_disabled_by(args: list[dict[str, str | None]]) -> list[str]:
    """Command-line arguments that switch the IOMMU off, as written."""
    found = []
    for arg in args:
        key = (arg["key"] or "").replace("-", "_")
        words = (arg["value"] or "").split(",")
        if key in ("intel_iommu", "amd_iommu", "iommu") and "off" in words:
            found.append(f"{arg['key']}={arg['value']}")
    return found


def iommu_vendor(facts: dict[str, Any]) -> str:
    """Whose IOMMU the host has: ``intel`` or ``amd`` from the firmware's ACPI table (DMAR, IVRS), else the CPU's
    vendor (``other`` too).  They differ in emulators: QEMU's TCG CPU reports AMD beside its Intel VT-d."""
    return IOMMU_ACPI_TABLES.get(facts["iommu"]["acpi_table"] or "", facts["cpu"]["vendor"])


def _iommu_off_fix(facts: dict[str, Any]) -> str:
    """What turns the IOMMU on: arguments that switch it off go, then what the firmware and vendor need."""
    iommu, vendor = facts["iommu"], iommu_vendor(facts)
    disabled_by = _iommu_disabled_by(facts["kernel"]["cmdline_args"])
    steps = [f"remove {' '.join(disabled_by)} from the kernel command line"] if disabled_by else []
    if iommu["acpi_tables_listed"] and iommu["acpi_table"] is None:
        steps.append("enable VT-d (Intel) or AMD-Vi/IOMMU (AMD) in the firmware setup, which describes no IOMMU "
                     "now (no DMAR or IVRS table among the ACPI tables)")
        if vendor == "intel":
            steps.append("add intel_iommu=on to the kernel command line")
    elif vendor == "intel":
        steps.append("add intel_iommu=on to the kernel command line"
                     + ("" if iommu["acpi_table"] else " and enable VT-d in firmware"))
    elif vendor == "amd" and iommu["acpi_table"]:
        if not disabled_by:
            steps.append("the firmware describes AMD-Vi (IVRS table) and Linux turns it on by default, so "
                         "amd_iommu=on is not needed: check dmesg for AMD-Vi errors and that the kernel has "
                         "CONFIG_AMD_IOMMU")
    elif vendor == "amd":
        steps.append("enable the IOMMU (AMD-Vi) in firmware; Linux turns AMD-Vi on by default, "
                     "so amd_iommu=on is not needed")
    else:
        steps.append("enable the IOMMU (VT-d or AMD-Vi) in firmware and, on Intel, add intel_iommu=on "
                     "to the kernel command line")
    return " and ".join(steps)


def _iommu_off_reason(facts: dict[str, Any], needed_by: str = "") -> str:
    return f"IOMMU is off{needed_by}: {_iommu_off_fix(facts)}"


def vfio_reasons(facts: dict[str, Any]) -> list[str]:
    iommu = facts["iommu"]
    reasons = []
    if not iommu["enabled"]:
        reasons.append(_iommu_off_reason(facts))
    elif not iommu["group_count"]:
        units = ", ".join(iommu["units"])
        reasons.append(f"IOMMU units {units} exist but /sys/kernel/iommu_groups is empty: no device is behind "
                       "an IOMMU; check dmesg for DMAR/AMD-Vi errors and the firmware's DMAR/IVRS tables")
    if not iommu["vfio_pci_available"]:
        release = facts["kernel"]["release"] or "the running kernel"
        reasons.append(f"vfio-pci is not available (not loaded, not built in, not in modules.dep of {release}): "
                       "install the kernel modules package that ships vfio-pci.ko, then modprobe vfio-pci")
    return reasons


def snp_support(facts: dict[str, Any]) -> bool | None:
    """Whether the CPU can run SEV-SNP guests: true when the kernel says so (the ``sev_snp`` flag, or kvm_amd's
    ``sev_snp`` on), false for a CPU that is not AMD or of a family before SEV-SNP, null when only the firmware
    settings can tell (the kernel hides the flag while the firmware leaves memory encryption off)."""
    cpu = facts["cpu"]
    if cpu["vendor"] != "amd":
        return False
    if cpu["flags"]["sev_snp"] or facts["sev"]["kvm_amd_sev_snp"]:
        return True
    if cpu["family"] is not None and cpu["family"] < SNP_FIRST_AMD_FAMILY:
        return False
    return None


def tdx_support(facts: dict[str, Any]) -> bool | None:
    """Whether the CPU can run TDX guests: true when the kernel says so (the ``tdx_host_platform`` flag, or
    kvm_intel's ``tdx`` on), false for a CPU that is not Intel or a family-6 model of a generation without TDX,
    null when only the SKU and the firmware settings can tell."""
    cpu = facts["cpu"]
    if cpu["vendor"] != "intel":
        return False
    if cpu["flags"]["tdx_host_platform"] or facts["tdx"]["kvm_intel_tdx"]:
        return True
    family, model = cpu["family"], cpu["model"]
    if family is not None and (family < 6 or (family == 6 and model is not None
                                              and model not in TDX_INTEL_FAMILY6_MODELS)):
        return False
    return None


def _cpu_label(cpu: dict[str, Any]) -> str:
    family = "?" if cpu["family"] is None else f"0x{cpu['family']:x}"
    model = "?" if cpu["model"] is None else f"0x{cpu['model']:x}"
    return f"{cpu['model_name'] or 'the CPU'} (family {family}, model {model})"


def _passthrough_args(args: list[dict[str, str | None]]) -> list[str]:
    """The command-line arguments that ask for IOMMU passthrough, as written."""
    found = []
    for arg in args:
        key = (arg["key"] or "").replace("-", "_")
        value = arg["value"] or ""
        if (key == "iommu" and "pt" in value.split(",")) or \
                (key == "iommu.passthrough" and parse_bool_word(value)):
            found.append(f"{arg['key']}={arg['value']}")
    return found


# What Linux logs when it turns SEV-SNP off for the IOMMU's mode (drivers/iommu/amd/init.c iommu_snp_enable(); the
# head of the passthrough message differs between versions: "IOMMU disabled or configured ..." before the SNP
# page mode 0 check, "IOMMU configured ..." after it).
SNP_PASSTHROUGH_MESSAGE = "configured in passthrough mode, SNP cannot be supported"
SNP_V2_PAGE_TABLE_MESSAGE = "configured with V2 page table mode, SNP cannot be supported"
_DEFAULT_IDENTITY = "the kernel's default IOMMU domain is identity (built with CONFIG_IOMMU_DEFAULT_PASSTHROUGH)"


def _snp_passthrough_conflicts(facts: dict[str, Any]) -> list[str]:
    iommu = facts["iommu"]
    if iommu["cmdline_passthrough"]:
        return _passthrough_args(facts["kernel"]["cmdline_args"])
    if iommu["cmdline_passthrough"] is None and iommu["default_domain_type"] == "identity":
        return [_DEFAULT_IDENTITY]
    return []


def _snp_v2_page_table_conflicts(facts: dict[str, Any]) -> list[str]:
    if not facts["iommu"].get("amd_v2_page_table"):
        return []
    return [f"{arg['key']}={arg['value']}" for arg in facts["kernel"]["cmdline_args"]
            if (arg["key"] or "").replace("-", "_") == "amd_iommu"]


def snp_iommu_conflicts(facts: dict[str, Any]) -> list[str]:
    """What in the IOMMU's set-up makes Linux turn SEV-SNP off at boot, as the kernel command line has it.

    Linux drivers/iommu/amd/init.c iommu_snp_enable() (excerpt in tests/fixtures/linux-mainline) clears
    CC_ATTR_HOST_SEV_SNP when the default domain is passthrough (``iommu=pt``, ``iommu.passthrough=1``, or a
    kernel built with CONFIG_IOMMU_DEFAULT_PASSTHROUGH) or when ``amd_iommu=pgtbl_v2`` selects the v2 page
    table, unless the IOMMU supports SNP page mode 0 (newer kernels and IOMMUs only); kvm_amd then reports
    ``sev_snp=N``."""
    return _snp_passthrough_conflicts(facts) + _snp_v2_page_table_conflicts(facts)


def _snp_iommu_conflict_reasons(facts: dict[str, Any]) -> list[str]:
    reasons = []
    passthrough, v2 = _snp_passthrough_conflicts(facts), _snp_v2_page_table_conflicts(facts)
    if passthrough:
        fix = ("add iommu.passthrough=0 to the kernel command line" if passthrough == [_DEFAULT_IDENTITY]
               else f"remove {' '.join(passthrough)} from the kernel command line")
        reasons.append(f"SEV-SNP is off because the IOMMU is in passthrough mode ({', '.join(passthrough)}): Linux "
                       f"turns SEV-SNP off at boot then (dmesg: \"SNP: IOMMU {SNP_PASSTHROUGH_MESSAGE}.\") and "
                       f"kvm_amd reports sev_snp=N whatever the firmware settings: {fix} (role kernel_args does "
                       "on SEV-SNP hosts) and reboot")
    if v2:
        reasons.append(f"SEV-SNP is off because the AMD IOMMU uses the v2 page table ({', '.join(v2)}): Linux "
                       f"turns SEV-SNP off at boot then (dmesg: \"SNP: IOMMU is {SNP_V2_PAGE_TABLE_MESSAGE}.\") "
                       f"and kvm_amd reports sev_snp=N whatever the firmware settings: remove pgtbl_v2 from "
                       f"{' '.join(v2)} (role kernel_args removes amd_iommu=pgtbl_v2 on SEV-SNP hosts) and reboot")
    return reasons


def snp_reasons(facts: dict[str, Any]) -> list[str]:
    cpu, sev = facts["cpu"], facts["sev"]
    if cpu["vendor"] != "amd":
        vendor_id = cpu["vendor_id"] or "unknown"
        return [f"CPU is not AMD (vendor_id {vendor_id}): SEV-SNP needs an AMD EPYC CPU (Milan or newer)"]
    if snp_support(facts) is False:
        return [f"{_cpu_label(cpu)} predates SEV-SNP, which AMD EPYC has from the 7003 series (Milan, family "
                "0x19) on: this host cannot run SEV-SNP guests, whatever the firmware settings"]
    reasons = []
    iommu_conflicts = _snp_iommu_conflict_reasons(facts) if sev["kvm_amd_sev_snp"] is not True else []
    if not facts["iommu"]["enabled"]:
        reasons.append(_iommu_off_reason(facts, " (SEV-SNP needs it)"))
    else:
        reasons += iommu_conflicts
    if not sev["kvm_amd_loaded"]:
        reasons.append("kvm_amd is not loaded: enable SVM and SEV-SNP in BIOS, then modprobe kvm_amd sev_snp=1")
    elif sev["kvm_amd_sev_snp"] is None:
        reasons.append("kvm_amd has no sev_snp parameter: this kernel lacks KVM SEV-SNP host support; "
                       "boot a kernel that has it (upstream Linux 6.11 or newer)")
    elif not sev["kvm_amd_sev_snp"] and not iommu_conflicts:
        reasons.append("SEV-SNP is not enabled in kvm_amd (sev_snp=N): enable SEV-SNP, SMEE and SNP memory "
                       "coverage in BIOS, then load kvm_amd with sev_snp=1")
    if not sev["dev_sev"]:
        reasons.append("/dev/sev is missing: the AMD Secure Processor driver is not ready; modprobe ccp and "
                       "check dmesg for SEV firmware errors")
    return reasons


def tdx_reasons(facts: dict[str, Any]) -> list[str]:
    cpu, tdx = facts["cpu"], facts["tdx"]
    if cpu["vendor"] != "intel":
        vendor_id = cpu["vendor_id"] or "unknown"
        return [f"CPU is not Intel (vendor_id {vendor_id}): TDX needs a TDX-capable Xeon (4th gen or newer)"]
    if tdx_support(facts) is False:
        return [f"{_cpu_label(cpu)} is of an Intel generation without TDX, which starts with 4th Gen Xeon "
                "Scalable (Sapphire Rapids, some SKUs): this host cannot run TDX guests, whatever the firmware "
                "settings"]
    reasons = []
    if not tdx["kvm_intel_loaded"]:
        reasons.append("kvm_intel is not loaded: enable VMX and TDX in BIOS, then modprobe kvm_intel tdx=1")
    elif tdx["kvm_intel_tdx"] is None:
        reasons.append("kvm_intel has no tdx parameter: this kernel lacks KVM TDX host support; "
                       "boot a kernel that has it (upstream Linux 6.16 or newer)")
    elif not tdx["kvm_intel_tdx"]:
        bios = ("" if cpu["flags"]["tdx_host_platform"]
                else " (the CPU does not report tdx_host_platform, so TDX is off in BIOS)")
        reasons.append(f"TDX is not enabled in kvm_intel (tdx=N){bios}: enable TME, TME-MK and TDX with the "
                       "SEAM loader in BIOS, then load kvm_intel with tdx=1 (kvm_intel.tdx=1 on the kernel "
                       "command line)")
    if not facts["iommu"]["enabled"]:
        reasons.append(_iommu_off_reason(facts, " (GPU passthrough to TDs needs it)"))
    return reasons


def evaluate(facts: dict[str, Any]) -> dict[str, Any]:
    """Verdicts from gathered facts: ``<name>_ready`` and ``<name>_ready_reasons`` (empty when ready)."""
    verdicts: dict[str, Any] = {}
    for name, reasons_of in (("vfio", vfio_reasons), ("snp", snp_reasons), ("tdx", tdx_reasons)):
        reasons = reasons_of(facts)
        verdicts[name + "_ready"] = not reasons
        verdicts[name + "_ready_reasons"] = reasons
    return verdicts


def gather_facts(host: HostRoot) -> dict[str, Any]:
    """Everything ``cc_host_info`` returns, verdicts included; problems go to ``host.warnings``."""
    if not host.exists("/sys") and not host.exists("/proc"):
        host.warn(f"{host.root} has neither sys/ nor proc/: is it a host root or a captured tree?")
    kernel = read_kernel(host)
    numa = read_numa(host)
    facts: dict[str, Any] = {
        "cpu": read_cpu(host),
        "kernel": kernel,
        "iommu": read_iommu(host, kernel),
        "sev": read_sev(host),
        "tdx": read_tdx(host),
        "kvm": read_kvm(host),
        "numa": numa,
        "hugepages": read_hugepages(host, [node["node"] for node in numa["nodes"]]),
        "gpu_drivers": read_gpu_drivers(host),
    }
    facts["cpu"]["cc_support"] = {"snp": snp_support(facts), "tdx": tdx_support(facts)}
    facts["sev"]["iommu_conflicts"] = snp_iommu_conflicts(facts)
    facts["verdicts"] = evaluate(facts)
    return facts
