"""A GPU server whose config spaces are real ones: the held-out "rich" tree of issue 16 point 7.

:func:`fake_sysfs.gpu_server` lays out an HGX-style node with config spaces made by
:class:`fake_sysfs.ConfigBuilder` (a PCIe capability, ACS, SR-IOV, ARI: what the module
decodes, little else).  Real functions carry many more capabilities (AER, Device Serial
Number, Secondary PCIe, Virtual Channel, Multicast, Power Budgeting, vendor-specific ones),
which every reader walks past and ``lspci -vvv`` decodes.  This module keeps that layout
(same addresses, buses, drivers, groups, NUMA nodes, VFs) and replaces each function's config
space with the richest real dump of its kind from ``../shared/fixtures`` (the pciutils
regression corpus, github.com/pciutils/pciutils tests/, commit 0f5b941; see that README):

- host bridge: lspci-dumps/tree-asus-p6t6.txt (00:00.0), Intel X58 I/O hub;
- root port: lspci-dumps/cap-aer-root.txt (00:02.0), Intel Haswell-E: SSVID, MSI, PCIe, PM, ACS, AER,
  Secondary PCIe, 4 vendor-specific;
- switch upstream port: lspci-dumps/cap-multicast.txt (07:00.0), PLX PEX 8796: PCIe, SSVID, DSN, AER,
  Power Budgeting, Secondary PCIe, VC, Multicast, LTR, vendor-specific;
- switch downstream port: lspci-dumps/cap-vc-pat.txt (12:08.0), PLX PEX 8532: PCIe, DSN, AER, Power
  Budgeting, VC;
- GPU: lspci-dumps/cap-rebar.txt (09:00.0), AMD Fiji: PCIe, vendor-specific, AER, Resizable BAR, Secondary
  PCIe, ATS, PRI, PASID, ARI;
- NVSwitch: lspci-dumps/cap-phy32.txt (2e:00.0), Samsung PM174X: PCIe, MSI-X, AER, DSN, ARI, Secondary PCIe,
  Physical Layer 16 GT/s, lane margining, SR-IOV (off);
- NIC PF: lspci-dumps/cap-pcie-2.txt (01:00.0), Intel 82576: PM, MSI, MSI-X, PCIe, AER, DSN, ARI, SR-IOV;
- NIC VF: the NIC PF's space with IDs reading 0xffff and SR-IOV unlinked (a VF has none): PCIe, AER, DSN, ARI.

What is rewritten, so that the tree stays the same server: bridges' bus numbers (0x18-0x1A);
the GPU's, NVSwitch's and NIC's vendor, device, class, header type and subsystem (so that roles,
GPU-NIC affinity and multi-function PFs are those of the server); and the NIC PF's SR-IOV
registers (VF count, offset, stride, VF Device ID, control), so that its VFs sit where the
layout puts them.  Everything else is the dump's bytes.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from fake_sysfs import FakeFunction, ServerShape, gpu_server, parse_lspci_dump

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures"

# kind -> (dump file below FIXTURES, address in it)
SOURCES: Dict[str, Tuple[str, str]] = {
    "host_bridge": ("lspci-dumps/tree-asus-p6t6.txt", "0000:00:00.0"),
    "root_port": ("lspci-dumps/cap-aer-root.txt", "0000:00:02.0"),
    "upstream_port": ("lspci-dumps/cap-multicast.txt", "0000:07:00.0"),
    "downstream_port": ("lspci-dumps/cap-vc-pat.txt", "0000:12:08.0"),
    "gpu": ("lspci-dumps/cap-rebar.txt", "0000:09:00.0"),
    "nvswitch": ("lspci-dumps/cap-phy32.txt", "0000:2e:00.0"),
    "nic": ("lspci-dumps/cap-pcie-2.txt", "0000:01:00.0"),
}
ECAP_SRIOV = 0x0010
PORT_TYPES = {0x4: "root_port", 0x5: "upstream_port", 0x6: "downstream_port"}


def missing_fixtures(fixtures: Path = FIXTURES) -> Optional[str]:
    """Why the rich tree cannot be built (a dump file is absent), or None."""
    for name, _address in SOURCES.values():
        if not (fixtures / name).is_file():
            return "%s is absent: the rich tree is built from the real dumps in ../shared/fixtures" % (fixtures / name)
    return None


def dump_configs(fixtures: Path = FIXTURES) -> Dict[str, bytes]:
    """kind -> the real 4 KiB config space that replaces synthetic ones of that kind."""
    configs: Dict[str, bytes] = {}
    for kind, (name, address) in SOURCES.items():
        found = dict(parse_lspci_dump((fixtures / name).read_text()))
        if len(found.get(address, b"")) != 4096:
            raise ValueError("%s holds no 4096-byte config space for %s" % (fixtures / name, address))
        configs[kind] = found[address]
    return configs


def extended_offsets(config: bytes) -> List[Tuple[int, int]]:
    """(offset, capability ID) of each extended capability, in list order."""
    found: List[Tuple[int, int]] = []
    offset = 0x100
    while 0x100 <= offset < 4096 and len(found) < 960:
        header = struct.unpack_from("<I", config, offset)[0]
        if header in (0, 0xFFFFFFFF):
            break
        found.append((offset, header & 0xFFFF))
        offset = (header >> 20) & 0xFFC
    return found


def standard_capability(config: bytes, cap_id: int) -> Optional[int]:
    pointer = config[0x34]
    seen = set()
    while pointer and pointer not in seen:
        seen.add(pointer)
        if config[pointer] == cap_id:
            return pointer
        pointer = config[pointer + 1]
    return None


def kind_of(config: bytes) -> str:
    """What the synthetic function is: the same kinds as SOURCES (VFs read vendor 0xffff)."""
    vendor = struct.unpack_from("<H", config, 0)[0]
    class_code = (config[0x0B] << 8) | config[0x0A]
    if vendor == 0xFFFF:
        return "vf"
    if class_code == 0x0600:
        return "host_bridge"
    if config[0x0E] & 0x7F == 1:
        express = standard_capability(config, 0x10)
        assert express is not None
        return PORT_TYPES[(struct.unpack_from("<H", config, express + 2)[0] >> 4) & 0xF]
    return {0x0302: "gpu", 0x0680: "nvswitch", 0x0200: "nic"}[class_code]


def with_identity(real: bytes, synthetic: bytes) -> bytearray:
    """The real space with the synthetic function's IDs, class, header type and subsystem."""
    space = bytearray(real)
    space[0x00:0x04] = synthetic[0x00:0x04]
    space[0x09:0x0C] = synthetic[0x09:0x0C]
    space[0x0E] = synthetic[0x0E]
    space[0x2C:0x30] = synthetic[0x2C:0x30]
    return space


def copy_sriov(space: bytearray, synthetic: bytes) -> None:
    """The synthetic PF's SR-IOV registers (control 0x08 to VF Device ID 0x1B) into the real capability."""
    real = dict((cap, offset) for offset, cap in extended_offsets(bytes(space)))[ECAP_SRIOV]
    mine = dict((cap, offset) for offset, cap in extended_offsets(synthetic))[ECAP_SRIOV]
    space[real + 0x08:real + 0x1C] = synthetic[mine + 0x08:mine + 0x1C]


def without_sriov(space: bytearray) -> bytearray:
    """Unlink the SR-IOV capability from the extended list (a VF has none)."""
    chain = extended_offsets(bytes(space))
    for index, (offset, cap) in enumerate(chain):
        if cap != ECAP_SRIOV:
            continue
        following = chain[index + 1][0] if index + 1 < len(chain) else 0
        if index == 0:
            header = struct.unpack_from("<I", space, offset)[0]
            struct.pack_into("<I", space, offset, (header & 0xFFFFF) | (following << 20))
            continue
        previous = chain[index - 1][0]
        header = struct.unpack_from("<I", space, previous)[0]
        struct.pack_into("<I", space, previous, (header & 0xFFFFF) | (following << 20))
    return space


def rich_config(synthetic: bytes, configs: Dict[str, bytes]) -> bytes:
    """The real config space that stands in for one synthetic function."""
    kind = kind_of(synthetic)
    if kind == "vf":
        space = without_sriov(with_identity(configs["nic"], synthetic))
    elif kind in ("gpu", "nvswitch", "nic"):
        space = with_identity(configs[kind], synthetic)
        if kind == "nic":
            copy_sriov(space, synthetic)
    else:
        space = bytearray(configs[kind])
        if kind != "host_bridge":
            space[0x18:0x1B] = synthetic[0x18:0x1B]
    return bytes(space)


def rich_gpu_server(shape: ServerShape, fixtures: Path = FIXTURES) -> List[FakeFunction]:
    """gpu_server(shape) with every config space replaced by a real one (see the module doc)."""
    configs = dump_configs(fixtures)
    functions = gpu_server(shape)
    for function in functions:
        function.config = rich_config(function.config, configs)
    return functions
