"""Role validate's kubernetes runner: the Pod it creates, checked against the Kubernetes API's own model.

The runner (roles/validate/tasks/kubernetes.yml) creates one Pod per sandbox repetition through kubernetes.core
and reads its log back. No Kubernetes API server can be installed here (none is packaged in Debian 12 or on
PyPI), so the run itself is not tested; what is:

- the Pod manifest (templates/validate_pod.yml.j2), rendered by ansible-core from the role's own defaults and
  vars, is a valid ``v1.Pod`` for the Kubernetes API model of the official Python client (kubernetes 37.0.3, the
  client kubernetes.core uses, generated from the API's OpenAPI specification): deserialising it into ``V1Pod``
  and serialising it again gives the manifest back, so no field is misspelt, misplaced or of the wrong type;
- it asks for what the runner promises: the RuntimeClass, the node, the resource limits (from a dict or the JSON
  text an AWX survey sends, quantities as strings), no restart, and the same script the containerd runner runs;
- the runner refuses to start without a RuntimeClass, naming the variable, before anything runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict

import pytest
import yaml

LIB = Path(__file__).resolve().parents[2] / "lib"
if str(LIB) not in sys.path:
    sys.path.insert(0, str(LIB))

from role_play import REPO, ansible_playbook, run_role  # noqa: E402

kubernetes_client = pytest.importorskip("kubernetes.client", reason="requirements.txt installs kubernetes")
ROLE = REPO / "roles" / "validate"


def render_pod(tmp_path: Path, **variables: Any) -> Dict[str, Any]:
    """The manifest as the role renders it, with the role's defaults as the typed inputs."""
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    typed = {name: value for name, value in defaults.items() if "{{" not in str(value)}
    out = tmp_path / "pod.yml"
    template = ROLE / "templates" / "validate_pod.yml.j2"
    play = [{"name": "Render the Pod", "hosts": "localhost", "gather_facts": False,
             "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
             "tasks": [{"name": "Render", "ansible.builtin.copy": {
                 "dest": str(out), "mode": "0644",
                 "content": "{{ lookup('ansible.builtin.template', '%s') }}" % template}}]}]
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps(dict({"validate_input": typed, "validate_perf_pod_name": "cgpu-validate-20261206-1",
                                      "validate_runtime_class": "kata-qemu-nvidia-gpu-snp",
                                      "validate_k8s_node_name": "gpu-node-7"}, **variables)))
    proc = ansible_playbook(tmp_path, play, "render", ["-e", "@%s" % extra])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return yaml.safe_load(out.read_text())


def as_the_api_reads_it(manifest: Dict[str, Any]) -> Dict[str, Any]:
    """Deserialise into the client's V1Pod and serialise again: unknown or misplaced keys are dropped, wrong types
    raise."""
    client = kubernetes_client.ApiClient()
    pod = client.deserialize(json.dumps(manifest), "V1Pod", "application/json")  # a response body, as from the API
    return client.sanitize_for_serialization(pod)


@pytest.mark.parametrize("resources", [{}, {"nvidia.com/pgpu": 2}, '{"nvidia.com/pgpu": "1", "memory": "8Gi"}'])
def test_pod_is_a_valid_v1_pod_asking_for_what_the_runner_promises(tmp_path: Path, resources: Any) -> None:
    manifest = render_pod(tmp_path, validate_k8s_resources=resources)
    assert as_the_api_reads_it(manifest) == manifest
    spec = manifest["spec"]
    assert (manifest["apiVersion"], manifest["kind"], manifest["metadata"]["name"]) == (
        "v1", "Pod", "cgpu-validate-20261206-1")
    assert manifest["metadata"]["namespace"] == "default"
    assert spec["runtimeClassName"] == "kata-qemu-nvidia-gpu-snp"
    assert spec["restartPolicy"] == "Never"
    assert spec["nodeSelector"] == {"kubernetes.io/hostname": "gpu-node-7"}
    (container,) = spec["containers"]
    assert container["image"] == "localhost/confidential-gpu/validate-workload:bookworm"
    wanted = json.loads(resources) if isinstance(resources, str) else resources
    assert container.get("resources", {}).get("limits", {}) == {name: str(value) for name, value in wanted.items()}
    # the same script as the containerd runner: every benchmark between its markers, fio's file in /tmp
    command = container["command"]
    assert command[:2] == ["sh", "-c"] and command[3:] == ["validate", "/tmp"]
    for benchmark in ("threads", "cpu_single", "cpu_all", "memory", "storage", "gpu"):
        assert "bench %s " % benchmark in command[2], benchmark
    assert "--time=2 --threads=1" in command[2]  # the role's typed inputs rendered into it


def test_a_pod_field_in_the_wrong_place_is_caught(tmp_path: Path) -> None:
    """The check above can fail: the client's model drops a key the Pod API does not have."""
    manifest = render_pod(tmp_path)
    manifest["spec"]["runtimeClass"] = manifest["spec"].pop("runtimeClassName")
    assert as_the_api_reads_it(manifest) != manifest


def test_kubernetes_runner_without_runtime_class_fails_naming_it(tmp_path: Path) -> None:
    result = run_role(tmp_path, "validate", {"validate_parts": ["performance"], "validate_runner": "kubernetes",
                                             "validate_report_dir": ""}, report=["validate_performance"])
    assert result.rc != 0, result.output[-3000:]
    assert "validate_runner is kubernetes but validate_runtime_class is empty" in result.output
    assert result.facts == {}  # the play stopped before anything ran or was kept
