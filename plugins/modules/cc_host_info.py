#!/usr/bin/python
# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cc_host_info
short_description: Report a host's readiness for confidential GPU passthrough (IOMMU, VFIO, SEV-SNP, TDX)
version_added: "0.1.0"
description:
  - Reads the host's CPU, IOMMU, VFIO, KVM, AMD SEV-SNP and Intel TDX state, hugepage pools, NUMA nodes,
    kernel command line and GPU driver modules straight from C(/proc), C(/sys), C(/dev) and
    C(/lib/modules), and returns them as data that later roles plan from.
  - Judges three verdicts from those facts, each with reasons that name the missing piece and its fix
    (RV(verdicts.vfio_ready), RV(verdicts.snp_ready), RV(verdicts.tdx_ready)).
  - Read-only; runs no commands. Files it cannot read or parse become warnings, never a failure.
extends_documentation_fragment:
  - confidential_gpu.host.info_module
author:
  - confidential_gpu.host maintainers (@confidential-gpu)
notes:
  - RV(iommu.enabled) means the kernel runs an IOMMU (C(/sys/class/iommu) or C(/sys/kernel/iommu_groups) has
    entries); firmware settings are only visible through their effect.
  - C(vfio_ready) needs the IOMMU on, IOMMU groups, and vfio-pci loaded, built in, or installed for the
    running kernel. C(snp_ready) needs an AMD CPU, the IOMMU on, C(kvm_amd) with C(sev_snp) enabled and
    C(/dev/sev). C(tdx_ready) needs an Intel CPU, C(kvm_intel) with C(tdx) enabled and the IOMMU on.
  - O(root) may be the top of an unpacked capture made by C(playbooks/capture.yml) or C(scripts/capture-host)
    (C(CAPTURE.json) beside C(root/)). The module then reads C(root/) and says so in a warning.
seealso:
  - module: confidential_gpu.host.pci_topology_info
"""

EXAMPLES = r"""
- name: Read the host's confidential-computing readiness
  confidential_gpu.host.cc_host_info:
  register: cc_host

- name: Stop with the reasons when VFIO passthrough is not possible
  ansible.builtin.assert:
    that: cc_host.verdicts.vfio_ready
    fail_msg: "{{ cc_host.verdicts.vfio_ready_reasons | join('; ') }}"

- name: Pick the confidential-computing flavour this host supports
  ansible.builtin.set_fact:
    cc_flavour: "{{ 'snp' if cc_host.verdicts.snp_ready else 'tdx' if cc_host.verdicts.tdx_ready else 'none' }}"

- name: Show the 1G hugepages per NUMA node
  ansible.builtin.debug:
    msg: "{{ (cc_host.hugepages.pools | selectattr('size', 'equalto', '1G') | first).nodes }}"
  when: cc_host.hugepages.pools | selectattr('size', 'equalto', '1G') | list

- name: Read a captured tree instead of the live host
  confidential_gpu.host.cc_host_info:
    root: /srv/captures/gpu-node-17
  delegate_to: localhost
"""

RETURN = r"""
cpu:
  description: The CPU, from the first processor of C(/proc/cpuinfo).
  returned: always
  type: dict
  contains:
    vendor:
      description: C(intel) for GenuineIntel, C(amd) for AuthenticAMD, C(other) for anything else or unreadable.
      type: str
      choices: [intel, amd, other]
      sample: amd
    vendor_id:
      description: The C(vendor_id) field as written; null when absent.
      type: str
      sample: AuthenticAMD
    model_name:
      description: The C(model name) field; null when absent.
      type: str
      sample: AMD EPYC 9454 48-Core Processor
    family:
      description: The C(cpu family) number; null when absent or not a number.
      type: int
      sample: 25
    model:
      description: The C(model) number; null when absent or not a number.
      type: int
      sample: 17
    flags:
      description:
        - Flags of interest, each true when C(/proc/cpuinfo) lists it. Always all of these keys.
        - C(hypervisor) (running in a VM), C(vmx) and C(svm) (Intel/AMD virtualisation), C(sme), C(sev),
          C(sev_es), C(sev_snp) (AMD memory encryption), C(tdx_host_platform) (TDX enabled by the firmware,
          Linux 6.9 and newer), C(tdx_guest) (running inside a TD).
      type: dict
      sample: {"hypervisor": false, "vmx": false, "svm": true, "sme": true, "sev": true, "sev_es": true,
               "sev_snp": true, "tdx_host_platform": false, "tdx_guest": false}
    cc_support:
      description:
        - Whether the CPU can run confidential guests, per technology (C(snp), C(tdx)).
        - V(true) when the running kernel says so (the C(sev_snp) or C(tdx_host_platform) flag, or kvm_amd's
          C(sev_snp) or kvm_intel's C(tdx) on).
        - V(false) when it cannot, whatever the firmware settings; a CPU of the other vendor, an AMD family before
          0x19 (EPYC Naples and Rome have no SEV-SNP), or an Intel family 6 model of a generation before 4th Gen
          Xeon Scalable (Sapphire Rapids).
        - V(null) when only the SKU and the firmware settings can tell; the kernel hides both flags while the
          firmware leaves the technology off.
        - Role C(cc_host) picks V(none) for C(cc_host_technology=auto) where this is V(false).
      type: dict
      sample: {"snp": null, "tdx": false}
kernel:
  description: The running kernel.
  returned: always
  type: dict
  contains:
    release:
      description: C(/proc/sys/kernel/osrelease) (what C(uname -r) prints); null when unreadable.
      type: str
      sample: 6.11.0-29-generic
    cmdline:
      description: C(/proc/cmdline) as written, without the trailing newline; null when unreadable.
      type: str
      sample: BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro intel_iommu=on iommu=pt hugepagesz=1G hugepages=16
    cmdline_args:
      description:
        - The kernel parameters of RV(kernel.cmdline) in order, repeats kept (C(hugepagesz=1G hugepages=4
          hugepagesz=2M hugepages=512) gives four entries), split the way the kernel splits them.
        - Double quotes group spaces and are removed around a value (C(foo="a b") has value C(a b)).
        - Parameters after a bare C(--) belong to init and are in RV(kernel.init_args) instead.
      type: list
      elements: dict
      contains:
        key:
          description: The parameter name as written (C(intel_iommu), C(kvm_amd.sev_snp), C(quiet)).
          type: str
          sample: intel_iommu
        value:
          description: The value after the first C(=); null for a bare flag, an empty string for C(key=).
          type: str
          sample: "on,sm_on"
      sample: [{"key": "ro", "value": null}, {"key": "intel_iommu", "value": "on"}, {"key": "iommu", "value": "pt"}]
    init_args:
      description: Words after a bare C(--) on the command line, which the kernel passes to init.
      type: list
      elements: str
      sample: []
    config:
      description:
        - The build options C(CONFIG_IOMMUFD), C(CONFIG_VFIO_DEVICE_CDEV), C(CONFIG_KVM_AMD_SEV) and
          C(CONFIG_INTEL_TDX_HOST) as C(/boot/config-<release>) sets them (C(y), C(m) or a value); null for one
          the file has as not set or lacks.
        - Null when the running release has no C(/boot/config-<release>).
      type: dict
      sample:
        CONFIG_IOMMUFD: m
        CONFIG_VFIO_DEVICE_CDEV: y
        CONFIG_KVM_AMD_SEV: y
        CONFIG_INTEL_TDX_HOST: null
      version_added: 0.2.0
    module_files:
      description:
        - For C(vfio_pci), C(iommufd) and C(ccp), where the running release has the module. C(builtin) when
          C(/lib/modules/<release>/modules.builtin) lists it, C(module) when C(modules.dep) lists its C(.ko) file,
          null when neither does.
        - Whether a module is loaded is elsewhere (RV(iommu.vfio_pci_source), RV(sev.ccp_loaded)).
      type: dict
      sample: {"vfio_pci": "module", "iommufd": "module", "ccp": "module"}
      version_added: 0.2.0
    module_config_files:
      description:
        - The C(.conf) files in C(/etc/modprobe.d) (RV(kernel.module_config_files.modprobe_d)) and
          C(/etc/modules-load.d) (RV(kernel.module_config_files.modules_load_d)), sorted by name; empty for a
          directory that is missing.
        - Role C(cc_host) calls module C(kernel_module_config) only when it has a file to write or one of these to
          remove.
      type: dict
      contains:
        modprobe_d:
          description: File names in C(/etc/modprobe.d).
          type: list
          elements: str
          sample: ["confidential-gpu-kvm-amd.conf", "confidential-gpu-vfio.conf"]
        modules_load_d:
          description: File names in C(/etc/modules-load.d).
          type: list
          elements: str
          sample: ["confidential-gpu.conf"]
      version_added: 0.2.0
iommu:
  description: IOMMU and VFIO state.
  returned: always
  type: dict
  contains:
    enabled:
      description: True when C(/sys/class/iommu) or C(/sys/kernel/iommu_groups) has any entry.
      type: bool
      sample: true
    type:
      description:
        - C(intel_dmar) when C(/sys/class/iommu/dmar*) exist, C(amd_vi) when C(ivhd*) exist, C(other) for any
          other IOMMU (virtio-iommu, SMMU), null when there is none.
      type: str
      choices: [intel_dmar, amd_vi, other]
      sample: intel_dmar
    units:
      description: Names in C(/sys/class/iommu), sorted.
      type: list
      elements: str
      sample: ["dmar0", "dmar1"]
    acpi_table:
      description:
        - C(DMAR) (Intel VT-d) or C(IVRS) (AMD-Vi) when C(/sys/firmware/acpi/tables) has it; null when neither is
          there.
        - The firmware describes its IOMMU in this table whether or not the kernel turned the IOMMU on, and leaves
          it out when VT-d or AMD-Vi is off in the firmware setup; so it says which IOMMU the host has, also while
          RV(iommu.enabled) is false. It can differ from the CPU vendor (QEMU's TCG CPU reports AMD beside an
          emulated VT-d). Role C(kernel_args) picks the IOMMU arguments from it.
      type: str
      choices: [DMAR, IVRS]
      sample: DMAR
    acpi_tables_listed:
      description: True when C(/sys/firmware/acpi/tables) lists any table, so that a null RV(iommu.acpi_table)
        means the firmware describes no IOMMU; false on hosts without ACPI and in trees without the directory.
      type: bool
      sample: true
    group_count:
      description: Number of IOMMU groups in C(/sys/kernel/iommu_groups).
      type: int
      sample: 13
    group_types:
      description: How many groups have each default domain type (C(/sys/kernel/iommu_groups/*/type)).
      type: dict
      sample: {"identity": 12, "DMA": 1}
    default_domain_type:
      description:
        - The most common group type (C(identity) means passthrough, C(DMA) or C(DMA-FQ) translated);
          null when no group says. Ties go to the name that sorts first.
      type: str
      sample: identity
    cmdline_passthrough:
      description:
        - What the kernel command line asks for, the last setting winning; true for C(iommu=pt) or
          C(iommu.passthrough=1), false for C(iommu=nopt) or C(iommu.passthrough=0), null when it does not say.
      type: bool
      sample: true
    amd_v2_page_table:
      description:
        - True when C(amd_iommu=) on the kernel command line selects the AMD IOMMU's v2 page table
          (C(pgtbl_v2), the last of C(pgtbl_v1) and C(pgtbl_v2) winning).
        - Linux turns SEV-SNP off at boot with the v2 page table, as it does in passthrough mode (unless the
          IOMMU supports SNP page mode 0); RV(verdicts.snp_ready_reasons) then names the argument
          (C(drivers/iommu/amd/init.c) C(iommu_snp_enable)).
      type: bool
      sample: false
    interrupt_remapping:
      description:
        - True when C(/proc/interrupts) shows remapped interrupt chips (C(IR-PCI-MSI), C(IR-IO-APIC)), false
          when it shows none, null when it cannot be read.
      type: bool
      sample: true
    iommufd:
      description: True when C(/dev/iommu) exists (IOMMUFD, which Kata confidential guests use).
      type: bool
      sample: true
    vfio_cdev:
      description: True when C(/dev/vfio/devices) exists (VFIO device cdevs for IOMMUFD).
      type: bool
      sample: true
    vfio_pci_available:
      description: True when vfio-pci is loaded, built in, or installed for the running kernel.
      type: bool
      sample: true
    vfio_pci_source:
      description:
        - C(builtin) (listed in C(/lib/modules/<release>/modules.builtin)), C(loaded) (C(/sys/module/vfio_pci)
          exists), C(module) (in C(modules.dep), not loaded), or null when it is not available.
      type: str
      choices: [builtin, loaded, module]
      sample: loaded
sev:
  description: AMD SEV state of KVM (C(/sys/module/kvm_amd/parameters)) and the AMD Secure Processor.
  returned: always
  type: dict
  contains:
    kvm_amd_loaded:
      description: True when C(/sys/module/kvm_amd) exists.
      type: bool
      sample: true
    kvm_amd_sev:
      description: The C(sev) parameter (C(Y)/C(1) true, C(N)/C(0) false); null when absent or not a boolean.
      type: bool
      sample: true
    kvm_amd_sev_es:
      description: The C(sev_es) parameter; null when absent or not a boolean.
      type: bool
      sample: true
    kvm_amd_sev_snp:
      description: The C(sev_snp) parameter; null when absent (kernels without KVM SEV-SNP) or not a boolean.
      type: bool
      sample: true
    dev_sev:
      description: True when C(/dev/sev) exists (the C(ccp) driver has initialised the SEV firmware).
      type: bool
      sample: true
    ccp_loaded:
      description: True when C(/sys/module/ccp) exists (the AMD Secure Processor driver is loaded or built in).
      type: bool
      sample: true
      version_added: 0.2.0
    iommu_conflicts:
      description:
        - What in the IOMMU's set-up makes Linux turn SEV-SNP off at boot (C(drivers/iommu/amd/init.c)
          C(iommu_snp_enable)), as written on the kernel command line (C(iommu=pt), C(iommu.passthrough=1),
          C(amd_iommu=pgtbl_v2)) or a passthrough default domain; empty when nothing conflicts.
        - IOMMUs with SNP page mode 0 support keep SEV-SNP on with newer kernels; RV(sev.kvm_amd_sev_snp) says
          what the running kernel decided.
      type: list
      elements: str
      sample: ["iommu=pt"]
tdx:
  description: Intel TDX state of KVM (C(/sys/module/kvm_intel/parameters)); the CPU flags are in RV(cpu.flags).
  returned: always
  type: dict
  contains:
    kvm_intel_loaded:
      description: True when C(/sys/module/kvm_intel) exists.
      type: bool
      sample: false
    kvm_intel_tdx:
      description: The C(tdx) parameter (C(Y) true, C(N) false); null when absent (kernels without KVM TDX).
      type: bool
      sample: false
kvm:
  description: KVM device.
  returned: always
  type: dict
  contains:
    dev_kvm:
      description: True when C(/dev/kvm) exists.
      type: bool
      sample: true
numa:
  description: NUMA nodes.
  returned: always
  type: dict
  contains:
    nodes:
      description:
        - One entry per node in C(/sys/devices/system/node/online) (or, when that is unreadable, per
          C(node<N>) directory), sorted by node; empty on kernels without NUMA.
      type: list
      elements: dict
      contains:
        node:
          description: Node number.
          type: int
          sample: 0
        cpulist:
          description: The node's CPUs in kernel list format; null when unreadable.
          type: str
          sample: 0-47,96-143
        mem_total_kb:
          description: C(MemTotal) of the node's C(meminfo) in kB; null when unreadable.
          type: int
          sample: 395958272
hugepages:
  description: Hugepage pools, total and per NUMA node.
  returned: always
  type: dict
  contains:
    default_size_kb:
      description: C(Hugepagesize) of C(/proc/meminfo) in kB; null when unreadable.
      type: int
      sample: 2048
    pools:
      description: One entry per C(/sys/kernel/mm/hugepages/hugepages-<N>kB), sorted by size.
      type: list
      elements: dict
      contains:
        size_kb:
          description: Page size in kB.
          type: int
          sample: 1048576
        size:
          description: Page size as a label (C(2M), C(1G), C(64K)).
          type: str
          sample: 1G
        total:
          description: C(nr_hugepages); null when unreadable (also for the counts below).
          type: int
          sample: 16
        free:
          description: C(free_hugepages).
          type: int
          sample: 16
        reserved:
          description: C(resv_hugepages).
          type: int
          sample: 0
        surplus:
          description: C(surplus_hugepages).
          type: int
          sample: 0
        nodes:
          description: The pool on each NUMA node that has it, sorted by node.
          type: list
          elements: dict
          contains:
            node:
              description: Node number.
              type: int
              sample: 0
            total:
              description: C(nr_hugepages) of the node.
              type: int
              sample: 8
            free:
              description: C(free_hugepages) of the node.
              type: int
              sample: 8
            surplus:
              description: C(surplus_hugepages) of the node.
              type: int
              sample: 0
gpu_drivers:
  description: GPU-related kernel modules that are loaded (C(/sys/module/<name>) exists).
  returned: always
  type: dict
  contains:
    nvidia:
      description: The NVIDIA driver.
      type: bool
      sample: false
    nouveau:
      description: The nouveau driver (must not claim GPUs meant for passthrough).
      type: bool
      sample: false
    vfio_pci:
      description: vfio-pci.
      type: bool
      sample: true
verdicts:
  description: Readiness judged from the facts above. Each C(*_reasons) list is empty exactly when its verdict is true.
  returned: always
  type: dict
  contains:
    vfio_ready:
      description: IOMMU on, IOMMU groups present, and vfio-pci available.
      type: bool
      sample: true
    vfio_ready_reasons:
      description: What is missing for RV(verdicts.vfio_ready), each with its fix.
      type: list
      elements: str
      sample: ["IOMMU is off: add intel_iommu=on to the kernel command line and enable VT-d in firmware"]
    snp_ready:
      description: AMD CPU, IOMMU on, C(kvm_amd) with C(sev_snp) enabled, and C(/dev/sev) present.
      type: bool
      sample: false
    snp_ready_reasons:
      description:
        - What is missing for RV(verdicts.snp_ready), each with its fix.
        - On an AMD host where SEV-SNP is off while the IOMMU is in passthrough mode (C(iommu=pt),
          C(iommu.passthrough=1), a passthrough default domain) or uses the v2 page table (C(amd_iommu=pgtbl_v2)),
          that is the reason given, not the BIOS settings, since Linux turns SEV-SNP off at boot in that case.
      type: list
      elements: str
      sample: ["SEV-SNP is not enabled in kvm_amd (sev_snp=N): enable SEV-SNP, SMEE and SNP memory coverage in BIOS,
                then load kvm_amd with sev_snp=1"]
    tdx_ready:
      description: Intel CPU, C(kvm_intel) with C(tdx) enabled, and IOMMU on.
      type: bool
      sample: false
    tdx_ready_reasons:
      description: What is missing for RV(verdicts.tdx_ready), each with its fix.
      type: list
      elements: str
      sample: ["CPU is not Intel (vendor_id AuthenticAMD): TDX needs a TDX-capable Xeon (4th gen or newer)"]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.confidential_gpu.host.plugins.module_utils.cc_host import gather_facts
from ansible_collections.confidential_gpu.host.plugins.module_utils.module_result import hand_over
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRootError, open_host_root


def main() -> None:
    module = AnsibleModule(
        argument_spec={"root": {"type": "path", "default": "/"}},
        supports_check_mode=True,
    )
    try:
        host = open_host_root(module.params["root"] or "/", "/proc")
    except HostRootError as error:
        module.fail_json(msg=str(error), root=module.params["root"])
    module.exit_json(changed=False, **hand_over(module, host, gather_facts(host)))


if __name__ == "__main__":
    main()
