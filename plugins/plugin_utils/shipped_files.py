# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shell programs and systemd units a module installs, kept as real files in the collection's ``files/``.

A module runs on the target from an AnsiballZ payload that carries only Python, so the module's action plugin
(same name) reads the files here, on the controller, and hands their text over in the module's internal option
``_shipped_files`` (name -> text).  The tests run shellcheck and ``systemd-analyze verify`` on the same files.

The action also refuses, before the module runs, an entry of a list-of-mappings option (``MAPPING_LISTS``:
``bindings``, ``pfs``, ``pools``) that is not a mapping: ansible-core's own message for it comes from
``_list_no_log_values`` (``module_utils/common/parameters.py``, ansible-core 2.19), which calls
``check_type_dict`` without the option's name, so it names neither the option nor the entry.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.validation import check_type_dict
from ansible.plugins.action import ActionBase

FILES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "files")
OPTION = "_shipped_files"


def read_shipped(names: Iterable[str]) -> Dict[str, str]:
    """The text of each named file of ``files/``; an error naming the file when one cannot be read."""
    texts = {}
    for name in names:
        path = os.path.join(FILES_DIR, name)
        try:
            with open(path, encoding="utf-8") as handle:
                texts[name] = handle.read()
        except (OSError, UnicodeDecodeError) as error:
            raise AnsibleActionFail("cannot read %s, a file of the collection confidential_gpu.host (%s): "
                                    "reinstall the collection" % (path, error)) from None
    return texts


def entries_not_mappings(args: Dict[str, Any], options: Iterable[str], module: str) -> List[str]:
    """One message per entry of the list-of-mappings ``options`` that is neither a mapping nor text that
    AnsibleModule would read as one (JSON or key=value), naming the option, the entry and where its options are."""
    errors = []
    for option in options:
        entries = args.get(option)
        for index, entry in enumerate(entries if isinstance(entries, list) else []):
            try:
                if not isinstance(entry, Mapping):
                    check_type_dict(entry)
            except TypeError:
                errors.append("%s[%d]: %r is not a mapping; give each entry of %s as a mapping of its options "
                              "(ansible-doc %s lists them)" % (option, index, entry, option, module))
    return errors


class ShippedFilesAction(ActionBase):
    """Runs ``MODULE`` on the target with the texts of ``SHIPPED`` in its ``_shipped_files`` option."""

    MODULE = ""
    SHIPPED: Tuple[str, ...] = ()
    MAPPING_LISTS: Tuple[str, ...] = ()  # the module's options of type list, elements dict
    TRANSFERS_FILES = False
    _supports_check_mode = True

    def run(self, tmp: Optional[str] = None, task_vars: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        result = super().run(tmp, task_vars)
        errors = entries_not_mappings(self._task.args, self.MAPPING_LISTS, self.MODULE)
        if errors:
            raise AnsibleActionFail("; ".join(errors))
        args = dict(self._task.args, **{OPTION: read_shipped(self.SHIPPED)})
        result.update(self._execute_module(module_name=self.MODULE, module_args=args, task_vars=task_vars))
        return result
