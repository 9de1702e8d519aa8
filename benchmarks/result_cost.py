"""Where pci_topology_info's time goes at 1,600 functions: reading the host against handing the result back.

benchmarks/discovery.py times the whole module run and "Ansible's share" (start-up and ``exit_json`` of the same
result, from a file). This splits the module run in one process, under the interpreter a host gives Ansible,
with the controller's ansible-core on the path as an AnsiballZ payload carries it:

* importing ``ansible.module_utils.basic`` and the module (what every run pays before reading);
* reading the tree as the module does with ``gather_subset: [all]`` (read_topology, host-critical marks, shaping);
* ``remove_values(result, [])``: ``AnsibleModule._return_formatted`` (ansible-core 2.19.14,
  lib/ansible/module_utils/basic.py) passes every result through it, no_log values or none, and it copies every
  container and visits every value;
* ``json.dumps`` with the encoder ``_record_module_result`` uses (profile ``legacy``, the one the controller
  gives a payload), and, for scale, the standard library's encoder on the same data.

Each figure is the best of ``--runs``. The trees are benchmarks/discovery.py's 1,602-function ones (synthetic and
rich; ``--shape small`` the 402-function ones). Run from the repository root after ./scripts/setup:
    .venv/bin/python benchmarks/result_cost.py [--runs 7] [--python /usr/bin/python3] [--shape small]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

REPO = Path(__file__).resolve().parents[1]
COLLECTIONS = REPO / ".collections"


def values_in(value: Any) -> int:
    """Containers and scalars in a JSON-like value, each counted once (what remove_values visits)."""
    if isinstance(value, dict):
        return 1 + sum(values_in(item) for item in value.values())
    if isinstance(value, list):
        return 1 + sum(values_in(item) for item in value)
    return 1


def best_of(runs: int, work: Callable[[], Any]) -> Tuple[float, Any]:
    best, result = float("inf"), None
    for _run in range(runs):
        start = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - start)
    return best, result


def measure(tree: str, runs: int) -> Dict[str, Any]:
    """The split for one tree, in this process (run under the host's interpreter by :func:`main`)."""
    start = time.perf_counter()
    from ansible.module_utils.common import json as module_json
    from ansible.module_utils.common.parameters import remove_values

    from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_topology import (
        gathered_subsets,
        read_topology,
        shape_devices,
    )
    from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import open_host_root
    from ansible_collections.confidential_gpu.host.plugins.modules.pci_topology_info import mark_host_critical
    imports = time.perf_counter() - start
    subsets = gathered_subsets(["all"])

    def read() -> Dict[str, Any]:
        host = open_host_root(tree, "/sys/bus/pci/devices")
        topology = read_topology(host)
        mark_host_critical(host, topology)
        shape_devices(topology["devices"], subsets)
        return dict(topology, changed=False)

    read_s, result = best_of(runs, read)
    remove_s, cleaned = best_of(runs, lambda: remove_values(result, []))
    encoder = module_json.get_module_encoder("legacy", module_json.Direction.MODULE_TO_CONTROLLER)
    encode_s, text = best_of(runs, lambda: json.dumps(cleaned, cls=encoder))
    plain_s, _text = best_of(runs, lambda: json.dumps(cleaned))
    return {"functions": len(result["devices"]), "values": values_in(result), "bytes": len(text),
            "imports": imports, "read": read_s, "remove_values": remove_s, "encode": encode_s, "plain_json": plain_s}


def site_packages() -> str:
    """The controller's ansible-core (the virtual environment's), as a payload carries its module_utils."""
    import ansible
    return str(Path(ansible.__file__).resolve().parents[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="runs per figure (the best is kept)")
    parser.add_argument("--python", default="/usr/bin/python3", help="the host's interpreter")
    parser.add_argument("--shape", choices=("small", "large"), default="large",
                        help="benchmarks/discovery.py's tree size: about 400 or 1,600 functions")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one tree, in the host's interpreter
    options = parser.parse_args()
    if options.measure:
        print(json.dumps(measure(options.measure, options.runs)))
        return
    sys.path.insert(0, str(REPO / "benchmarks"))
    from discovery import SHAPES, TREES, build_tree, missing_fixtures
    env = {"PYTHONPATH": "%s:%s" % (COLLECTIONS, site_packages()), "LC_ALL": "C"}
    with tempfile.TemporaryDirectory(prefix="result-cost-") as work:
        for name, functions_of in TREES.items():
            if name == "rich" and missing_fixtures():
                print("rich tree skipped: %s" % missing_fixtures())
                continue
            top = Path(work) / name
            build_tree(top, functions_of(SHAPES[options.shape]))
            out = subprocess.run([options.python, __file__, "--measure", str(top), "--runs", str(options.runs)],
                                 capture_output=True, text=True, check=True, env=env).stdout
            figures = json.loads(out)
            per = 1e6 / figures["functions"]
            print("%s tree: %d functions, %d values, %d bytes of JSON; imports %.3f s" % (
                name, figures["functions"], figures["values"], figures["bytes"], figures["imports"]))
            for key in ("read", "remove_values", "encode", "plain_json"):
                print("  %-13s %.3f s (%.0f us per function)" % (key, figures[key], figures[key] * per))


if __name__ == "__main__":
    main()
