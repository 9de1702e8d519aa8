# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Readiness of a prepared host: what ``playbooks/prepare.yml`` promised, checked from what the host says now.

Pure functions, run on the controller by the ``validate`` role (filter ``readiness_checks``). The role reads the
host again (``pci_topology_info``, ``cc_host_info``), runs the roles ``prepare`` runs in check mode (``vfio``,
``sriov``, ``hugepages``, ``kernel_args``: "would change" means "not as prepare left it") and reads Kata's files
and containerd's handlers; this module turns those results and the user's intent into one check per line:
``{name, state: pass|fail|not_asked, detail, fix}``. A check whose input the user did not give is ``not_asked``.
"""

from __future__ import annotations

import typing as t

from ansible_collections.confidential_gpu.host.plugins.plugin_utils import containerd_config

PASS, FAIL, NOT_ASKED = "pass", "fail", "not_asked"
RERUN_PREPARE = "run playbooks/prepare.yml with the same variables"
REBOOT = "reboot the host: run playbooks/prepare.yml with -e reboot_consent=true"

Check = t.Dict[str, str]
Step = t.Optional[t.Mapping[str, t.Any]]


def check(name: str, state: str, detail: str = "", fix: str = "") -> Check:
    return {"name": name, "state": state, "detail": detail, "fix": fix if state == FAIL else ""}


def not_asked(name: str, detail: str) -> Check:
    return check(name, NOT_ASKED, detail)


def failed_step(step: t.Mapping[str, t.Any]) -> str:
    """The message of a step (a role run in check mode) that failed, else ''."""
    return str(step.get("msg") or "failed") if step.get("failed") else ""


def unjudged_line(name: str, step: Step, unasked: str, where: str = "") -> Check:
    """The line of a step that was not asked for (None), or whose role failed (``where``: a doc to read for the
    fix); the caller judges the result of any other step."""
    if step is None:
        return not_asked(name, unasked)
    return check(name, FAIL, failed_step(step), "fix what the message names%s, then %s"
                 % (" (%s)" % where if where else "", RERUN_PREPARE))


def iommu_check(asked: bool, cc_host: t.Mapping[str, t.Any]) -> Check:
    if not asked:
        return not_asked("iommu", "kernel_args_iommu is false")
    iommu = cc_host.get("iommu", {})
    if iommu.get("enabled"):
        return check("iommu", PASS, "IOMMU on (%s), %s groups" % (iommu.get("type") or "type unknown",
                                                                  iommu.get("group_count")))
    reasons = cc_host.get("verdicts", {}).get("vfio_ready_reasons", [])
    return check("iommu", FAIL, "the IOMMU is off" + (": " + "; ".join(reasons) if reasons else ""),
                 "enable VT-d / AMD-Vi in the firmware setup and " + REBOOT)


def vfio_check(step: Step) -> Check:
    """Role vfio (pci_driver) in check mode: every selected function on the driver, its groups viable, the files
    that keep the binding across boots in place."""
    name = "vfio_devices"
    if step is None or failed_step(step):
        return unjudged_line(name, step, "no vfio_addresses, vfio_pci_ids, vfio_iommu_groups or vfio_roles")
    result = step.get("result", {})
    devices = result.get("devices", [])
    moving = ["%s (%s)" % (device["address"], device.get("driver_before") or "no driver")
              for device in devices if device.get("action") not in ("none", "keep")]
    groups = result.get("groups", [])
    unviable = ["group %s: %s" % (group.get("id"), "; ".join(group.get("reasons", []))) for group in groups
                if not group.get("viable")]
    if moving or unviable:
        return check(name, FAIL, "; ".join((["not on %s: %s" % (step.get("driver", "vfio-pci"), ", ".join(moving))]
                                            if moving else []) + unviable), RERUN_PREPARE)
    if not devices:
        return check(name, FAIL, "no PCI function matches the selection", "check vfio_addresses / vfio_roles")
    if result.get("changed"):
        return check(name, FAIL, "bound now, but the files that bind them at boot differ: "
                     + ", ".join(result.get("files", [])), RERUN_PREPARE)
    bound = [device["address"] for device in devices if device.get("action") == "none"]
    return check(name, PASS, "%s on %s, groups %s viable" % (", ".join(bound), step.get("driver", "vfio-pci"),
                                                             ", ".join(str(group.get("id")) for group in groups)))


def acs_check(step: Step) -> Check:
    """Role pcie_acs in check mode, as prepare runs it on role vfio's selection: no ACS violation on the bridges
    above the devices for the profile asked (its boot arguments are part of boot_args_configured)."""
    name = "acs"
    if step is None or failed_step(step):
        return unjudged_line(name, step, "no devices selected for vfio-pci", "docs/pcie_acs.md")
    result = step.get("result", {})
    violations = result.get("violations", [])
    if violations:
        fixes = sorted({str(item.get("fix")) for item in violations if item.get("fix")})
        return check(name, FAIL, "; ".join(str(item.get("msg") or item.get("kind")) for item in violations),
                     "; ".join(fixes) or "see docs/pcie_acs.md, then " + RERUN_PREPARE)
    checked = len(result.get("bridges", []))
    return check(name, PASS, "profile %s: %d bridges checked, no violation" % (result.get("profile"), checked))


def sriov_check(step: Step) -> Check:
    name = "sriov_vfs"
    if step is None or failed_step(step):
        return unjudged_line(name, step, "sriov_pfs is empty")
    result = step.get("result", {})
    pfs = result.get("pfs", [])
    wrong = ["%s has %s VFs, asked %s" % (pf["address"], pf.get("num_vfs_before"), pf.get("num_vfs"))
             for pf in pfs if pf.get("recreated")]
    if wrong:
        return check(name, FAIL, "; ".join(wrong), RERUN_PREPARE)
    if result.get("changed"):
        return check(name, FAIL, "the VFs are there, but their boot-time configuration differs: "
                     + ", ".join(result.get("files", [])), RERUN_PREPARE)
    return check(name, PASS, "; ".join("%s: %s VFs" % (pf["address"], pf.get("num_vfs")) for pf in pfs))


def _pool(pool: t.Mapping[str, t.Any]) -> str:
    return "%s %s" % (pool.get("size"), "system-wide" if pool.get("node") is None else "node %s" % pool.get("node"))


def hugepages_check(step: Step) -> Check:
    name = "hugepages"
    if step is None or failed_step(step):
        return unjudged_line(name, step, "hugepages_pools is empty")
    result = step.get("result", {})
    pools = result.get("pools", [])
    short = ["%s: %s of %s pages" % (_pool(pool), pool.get("before"), pool.get("requested"))
             for pool in pools if pool.get("before") != pool.get("requested")]
    if short:
        return check(name, FAIL, "; ".join(short), RERUN_PREPARE + " (1G pools: reserved at boot, " + REBOOT + ")")
    if result.get("changed"):
        return check(name, FAIL, "the pools are there, but their boot-time configuration differs: "
                     + ", ".join(result.get("files", [])), RERUN_PREPARE)
    return check(name, PASS, "; ".join("%s: %s pages" % (_pool(pool), pool.get("requested")) for pool in pools))


def boot_args_checks(step: Step) -> t.List[Check]:
    """kernel_cmdline in check mode (through role kernel_args): configured (nothing to write) and active (nothing
    pending a reboot)."""
    if step is None:
        return [not_asked("boot_args_configured", "role kernel_args not run"),
                not_asked("boot_args_active", "role kernel_args not run")]
    if failed_step(step):
        message = failed_step(step)
        return [check("boot_args_configured", FAIL, message, "fix what the message names, then " + RERUN_PREPARE),
                check("boot_args_active", FAIL, "not known: " + message, RERUN_PREPARE)]
    result = step.get("result", {})
    configured = " ".join(result.get("configured", []))
    if result.get("changed"):
        missing = [arg for arg in result.get("configured", []) if arg not in result.get("configured_before", [])]
        extra = [arg for arg in result.get("configured_before", []) if arg not in result.get("configured", [])]
        first = check("boot_args_configured", FAIL, "the %s configuration %s%s" % (
            result.get("backend"), "lacks " + " ".join(missing) if missing else "",
            ("; has " + " ".join(extra) + " to be taken out") if extra else ""), RERUN_PREPARE)
    else:
        first = check("boot_args_configured", PASS, "%s: %s" % (result.get("backend"), configured))
    pending = [item.get("key", "") for item in result.get("pending", [])]
    if result.get("active") is None:
        second = check("boot_args_active", FAIL, "the running kernel's command line cannot be read", REBOOT)
    elif pending:
        second = check("boot_args_active", FAIL, "the running kernel differs in " + ", ".join(pending), REBOOT)
    else:
        second = check("boot_args_active", PASS, "the running kernel has them")
    return [first, second]


def cc_technology(asked: str, cc_host: t.Mapping[str, t.Any]) -> str:
    """The technology role cc_host prepares (its vars/main.yml cc_host_tech): auto is the CPU vendor's, none on a
    CPU that cc_host_info knows cannot run it."""
    cpu = cc_host.get("cpu", {})
    if asked != "auto":
        return asked
    tech = {"amd": "snp", "intel": "tdx"}.get(cpu.get("vendor", ""), "none")
    if tech != "none" and cpu.get("cc_support", {}).get(tech) is False:
        return "none"
    return tech


def cc_check(asked: str, cc_host: t.Mapping[str, t.Any]) -> Check:
    tech = cc_technology(asked, cc_host)
    if tech not in ("snp", "tdx"):
        return not_asked("cc_state", "cc_host_technology is %s%s" % (asked, " (none on this CPU)" if asked == "auto"
                                                                     else ""))
    verdicts = cc_host.get("verdicts", {})
    verdict = tech + "_ready"
    if verdicts.get(verdict):
        return check("cc_state", PASS, verdict)
    reasons = verdicts.get(verdict + "_reasons", [])
    return check("cc_state", FAIL, "not %s: %s" % (verdict, "; ".join(reasons)),
                 "do what the reasons say (firmware settings: docs/cc-host.md), then " + RERUN_PREPARE)


def gpu_cc_check(step: Step) -> Check:
    """Role gpu_cc_mode in check mode: its plan has no steps and no errors when every device is in the asked mode."""
    name = "gpu_cc_mode"
    if step is None or failed_step(step):
        return unjudged_line(name, step, "gpu_cc_mode_cc and gpu_cc_mode_ppcie are empty")
    plan = step.get("plan")
    if not plan:
        return check(name, FAIL, "the modes were not queried (no NVIDIA GPU, or no gpu_cc_mode_tool / "
                     "gpu_cc_mode_release_url to query them with)", "set gpu_cc_mode_tool or gpu_cc_mode_release_url")
    if plan.get("errors"):
        return check(name, FAIL, "; ".join(plan["errors"]), RERUN_PREPARE)
    if plan.get("steps"):
        return check(name, FAIL, "; ".join("%s %s is %s, asked %s" % (item.get("address"), item.get("setting"),
                                                                      item.get("from"), item.get("mode"))
                                           for item in plan["steps"]), RERUN_PREPARE)
    return check(name, PASS, "; ".join(plan.get("summary", [])))


def kata_checks(kata: t.Optional[t.Mapping[str, t.Any]]) -> t.List[Check]:
    """Kata installed (a shim binary), each runtime class's configuration file, and containerd's handlers."""
    names = ("kata_installed", "kata_runtime_configs", "containerd_handlers")
    if kata is None:
        return [not_asked(name, "kata_version is empty and kata_install_method is release") for name in names]
    binaries = kata.get("binaries", {})
    found = [path for path, present in binaries.items() if present]
    installed = (check(names[0], PASS, "shim " + ", ".join(found)) if found else
                 check(names[0], FAIL, "no shim binary: " + ", ".join(binaries), RERUN_PREPARE))
    configs = kata.get("configs", {})
    missing = sorted(shim for shim, path in configs.items() if not path)
    runtime = (check(names[1], FAIL, "no configuration for " + ", ".join(missing), RERUN_PREPARE) if missing else
               check(names[1], PASS, ", ".join(str(path) for path in configs.values())))
    return [installed, runtime, handlers_check(kata.get("containerd"), sorted(configs))]


def handlers_in(texts: t.Mapping[str, str]) -> t.Set[str]:
    """The runtime handler names of containerd configuration texts (by path), under either CRI plugin id."""
    names: t.Set[str] = set()
    for path, text in texts.items():
        doc = containerd_config.parse(text, path)
        for plugin_id in containerd_config.CRI_PLUGIN_BY_VERSION.values():
            table = containerd_config.runtimes_table(doc, plugin_id, path, create=False)
            names.update(str(key) for key in (table or {}))
    return names


def handlers_check(containerd: t.Optional[t.Mapping[str, t.Any]], shims: t.Sequence[str]) -> Check:
    """``containerd``: {source: dump|files|none, texts: {path: text}, error}."""
    name = "containerd_handlers"
    if containerd is None or containerd.get("source") == "none":
        return not_asked(name, "kata_manage_containerd is false")
    if containerd.get("error"):
        return check(name, FAIL, containerd["error"], "start containerd / fix its configuration, then "
                     + RERUN_PREPARE)
    try:
        found = handlers_in(containerd.get("texts", {}))
    except containerd_config.ConfigError as exc:
        return check(name, FAIL, str(exc), "fix the file, then " + RERUN_PREPARE)
    wanted = ["kata-" + shim for shim in shims]
    missing = [handler for handler in wanted if handler not in found]
    where = ("`containerd config dump`" if containerd.get("source") == "dump" else
             "the files " + ", ".join(containerd.get("texts", {})) + " (the running daemon was not asked)")
    if missing:
        return check(name, FAIL, "%s lacks %s" % (where, ", ".join(missing)), RERUN_PREPARE)
    return check(name, PASS, "%s in %s" % (", ".join(wanted), where))


def readiness_checks(facts: t.Mapping[str, t.Any]) -> t.List[Check]:
    """Every readiness check, in a fixed order. ``facts``: cc_host (cc_host_info's result), iommu_asked,
    cc_technology (cc_host_technology as given), and the steps vfio, acs, sriov, hugepages, kernel_args, gpu_cc_mode
    and kata (each None when not asked)."""
    cc_host = facts.get("cc_host") or {}
    return ([iommu_check(bool(facts.get("iommu_asked", True)), cc_host), vfio_check(facts.get("vfio")),
             acs_check(facts.get("acs")), sriov_check(facts.get("sriov")), hugepages_check(facts.get("hugepages"))]
            + boot_args_checks(facts.get("kernel_args"))
            + [cc_check(str(facts.get("cc_technology", "auto")), cc_host), gpu_cc_check(facts.get("gpu_cc_mode"))]
            + kata_checks(facts.get("kata")))


def check_line(item: t.Mapping[str, str]) -> str:
    """One line per check: ``pass  name: detail`` / ``FAIL  name: detail -> fix: ...``."""
    state = {PASS: "pass", FAIL: "FAIL", NOT_ASKED: "not asked"}[item["state"]]
    line = "%-9s %s: %s" % (state, item["name"], item["detail"])
    return line + (" -> fix: " + item["fix"] if item["state"] == FAIL and item["fix"] else "")
