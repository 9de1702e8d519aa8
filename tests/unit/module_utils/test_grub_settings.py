"""grub_settings: GRUB's settings files read without a shell (issue 17 point 8).

sh is the oracle: every safe input is also sourced with /bin/sh, the way
Debian's grub-mkconfig sources /etc/default/grub (grub2 2.06,
/usr/sbin/grub-mkconfig: ``. ${sysconfdir}/default/grub``), and the parser
must give exactly the value sh prints.  Hostile inputs carry payloads that
create a marker file: the marker must never appear.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest
from conftest import REPO

from ansible_collections.confidential_gpu.host.plugins.module_utils.boot_backend import Runner
from ansible_collections.confidential_gpu.host.plugins.module_utils.boot_grub import GrubBackend
from ansible_collections.confidential_gpu.host.plugins.module_utils.grub_settings import (
    GrubSettingsError,
    SettingsState,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.kernel_args_model import (
    KernelCmdlineError,
    build_request,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.kernel_cmdline import manage
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot

sys.path.insert(0, str(REPO / "tests" / "lib"))
from tree_state import tree_state  # noqa: E402

SAFE = [
    'GRUB_CMDLINE_LINUX="console=ttyS0,115200n8 intel_iommu=on iommu=pt"\n',
    "GRUB_CMDLINE_LINUX='quiet splash'\n",
    "GRUB_CMDLINE_LINUX=quiet\n",
    'GRUB_CMDLINE_LINUX=""\n',
    "# a comment\n\nGRUB_CMDLINE_LINUX=a # trailing comment\n",
    'A=one\nGRUB_CMDLINE_LINUX="$A ${A} ${A-} ${A:-} ${UNSET-}x"\n',
    "A=one\nGRUB_CMDLINE_LINUX=pre$A'lit $A'\"dq $A\"\n",
    'GRUB_CMDLINE_LINUX="a \\"b\\" \\$c \\\\ \\x"\n',
    "GRUB_CMDLINE_LINUX=a\\ b\\$c\n",
    'GRUB_CMDLINE_LINUX="one \\\ntwo"\n',
    "GRUB_CMDLINE_LINUX='multi\nline'\n",
    "A=1 B=$A; GRUB_CMDLINE_LINUX=\"$B\"\n",
    "export GRUB_CMDLINE_LINUX='exported x=1'\n",
    "GRUB_CMDLINE_LINUX=\"foo=a;b|c&d<e>f (g) #h\"\n",
    "GRUB_CMDLINE_LINUX=\"price=$ x$\"\n",
    "GRUB_CMDLINE_LINUX=a\nGRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX b\"\n",
    # Debian's stock line: parsed, not run, and not needed for the command line.
    "GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`\nGRUB_CMDLINE_LINUX=kept\n",
    "GRUB_DISTRIBUTOR=$(. /etc/os-release; echo ${NAME:-Ubuntu})\nGRUB_CMDLINE_LINUX=kept\n",
    # The shape of the drop-in kernel_cmdline writes.
    "GRUB_CMDLINE_LINUX='a b'\nif [ \"${GRUB_CMDLINE_LINUX-}\" = 'a b' ]; then\n    GRUB_CMDLINE_LINUX='a c'\nelse\n"
    "    echo 'changed since' >&2\n    GRUB_CMDLINE_LINUX=\"${GRUB_CMDLINE_LINUX-}\"' c'\nfi\n",
    "GRUB_CMDLINE_LINUX='x'\nif [ \"${GRUB_CMDLINE_LINUX-}\" = 'a b' ]; then\n    GRUB_CMDLINE_LINUX='a c'\nelse\n"
    "    echo 'changed since' >&2\n    GRUB_CMDLINE_LINUX=\"${GRUB_CMDLINE_LINUX-}\"' c'\nfi\n",
    "if [ x != y ]; then GRUB_CMDLINE_LINUX=ne; fi\n",
]


def sh_value(path: Path) -> str:
    proc = subprocess.run(["/bin/sh", "-c", '. "$1" 2>/dev/null; printf %s "$GRUB_CMDLINE_LINUX"', "sh", str(path)],
                          capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"})
    return proc.stdout


@pytest.mark.parametrize("text", SAFE)
def test_parser_reads_what_sh_reads(tmp_path: Path, text: str) -> None:
    path = tmp_path / "grub"
    path.write_text(text)
    state = SettingsState()
    state.read(text, "/etc/default/grub")
    assert state.value("GRUB_CMDLINE_LINUX") == sh_value(path)


def payloads(marker: Path) -> Dict[str, str]:
    return {
        "dollar-paren": 'GRUB_CMDLINE_LINUX="quiet $(touch %s)"\n' % marker,
        "backtick": "GRUB_CMDLINE_LINUX=\"quiet `touch %s`\"\n" % marker,
        "unquoted": "GRUB_CMDLINE_LINUX=$(touch %s)\n" % marker,
        "via-variable": "X=`touch %s`\nGRUB_CMDLINE_LINUX=\"quiet $X\"\n" % marker,
        "command": "touch %s\nGRUB_CMDLINE_LINUX=quiet\n" % marker,
        "env-prefix": "GRUB_CMDLINE_LINUX=quiet touch %s\n" % marker,
        "and-list": "GRUB_CMDLINE_LINUX=quiet && touch %s\n" % marker,
        "source": ". %s\nGRUB_CMDLINE_LINUX=quiet\n" % marker,
        "condition": "if [ \"$(touch %s)\" = '' ]; then GRUB_CMDLINE_LINUX=x; fi\n" % marker,
        "arith": "GRUB_CMDLINE_LINUX=$((1+1))\n",
        "param-op": "GRUB_CMDLINE_LINUX=${X:=`touch %s`}\n" % marker,
        "unclosed": "GRUB_CMDLINE_LINUX=\"quiet\n",
    }


def lab_tree(root: Path, grub: str) -> Path:
    for path, content in {"etc/os-release": 'ID=debian\nVERSION_ID="12"\n', "etc/default/grub": grub,
                          "boot/grub/grub.cfg": "# installed\n"}.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(content)
    return root


@pytest.mark.parametrize("case", sorted(payloads(Path("/m"))))
@pytest.mark.parametrize("check", [True, False])
def test_a_tree_with_code_in_its_grub_file_runs_nothing_and_is_refused(tmp_path: Path, bin_dir: Path, case: str,
                                                                       check: bool) -> None:
    marker = tmp_path / "marker"
    root = lab_tree(tmp_path / "root", payloads(marker)[case])
    before = tree_state(root)
    host = HostRoot(str(root))
    with pytest.raises(KernelCmdlineError) as error:
        manage(host, Runner([str(bin_dir)], check, host.root), "grub", build_request(["iommu=pt"], []))
    message = str(error.value)
    assert "without a shell" in message and "/etc/default/grub line " in message, message
    assert not marker.exists(), "code from the tree ran"
    assert tree_state(root) == before
    assert not (root / ".standin-calls").exists(), "no boot tool ran"


def test_unknown_value_message_names_the_line_and_the_fix(tmp_path: Path, bin_dir: Path) -> None:
    marker = tmp_path / "marker"
    root = lab_tree(tmp_path / "root", "GRUB_TIMEOUT=5\n" + payloads(marker)["backtick"])
    host = HostRoot(str(root))
    with pytest.raises(KernelCmdlineError, match=r"/etc/default/grub line 2: GRUB_CMDLINE_LINUX is set by command "
                                                 r"substitution `touch .*marker`, which is not run .*replace it with a "
                                                 r"plain assignment"):
        manage(host, Runner([str(bin_dir)], True, host.root), "grub", build_request(["iommu=pt"], []))


def test_single_quoted_payload_is_a_literal_as_in_sh(tmp_path: Path, bin_dir: Path) -> None:
    """Inside single quotes sh runs nothing either: the text is read as written (and the kernel gets it)."""
    marker = tmp_path / "marker"
    grub = "GRUB_CMDLINE_LINUX='quiet x=$(touch %s)'\n" % marker
    root = lab_tree(tmp_path / "root", grub)
    assert sh_value(root / "etc/default/grub") == "quiet x=$(touch %s)" % marker
    host = HostRoot(str(root))
    result = manage(host, Runner([str(bin_dir)], True, host.root), "grub", build_request(["iommu=pt"], []))
    assert result["configured_before"] == ["quiet", "x=$(touch", "%s)" % marker]
    assert result["grub_reader"] == "parser"
    assert not marker.exists()


STOCK_DEBIAN = ("GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\nGRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`\n"
                'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX=""\n')


def test_stock_debian_file_is_read_on_a_tree_without_running_its_backticks(tmp_path: Path, bin_dir: Path) -> None:
    marker = tmp_path / "marker"
    root = lab_tree(tmp_path / "root", STOCK_DEBIAN.replace("`lsb_release", "`touch %s; lsb_release" % marker))
    host = HostRoot(str(root))
    plan = manage(host, Runner([str(bin_dir)], True, host.root), "grub", build_request(["iommu=pt"], []))
    assert plan["changed"] is True and plan["configured"] == ["iommu=pt", "quiet"]
    assert not marker.exists(), "check mode on a tree ran the tree's backticks"


def test_the_dropin_written_is_read_back_by_the_parser(tmp_path: Path, bin_dir: Path) -> None:
    """The update-grub stand-in sources the files with sh, as the real one does on its own host."""
    root = lab_tree(tmp_path / "root", STOCK_DEBIAN)
    host = HostRoot(str(root))
    result = manage(host, Runner([str(bin_dir)], False, host.root), "grub", build_request(["iommu=pt"], []))
    assert result["changed"] is True and result["configured"] == ["iommu=pt", "quiet"]
    assert "GRUB_CMDLINE_LINUX='iommu=pt'" in (root / "etc/default/grub.d/99-confidential-gpu.cfg").read_text()
    # The drop-in just written is read back by the parser on the next run: idempotent, still nothing run.
    again = manage(host, Runner([str(bin_dir)], False, host.root), "grub", build_request(["iommu=pt"], []))
    assert again["changed"] is False and again["grub_reader"] == "parser"
    assert again["configured"] == ["iommu=pt", "quiet"]


def test_root_slash_keeps_sourcing_with_sh() -> None:
    backend = GrubBackend(HostRoot("/"), Runner(["/nonexistent"], True, "/"), "99-confidential-gpu.cfg")
    assert backend.reader == "sh"


def test_parser_refuses_an_unclosed_if() -> None:
    with pytest.raises(GrubSettingsError, match="an if is not closed with fi"):
        SettingsState().read("if [ a = a ]; then\nGRUB_CMDLINE_LINUX=x\n", "/etc/default/grub.d/x.cfg")
