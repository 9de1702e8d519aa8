"""Stand-in for Debian's update-grub (test use only).

Follows update-grub(8): "update-grub is a stub for running grub-mkconfig -o
/boot/grub/grub.cfg". It sources /etc/default/grub and /etc/default/grub.d/*.cfg
below CONFIDENTIAL_GPU_ROOT the way Debian's grub-mkconfig does and writes a
grub.cfg whose linux lines carry GRUB_CMDLINE_LINUX (and _DEFAULT for the normal
entry). See _standin.py for the conventions shared by all stand-ins.
"""

import sys

import _standin

_standin.record("update-grub", sys.argv[1:])
if sys.argv[1:]:
    _standin.die("update-grub stand-in: takes no arguments here")
_standin.write_grub_cfg(None)
