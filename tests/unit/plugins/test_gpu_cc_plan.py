"""The gpu_cc_plan filter: parsing gpu-admin-tools output, step order, refusals, idempotence.

Query outputs come from the nvidia_gpu_tools.py stand-in (tests/lib/standins), which
prints what the real tool's source prints; a few tests feed lines written out by hand
in the tool's documented format, so that the parser is not only checked against the
stand-in.  Plans are carried out through the stand-in, which rejects a wrong order.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from gpu_cc_lab import apply_steps, calls, node, query_all, read_state, write_state  # noqa: E402

from ansible_collections.confidential_gpu.host.plugins.filter.gpu_cc_plan import (  # noqa: E402
    FilterModule,
    describe,
    gpu_cc_plan,
    parse_query,
    plan,
)

HGX_GPUS = ["0000:03:00.0", "0000:07:00.0", "0000:0b:00.0", "0000:0f:00.0",
            "0000:83:00.0", "0000:87:00.0", "0000:8b:00.0", "0000:8f:00.0"]
HGX_SWITCHES = ["0000:11:00.0", "0000:12:00.0", "0000:91:00.0", "0000:92:00.0"]
ONE_GPU = ["0000:45:00.0"]


def state_file(tmp_path: Path, state: dict) -> Path:
    return write_state(tmp_path / "node.json", state)


def modes(path: Path) -> dict:
    return {address: (device.get("cc"), device.get("ppcie")) for address, device in read_state(path)["devices"].items()}


# --------------------------------------------------------------------------
# Parsing


def test_documented_query_lines_parse_into_modes() -> None:
    # The tool logs with '%(asctime)s.%(msecs)03d %(levelname)-8s %(message)s' and formats devices
    # as 'GPU <bdf> <name> <devid> BAR0 0x...' (cli/main.py, cli/per_gpu.py, cli/per_gpu_nvswitch.py).
    me = "GPU 0000:45:00.0 H100-PCIE 0x2331 BAR0 0xd8000000"
    gpu = parse_query({
        "address": "0000:45:00.0", "role": "gpu", "rc": 0, "stdout": "NVIDIA GPU Tools version v2024.01.19o\n",
        "stderr": ("2024-02-01,10:00:00.000 INFO     Selected %s\n"
                   "2024-02-01,10:00:01.000 INFO     %s CC mode is devtools\n"
                   "2024-02-01,10:00:01.100 WARNING  %s has PPCIe mode on, some functionality may not work\n"
                   "2024-02-01,10:00:01.200 INFO     %s PPCIe mode is on\n") % (me, me, me, me),
    })
    switch = parse_query({
        "item": {"address": "0000:11:00.0", "role": "nvswitch"}, "rc": 0, "stdout": "",
        "stderr": "2024-02-01,10:00:02.000 INFO     NvSwitch 0000:11:00.0 LS10 0x22a3 BAR0 0xe0 PPCIe mode is off\n",
    })

    assert (gpu["cc"], gpu["ppcie"], gpu["error"]) == ("devtools", "on", None)
    assert (switch["address"], switch["role"], switch["cc"], switch["ppcie"], switch["error"]) == (
        "0000:11:00.0", "nvswitch", None, "off", None)


def test_unsupported_ppcie_is_not_an_error_but_unreadable_output_is() -> None:
    pcie_card = parse_query({
        "address": "0000:45:00.0", "role": "gpu", "rc": 1, "stdout": "",
        "stderr": ("x INFO     GPU 0000:45:00.0 H100-PCIE 0x2331 BAR0 0x0 CC mode is off\n"
                   "x ERROR    Querying PPCIe mode is not supported on GPU 0000:45:00.0 H100-PCIE 0x2331 BAR0 0x0\n"),
    })
    broken = parse_query({"address": "0000:45:00.0", "role": "gpu", "rc": 1, "stdout": "",
                          "stderr": "Traceback (most recent call last):\nOSError: [Errno 1] Operation not permitted\n"})

    assert (pcie_card["cc"], pcie_card["ppcie"], pcie_card["ppcie_supported"], pcie_card["error"]) == (
        "off", None, False, None)
    assert broken["error"] == (
        "could not read the CC mode and PPCIe mode of gpu 0000:45:00.0 from nvidia_gpu_tools.py (exit status 1): "
        "Traceback (most recent call last): | OSError: [Errno 1] Operation not permitted")


def test_gpu_held_by_the_nvidia_driver_is_named(tmp_path: Path) -> None:
    path = state_file(tmp_path, node(ONE_GPU, overrides={ONE_GPU[0]: {"driver": "nvidia"}}))

    result = plan(query_all(path), cc="on")

    assert result["steps"] == []
    assert result["errors"] == [
        "0000:45:00.0 is used by the nvidia driver, so nvidia_gpu_tools.py refuses it: unbind it (bind it to "
        "vfio-pci) or set gpu_cc_mode_ignore_nvidia_driver"]


# --------------------------------------------------------------------------
# Orderings, carried out through the stand-in


def test_single_gpu_cc_on_turns_ppcie_off_first(tmp_path: Path) -> None:
    path = state_file(tmp_path, node(ONE_GPU, cc="off", ppcie="on"))

    result = plan(query_all(path), cc="on")

    assert [(s["setting"], s["from"], s["mode"]) for s in result["steps"]] == [
        ("ppcie", "on", "off"), ("cc", "off", "on")]
    assert result["steps"][1]["options"] == ["--set-cc-mode=on", "--reset-after-cc-mode-switch"]
    assert result["steps"][0]["options"] == ["--set-ppcie-mode=off", "--reset-after-ppcie-mode-switch"]
    runs = apply_steps(path, result["steps"])
    assert [run.returncode for run in runs] == [0, 0], runs[-1].stderr
    assert modes(path) == {ONE_GPU[0]: ("on", "off")}


def test_hgx_ppcie_on_turns_cc_off_on_every_gpu_then_ppcie_on_for_gpus_and_switches(tmp_path: Path) -> None:
    path = state_file(tmp_path, node(HGX_GPUS, HGX_SWITCHES, cc="on", ppcie="off"))

    result = plan(query_all(path), ppcie="on")

    settings = [step["setting"] for step in result["steps"]]
    assert settings == ["cc"] * 8 + ["ppcie"] * 12
    assert [step["address"] for step in result["steps"][:8]] == HGX_GPUS
    assert [step["address"] for step in result["steps"][8:]] == sorted(HGX_GPUS + HGX_SWITCHES)
    assert {step["mode"] for step in result["steps"][:8]} == {"off"}
    assert {step["mode"] for step in result["steps"][8:]} == {"on"}
    runs = apply_steps(path, result["steps"])
    assert all(run.returncode == 0 for run in runs) and len(runs) == 20, runs[-1].stderr
    assert set(modes(path).values()) == {("off", "on"), (None, "on")}


def test_hgx_from_ppcie_to_cc_on_leaves_ppcie_everywhere_first(tmp_path: Path) -> None:
    path = state_file(tmp_path, node(HGX_GPUS, HGX_SWITCHES, cc="off", ppcie="on"))

    result = plan(query_all(path), cc="on")

    assert [step["setting"] for step in result["steps"]] == ["ppcie"] * 12 + ["cc"] * 8
    runs = apply_steps(path, result["steps"])
    assert all(run.returncode == 0 for run in runs) and len(runs) == 20, runs[-1].stderr
    assert all(device["cc"] == "on" for device in read_state(path)["devices"].values() if device["kind"] == "gpu")


def test_the_stand_in_rejects_the_reverse_order(tmp_path: Path) -> None:
    """The orderings above are checked for real: CC on before PPCIe off fails in the stand-in."""
    path = state_file(tmp_path, node(ONE_GPU, cc="off", ppcie="on"))
    steps = plan(query_all(path), cc="on")["steps"]

    runs = apply_steps(path, list(reversed(steps)))

    assert runs[0].returncode == 1
    assert "CC may go on only after PPCIe is off on every device" in runs[0].stderr
    assert modes(path) == {ONE_GPU[0]: ("off", "on")}


def test_devtools_and_off_need_no_ppcie_step_when_ppcie_is_off(tmp_path: Path) -> None:
    path = state_file(tmp_path, node(HGX_GPUS[:2], cc="on"))

    result = plan(query_all(path), cc="devtools")

    assert [(s["address"], s["setting"], s["mode"]) for s in result["steps"]] == [
        (HGX_GPUS[0], "cc", "devtools"), (HGX_GPUS[1], "cc", "devtools")]


# --------------------------------------------------------------------------
# Idempotence and refusals


def test_nothing_to_do_when_the_query_already_matches(tmp_path: Path) -> None:
    path = state_file(tmp_path, node(HGX_GPUS, HGX_SWITCHES, cc="off", ppcie="on"))

    result = gpu_cc_plan(query_all(path), cc="", ppcie="on")

    assert result["steps"] == [] and result["errors"] == [] and result["changed"] is False
    assert result["summary"][-1] == "no change needed"
    assert "gpu 0000:03:00.0: CC off, PPCIe on" in result["summary"]


def test_selecting_part_of_a_node_would_mix_modes_and_is_refused(tmp_path: Path) -> None:
    path = state_file(tmp_path, node(HGX_GPUS[:4], cc="off"))

    result = plan(query_all(path), cc="on", selected=HGX_GPUS[:2])

    assert result["steps"] == []
    assert result["errors"] == [
        "the plan would leave CC modes mixed on this node (off: 0000:0b:00.0, 0000:0f:00.0; on: 0000:03:00.0, "
        "0000:07:00.0): all GPUs of a node run in one mode; include every device in gpu_cc_mode_devices (empty "
        "selects all)"]


def test_selecting_part_of_a_node_is_fine_when_the_rest_is_already_there(tmp_path: Path) -> None:
    path = state_file(tmp_path, node(HGX_GPUS[:3], cc="off", overrides={HGX_GPUS[2]: {"cc": "on"}}))

    result = plan(query_all(path), cc="on", selected=HGX_GPUS[:2])

    assert [step["address"] for step in result["steps"]] == HGX_GPUS[:2]
    assert result["errors"] == []


def test_cc_on_with_ppcie_on_is_refused() -> None:
    result = plan([], cc="on", ppcie="on")

    assert result["errors"] == [
        "CC mode on and PPCIe mode on exclude each other: PPCIe (Hopper HGX multi-GPU passthrough) runs with CC "
        "off on every GPU; choose one"]


def test_ppcie_without_nvswitches_is_refused(tmp_path: Path) -> None:
    path = state_file(tmp_path, node(HGX_GPUS[:2]))

    result = plan(query_all(path), ppcie="on")

    assert result["steps"] == []
    assert result["errors"] == [
        "PPCIe mode on is for Hopper HGX boards, whose GPUs and NVSwitches go into PPCIe together; this host has no "
        "NVSwitch: use CC mode on for single-GPU passthrough"]


def test_unsupported_cc_is_refused_for_on_and_skipped_for_off(tmp_path: Path) -> None:
    path = state_file(tmp_path, node(ONE_GPU, overrides={ONE_GPU[0]: {"cc_supported": False}}))
    queries = query_all(path)

    assert plan(queries, cc="on")["errors"] == [
        "gpu 0000:45:00.0 does not support CC mode (nvidia_gpu_tools.py says querying it is not supported): leave it "
        "out of gpu_cc_mode_devices or choose CC off"]
    off = plan(queries, cc="off")
    assert off["errors"] == [] and off["steps"] == []


def test_bad_values_and_unknown_devices_are_refused(tmp_path: Path) -> None:
    path = state_file(tmp_path, node(ONE_GPU))

    assert plan([], cc="enabled")["errors"] == [
        "gpu_cc_mode_cc is 'enabled': use one of on, off, devtools, or leave it empty to keep the current mode"]
    assert plan(query_all(path), cc="on", selected=["0000:99:00.0"])["errors"] == [
        "gpu_cc_mode_devices names 0000:99:00.0, which are not GPUs or NVSwitches of this host"]


def test_yaml_booleans_mean_on_and_off(tmp_path: Path) -> None:
    path = state_file(tmp_path, node(ONE_GPU, cc="off"))

    result = plan(query_all(path), cc=True)

    assert result["wanted"] == {"cc": "on", "ppcie": "off"}
    assert [(s["setting"], s["mode"]) for s in result["steps"]] == [("cc", "on")]


def test_mixed_node_without_a_wish_is_only_a_warning(tmp_path: Path) -> None:
    path = state_file(tmp_path, node(HGX_GPUS[:2], overrides={HGX_GPUS[1]: {"cc": "on"}}))

    result = plan(query_all(path))

    assert result["steps"] == [] and result["errors"] == []
    assert result["warnings"] == [
        "devices of this host are in different CC modes (off, on); set gpu_cc_mode_cc to bring them into one"]


def test_queries_change_nothing_and_describe_lists_steps(tmp_path: Path) -> None:
    path = state_file(tmp_path, node(ONE_GPU, cc="off", ppcie="on"))
    before = read_state(path)

    result = gpu_cc_plan(query_all(path), cc="on")

    assert read_state(path) == before
    assert all(argv[1:] == ["--query-cc-mode", "--query-ppcie-mode"] for argv in calls(path))
    assert describe(result) == result["summary"] == [
        "gpu 0000:45:00.0: CC off, PPCIe on",
        "step 1: gpu 0000:45:00.0: PPCIe on -> off (--set-ppcie-mode=off --reset-after-ppcie-mode-switch)",
        "step 2: gpu 0000:45:00.0: CC off -> on (--set-cc-mode=on --reset-after-cc-mode-switch)",
    ]


@pytest.mark.parametrize("name", ["gpu_cc_plan"])
def test_the_filter_is_registered(name: str) -> None:
    assert FilterModule().filters()[name] is gpu_cc_plan
