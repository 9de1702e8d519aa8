"""OVMF firmware for SEV-SNP measurement tests.

Debian's ``ovmf`` package (``/usr/share/ovmf/OVMF.fd``) is the OvmfPkgX64 build: it carries the SEV-SNP
metadata (SNP_SEC_MEM, SNP_SECRETS and CPUID sections, the SEV-ES reset block), so sev-snp-measure computes
its launch measurement, but it has no SNP_KERNEL_HASHES section, which only the AmdSevX64 build (Kata's
AMDSEV.fd) has and no Debian release packages. ``with_kernel_hashes`` derives a test firmware from it that
has one: the 12 KiB SNP_SEC_MEM section at 0x80a000 becomes a 4 KiB SNP_KERNEL_HASHES section and the
SEV hash table footer entry points into it, the way the AmdSevX64 build lays them out. sev-snp-measure then
measures kernel, initrd and command line hashes as it does for Kata's firmware; the firmware is for
computing measurements only, it boots nothing.
"""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

DEBIAN_OVMF = Path("/usr/share/ovmf/OVMF.fd")

SEV_HASH_TABLE_RV_GUID = uuid.UUID("7255371f-3a3b-4b04-927b-1da6efa8d454").bytes_le
SNP_SEC_MEM = 1
SNP_KERNEL_HASHES = 0x10
SECTION_GPA = 0x80A000
SECTION_SIZE = 0x3000
HASHES_SIZE = 0x1000
HASH_TABLE_SIZE = 0x400


def with_kernel_hashes(source: Path, target: Path) -> Path:
    """Write ``source`` with an SNP_KERNEL_HASHES section to ``target``; fails if the layout differs."""
    data = bytearray(source.read_bytes())
    descriptor = struct.pack("<III", SECTION_GPA, SECTION_SIZE, SNP_SEC_MEM)
    if data.count(descriptor) != 1:
        raise ValueError("%s: no single SNP_SEC_MEM section at 0x%x of 0x%x bytes"
                         % (source, SECTION_GPA, SECTION_SIZE))
    at = data.index(descriptor)
    data[at:at + len(descriptor)] = struct.pack("<III", SECTION_GPA, HASHES_SIZE, SNP_KERNEL_HASHES)
    if data.count(SEV_HASH_TABLE_RV_GUID) != 1:
        raise ValueError("%s: no single SEV hash table entry in the OVMF footer table" % source)
    guid_at = data.index(SEV_HASH_TABLE_RV_GUID)
    (entry_size,) = struct.unpack_from("<H", data, guid_at - 2)
    entry_at = guid_at - 2 - (entry_size - 18)
    struct.pack_into("<II", data, entry_at, SECTION_GPA, HASH_TABLE_SIZE)
    target.write_bytes(bytes(data))
    return target
