"""Hostile input against kernel_cmdline (GRUB backend, tests/lib/standins as boot tools): each case is refused
naming the option or file and the fix, and the Debian lab tree stays byte-identical; a legitimate value is
written exactly as GRUB will read it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from prepare_run import CPUINFO, DROPIN, REPO

MODULE = "kernel_cmdline"
ONE_ARG = "is not one kernel argument; give one argument per list item (key or key=value)"
BAD_VALUE = "holds a quote, backslash, '$', backtick or control character"
BAD_KEY = "has no valid key: a key is letters, digits, '_', '-' and '.'"
TOO_LONG = "x86 Linux keeps only 2047 (COMMAND_LINE_SIZE 2048, arch/x86/include/asm/setup.h)"
DROPIN_FIX = "give a file name ending in .cfg (grub-mkconfig reads only /etc/default/grub.d/*.cfg)"
GRUB = 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX="console=ttyS0,115200n8 intel_iommu=on iommu=pt"\n'
QUIET = ["quiet"]
KEY_NAME_FIX = "give the key alone, letters, digits, '_', '-' and '.', like console or hugepagesz"
# The kernel's own description of vfio-pci.ids= and its buffer (tests/fixtures/linux-mainline/vfio-pci-ids.c)
VFIO_SOURCE = (REPO / "tests" / "fixtures" / "linux-mainline" / "vfio-pci-ids.c").read_text()
VFIO_FORMAT = re.search(r'format is \\"([^\\]+)\\"', VFIO_SOURCE).group(1)
VFIO_IDS_BUFFER = int(re.search(r"static char ids\[(\d+)\]", VFIO_SOURCE).group(1))
VFIO_FIX = "is not %s in hex, like 10de:2330" % VFIO_FORMAT

CASES: List[Tuple[str, Dict[str, Any], List[str]]] = [
    ("value-shell-separator", {"present": ["a=b; reboot"]}, ["present: 'a=b; reboot'", ONE_ARG]),
    ("two-arguments", {"present": ["a b"]}, ["present: 'a b'", ONE_ARG]),
    ("value-subshell", {"present": ["a=$(id)"]}, ["present: the value of 'a=$(id)'", BAD_VALUE]),
    ("value-backtick", {"present": ["a=`id`"]}, ["present: the value of 'a=`id`'", BAD_VALUE]),
    ("value-single-quote", {"present": ["a=b'c"]}, [BAD_VALUE]),
    ("value-backslash", {"present": ["a=b\\c"]}, [BAD_VALUE]),
    ("value-newline", {"present": ["a=b\nc"]}, ["present:"]),
    ("unbalanced-quote", {"present": ['a="b']}, ["present: 'a=\"b' has an unbalanced double quote"]),
    ("overlong-argument", {"present": ["x=" + "a" * 5000]}, ["would be 5049 bytes", TOO_LONG]),
    ("overlong-total", {"present": ["k%d=%s" % (index, "v" * 60) for index in range(40)]},
     ["would be 2636 bytes", TOO_LONG]),
    ("key-empty", {"present": ["=x"]}, ["present: '=x'", BAD_KEY]),
    ("key-nul", {"present": ["a\x00b"]}, [BAD_KEY]),
    ("value-parameter-expansion", {"present": ["a=${x}"]}, ["present: the value of 'a=${x}'", BAD_VALUE]),
    ("key-shell", {"present": ["a;b=c"]}, ["present: 'a;b=c'", BAD_KEY]),
    ("absent-traversal", {"absent": ["../root"]}, ["absent: '../root'", BAD_KEY]),
    ("key-traversal", {"present": ["../x"]}, ["present: '../x'", BAD_KEY]),
    ("absent-wildcard", {"absent": ["*"]}, ["absent: '*'", BAD_KEY]),
    ("dropin-traversal", {"present": QUIET, "grub_dropin_name": "../../x.cfg"}, ["grub_dropin_name '../../x.cfg'",
                                                                                 DROPIN_FIX]),
    # before: '^...$' with re.match let the trailing newline through
    ("dropin-trailing-newline", {"present": QUIET, "grub_dropin_name": "x.cfg\n"}, ["grub_dropin_name 'x.cfg\\n'",
                                                                                    DROPIN_FIX]),
    ("dropin-not-cfg", {"present": QUIET, "grub_dropin_name": "x"}, ["grub_dropin_name 'x'", DROPIN_FIX]),
    ("dropin-shell", {"present": QUIET, "grub_dropin_name": "x;id.cfg"}, ["grub_dropin_name 'x;id.cfg'", DROPIN_FIX]),
    ("wrong-backend", {"present": QUIET, "backend": "grubby"}, ["grubby --info=ALL lists no boot entry"]),
    # before: the module took any vfio-pci.ids value (only role kernel_args checked it); vfio-pci skips an entry
    # without vendor:device and the GPU stays on its host driver
    ("vfio-ids-not-hex", {"present": ["vfio-pci.ids=zzzz:2330,10de:22a3"]},
     ["vfio-pci.ids entry 'zzzz:2330'", VFIO_FIX]),
    ("vfio-ids-wildcard", {"present": ["vfio-pci.ids=10de:*"]}, ["vfio-pci.ids entry '10de:*'", VFIO_FIX]),
    ("vfio-ids-vendor-only", {"present": ["vfio_pci.ids=10de"]}, ["vfio-pci.ids entry '10de'", VFIO_FIX]),
    ("vfio-ids-empty-entry", {"present": ["vfio-pci.ids=10de:2330,,10de:22a3"]}, ["vfio-pci.ids entry ''", VFIO_FIX]),
    ("vfio-ids-seven-fields", {"present": ["vfio-pci.ids=10de:2330:0:0:0:0:0"]}, [VFIO_FIX]),
    ("vfio-ids-vendor-too-wide", {"present": ["vfio-pci.ids=10de0:2330"]}, ["'10de0:2330'", VFIO_FIX]),
    ("vfio-ids-no-value", {"present": ["vfio-pci.ids"]}, ["gives vfio-pci no IDs"]),
    ("vfio-ids-overlong", {"present": ["vfio-pci.ids=" + ",".join(["10de:2330"] * (VFIO_IDS_BUFFER // 10 + 1))]},
     ["vfio-pci keeps only %d" % (VFIO_IDS_BUFFER - 1)]),
    # before: these options took anything
    ("multi-value-key-with-value", {"present": QUIET, "multi_value_keys": ["console=ttyS0"]},
     ["multi_value_keys: 'console=ttyS0' is not a kernel parameter name", KEY_NAME_FIX]),
    ("multi-value-key-space", {"present": QUIET, "multi_value_keys": ["hugepages hugepagesz"]},
     ["multi_value_keys: 'hugepages hugepagesz'", KEY_NAME_FIX]),
    ("multi-value-key-quote", {"present": QUIET, "multi_value_keys": ['"console"']}, [KEY_NAME_FIX]),
    ("multi-value-key-newline", {"present": QUIET, "multi_value_keys": ["console\n"]},
     ["multi_value_keys: 'console\\n'", KEY_NAME_FIX]),
    ("allow-removing-wildcard", {"absent": ["quiet"], "allow_removing": ["*"]},
     ["allow_removing: '*' is not a kernel parameter name", KEY_NAME_FIX]),
    ("allow-removing-argument", {"absent": ["quiet"], "allow_removing": ["root=/dev/sda1"]},
     ["allow_removing: 'root=/dev/sda1'", KEY_NAME_FIX]),
    ("allow-removing-empty", {"absent": ["quiet"], "allow_removing": [""]}, ["allow_removing: ''", KEY_NAME_FIX]),
]

# corrupt /etc/default/grub: (case id, file text, fragments)
GRUB_FILES: List[Tuple[str, str, List[str]]] = [
    ("grub-unbalanced-quote", 'GRUB_CMDLINE_LINUX="console=ttyS0 quiet\n', ["/etc/default/grub"]),
    ("grub-command-substitution", 'GRUB_CMDLINE_LINUX="$(touch /tmp/pwned)"\n', ["/etc/default/grub"]),
    ("grub-backticks", 'GRUB_CMDLINE_LINUX="`touch /tmp/pwned`"\n', ["/etc/default/grub"]),
    ("grub-command-line", 'GRUB_CMDLINE_LINUX="quiet"\ntouch /tmp/pwned\n', ["/etc/default/grub"]),
]


def debian_grub(root: Path, grub: str = GRUB) -> Path:
    """A Debian 12 host booted by GRUB with the IOMMU on."""
    files = {"etc/os-release": 'ID=debian\nVERSION_ID="12"\n', "etc/default/grub": grub,
             "proc/cmdline": "BOOT_IMAGE=/vmlinuz root=UUID=0a1b ro console=ttyS0,115200n8 intel_iommu=on iommu=pt\n",
             "proc/cpuinfo": CPUINFO % "GenuineIntel", "boot/grub/grub.cfg": "# installed\n"}
    for path, content in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(content)
    (root / "sys/kernel/iommu_groups/0/devices").mkdir(parents=True)
    return root


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("tools") / "bin"
    shutil.copytree(REPO / "tests" / "lib" / "standins", target)
    for path in target.iterdir():
        path.chmod(0o755)
    return target


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return debian_grub(tmp_path_factory.mktemp("kernel_cmdline") / "root")


@pytest.mark.parametrize("args, fragments", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_kernel_cmdline_refuses(refuses, lab: Path, tools: Path, args: Dict[str, Any], fragments: List[str]) -> None:
    refuses(MODULE, dict(args, root=str(lab), command_path=[str(tools)]), lab, *fragments)


@pytest.mark.parametrize("grub, fragments", [case[1:] for case in GRUB_FILES], ids=[case[0] for case in GRUB_FILES])
def test_kernel_cmdline_refuses_corrupt_grub_file(refuses, tmp_path: Path, tools: Path, grub: str,
                                                  fragments: List[str]) -> None:
    root = debian_grub(tmp_path / "host" / "root", grub)
    refuses(MODULE, {"root": str(root), "command_path": [str(tools)], "present": QUIET}, root.parent, *fragments)
    assert not Path("/tmp/pwned").exists(), "nothing in the tree's GRUB file ran"


def test_kernel_cmdline_writes_a_trailing_newline_argument_as_the_kernel_reads_it(run_module, tmp_path: Path,
                                                                                  tools: Path) -> None:
    """Legitimate input: 'quiet\\n' is the argument quiet; the drop-in holds it once, without the newline."""
    root = debian_grub(tmp_path / "root")
    result = run_module(MODULE, {"root": str(root), "command_path": [str(tools)], "present": ["quiet\n"]})
    assert result["rc"] == 0 and result["changed"], result
    text = (root / DROPIN).read_text()
    assert "    GRUB_CMDLINE_LINUX='console=ttyS0,115200n8 intel_iommu=on iommu=pt quiet'\n" in text, text
    assert "GRUB_CMDLINE_LINUX=\"${GRUB_CMDLINE_LINUX-}\"' quiet'\n" in text, text


def test_kernel_cmdline_writes_every_vfio_pci_ids_form_the_kernel_reads(
        run_module, tmp_path: Path, tools: Path) -> None:
    """Legitimate input: each form of the kernel's format (two to six hex fields, entries joined by commas,
    vfio_pci.ids spelled with '_') is accepted and written as given."""
    fields = VFIO_FORMAT.replace("[", "").replace("]", "").split(":")
    assert fields == ["vendor", "device", "subvendor", "subdevice", "class", "class_mask"], VFIO_FORMAT
    sample = ["10de", "2330", "10de", "16c1", "030200", "ffff00"]
    value = ",".join(":".join(sample[:count]) for count in range(2, len(fields) + 1))
    root = debian_grub(tmp_path / "root")
    result = run_module(MODULE, {"root": str(root), "command_path": [str(tools)],
                                 "present": ["vfio_pci.ids=" + value]})
    assert result["rc"] == 0 and result["changed"], result
    assert "vfio_pci.ids=10de:2330,10de:2330:10de,10de:2330:10de:16c1,10de:2330:10de:16c1:030200," \
           "10de:2330:10de:16c1:030200:ffff00" in (root / DROPIN).read_text()
