#!/bin/sh
# sriov-apply: create the SR-IOV virtual functions listed in a configuration file.
# Installed by confidential_gpu.host.sriov_vfs from the collection's files/sriov-apply.sh, which it rewrites;
# run at boot by its systemd unit.
#
# Usage: sriov-apply [CONFIG [TIMEOUT]]
# CONFIG lines: "PF_ADDRESS NUM_VFS DRIVERS_AUTOPROBE" (autoprobe 1, 0, or - to leave it); '#' comments.
# For each PF: wait up to TIMEOUT seconds for the PF and its driver (PF drivers load from udev), write
# sriov_drivers_autoprobe when given and different, then sriov_numvfs only when it differs: 0 first when
# VFs exist (the kernel refuses to go from N to M directly), then the number; then wait up to TIMEOUT
# seconds for the VFs' virtfnN links. A PF that fails is reported and the others are still done; the
# exit status is 1 when any failed.
set -u
conf=${1:-/etc/confidential-gpu/sriov.conf}
timeout=${2:-60}
devices=${SRIOV_APPLY_SYSFS:-/sys}/bus/pci/devices
status=0

say() { printf 'sriov-apply: %s\n' "$*"; }
fail() { printf 'sriov-apply: %s\n' "$*" >&2; status=1; }

# wait_until SECONDS COMMAND [ARG...]: run COMMAND once a second until it succeeds; false after SECONDS.
wait_until() {
    left=$1
    shift
    until "$@"; do
        [ "$left" -gt 0 ] || return 1
        sleep 1
        left=$((left - 1))
    done
}

# The two predicates below run through wait_until, which shellcheck cannot follow (SC2317).
# shellcheck disable=SC2317
pf_ready() { [ -e "$1/sriov_numvfs" ] && [ -e "$1/driver" ]; }

# shellcheck disable=SC2317
vfs_present() {
    i=0
    while [ "$i" -lt "$2" ]; do
        [ -e "$1/virtfn$i" ] || return 1
        i=$((i + 1))
    done
}

# put FILE VALUE: write VALUE to a sysfs attribute; the error text in $err when it fails.
put() { err=$( { printf '%s\n' "$2" > "$1"; } 2>&1 ); }

apply_pf() {
    pf=$1 want=$2 probe=$3 dev=$devices/$1
    if ! wait_until "$timeout" pf_ready "$dev"; then
        if [ ! -e "$dev" ]; then
            fail "$pf: no such PCI device after ${timeout}s"
        elif [ ! -e "$dev/sriov_numvfs" ]; then
            fail "$pf: not an SR-IOV physical function (no sriov_numvfs)"
        else
            fail "$pf: no driver bound after ${timeout}s; the kernel creates VFs only through the PF's driver"
        fi
        return
    fi
    read -r total < "$dev/sriov_totalvfs" || total=0
    if [ "$want" -gt "$total" ]; then
        fail "$pf: $want VFs wanted, sriov_totalvfs is $total"
        return
    fi
    if [ "$probe" != - ]; then
        read -r was < "$dev/sriov_drivers_autoprobe" || was=
        if [ "$was" != "$probe" ]; then
            put "$dev/sriov_drivers_autoprobe" "$probe" || { fail "$pf: sriov_drivers_autoprobe $probe: $err"; return; }
            say "$pf: sriov_drivers_autoprobe $was -> $probe"
        fi
    fi
    read -r now < "$dev/sriov_numvfs" || now=
    if [ "$now" = "$want" ]; then
        say "$pf: $want VFs, as configured"
        return
    fi
    steps=$now
    if [ "$now" != 0 ]; then
        put "$dev/sriov_numvfs" 0 || { fail "$pf: sriov_numvfs 0: $err (see the kernel log)"; return; }
        steps="$steps -> 0"
    fi
    if [ "$want" != 0 ]; then
        put "$dev/sriov_numvfs" "$want" || { fail "$pf: sriov_numvfs $want: $err (see the kernel log)"; return; }
        steps="$steps -> $want"
    fi
    say "$pf: sriov_numvfs $steps"
    if ! wait_until "$timeout" vfs_present "$dev" "$want"; then
        fail "$pf: sriov_numvfs is $want but not all VFs appeared within ${timeout}s"
    fi
}

if [ ! -r "$conf" ]; then
    fail "cannot read $conf"
    exit 1
fi
while read -r address num probe _rest; do
    case $address in
        '' | '#'*) continue ;;
        *[!0-9a-f:.]*) fail "$conf: bad PF address '$address'"; continue ;;
    esac
    case $num in
        '' | *[!0-9]*) fail "$conf: $address: bad VF count '$num'"; continue ;;
    esac
    case ${probe:--} in
        0 | 1 | -) ;;
        *) fail "$conf: $address: bad drivers_autoprobe '$probe' (1, 0 or -)"; continue ;;
    esac
    apply_pf "$address" "$num" "${probe:--}"
done < "$conf"
exit "$status"
