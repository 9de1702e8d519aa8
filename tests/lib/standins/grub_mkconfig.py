"""Stand-in for grub-mkconfig (test use only).

Follows grub-mkconfig(8) for the one option the module uses: ``-o FILE``
writes the generated configuration to FILE (below CONFIDENTIAL_GPU_ROOT). The
kernel arguments come from /etc/default/grub and /etc/default/grub.d/*.cfg,
sourced as Debian's grub-mkconfig sources them. See _standin.py.
"""

import sys

import _standin

_standin.record("grub-mkconfig", sys.argv[1:])
if len(sys.argv) != 3 or sys.argv[1] != "-o":
    _standin.die("grub-mkconfig stand-in: only -o FILE is supported")
_standin.write_grub_cfg(sys.argv[2])
