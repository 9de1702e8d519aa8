"""Stand-in for systemd's kernel-install (test use only).

The real kernel-install acts on this machine's /boot. This one follows
kernel-install(8) and the Boot Loader Specification for ``add KERNEL-VERSION
KERNEL-IMAGE`` below CONFIDENTIAL_GPU_ROOT: the kernel command line comes from
/etc/kernel/cmdline, else /usr/lib/kernel/cmdline, else /proc/cmdline (without
BOOT_IMAGE= and initrd=); the entry is written as
$BOOT/loader/entries/<machine-id>-<version>.conf (title, version, machine-id,
options, linux, initrd), $BOOT being the first of /efi, /boot/efi and /boot
that holds loader/. The kernel image must exist. See _standin.py.
"""

import sys

import _standin


def cmdline():
    for path in ("/etc/kernel/cmdline", "/usr/lib/kernel/cmdline"):
        if _standin.host(path).exists():
            return " ".join(_standin.host(path).read_text().split())
    words = _standin.host("/proc/cmdline").read_text().split()
    return " ".join(w for w in words if not w.startswith(("BOOT_IMAGE=", "initrd=")))


def boot_dir():
    for path in ("/efi", "/boot/efi", "/boot"):
        if _standin.host(path + "/loader").is_dir():
            return path
    raise SystemExit("kernel-install: no $BOOT with loader/ found")


def main(argv):
    _standin.record("kernel-install", argv)
    if len(argv) != 3 or argv[0] != "add":
        _standin.die("kernel-install stand-in: only 'add KERNEL-VERSION KERNEL-IMAGE' is supported")
    version, image = argv[1], argv[2]
    if not _standin.host(image).is_file():
        _standin.die("kernel-install: kernel image %s does not exist" % image)
    machine_id = _standin.host("/etc/machine-id").read_text().strip()
    entry = _standin.host("%s/loader/entries/%s-%s.conf" % (boot_dir(), machine_id, version))
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_text("title      Linux %s\nversion    %s\nmachine-id %s\noptions    %s\n"
                     "linux      /%s/%s/linux\ninitrd     /%s/%s/initrd\n"
                     % (version, version, machine_id, cmdline(), machine_id, version, machine_id, version))


if __name__ == "__main__":
    main(sys.argv[1:])
