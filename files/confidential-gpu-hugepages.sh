#!/bin/sh
# Written by confidential_gpu.host.hugepages from the collection's files/confidential-gpu-hugepages.sh:
# sets hugepage pools early at boot.
# Usage: confidential-gpu-hugepages [CONFIG [ROOT]]
# CONFIG lines: <page size in kB> <NUMA node, or all> <number of pages>; # starts a comment.
# ROOT (default empty) is put before /sys, for trying it on a copy of sysfs.
# Exits 1 when a pool is missing or the kernel gave fewer pages than asked for.
config=${1:-/etc/confidential-gpu/hugepages.conf}
root=${2:-}
me=confidential-gpu-hugepages
if [ ! -r "$config" ]; then
    echo "$me: cannot read $config" >&2
    exit 1
fi
status=0
bad() {
    echo "$me: $config: $1" >&2
    status=1
}
while read -r size node count rest; do
    case $size in ''|'#'*) continue ;; esac
    case $size in *[!0-9]*) bad "bad page size '$size'"; continue ;; esac
    case $count in ''|*[!0-9]*) bad "bad page count '$count' for ${size}kB pages"; continue ;; esac
    if [ -n "$rest" ]; then
        bad "more than three fields in '$size $node $count $rest'"; continue
    fi
    if [ "$node" = all ]; then
        dir=$root/sys/kernel/mm/hugepages/hugepages-${size}kB
        where="system-wide"
    else
        case $node in ''|*[!0-9]*) bad "bad node '$node' for ${size}kB pages"; continue ;; esac
        dir=$root/sys/devices/system/node/node$node/hugepages/hugepages-${size}kB
        where="node $node"
    fi
    if [ ! -e "$dir/nr_hugepages" ]; then
        echo "$me: $dir/nr_hugepages does not exist: no ${size}kB pages on $where" >&2; status=1; continue
    fi
    if ! echo "$count" > "$dir/nr_hugepages"; then
        echo "$me: cannot write $count to $dir/nr_hugepages" >&2; status=1; continue
    fi
    got=$(cat "$dir/nr_hugepages")
    if [ "$got" -lt "$count" ]; then
        echo "$me: ${size}kB pages on $where: asked for $count, the kernel gave $got" >&2; status=1
    else
        echo "$me: ${size}kB pages on $where: $got"
    fi
done < "$config"
exit $status
