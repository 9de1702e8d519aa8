# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backend ``rpm_ostree``: ``rpm-ostree kargs --delete/--append``. Standard library only (Python >= 3.8)."""

from __future__ import annotations

from typing import List

from ansible_collections.confidential_gpu.host.plugins.module_utils.boot_backend import Backend, Outcome, line_diff
from ansible_collections.confidential_gpu.host.plugins.module_utils.kernel_args_model import (
    Arg,
    KernelCmdlineError,
    Request,
    absent_matches,
    apply_request,
    changed_units,
    check_protected,
    satisfied,
    split_configured,
    unmet,
)


class RpmOstreeBackend(Backend):
    """rpm-ostree kargs: the default deployment's arguments (the one the next boot uses)."""

    name = "rpm_ostree"

    def read(self) -> List[Arg]:
        lines = [line for line in self.runner.read(["rpm-ostree", "kargs"]).splitlines() if line.strip()]
        if not lines:
            raise KernelCmdlineError("rpm-ostree kargs printed nothing: is this an rpm-ostree host?")
        return split_configured(lines[-1], "rpm-ostree kargs (the default deployment)",
                                "correct it with rpm-ostree kargs --editor")[0]

    def apply(self, request: Request) -> Outcome:
        self._single_line_values(request)
        before = self.read()
        configured = apply_request(before, request)
        check_protected(before, configured, request, "the default rpm-ostree deployment")
        units = changed_units(before, request)
        deletes = absent_matches(before, request) + [a for a in before if any(a.name in u.names for u in units)]
        argv = ["rpm-ostree", "kargs"]
        argv += ["--delete=%s" % a.text for a in before if any(a is d for d in deletes)]
        argv += ["--append=%s" % a.text for unit in units for a in unit.args]
        if len(argv) == 2:
            return Outcome(False, before, before, [], [])
        self.runner.change(argv)
        if not self.runner.check_mode:
            configured = self.read()
            if not satisfied(configured, request):
                raise KernelCmdlineError("rpm-ostree kargs ran but the default deployment still differs: %s"
                                         % "; ".join(unmet(configured, request)))
        return Outcome(True, before, configured, [], [line_diff("rpm-ostree kargs", before, configured)])
