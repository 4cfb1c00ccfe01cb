#!/usr/bin/env bash
# What writing to memory the machine has not touched lately costs, against memory it has:
# writes SIZE_MIB of fresh files twice (deleting the first set before the second, so the
# second reuses the page cache the first freed) and prints the kernel's CPU seconds per GB
# of each. On a virtual machine whose free memory is handed back to the host (free page
# reporting), the first figure is what every first touch of a page costs: the page cache
# of `file://` fragments, spools and any fresh heap alike.
#
#   bash bench/first-touch.sh [SIZE_MIB]     (default 2048; DIR defaults to /tmp)
set -euo pipefail
size=${1:-2048}
case "$size" in
  '' | *[!0-9]*)
    echo "first-touch: SIZE_MIB must be a whole number of MiB, not ${size:?}" >&2
    exit 2
    ;;
esac
dir=$(mktemp -d "${DIR:-/tmp}/folio-first-touch.XXXXXX")
trap 'rm -rf "$dir"' EXIT
files=$((size / 256))
[ "$files" -ge 1 ] || files=1
write_set() {
  local i
  for i in $(seq "$files"); do
    dd if=/dev/zero of="$dir/$1.$i" bs=1M count=256 status=none
  done
}
TIMEFORMAT='%S'
for pass in fresh reused; do
  sys=$({ time write_set "$pass" >/dev/null; } 2>&1)
  awk -v pass="$pass" -v sys="$sys" -v mib="$((files * 256))" \
    'BEGIN { printf "first-touch: %-6s memory: %.2f s of kernel CPU per GB written (%d MiB)\n", pass, sys / (mib / 1024), mib }'
  [ "$pass" = fresh ] && rm -f "$dir"/fresh.*
done
