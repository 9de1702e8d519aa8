"""Config-space decoding on synthetic spaces: quirks, guards, short reads."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_config import (
    decode_config,
    extended_capabilities,
    standard_capabilities,
    ConfigSpace,
)

sys.path.insert(0, str(REPO / "tests" / "lib"))
from fake_sysfs import ConfigBuilder, FakeFunction, build_tree  # noqa: E402
from lspci_oracle import parse_lspci, run_lspci  # noqa: E402


def pch_root_port(device_id: int) -> ConfigBuilder:
    """An Intel PCH root port whose ACS registers are dwords: cap 0x1f, control 0x1d at +8, junk at +6."""
    config = ConfigBuilder(0x8086, device_id, 0x060400, header_type=1).bridge_buses(0, 1, 1)
    config.express("root_port", 8.0, 4)
    offset = config.extended(0x000D, struct.pack("<IIH", 0x0000001F, 0x0000001D, 0))
    struct.pack_into("<H", config.space, offset + 6, 0x0002)  # high half of the capability dword
    return config


# Linux v6.12.118 drivers/pci/quirks.c pci_quirk_intel_spt_pch_acs_match(): Sunrise Point, Union Point and the
# 7th/8th gen mobile I/O root ports 0x9d10-0x9d1b.
@pytest.mark.parametrize("device_id", [0xA110, 0xA11F, 0xA167, 0xA16A, 0xA290, 0xA29F, 0xA2E7, 0xA2EE, 0x9D10, 0x9D1B])
def test_intel_pch_root_ports_read_acs_control_at_plus_8(device_id: int) -> None:
    acs = decode_config(pch_root_port(device_id).bytes())["acs"]
    assert acs["register_layout"] == "intel_pch_dword"
    assert acs["control"] == 0x1D
    assert acs["enabled"]["request_redirect"] and not acs["enabled"]["translation_blocking"]


@pytest.mark.parametrize("device_id", [0xA10F, 0xA120, 0xA166, 0xA16B, 0xA2E6, 0xA2EF, 0x9D0F, 0x9D1C])
def test_other_intel_root_ports_use_the_standard_layout(device_id: int) -> None:
    acs = decode_config(pch_root_port(device_id).bytes())["acs"]
    assert acs["register_layout"] == "standard"
    assert acs["control"] == 0x0002  # the 16-bit word at +6


def test_quirk_applies_to_root_ports_only() -> None:
    config = ConfigBuilder(0x8086, 0xA110, 0x060400, header_type=1).express("downstream_port", 8.0, 4)
    config.acs(0x1F, 0x1D)
    assert decode_config(config.bytes())["acs"]["register_layout"] == "standard"


@pytest.mark.skipif(shutil.which("lspci") is None, reason="lspci missing: run ./scripts/setup")
def test_lspci_decodes_the_quirk_port_from_the_wrong_offset(tmp_path: Path) -> None:
    """Why the quirk matters: lspci shows the word at +6 as ACSCtl, the kernel uses +8."""
    build_tree(tmp_path, [FakeFunction("0000:00:1c.0", pch_root_port(0xA110).bytes())])
    record = parse_lspci(run_lspci(str(tmp_path / "sys/bus/pci")))["0000:00:1c.0"]
    assert record["ACSCtl"]["translation_blocking"] is True  # 0x0002 read from +6
    ours = decode_config(pch_root_port(0xA110).bytes())["acs"]["enabled"]
    assert ours["translation_blocking"] is False and ours["source_validation"] is True


def test_standard_capability_loop_ends() -> None:
    config = ConfigBuilder(0x10DE, 0x2330, 0x030200)
    offset = config.capability(0x01, b"\x00" * 6)
    config.space[offset + 1] = offset  # points at itself
    assert standard_capabilities(ConfigSpace(config.bytes()), 0) == {0x01: offset}


def test_extended_capability_loop_ends() -> None:
    config = ConfigBuilder(0x10DE, 0x2330, 0x030200).express("endpoint", 32.0, 16)
    config.ats(True)
    second = config.extended(0x0010, b"\x00" * 0x3C)
    header = struct.unpack_from("<I", config.space, second)[0]
    struct.pack_into("<I", config.space, second, (header & 0xFFFFF) | (0x100 << 20))  # back to the first
    found = extended_capabilities(ConfigSpace(config.bytes()))
    assert sorted(found) == [0x000F, 0x0010]


def test_short_buffer_gives_identity_only() -> None:
    full = ConfigBuilder(0x10DE, 0x2330, 0x030200, subsystem=(0x10DE, 0x16C1)).express("endpoint", 32.0, 16)
    info = decode_config(full.bytes(64))
    assert (info["vendor_id"], info["device_id"], info["class_id"]) == ("10de", "2330", "030200")
    assert info["subsystem_device_id"] == "16c1"
    assert info["pcie"] is None and info["acs"] is None and info["config_size"] == 64
    empty = decode_config(b"")
    assert empty["vendor_id"] is None and empty["pcie"] is None


def test_legacy_size_space_has_no_extended_capabilities() -> None:
    config = ConfigBuilder(0x15B3, 0x1021, 0x020000).express("endpoint", 32.0, 16).sriov(16)
    info = decode_config(config.bytes(256))
    assert info["pcie"]["port_type"] == "endpoint" and info["sriov"] is None


def test_link_fields_and_unknown_speed() -> None:
    config = ConfigBuilder(0x1000, 0xC030, 0x060400, header_type=1).express("downstream_port", 16.0, 8, 32.0, 16)
    pcie = decode_config(config.bytes())["pcie"]
    assert (pcie["link_speed_gts"], pcie["link_width"], pcie["max_link_speed_gts"], pcie["max_link_width"]) == \
        (16.0, 8, 32.0, 16)
    odd = ConfigBuilder(0x1000, 0xC030, 0x060400, header_type=1).express("downstream_port", None, 0, None, 0)
    assert decode_config(odd.bytes())["pcie"]["link_speed_gts"] is None


def test_rc_integrated_endpoint_has_no_link() -> None:
    config = ConfigBuilder(0x8086, 0x0B00, 0x088000).express("rc_integrated_endpoint", 8.0, 4)
    pcie = decode_config(config.bytes())["pcie"]
    assert pcie["port_type"] == "rc_integrated_endpoint" and pcie["link_width"] is None


def test_sriov_and_resizable_bar() -> None:
    config = ConfigBuilder(0x15B3, 0x1021, 0x020000).express("endpoint", 32.0, 16)
    config.sriov(16, num_vfs=4, vf_offset=2, vf_stride=1, vf_device=0x101E)
    # Resizable BAR: BAR 0, one resizable BAR, 256 MiB now, 256 MiB..1 GiB supported.
    config.extended(0x0015, struct.pack("<II", (0b111 << 12), (1 << 5) | (8 << 8)))
    info = decode_config(config.bytes())
    assert info["sriov"] == {
        "initial_vfs": 16, "total_vfs": 16, "num_vfs": 4, "vf_offset": 2, "vf_stride": 1,
        "vf_device_id": "101e", "vf_enabled": True, "vf_memory_space_enabled": True, "ari_capable_hierarchy": False,
    }
    assert info["resizable_bar"] == [{"bar": 0, "size_bytes": 256 << 20,
                                      "supported_sizes_bytes": [256 << 20, 512 << 20, 1 << 30]}]


def test_bridge_subsystem_from_ssvid_capability() -> None:
    config = ConfigBuilder(0x1000, 0xC030, 0x060400, header_type=1)
    config.capability(0x0D, struct.pack("<HHH", 0, 0x1028, 0x0A1B))
    info = decode_config(config.bytes())
    assert (info["subsystem_vendor_id"], info["subsystem_device_id"]) == ("1028", "0a1b")
    assert info["header_type"] == "bridge"


def test_capabilities_listed_without_status_bit_are_ignored() -> None:
    config = ConfigBuilder(0x10DE, 0x2330, 0x030200).express("endpoint", 32.0, 16)
    space = bytearray(config.bytes())
    space[0x06] &= ~0x10
    assert decode_config(bytes(space))["pcie"] is None


def test_lspci_oracle_is_importable_for_real_hosts() -> None:
    """The oracle parser understands the host's own lspci output format."""
    if shutil.which("lspci") is None:
        pytest.skip("lspci missing: run ./scripts/setup")
    output = subprocess.run(["lspci", "-D", "-vvv"], capture_output=True, text=True, check=True).stdout
    assert set(parse_lspci(output)) == {line.split()[0] for line in output.splitlines() if line and line[0] != "\t"}
