"""Run the collection as AWX runs it (issue 19, point 4): ansible-runner, the installed Galaxy artifact, a
private data dir, survey answers as strings, and the artifacts AWX reads afterwards.

The artifact is built from this checkout and installed into an empty collections path, the only one
ANSIBLE_COLLECTIONS_PATH names; the private data dir lies outside the repository and ANSIBLE_CONFIG is unset,
so neither the project's ansible.cfg nor its ``.collections`` link takes part: the playbooks are called by
their FQCN, as an execution environment that has the collection installed runs them. Two hosts (local
connection) read fake roots built by tests/lib. What is asserted is what AWX keeps of a job: the events
(``job_events``), the ``set_stats`` data AWX takes from the ``playbook_on_stats`` event's ``artifact_data``
(``awx_display`` callback of ansible-runner; AWX 24.6.1 ``awx/main/tasks/callback.py`` saves it as the job's
artifacts and hands it to the workflow's next node), and the fact cache that ansible-runner points
``ANSIBLE_CACHE_PLUGIN_CONNECTION`` at (``<artifact dir>/fact_cache``, where AWX's fact storage reads it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import ansible_runner
import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from fact_cache import cached_facts  # noqa: E402
from fake_sysfs import ServerShape, build_tree, gpu_server  # noqa: E402
from galaxy_build import build_artifact, install_artifact  # noqa: E402
from prepare_run import debian_grub_host, prepared_lab  # noqa: E402
from required_tools import require_tool  # noqa: E402

HOSTS = ("gpu-node-a", "gpu-node-b")


@pytest.fixture(scope="module")
def collections_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty collections path with only the artifact built from this checkout installed into it."""
    tarball = build_artifact(tmp_path_factory.mktemp("artifact"))
    path = tmp_path_factory.mktemp("collections")
    install_artifact(tarball, path)
    return path


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Dict[str, Any]]:
    """Two fake-root hosts: the lab VM after prepare and its reboot (IOMMU on, its display pair on vfio-pci),
    and a two-GPU server with an IOMMU and vfio-pci loaded, its GPUs still on nvidia, booted by GRUB with
    the arguments prepare asks for. Host variables as an AWX inventory holds them."""
    base = tmp_path_factory.mktemp("hosts")
    bin_dir = base / "bin"
    bin_dir.mkdir()
    for standin in (REPO / "tests" / "lib" / "standins").iterdir():
        (bin_dir / standin.name).write_text(standin.read_text())
        (bin_dir / standin.name).chmod(0o755)
    lab = prepared_lab(base / HOSTS[0])
    server = base / HOSTS[1]
    build_tree(server, gpu_server(ServerShape(gpus=2, nvswitches=1, sockets=2)))
    debian_grub_host(server, "console=ttyS0,115200n8 intel_iommu=on iommu=pt modprobe.blacklist=nouveau")
    (server / "sys/bus/pci/drivers/vfio-pci").mkdir()  # loaded, so that role vfio plans the GPUs' binding
    common = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
              "cc_host_technology": "none", "cc_host_iommufd": False, "kernel_args_command_path": [str(bin_dir)]}
    return {HOSTS[0]: dict(common, confidential_gpu_root=str(lab), vfio_initramfs_command="true"),
            HOSTS[1]: dict(common, confidential_gpu_root=str(server), vfio_initramfs_command="true")}


def survey_answers(playbook: str, job_type: str) -> Dict[str, Any]:
    """The extra vars a launch of the shipped job template sends when nobody changes an answer: each survey
    default as the string AWX holds it (booleans too: "true"), a multiselect with nothing selected as an empty
    list (AWX validates a multiselect answer as a list: awx/main/models/mixins.py, 24.6.1)."""
    exported = json.loads((REPO / "extensions/awx/job_templates.json").read_text())
    (template,) = [template for template in exported["job_templates"]
                   if template["playbook"] == playbook and template["job_type"] == job_type]
    return {item["variable"]: [] if item["type"] == "multiselect" else str(item.get("default", ""))
            for item in template["related"]["survey_spec"]["spec"]}


def run_like_awx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collections_path: Path,
                 hosts: Dict[str, Dict[str, Any]], playbook: str, extravars: Dict[str, Any],
                 cmdline: str = "", job_env: Optional[Dict[str, str]] = None) -> Any:
    """ansible_runner.run of the collection's playbook ``playbook`` (FQCN) with a private data dir of its own."""
    monkeypatch.delenv("ANSIBLE_CONFIG", raising=False)
    monkeypatch.delenv("ANSIBLE_COLLECTIONS_PATHS", raising=False)
    monkeypatch.chdir(tmp_path)
    private = tmp_path / "private"
    private.mkdir()
    assert REPO not in private.resolve().parents
    kwargs: Dict[str, Any] = {"cmdline": cmdline} if cmdline else {}
    return ansible_runner.run(
        private_data_dir=str(private), ident="job", playbook=playbook, quiet=True,
        inventory={"all": {"hosts": hosts}}, extravars=extravars,
        envvars=dict({"ANSIBLE_COLLECTIONS_PATH": str(collections_path), "ANSIBLE_NOCOLOR": "1"}, **(job_env or {})),
        **kwargs)


def events_of(runner: Any, kind: str) -> List[Dict[str, Any]]:
    return [event for event in runner.events if event.get("event") == kind]


def check_job(runner: Any, collections_path: Path) -> Dict[str, Any]:
    """The job succeeded, every host had tasks that ran from the installed artifact (and at most the controller,
    localhost, besides them); the set_stats data."""
    output = runner.stdout.read()
    assert (runner.status, runner.rc) == ("successful", 0), output
    installed = collections_path / "ansible_collections" / "confidential_gpu" / "host"
    (start,) = events_of(runner, "playbook_on_start")
    assert Path(start["event_data"]["playbook"]).resolve().parent == (installed / "playbooks").resolve(), start
    ok = events_of(runner, "runner_on_ok")
    assert {event["event_data"]["host"] for event in ok} - {"localhost"} == set(HOSTS), output
    summaries = [event for event in ok if event["event_data"]["task_action"] == "ansible.builtin.set_fact"
                 and "discovery_summary" in event["event_data"]["res"].get("ansible_facts", {})]
    assert sorted(event["event_data"]["host"] for event in summaries) == sorted(HOSTS), output
    (stats,) = events_of(runner, "playbook_on_stats")
    assert not stats["event_data"]["failures"] and not stats["event_data"]["dark"], stats
    return stats["event_data"]["artifact_data"]


def check_results(runner: Any, artifact_data: Dict[str, Any]) -> None:
    """Both hosts' summaries in the set_stats artifact and in the fact cache, and what they say of each tree."""
    by_host = artifact_data["confidential_gpu_discovery"]
    assert sorted(by_host) == sorted(HOSTS), artifact_data
    cache = Path(runner.config.fact_cache)
    for host in HOSTS:
        assert by_host[host]["host"] == host
        assert cached_facts(cache, host)["discovery_summary"] == by_host[host], host
    lab, server = by_host[HOSTS[0]], by_host[HOSTS[1]]
    assert lab["iommu_enabled"] is True and lab["host_critical"] == 3, lab
    assert server["gpu_count"] == 2 and server["nvswitch_count"] == 1 and server["nic_count"] == 2, server
    assert [gpu["address"] for gpu in server["gpus"]] == ["0000:03:00.0", "0000:83:00.0"], server
    assert server["vfio_ready"] is False and server["reasons"]["vfio_ready"], server


def test_discover_as_awx_runs_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collections_path: Path,
                                 hosts: Dict[str, Dict[str, Any]]) -> None:
    answers = survey_answers("playbooks/discover.yml", "run")
    assert answers == {"discovery_require": [], "discovery_roles": []}
    runner = run_like_awx(tmp_path, monkeypatch, collections_path, hosts, "confidential_gpu.host.discover", answers)
    check_results(runner, check_job(runner, collections_path))


def test_prepare_check_as_awx_runs_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collections_path: Path,
                                      hosts: Dict[str, Dict[str, Any]]) -> None:
    answers = survey_answers("playbooks/prepare.yml", "check")
    assert answers["discovery_require"] == [] and answers["pcie_acs_fail_on_violation"] == "true"
    before = {host: sorted(str(path) for path in Path(variables["confidential_gpu_root"]).rglob("*"))
              for host, variables in hosts.items()}
    runner = run_like_awx(tmp_path, monkeypatch, collections_path, hosts, "confidential_gpu.host.prepare",
                          answers, cmdline="--check")
    check_results(runner, check_job(runner, collections_path))
    after = {host: sorted(str(path) for path in Path(variables["confidential_gpu_root"]).rglob("*"))
             for host, variables in hosts.items()}
    assert after == before, "check mode created or removed nothing in the hosts' trees"


def test_report_as_awx_runs_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collections_path: Path,
                               hosts: Dict[str, Dict[str, Any]]) -> None:
    """The fleet report's files stay in the job's execution environment; its summary is the job's artifacts, and
    the job's output says so (AWX sets JOB_ID in a job's environment)."""
    require_tool("dot", "Graphviz lays out the fleet report's PCIe pictures")
    answers = survey_answers("playbooks/report.yml", "run")
    assert answers == {"discovery_roles": []}
    reports = tmp_path / "reports"
    runner = run_like_awx(tmp_path, monkeypatch, collections_path, hosts, "confidential_gpu.host.report",
                          dict(answers, report_dir=str(reports)), job_env={"JOB_ID": "42"})
    artifact_data = check_job(runner, collections_path)
    check_results(runner, artifact_data)
    written = json.loads((reports / "fleet.json").read_text())
    report = artifact_data["confidential_gpu_report"]
    assert report == {"generated": written["generated"], "report_dir": str(reports), "summary": written["summary"],
                      "states": {name: entry["state"] for name, entry in written["hosts"].items()},
                      "changed": sorted(name for name, entry in written["hosts"].items() if entry["changes"]),
                      "removed": []}
    assert sorted(report["states"]) == sorted(HOSTS) and report["summary"]["hosts"] == 2
    (said,) = [event["event_data"]["res"]["msg"] for event in events_of(runner, "runner_on_ok")
               if event["event_data"]["task"] == "Say where the report is"]
    assert said.startswith("2 hosts (") and "AWX job 42: that directory is in the job's execution environment" in said
