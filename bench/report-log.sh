#!/bin/bash
# bench/report-log.sh - a synthetic greylistd log, and what `greylistctl
# report --html` makes of it
#
#   bench/report-log.sh log [DAYS [NEW_PER_HOUR [SEED]]] > FILE
#       write DAYS (30) of greylistd's --log-file lines (greylistd.c, LOG
#       FORMAT), ending now, for NEW_PER_HOUR (600) new triplets an hour
#   bench/report-log.sh bench [DAYS [NEW_PER_HOUR]]
#       make such a log in $TMPDIR and time the report and its page:
#       wall time, peak memory, page size (GREYLISTCTL: ./greylistctl)
#
# The traffic: of the new triplets, 60% are mail servers that retry (half
# within 5-12 minutes, the rest up to 12 hours; a fifth try early once
# first) and pass, then send 0-3 more messages; 40% never come back (a
# tenth of them retry once at once, as spam software does). Clients: 2,000
# networks that retry, spam from anywhere; 5,000 recipients. Each new
# triplet also brings a whitelisted pass. 600 new triplets an hour is a
# busy MX (14,400 a day); 30 days of it are about 2 million lines.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export LC_ALL=C

# gen DAYS PER_HOUR SEED - the lines, unsorted
gen() {
	awk -v days="$1" -v per="$2" -v seed="$3" -v end="$(date +%s)" '
	function ts(t) { return strftime("%Y-%m-%dT%H:%M:%S+0000", t, 1) }
	function line(t, what) {
		printf "%s greylistd[%d]: %s, client_name=%s, client_address=%s, sender=%s, recipient=%s\n",
			ts(t), 1000 + int(rand() * 30000), what, name, addr, sender, rcpt
	}
	BEGIN {
		srand(seed)
		start = end - days * 86400
		n = days * 24 * per
		for (i = 0; i < n; i++) {
			t = start + int(rand() * (end - start))
			rcpt = sprintf("user%d@dest%d.example", int(rand() * 5000), int(rand() * 3))
			if (rand() < 0.6) {
				net = int(rand() * 2000)
				addr = sprintf("198.%d.%d.%d", 18 + int(net / 256) % 2, net % 256, 1 + int(rand() * 250))
				name = sprintf("mx%d.sender%d.example", int(rand() * 4), net)
				sender = sprintf("bounce-%d@sender%d.example", i, net)
			} else {
				addr = sprintf("%d.%d.%d.%d", 1 + int(rand() * 222), int(rand() * 256), int(rand() * 256), 1 + int(rand() * 250))
				name = "unknown"
				sender = sprintf("x%d@spam%d.example", i, int(rand() * 100000))
			}
			line(t, "action=greylist, reason=new")
			line(t + 1, "action=pass, reason=client whitelist")
			if (name == "unknown") {
				if (rand() < 0.1)
					line(t + 60, "action=greylist, reason=early-retry (240s missing)")
				continue
			}
			if (rand() < 0.2)
				line(t + 120, "action=greylist, reason=early-retry (180s missing)")
			d = rand() < 0.5 ? 300 + int(rand() * 420) : 720 + int(rand() * 42480)
			if (t + d > end)
				continue
			line(t + d, "action=pass, reason=triplet found, delay=" d)
			for (k = int(rand() * 4); k > 0; k--)
				if ((u = t + d + int(rand() * 5 * 86400)) <= end)
					line(u, "action=pass, reason=triplet found")
		}
	}'
}

case ${1:-} in
log)
	gen "${2:-30}" "${3:-600}" "${4:-1}" | sort -s -k1,1
	;;
bench)
	CTL=${GREYLISTCTL:-$HERE/../greylistctl}
	W=$(mktemp -d "${TMPDIR:-/tmp}/greylistd-report.XXXXXX")
	trap 'rm -rf "$W"' EXIT
	"$0" log "${2:-30}" "${3:-600}" > "$W/log"
	echo "log: $(wc -l < "$W/log") lines, $(( $(stat -c %s "$W/log") / 1048576 )) MiB, ${2:-30} days, ${3:-600} new triplets an hour"
	/usr/bin/time -f '%e s %M KiB' -o "$W/time" "$CTL" report --db="$W/none" \
		"$W/log" > /dev/null 2> "$W/err"
	echo "report (text):   $(cat "$W/time"), $(tail -n 1 "$W/err")"
	/usr/bin/time -f '%e s %M KiB' -o "$W/time" "$CTL" report --db="$W/none" \
		--html="$W/page.html" "$W/log" > /dev/null 2> "$W/err"
	echo "report --html:   $(cat "$W/time"), page $(stat -c %s "$W/page.html") bytes"
	;;
*)
	sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2
	exit 2
	;;
esac
