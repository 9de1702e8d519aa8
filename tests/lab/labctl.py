"""labctl: run the lab GPU-host stand-in (a Debian 12 QEMU/TCG VM).

    labctl build [--force]          build (or find) the cached disk image
    labctl start [--inventory FILE] [--timeout S]
    labctl status                   exit 0 when running, 3 when not
    labctl ssh [CMD...]
    labctl stop [--powerdown] [--all]
    labctl with-lab -- CMD...       start, run CMD, always stop

Every command but build takes --name NAME (several labs side by side) or
--run-dir DIR.  State lives in the run directory (--run-dir, else
<cache>/run/NAME, else $CGPU_LAB_RUN_DIR, else <cache>/run/default; the
cache is $CGPU_LAB_CACHE_DIR or ~/.cache/confidential-gpu-lab):
qemu.pid, ssh-port, id_ed25519, serial.log,
monitor.sock, serial.sock, inventory.yml, ssh_config, and the VM's
copy-on-write overlay.  See docs/lab.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path(
    os.environ.get("CGPU_LAB_CACHE_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "confidential-gpu-lab"
)
DEFAULT_RUN_DIR = Path(os.environ.get("CGPU_LAB_RUN_DIR") or CACHE / "run" / "default")
HOST_NAME = "gpu-lab"
# What stop removes; serial.log, ssh-port and the inventory stay for a post-mortem.
RUN_FILES = ("qemu.pid", "monitor.sock", "serial.sock", "overlay.qcow2", "nvme-ns.raw")
# Reboots under TCG take 30-75 s: keep-alives end a connection that a reboot
# cut instead of letting it hang for minutes.
SSH_OPTIONS = [
    "StrictHostKeyChecking=no",
    "UserKnownHostsFile=/dev/null",
    "LogLevel=ERROR",
    "IdentitiesOnly=yes",
    "ConnectTimeout=10",
    "ServerAliveInterval=5",
    "ServerAliveCountMax=6",
]


def log(msg: str) -> None:
    print(f"labctl: {msg}", file=sys.stderr, flush=True)


class LabError(Exception):
    pass


# fmt: off
def qemu_args(run: Path, port: int) -> list[str]:
    """The lab machine.  Guest PCI layout (see docs/lab.md):

    00:03.0 virtio-blk boot disk      00:04.0 virtio-net management NIC
    00:10.0-3 PCIe root ports rp1-rp4 (ACS capable)
    01:00.0 NVMe PF, SR-IOV 4 VFs (behind rp1)
    02:00.0 display "GPU" + 02:00.1 HDA audio, one slot (behind rp2)
    03:00.0 switch upstream port (behind rp3); 04:00.0, 04:01.0 downstream
    05:00.0 edu, 06:00.0 virtio-gpu: endpoints behind the switch
    rp4 is left empty (hotplug slot).
    00:05.0 PCIe expander bridge pxb1 in NUMA node 1: root bus 80, its root
    port rp5 at 80:00.0 and behind it 81:00.0, an e1000e NIC (no backend)
    """
    d = str(run)
    return [
        "qemu-system-x86_64", "-name", f"cgpu-lab-{run.name},debug-threads=on",
        "-accel", "tcg,thread=multi", "-cpu", "max",
        "-machine", "q35,kernel-irqchip=split",
        "-device", "intel-iommu,intremap=on,caching-mode=on",
        "-smp", "2,sockets=2,cores=1,threads=1", "-m", "8G",
        "-object", "memory-backend-ram,id=m0,size=4G",
        "-object", "memory-backend-ram,id=m1,size=4G",
        "-numa", "node,nodeid=0,cpus=0,memdev=m0",
        "-numa", "node,nodeid=1,cpus=1,memdev=m1",
        "-display", "none", "-vga", "none", "-nodefaults",
        "-daemonize", "-pidfile", f"{d}/qemu.pid",
        "-chardev", f"socket,id=ser0,path={d}/serial.sock,server=on,wait=off,logfile={d}/serial.log",
        "-serial", "chardev:ser0",
        "-monitor", f"unix:{d}/monitor.sock,server=on,wait=off",
        # management: boot disk and NIC on the root complex
        "-drive", f"file={d}/overlay.qcow2,format=qcow2,if=none,id=hd0,cache=unsafe,discard=unmap",
        "-device", "virtio-blk-pci,drive=hd0,bus=pcie.0,addr=0x3",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=n0,bus=pcie.0,addr=0x4",
        # PCIe root ports
        "-device", "pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1,addr=0x10.0,multifunction=on",
        "-device", "pcie-root-port,id=rp2,bus=pcie.0,chassis=2,slot=2,addr=0x10.1",
        "-device", "pcie-root-port,id=rp3,bus=pcie.0,chassis=3,slot=3,addr=0x10.2",
        "-device", "pcie-root-port,id=rp4,bus=pcie.0,chassis=4,slot=4,addr=0x10.3",
        # SR-IOV device: NVMe PF with 4 VFs (QEMU 7.2 needs the subsystem and
        # vq_flexible >= 2*vfs, ioqpairs >= vq+2, vi >= vfs, msix >= vi+1)
        "-device", "nvme-subsys,id=nvsubsys0,nqn=lab-subsys0",
        "-device", "nvme,id=nvme0,serial=labnvme0,subsys=nvsubsys0,bus=rp1,sriov_max_vfs=4,"
                   "sriov_vq_flexible=8,sriov_vi_flexible=4,max_ioqpairs=12,msix_qsize=8",
        "-drive", f"file={d}/nvme-ns.raw,format=raw,if=none,id=nvmens0",
        "-device", "nvme-ns,drive=nvmens0,bus=nvme0,nsid=1",
        # "GPU + audio": two functions of one slot, so one IOMMU group
        "-device", "bochs-display,id=gpu0,bus=rp2,addr=0.0,multifunction=on",
        "-device", "ich9-intel-hda,id=gpu0audio,bus=rp2,addr=0.1",
        # PCIe switch with two endpoints
        "-device", "x3130-upstream,id=up1,bus=rp3",
        "-device", "xio3130-downstream,id=dp1,bus=up1,chassis=11,slot=0",
        "-device", "xio3130-downstream,id=dp2,bus=up1,chassis=12,slot=1",
        "-device", "edu,id=edu0,bus=dp1",
        "-device", "virtio-gpu-pci,id=gpu1,bus=dp2",
        # a second root complex in NUMA node 1 (the kernel takes the node from
        # its _PXM), with a root port and a NIC that has no backend
        "-device", "pxb-pcie,id=pxb1,bus_nr=0x80,numa_node=1,bus=pcie.0,addr=0x5",
        "-device", "pcie-root-port,id=rp5,bus=pxb1,chassis=5,slot=5,addr=0x0",
        "-device", "e1000e,id=nic1,bus=rp5",
    ]
# fmt: on


# --- image -----------------------------------------------------------------


def image_dir(build: bool, force: bool = False) -> Path:
    builder = str(HERE / "build-image")
    env = dict(os.environ, CGPU_LAB_CACHE_DIR=str(CACHE))
    out = subprocess.run([builder, "--print-dir"], env=env, check=True, capture_output=True, text=True).stdout
    path = Path(out.strip())
    if force or not (path / "disk.qcow2").exists():
        if not build:
            raise LabError(f"no image at {path}: run `{HERE / 'labctl'} build`")
        log("building the lab image (about 2-3 minutes)")
        argv = [builder] + (["--force"] if force else [])
        if os.geteuid() != 0:  # mmdebstrap --mode=root; keep this user's cache
            argv = ["sudo", "env", f"CGPU_LAB_CACHE_DIR={CACHE}", *argv]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return path


# --- run directory state ---------------------------------------------------


def qemu_pid(run: Path) -> int | None:
    """PID of this run directory's QEMU, or None (stale pid files ignored)."""
    try:
        pid = int((run / "qemu.pid").read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    return pid if f"{run}/qemu.pid".encode() in cmdline else None


def ssh_port(run: Path) -> int:
    return int((run / "ssh-port").read_text())


def ssh_base(run: Path, *first: str) -> list[str]:
    """ssh argv for the lab; `first` options win (ssh keeps the first value)."""
    options = [arg for option in [*first, *SSH_OPTIONS, "BatchMode=yes"] for arg in ("-o", option)]
    return ["ssh", *options, "-i", str(run / "id_ed25519"), "-p", str(ssh_port(run)), "root@127.0.0.1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_inventory(run: Path, port: int, dest: Path) -> None:
    common = " ".join(f"-o {option}" for option in SSH_OPTIONS)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(f"""# Written by tests/lab/labctl for the lab VM of {run}
all:
  children:
    lab:
      hosts:
        {HOST_NAME}:
          ansible_host: 127.0.0.1
          ansible_port: {port}
          ansible_user: root
          ansible_ssh_private_key_file: {run / "id_ed25519"}
          ansible_ssh_common_args: "{common}"
          ansible_python_interpreter: /usr/bin/python3
""")


def serial_tail(run: Path, lines: int = 40) -> str:
    try:
        text = (run / "serial.log").read_text(errors="replace")
    except OSError:
        return "(no serial log)"
    return "\n".join(text.splitlines()[-lines:])


def wait_for_ssh(run: Path, timeout: float) -> float:
    """Seconds until `ssh true` worked; LabError when QEMU died or timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if qemu_pid(run) is None:
            raise LabError("QEMU exited while booting")
        r = subprocess.run(
            ssh_base(run, "ConnectTimeout=5") + ["true"], stdin=subprocess.DEVNULL, capture_output=True, check=False
        )
        if r.returncode == 0:
            return time.monotonic() - t0
        time.sleep(1)
    raise LabError(f"no SSH after {timeout:.0f}s")


# --- commands --------------------------------------------------------------


def cmd_build(args: argparse.Namespace) -> int:
    print(image_dir(build=True, force=args.force))
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    run: Path = args.run_dir
    if qemu_pid(run):
        raise LabError(f"already running (pid {qemu_pid(run)}); `labctl stop --run-dir {run}`")
    image = image_dir(build=not args.no_build)
    if len(f"{run}/monitor.sock") > 100:
        raise LabError(f"run directory path too long for unix sockets: {run}")
    run.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES + ("ssh-port", "serial.log", "qemu.log"):
        (run / name).unlink(missing_ok=True)
    shutil.copy(image / "id_ed25519", run / "id_ed25519")
    (run / "id_ed25519").chmod(0o600)
    overlay = ["-f", "qcow2", "-F", "qcow2", "-b", str(image / "disk.qcow2"), str(run / "overlay.qcow2")]
    subprocess.run(["qemu-img", "create", "-q", *overlay], check=True)
    with open(run / "nvme-ns.raw", "wb") as f:
        f.truncate(256 << 20)
    t0 = time.monotonic()
    for attempt in range(3):  # the free port may be taken before QEMU binds it
        port = free_port()
        r = subprocess.run(qemu_args(run, port), capture_output=True, text=True, check=False)
        if r.returncode == 0:
            break
        (run / "qemu.log").write_text(r.stderr)
        if "hostfwd" not in r.stderr or attempt == 2:
            raise LabError(f"QEMU failed to start:\n{r.stderr.strip()}")
    (run / "ssh-port").write_text(f"{port}\n")
    (run / "ssh_config").write_text(
        f"Host {HOST_NAME}\n  HostName 127.0.0.1\n  Port {port}\n  User root\n"
        f"  IdentityFile {run / 'id_ed25519'}\n"
        + "".join(f"  {option.replace('=', ' ', 1)}\n" for option in SSH_OPTIONS)
    )
    write_inventory(run, port, run / "inventory.yml")
    if args.inventory:
        write_inventory(run, port, args.inventory)
    log(f"QEMU pid {qemu_pid(run)}, SSH on 127.0.0.1:{port}; waiting for SSH")
    try:
        wait_for_ssh(run, args.timeout)
    except LabError as e:
        log(f"{e}; serial log tail ({run / 'serial.log'}):")
        print(serial_tail(run), file=sys.stderr)
        stop(run)
        raise
    log(f"lab up after {time.monotonic() - t0:.1f}s: ssh -F {run / 'ssh_config'} {HOST_NAME}")
    return 0


def monitor(run: Path, command: str) -> None:
    """Send one HMP command and wait for its prompt (or, for quit, EOF)."""

    def until_prompt(s: socket.socket) -> None:
        buf = b""
        while b"(qemu) " not in buf:
            chunk = s.recv(4096)
            if not chunk:
                return
            buf += chunk

    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(run / "monitor.sock"))
        until_prompt(s)  # the banner; input before it is lost
        s.sendall(command.encode() + b"\n")
        with contextlib.suppress(OSError):  # quit closes the socket
            until_prompt(s)


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def stop(run: Path, powerdown: bool = False) -> None:
    pid = qemu_pid(run)
    if pid is not None:
        steps = [("system_powerdown", 60)] if powerdown else []
        steps += [("quit", 10)]
        for command, timeout in steps:
            try:
                monitor(run, command)
            except OSError as e:
                log(f"monitor {command}: {e}")
            if wait_gone(pid, timeout):
                break
        else:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                log(f"QEMU pid {pid} still there: {sig.name}")
                os.kill(pid, sig)
                if wait_gone(pid, 5):
                    break
        log(f"stopped QEMU pid {pid}")
    else:
        log(f"not running ({run})")
    for name in RUN_FILES:
        (run / name).unlink(missing_ok=True)


def cmd_stop(args: argparse.Namespace) -> int:
    runs = sorted(p for p in (CACHE / "run").glob("*") if p.is_dir()) if args.all else [args.run_dir]
    for run in runs:
        stop(run, args.powerdown)
    return 0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    run: Path = args.run_dir
    pid = qemu_pid(run)
    if pid is None:
        print(f"not running ({run})")
        return 3
    print(
        f"running: pid {pid}, RSS {rss_kib(pid) // 1024} MiB, "
        f"ssh 127.0.0.1:{ssh_port(run)}\n  run dir   {run}\n"
        f"  inventory {run / 'inventory.yml'}\n  ssh       ssh -F {run / 'ssh_config'} {HOST_NAME}"
    )
    return 0


def cmd_ssh(args: argparse.Namespace) -> int:
    if qemu_pid(args.run_dir) is None:
        raise LabError(f"not running ({args.run_dir})")
    argv = ssh_base(args.run_dir) + (args.command[1:] if args.command[:1] == ["--"] else args.command)
    os.execvp(argv[0], argv)


def cmd_with_lab(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise LabError("with-lab needs a command")
    run: Path = args.run_dir
    # Stop the VM however we leave: normal exit, error, Ctrl-C or SIGTERM.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _: sys.exit(128 + signum))
    try:
        cmd_start(args)
        env = dict(
            os.environ,
            CGPU_LAB_RUN_DIR=str(run),
            CGPU_LAB_INVENTORY=str(run / "inventory.yml"),
            CGPU_LAB_SSH_PORT=str(ssh_port(run)),
            CGPU_LAB_SSH_CONFIG=str(run / "ssh_config"),
        )
        return subprocess.run(command, env=env, check=False).returncode
    finally:
        stop(run)


def main() -> int:
    p = argparse.ArgumentParser(
        prog="labctl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    def with_run_dir(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--name", help=f"lab name: run directory {CACHE}/run/NAME")
        sp.add_argument(
            "--run-dir", type=lambda s: Path(s).resolve(), help=f"state directory (default {DEFAULT_RUN_DIR})"
        )
        return sp

    b = sub.add_parser("build", help="build the image unless the cached one is current")
    b.add_argument("--force", action="store_true")
    b.set_defaults(func=cmd_build)
    for name, func, helptext in (
        ("start", cmd_start, "boot the VM and wait for SSH"),
        ("with-lab", cmd_with_lab, "start, run a command, stop"),
    ):
        s = with_run_dir(sub.add_parser(name, help=helptext))
        s.add_argument("--inventory", type=lambda s: Path(s).resolve(), help="also write the Ansible inventory here")
        s.add_argument(
            "--timeout",
            type=float,
            default=float(os.environ.get("CGPU_LAB_BOOT_TIMEOUT", 240)),
            help="seconds to wait for SSH (default 240)",
        )
        s.add_argument("--no-build", action="store_true", help="fail instead of building a missing image")
        s.set_defaults(func=func)
        if name == "with-lab":
            s.add_argument("command", nargs=argparse.REMAINDER)
    s = with_run_dir(sub.add_parser("stop", help="stop the VM (monitor quit, then signals)"))
    s.add_argument("--powerdown", action="store_true", help="ACPI power-down first (slower)")
    s.add_argument("--all", action="store_true", help=f"stop every lab under {CACHE}/run")
    s.set_defaults(func=cmd_stop)
    with_run_dir(sub.add_parser("status", help="exit 0 when running")).set_defaults(func=cmd_status)
    s = with_run_dir(sub.add_parser("ssh", help="ssh into the VM (root)"))
    s.add_argument("command", nargs=argparse.REMAINDER)
    s.set_defaults(func=cmd_ssh)

    args = p.parse_args()
    if "run_dir" in args and args.run_dir is None:
        args.run_dir = CACHE / "run" / args.name if args.name else DEFAULT_RUN_DIR
    try:
        return args.func(args)
    except LabError as e:
        log(f"error: {e}")
        return 1
    except subprocess.CalledProcessError as e:
        log(f"error: {' '.join(map(str, e.cmd))} exited {e.returncode}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
