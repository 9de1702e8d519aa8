"""Config space read on demand decodes exactly as the whole space does, and reads less of it.

Every 4 bytes read from a sysfs ``config`` file is a config access on the
host, so ``OnDemandConfigSpace`` reads the first 256 bytes and then only the
extended capability headers and the registers the decoder uses.  These tests
decode each config space both ways (from a file through the on-demand reader,
and from all of its bytes) over real config spaces: the machine's own sysfs,
the captured GPU host, the lspci regression dumps of ../shared, and the
synthetic GPU server the benchmark uses.
"""

from __future__ import annotations

import os
import struct
import sys
import tarfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from conftest import FIXTURES, REPO

from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_config import (
    EXTENDED_SIZE,
    LEGACY_SIZE,
    ConfigSpace,
    OnDemandConfigSpace,
    decode_config,
    decode_model_config,
    extended_capabilities,
)

sys.path.insert(0, str(REPO / "tests" / "lib"))
from fake_sysfs import ConfigBuilder, ServerShape, gpu_server, parse_lspci_dump  # noqa: E402

SYSFS_DEVICES = Path("/sys/bus/pci/devices")
CAPTURES = sorted((REPO / "tests" / "fixtures" / "hosts").glob("*/capture.tar.xz"))
DUMP_DIRS = ("lspci-dumps", "lspci-dumps-extra")


def decode_file(path: Path) -> Tuple[Dict[str, Any], OnDemandConfigSpace]:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        cfg = OnDemandConfigSpace(fd)
        return decode_config(cfg), cfg
    finally:
        os.close(fd)


def comparable(info: Dict[str, Any]) -> Dict[str, Any]:
    """The decoded fields.  ``config_size`` differs by design for conventional functions in a 4 KiB
    file: the on-demand reader never reads past 256 bytes where there is no PCIe capability."""
    fields = dict(info)
    if fields["pcie"] is None:
        del fields["config_size"]
    return fields


def assert_same_decoding(config: bytes, tmp_path: Path, name: str) -> OnDemandConfigSpace:
    path = tmp_path / name
    path.write_bytes(config)
    on_demand, cfg = decode_file(path)
    assert comparable(on_demand) == comparable(decode_config(config)), name
    return cfg


def shared_dump_configs() -> Iterator[Tuple[str, bytes]]:
    for directory in DUMP_DIRS:
        for dump in sorted((FIXTURES / directory).glob("*.txt")):
            for address, config in parse_lspci_dump(dump.read_text()):
                yield "%s-%s" % (dump.stem, address), config


def test_the_machines_own_sysfs_decodes_the_same_either_way() -> None:
    """Real kernel sysfs: the reader's partial reads agree with reading each file whole."""
    if os.geteuid() != 0:
        pytest.skip("not root: sysfs config beyond 64 bytes is readable by root only (CI runs as root)")
    configs = sorted(SYSFS_DEVICES.glob("*/config"))
    assert configs, "no PCI functions under /sys/bus/pci/devices"
    for path in configs:
        on_demand, _cfg = decode_file(path)
        whole = decode_config(path.read_bytes())
        assert comparable(on_demand) == comparable(whole), path


@pytest.mark.parametrize("capture", CAPTURES, ids=[path.parent.name for path in CAPTURES])
def test_captured_gpu_host_decodes_the_same_either_way(capture: Path, tmp_path: Path) -> None:
    with tarfile.open(capture) as tar:
        members = [member for member in tar.getmembers() if member.name.endswith("/config") and member.isfile()]
        configs = [(member.name, tar.extractfile(member).read()) for member in members]  # type: ignore[union-attr]
    assert configs
    for index, (name, config) in enumerate(configs):
        assert_same_decoding(config, tmp_path, "%d-%s" % (index, Path(name).parent.name))


def test_shared_lspci_dumps_decode_the_same_either_way(shared_fixtures: Path, tmp_path: Path) -> None:
    checked = 0
    for name, config in shared_dump_configs():
        assert_same_decoding(config, tmp_path, name.replace(":", "_"))
        checked += 1
    assert checked > 50, checked


def test_benchmark_server_decodes_the_same_either_way(tmp_path: Path) -> None:
    functions = gpu_server(ServerShape(gpus=2, nic_pfs_per_gpu=2, vfs_per_pf=2, nvswitches=1, sockets=2))
    decoded: List[Dict[str, Any]] = []
    for function in functions:
        cfg = assert_same_decoding(function.config, tmp_path, function.address.replace(":", "_"))
        decoded.append(decode_config(bytes(cfg.data)))
    assert any(info["sriov"] for info in decoded) and any(info["acs"] for info in decoded)


def noisy_gpu() -> Tuple[ConfigBuilder, int, int]:
    """A GPU-like function: an AER capability full of non-zero registers the decoder never uses,
    then ACS and a Resizable BAR with six BARs.  Returns (builder, AER offset, AER length)."""
    config = ConfigBuilder(0x10DE, 0x2330, 0x030200).express("endpoint", 32.0, 16)
    aer_body = bytes(range(1, 0x44))
    aer = config.extended(0x0001, aer_body)
    config.acs(0x5F, 0x1D)
    bars = b"".join(struct.pack("<II", 0xFFF0, index | (6 << 5) | (8 << 8)) for index in range(6))
    config.extended(0x0015, bars)
    return config, aer, len(aer_body)


def test_registers_the_decoder_does_not_use_are_not_read(tmp_path: Path) -> None:
    config, aer, aer_length = noisy_gpu()
    cfg = assert_same_decoding(config.bytes(), tmp_path, "gpu")
    read = bytes(cfg.data)
    assert read[aer + 4:aer + 4 + aer_length] == bytes(aer_length), "the AER body was read"
    assert read[aer:aer + 4] == config.bytes()[aer:aer + 4], "the AER header must be read to walk on"
    info = decode_config(read)  # what was read is all the decoding needs
    assert info["acs"]["capability"] == 0x5F and len(info["resizable_bar"]) == 6
    unread = sum(1 for ours, whole in zip(read, config.bytes()) if ours != whole)
    assert unread >= aer_length


def test_the_model_alone_reads_no_capability_registers_but_sr_iov(tmp_path: Path) -> None:
    """gather_subset without capabilities: ACS and Resizable BAR registers stay unread, SR-IOV's are read, and
    what the device model uses (identity, port type, SR-IOV) decodes as the whole decoding does."""
    config, _aer, _length = noisy_gpu()
    config.sriov(8)
    whole = config.bytes()
    path = tmp_path / "gpu"
    path.write_bytes(whole)
    fd = os.open(str(path), os.O_RDONLY)
    try:
        cfg = OnDemandConfigSpace(fd)
        model = decode_model_config(cfg)
    finally:
        os.close(fd)
    full = decode_config(whole)
    assert full["acs"] and full["resizable_bar"] and full["sriov"]["total_vfs"] == 8
    assert model["acs"] is None and model["resizable_bar"] is None and model["ats"] is None
    assert model["sriov"] == full["sriov"] and model["pcie"] == full["pcie"]
    assert {key: model[key] for key in ("vendor_id", "device_id", "class_id", "header_type")} \
        == {key: full[key] for key in ("vendor_id", "device_id", "class_id", "header_type")}
    found = extended_capabilities(ConfigSpace(whole))
    loaded = bytes(cfg.data)
    for name, cap_id, length in (("ACS", 0x000D, 4), ("Resizable BAR", 0x0015, 48)):
        offset = found[cap_id][0]
        assert whole[offset + 4:offset + 4 + length] != bytes(length), name
        assert loaded[offset + 4:offset + 4 + length] == bytes(length), "%s registers were read" % name
    sriov = found[0x0010][0]
    assert loaded[sriov:sriov + 0x1C] == whole[sriov:sriov + 0x1C]


def test_unprivileged_reader_stops_at_what_the_kernel_gives(tmp_path: Path) -> None:
    """A non-root reader of sysfs config gets 64 bytes; nothing is asked of extended space."""
    config, _aer, _length = noisy_gpu()
    path = tmp_path / "short"
    path.write_bytes(config.bytes(64))
    info, cfg = decode_file(path)
    assert info["config_size"] == 64 and info["pcie"] is None and cfg.extended is None
    assert (info["vendor_id"], info["device_id"]) == ("10de", "2330")


def test_conventional_size_file_has_no_extended_space(tmp_path: Path) -> None:
    """A PCIe function behind a bridge that cannot reach extended space: sysfs config is 256 bytes."""
    config = ConfigBuilder(0x15B3, 0x1021, 0x020000).express("endpoint", 32.0, 16).sriov(16)
    path = tmp_path / "legacy"
    path.write_bytes(config.bytes(LEGACY_SIZE))
    info, cfg = decode_file(path)
    assert cfg.extended is False and info["config_size"] == LEGACY_SIZE
    assert info["pcie"]["port_type"] == "endpoint" and info["sriov"] is None


def test_capability_at_the_end_of_extended_space(tmp_path: Path) -> None:
    """A Resizable BAR whose registers would run past 4 KiB: the reads are clipped, the decoding agrees."""
    config = ConfigBuilder(0x10DE, 0x2330, 0x030200).express("endpoint", 32.0, 16).ats(True)
    config.next_ecap = EXTENDED_SIZE - 12
    config.extended(0x0015, struct.pack("<II", 0xFFF0, (1 << 5) | (8 << 8)))
    cfg = assert_same_decoding(config.bytes(), tmp_path, "end")
    assert decode_config(bytes(cfg.data))["resizable_bar"][0]["size_bytes"] == 256 << 20
