#!/bin/bash
# bench/known-cost.sh - instructions greylistd spends on one known triplet
#
#   bench/known-cost.sh [GREYLISTD [GREYLISTCTL]]   (default: ./greylistd)
#
# Counted with callgrind (valgrind), which is deterministic where a clock
# is not: one process, one connection, one request whose triplet passed an
# hour ago (the reader path: open, shared lock, fetch, close, no write),
# with an empty configuration file and an empty whitelist, and an expiry
# noted just now
# so that no maintenance child is started. Prints the instructions (Ir)
# and the system calls (counted with strace -c -f) of the whole process,
# start-up included. Run it on two builds to compare their serving paths:
#
#   bench/known-cost.sh /tmp/before/greylistd && bench/known-cost.sh
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GL=${1:-$HERE/../greylistd}
CTL=${2:-$(dirname "$GL")/greylistctl}
W=$(mktemp -d "${TMPDIR:-/tmp}/greylistd-known.XXXXXX")
trap 'rm -rf "$W"' EXIT
now=$(date +%s)
: > "$W/conf"
: > "$W/wl"

printf 'T %d %d %d 192.0.2.0 alice@example.com bob@example.net\nM expire %d\n' \
	$((now - 7200)) $((now - 600)) $((now - 600)) "$now" \
	| "$CTL" load --config="$W/conf" --db="$W/db" > /dev/null
printf 'request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.10\nclient_name=mail.example.com\nsender=alice@example.com\nrecipient=bob@example.net\ninstance=1a2b.5f3e4d2c.c3d4e.0\n\n' > "$W/req"
run=("$GL" --config="$W/conf" --db="$W/db" --log-file="$W/log" --whitelist="$W/wl")

valgrind --tool=callgrind --callgrind-out-file="$W/cg" "${run[@]}" < "$W/req" \
	> "$W/out" 2> "$W/vg"
grep -q '^action=DUNNO$' "$W/out" || { echo "known-cost: the answer was not DUNNO: $(cat "$W/out")" >&2; exit 1; }
grep -q 'reason=triplet found' "$W/log" || { echo "known-cost: not a known triplet: $(cat "$W/log")" >&2; exit 1; }
ir=$(sed -n 's/^summary: //p' "$W/cg")
strace -c -f -o "$W/st" "${run[@]}" < "$W/req" > /dev/null
calls=$(awk '$NF == "total" { print $(NF - 2) }' "$W/st")
echo "known triplet, one request: $ir instructions, $calls system calls ($GL)"
