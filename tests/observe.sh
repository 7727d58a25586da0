# shellcheck shell=bash
# tests/observe.sh - seeing greylisting work: `greylistctl stats
# --openmetrics` and its systemd timer (group metrics), `greylistctl report
# --html` in a real browser (group html). Sourced by test.sh; uses
# tests/lib.sh, tests/mta-lib.sh (deb_root, the namespaces) and
# tests/systemd.sh (sd_boot, sd_in, sd_halt).
#
# The parsers are real ones: promtool (Debian's prometheus package,
# downloaded and unpacked like Exim: installing it would start a
# Prometheus server), the OpenMetrics parser of Debian's
# python3-prometheus-client, and node_exporter's textfile collector
# itself (prometheus-node-exporter, unpacked), run on loopback inside a
# network namespace of the test's own.

OB_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Debian's python3, where Debian's python3-prometheus-client is (not one
# that PATH may find first)
OB_PY=/usr/bin/python3

# ob_at OFFSET ARGS... - one request (req's ARGS) to greylistd with the
# clock moved by OFFSET, into $D/db and $D/log
ob_at() {
	local off=$1; shift
	req "$@" | at "$off" "$GREYLISTD" --db="$D/db" --log-file="$D/log" \
		--auto-whitelist-clients=1 > /dev/null
}

# ob_seed - triplets whose fate is known, made by greylistd itself (each
# from its own client: with --auto-whitelist-clients=1 a client that has
# passed is whitelisted):
#   a  deferred 20 h ago, passed 400 s later
#   b  deferred 10 h ago, passed 2,000 s later
#   c  deferred 5 h ago, back early once, never again: never retried
#   d  deferred 3 h ago (IPv6, the null sender): never retried
#   e  deferred a minute ago: pending (the window is greylistd's delay, 300 s)
#   f  deferred and passed 30 h ago: outside the last day
#   g  deferred 26 h ago, passed 3 h later: only its pass is in the last day
ob_seed() {
	ob_at -72000s client_address=192.0.2.1 sender=a@a.example recipient=r@dest.example
	ob_at -71600s client_address=192.0.2.1 sender=a@a.example recipient=r@dest.example
	ob_at -36000s client_address=198.51.100.2 sender=b@b.example recipient=r@dest.example
	ob_at -34000s client_address=198.51.100.2 sender=b@b.example recipient=r@dest.example
	ob_at -18000s client_address=203.0.113.3 sender=c@c.example recipient=c@dest.example
	ob_at -17900s client_address=203.0.113.3 sender=c@c.example recipient=c@dest.example
	ob_at -10800s client_address=2001:db8:d::4 sender= recipient=d@dest.example
	ob_at -60s client_address=192.0.2.5 sender=e@e.example recipient=e@dest.example
	ob_at -108000s client_address=198.51.100.6 sender=f@f.example recipient=r@dest.example
	ob_at -107500s client_address=198.51.100.6 sender=f@f.example recipient=r@dest.example
	ob_at -93600s client_address=203.0.113.7 sender=g@g.example recipient=r@dest.example
	ob_at -82800s client_address=203.0.113.7 sender=g@g.example recipient=r@dest.example
}

# ob_metric NAME [LABELS] - a sample's value in $D/m.prom ("" when absent)
ob_metric() {
	local want=$1
	[ -z "${2:-}" ] || want="$1{$2}"
	awk -v want="$want" '$1 == want { print $2 }' "${OB_FILE:-$D/m.prom}"
}

# ob_iso_epoch TIME - stats' ISO 8601 time (or none) as Unix seconds (0)
ob_iso_epoch() { [ "$1" = none ] && echo 0 || date -d "$1" +%s; }

# ob_promtool - the path of promtool from Debian's prometheus package, or
# why there is none (and return 1)
ob_promtool() {
	local root
	root=$(deb_root prometheus prometheus) || { echo "$root"; return 1; }
	[ -x "$root/usr/bin/promtool" ] || { echo "no usr/bin/promtool in $root"; return 1; }
	echo "$root/usr/bin/promtool"
}

# ob_figures - the metrics say what stats and report say
ob_figures() {
	local sum want k v total

	newdir metrics
	ob_seed
	"$GREYLISTCTL" stats --db="$D/db" --auto-whitelist-clients=1 > "$D/stats"
	"$GREYLISTCTL" stats --openmetrics --db="$D/db" --auto-whitelist-clients=1 > "$D/m.prom"
	expect "stats --openmetrics: exit 0" 0 $?
	for k in pending passed; do
		expect "records{kind=$k} is stats' $k" "$(sed -n "s/^$k=//p" "$D/stats")" \
			"$(ob_metric greylistd_records "kind=\"$k\"")"
	done
	expect "records{kind=client} is stats' clients" "$(sed -n 's/^clients=//p' "$D/stats")" \
		"$(ob_metric greylistd_records 'kind="client"')"
	expect "records{kind=unknown} is stats' unknown" "$(sed -n 's/^unknown=//p' "$D/stats")" \
		"$(ob_metric greylistd_records 'kind="unknown"')"
	total=$(awk '$1 ~ /^greylistd_records\{/ { n += $2 } END { print n }' "$D/m.prom")
	expect "the kinds add up to stats' records" "$(sed -n 's/^records=//p' "$D/stats")" "$total"
	expect "auto_whitelisted_clients is stats' auto_whitelisted (4: every client that passed, --auto-whitelist-clients=1)" \
		"4 4" "$(sed -n 's/^auto_whitelisted=//p' "$D/stats") $(ob_metric greylistd_auto_whitelisted_clients)"
	expect "database_size_bytes is stats' file_size" "$(sed -n 's/^file_size=//p' "$D/stats")" \
		"$(ob_metric greylistd_database_size_bytes)"
	expect "last_expiry_timestamp_seconds is stats' last_expiry" \
		"$(ob_iso_epoch "$(sed -n 's/^last_expiry=//p' "$D/stats")")" \
		"$(ob_metric greylistd_last_expiry_timestamp_seconds)"
	expect "last_reorganization_timestamp_seconds: 0, stats' none" \
		"0 none" "$(ob_metric greylistd_last_reorganization_timestamp_seconds) $(sed -n 's/^last_reorganize=//p' "$D/stats")"

	# the last day, against the report of the same log and database
	"$GREYLISTCTL" report --db="$D/db" --since=1d "$D/log" 2> "$D/report.err" > /dev/null
	want=$(tail -n 1 "$D/report.err" | sed -n 's/^# deferred=[0-9]* passed_later=\([0-9]*\) never_retried=\([0-9]*\) pending=\([0-9]*\) .*/\1 \2 \3/p')
	expect "deferred_last_day{passed_later, never_retried, pending} (2 2 1) are report --since=1d's passed_later, never_retried, pending" \
		"2 2 1 = 2 2 1" "$(ob_metric greylistd_deferred_last_day 'outcome="passed_later"') $(ob_metric greylistd_deferred_last_day 'outcome="never_retried"') $(ob_metric greylistd_deferred_last_day 'outcome="pending"') = $want"
	v=$(for k in 60 300 600 900 1800 3600 7200 14400 43200 86400 172800; do
		ob_metric greylistd_pass_delay_seconds_bucket "le=\"$k.0\""; done | tr '\n' ' ')
	expect "pass_delay_seconds: the last day's first passes by PASSED (a 400 s, b 2,000 s, g 3 h), cumulative" \
		"0 0 1 1 1 2 2 3 3 3 3 " "$v"
	expect "and +Inf, _count" "3 3" "$(ob_metric greylistd_pass_delay_seconds_bucket 'le="+Inf"') $(ob_metric greylistd_pass_delay_seconds_count)"
	sum=$("$GREYLISTCTL" dump --raw --db="$D/db" | awk -v now="$(date +%s)" '$1 == "T" && $4 > 0 && now - $4 < 86400 { s += $4 - $2 } END { print s }')
	expect "_sum is the sum of PASSED - FIRST of those records (dump --raw)" "$sum" "$(ob_metric greylistd_pass_delay_seconds_sum)"
	expect "the output ends with # EOF (OpenMetrics)" "# EOF" "$(tail -n 1 "$D/m.prom")"
}

# ob_parsers - promtool and the OpenMetrics parser accept the output,
# and refuse a broken one (the checks have teeth)
ob_parsers() {
	local promtool out

	if promtool=$(ob_promtool); then
		out=$("$promtool" check metrics < "$D/m.prom" 2>&1)
		expect "promtool check metrics: no problem (exit 0, nothing said)" "0 " "$? $out"
		printf '# TYPE x counter\nx 1\n' | "$promtool" check metrics > /dev/null 2>&1
		check "promtool check metrics refuses a counter without _total and help" test $? -ne 0
		check "doc/prometheus-rules.yml: promtool check rules" \
			"$promtool" check rules "$OB_SRC/doc/prometheus-rules.yml"
		out=$("$promtool" test rules "$OB_SRC/tests/prometheus-rules.test.yml" 2>&1)
		expect "and promtool test rules: the ratio, the 90th percentile, the alerts fire when they should and not before" \
			"0 SUCCESS" "$? $(echo "$out" | grep -o 'SUCCESS\|FAILED' | head -n 1)"
	else
		skip "promtool check metrics" "$promtool"
	fi
	if ! "$OB_PY" -c 'import prometheus_client.openmetrics.parser' 2>/dev/null; then
		fail "the OpenMetrics parser" "no $OB_PY with prometheus_client (Debian package python3-prometheus-client)"
		return
	fi
	out=$("$OB_PY" "$OB_SRC/tests/openmetrics.py" < "$D/m.prom" 2>&1)
	expect "prometheus_client's OpenMetrics parser reads it: 7 families, 1 histogram" \
		"7 families, 1 histogram" "$out"
	sed '$d' "$D/m.prom" | "$OB_PY" "$OB_SRC/tests/openmetrics.py" > /dev/null 2>&1
	check "and refuses it without # EOF" test $? -ne 0
}

# ob_output - --output replaces the file whole (a temporary file renamed
# over it), and leaves it alone when stats fails
ob_output() {
	local ino rc

	mkdir -p "$D/dir"
	(umask 022 && "$GREYLISTCTL" stats --openmetrics --db="$D/db" --auto-whitelist-clients=1 \
		--output="$D/dir/greylistd.prom")
	expect "--output: exit 0, the file written, 0644 under umask 022" "0 644" "$? $(stat -c %a "$D/dir/greylistd.prom")"
	expect "with the same figures as on stdout" "$(cat "$D/m.prom")" "$(cat "$D/dir/greylistd.prom")"
	strace -f -e trace=rename,renameat,renameat2 -o "$D/strace" \
		"$GREYLISTCTL" stats --openmetrics --db="$D/db" --output="$D/dir/greylistd.prom"
	expect_grep "it is renamed into place from a temporary file that does not end in .prom" \
		"rename(at2?)?\\(.*\"$D/dir/greylistd\\.prom\\.[A-Za-z0-9]{6}\", .*\"$D/dir/greylistd\\.prom\"" "$D/strace"
	ino=$(stat -c %i "$D/dir/greylistd.prom")
	"$GREYLISTCTL" stats --openmetrics --db="$D/none" --output="$D/dir/greylistd.prom" 2> "$D/err"; rc=$?
	expect "a failed run (no database): exit 1, the old file left as it was" "1 $ino" "$rc $(stat -c %i "$D/dir/greylistd.prom")"
	expect "and no temporary file left behind" "greylistd.prom" "$(ls "$D/dir")"
}

# ob_reorganized - the note of a reorganization reaches stats and metrics
ob_reorganized() {
	local t0 t

	newdir metrics-reorganize
	expiry_records 3000 2 | "$GREYLISTCTL" load --db="$D/db" > /dev/null
	t0=$(date +%s)
	"$GREYLISTCTL" expire --db="$D/db" --log-file="$D/log" > "$D/out"
	expect_grep "a flood expired: expire reorganizes the file" '^reorganized: ' "$D/out"
	t=$("$GREYLISTCTL" stats --openmetrics --db="$D/db" | awk '$1 == "greylistd_last_reorganization_timestamp_seconds" { print $2 }')
	check "last_reorganization_timestamp_seconds: when it ran ($t, begun $t0)" test "${t:-0}" -ge "$t0" -a "${t:-0}" -le "$(date +%s)"
	expect "and stats says the same time" "$t" "$(ob_iso_epoch "$("$GREYLISTCTL" stats --db="$D/db" | sed -n 's/^last_reorganize=//p')")"
}

# ob_node_exporter - node_exporter's own textfile collector reads the file
# through the symlink make install puts in its directory
ob_node_exporter() {
	local root port=9100 i out old_trap=()

	if ! root=$(deb_root node-exporter prometheus-node-exporter); then
		skip "node_exporter reads the file" "no prometheus-node-exporter from Debian's archive: $root"; return
	fi
	mkdir -p "$D/textfile"
	ln -s "$D/dir/greylistd.prom" "$D/textfile/greylistd.prom"
	# shellcheck disable=SC2034 # tests/mta-lib.sh's
	NS_SPAWNED='' NS_PID=''
	eval "old_trap=($(trap -p EXIT))"
	# shellcheck disable=SC2064 # the old command is wanted as it is now
	trap "ns_stop; ${old_trap[2]:-}" EXIT
	if ! ns_start "$D" metrics.test; then
		fail "a private network namespace for node_exporter" "unshare failed"
		# shellcheck disable=SC2064 # the old command is wanted as it is now
		trap "${old_trap[2]:-:}" EXIT
		return
	fi
	ns_spawn "$root/usr/bin/prometheus-node-exporter" --web.listen-address=127.0.0.1:$port \
		--collector.disable-defaults --collector.textfile \
		--collector.textfile.directory="$D/textfile" > "$D/node.out" 2>&1
	for i in $(seq 50); do
		out=$(ns_run socat -T 5 - TCP:127.0.0.1:$port,crlf <<< $'GET /metrics HTTP/1.0\n' 2>/dev/null) && [ -n "$out" ] && break
		sleep 0.1
	done
	printf '%s\n' "$out" > "$D/scrape"
	ns_stop
	# shellcheck disable=SC2064 # the old command is wanted as it is now
	trap "${old_trap[2]:-:}" EXIT
	expect "node_exporter $(sed -n 's/^prometheus-node-exporter_\([^_]*\)_.*/\1/p' "$root/.debs") (Debian) serves the file's figures" \
		"$(ob_metric greylistd_records 'kind="pending"') $(ob_metric greylistd_pass_delay_seconds_count)" \
		"$(OB_FILE=$D/scrape ob_metric greylistd_records 'kind="pending"') $(OB_FILE=$D/scrape ob_metric greylistd_pass_delay_seconds_count)"
	expect "with no textfile error" "node_textfile_scrape_error 0" "$(grep '^node_textfile_scrape_error ' "$D/scrape")"
	expect "and the file's own mtime, through the symlink" "$(stat -L -c %Y "$D/dir/greylistd.prom")" \
		"$(awk '$1 ~ /^node_textfile_mtime_seconds\{file=".*greylistd\.prom"\}$/ { printf "%d\n", $2 }' "$D/scrape")"
}

# ob_units - the timer and its service pass systemd-analyze verify, and
# the service is as hardened as greylistd@.service
ob_units() {
	local out rc score

	newdir metrics-units
	sed "s|^ExecStart=/usr/sbin/greylistctl |ExecStart=$GREYLISTCTL |" \
		"$OB_SRC/greylistd-metrics.service" > "$D/greylistd-metrics.service"
	cp "$OB_SRC/greylistd-metrics.timer" "$D/"
	mkdir -p "$D/man/man8" && cp "$OB_SRC/greylistctl.8" "$D/man/man8/"
	expect "the service runs $(sd_get "$OB_SRC/greylistd-metrics.service" Service ExecStart | cut -d' ' -f1) (the path make install rewrites)" \
		/usr/sbin/greylistctl "$(sd_get "$OB_SRC/greylistd-metrics.service" Service ExecStart | cut -d' ' -f1)"
	out=$(cd "$D" && MANPATH=$D/man systemd-analyze verify --man=yes \
		./greylistd-metrics.timer ./greylistd-metrics.service 2>&1); rc=$?
	expect "systemd-analyze verify greylistd-metrics.timer greylistd-metrics.service: exit 0, no warnings" "0 " "$rc $out"
	out=$(cd "$D" && systemd-analyze security --offline=yes --threshold=10 \
		./greylistd-metrics.service 2>&1); rc=$?
	score=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\) .*/\1/p')
	if [ "$rc" -eq 0 ] && [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 1.0) }'; then
		pass "systemd-analyze security --offline=yes greylistd-metrics.service: exposure $score (threshold 1.0)"
	else
		fail "systemd-analyze security greylistd-metrics.service: exposure ${score:-?} (threshold 1.0)" \
			"exit $rc; $(printf '%s\n' "$out" | grep '✗' | awk '{print $2}' | tr '\n' ' ')"
	fi
	expect "the timer: every minute, to the second" "minutely 1s" \
		"$(sd_get "$OB_SRC/greylistd-metrics.timer" Timer OnCalendar) $(sd_get "$OB_SRC/greylistd-metrics.timer" Timer AccuracySec)"
	expect "the service writes where make install's symlink points" \
		"--output=$(sed -n 's/^METRICS_FILE = //p' "$OB_SRC/Makefile")" \
		"$(sd_get "$OB_SRC/greylistd-metrics.service" Service ExecStart | grep -o -- '--output=[^ ]*')"
}

# ob_live_units - for sd_boot: greylistd's units, the metrics timer and
# service, and node_exporter's directory with make install's symlink
ob_live_units() {
	local u=$D/upper/gltest/units
	cp "$OB_SRC/greylistd.socket" "$OB_SRC/greylistd@.service" \
		"$OB_SRC/greylistd-metrics.service" "$OB_SRC/greylistd-metrics.timer" "$u/"
	mkdir -p "$D/upper/var/lib/prometheus/node-exporter"
	ln -s "$(sed -n 's/^METRICS_FILE = //p' "$OB_SRC/Makefile")" \
		"$D/upper/var/lib/prometheus/node-exporter/greylistd.prom"
	# shellcheck disable=SC2034 # tests/systemd.sh's
	SD_WANTS="greylistd.socket greylistd-metrics.timer"
	req > "$D/upper/gltest/req.rcpt"
}

# ob_live - the timer and its service under a real systemd (as root; see
# tests/systemd.sh, sd_boot)
ob_live() {
	local why f=/var/lib/greylistd-metrics/greylistd.prom next now

	if [ "${GREYLISTD_LIVE:-1}" = 0 ]; then
		skip "metrics live: the timer under a real systemd" "left out with GREYLISTD_LIVE=0"; return
	fi
	if why=$(sd_cannot_boot); then skip "metrics live" "$why"; return; fi
	if ! sd_boot metrics-live ob_live_units; then
		case $SD_WHY in
		"cannot create a cgroup"*) skip "metrics live" "$SD_WHY" ;;
		*) fail "metrics live: systemd boots in the namespaces" "$SD_WHY" ;;
		esac
		sd_halt
		return
	fi
	expect "metrics live: the timer is active" active "$(sd_in systemctl is-active greylistd-metrics.timer)"
	next=$(sd_in systemctl show greylistd-metrics.timer -p NextElapseUSecRealtime --value)
	now=$(sd_in date +%s)
	check "metrics live: and due within a minute (next: $next)" \
		test "$(( $(sd_in date -d "$next" +%s) - now ))" -le 60
	sd_in systemctl start greylistd-metrics.service
	expect "metrics live: without a database yet the service does not run (its condition), and writes nothing" \
		"no absent" "$(sd_in systemctl show greylistd-metrics.service -p ConditionResult --value) $(sd_in test -e $f && echo present || echo absent)"
	sd_in socat -t 5 - TCP:127.0.0.1:10023 < "$D/upper/gltest/req.rcpt" > /dev/null
	sd_in systemctl start greylistd-metrics.service
	expect "metrics live: with one, it runs and succeeds" "success" \
		"$(sd_in systemctl show greylistd-metrics.service -p Result --value)"
	expect "metrics live: $f holds the request's triplet, pending" 1 \
		"$(sd_in awk '$1 == "greylistd_records{kind=\"pending\"}" { print $2 }' $f)"
	expect "metrics live: the file is greylistd's, 644, in a 755 directory" "greylistd 644 755" \
		"$(sd_in stat -c '%U %a' $f) $(sd_in stat -c %a ${f%/*})"
	expect "metrics live: another user (nobody, as node_exporter's prometheus) reads it through node_exporter's directory" \
		"$(sd_in cat $f | wc -l)" \
		"$(sd_in setpriv --reuid=nobody --regid=nogroup --clear-groups cat /var/lib/prometheus/node-exporter/greylistd.prom | wc -l)"
	sd_in journalctl --no-pager -o cat -u greylistd-metrics.service > "$D/journal.txt"
	check "metrics live: nothing refused by the sandbox (no EPERM, no error in its journal)" \
		bash -c "! grep -qiE 'operation not permitted|error|greylistctl:' '$D/journal.txt'"
	sd_halt
	check "metrics live: its cgroup is removed again" test ! -e "$SD_CG"
}

# ob_redis - with the Redis store, the same figures from its records; its
# server's memory in place of the file's size, and no expiry times (Redis
# expires records itself)
ob_redis() {
	local rpid i out

	newdir metrics-redis
	if ! command -v redis-server >/dev/null; then
		fail "metrics of a Redis store" "redis-server missing (Debian package redis-server)"; return
	fi
	redis-server --port 0 --unixsocket "$D/redis.sock" --save '' --appendonly no \
		--dir "$D" > "$D/redis.log" 2>&1 &
	rpid=$!
	for i in $(seq 50); do [ -S "$D/redis.sock" ] && break; sleep 0.1; done
	req | "$GREYLISTD" --redis="$D/redis.sock" --log-file="$D/log" > /dev/null
	"$GREYLISTCTL" stats --redis="$D/redis.sock" > "$D/stats"
	"$GREYLISTCTL" stats --openmetrics --redis="$D/redis.sock" > "$D/m.prom"
	stop "$rpid"
	expect "Redis: records{kind=pending} is stats' pending (1)" "1 1" \
		"$(sed -n 's/^pending=//p' "$D/stats") $(ob_metric greylistd_records 'kind="pending"')"
	check "Redis: the server's used memory instead of the file's size ($(ob_metric greylistd_redis_used_memory_bytes) bytes)" \
		test "$(ob_metric greylistd_redis_used_memory_bytes)" -gt 0
	expect "Redis: no file size, no expiry or reorganization time" "" \
		"$(grep -E '^greylistd_(database_size|last_)' "$D/m.prom")"
	out=$("$OB_PY" "$OB_SRC/tests/openmetrics.py" < "$D/m.prom" 2>&1)
	expect "Redis: the OpenMetrics parser reads it: 5 families" "5 families, 1 histogram" "$out"
}

t_metrics() {
	ob_figures
	ob_parsers
	ob_output
	ob_node_exporter
	ob_reorganized
	ob_redis
	if command -v systemd-analyze >/dev/null; then
		ob_units
		ob_live
	else
		fail "the metrics units" "systemd-analyze missing (Debian package systemd)"
	fi
}

# --- the page: report --html in a real browser ------------------------------

# ob_chromium ARGS... - headless chromium, as root (--no-sandbox), in the
# test's network namespace (loopback only), with a profile of its own;
# the background services that would phone home are off (they could not)
ob_chromium() {
	OB_RUNS=$((${OB_RUNS:-0} + 1))
	ns_run timeout 60 chromium --headless --no-sandbox --disable-gpu \
		--user-data-dir="$D/profile.$OB_RUNS" --no-first-run \
		--disable-background-networking --disable-component-update \
		--disable-sync --disable-extensions --disable-default-apps "$@"
}

# ob_cannot_browse - why no browser can run here (and succeed), or fail
ob_cannot_browse() {
	command -v chromium >/dev/null || { echo "chromium missing (Debian package chromium)"; return 0; }
	[ "$(id -u)" -eq 0 ] || { echo "needs root, for a network namespace to keep the browser off the network"; return 0; }
	[ -x "$OB_PY" ] || { echo "no $OB_PY (Debian package python3) to read the page and the PNG"; return 0; }
	return 1
}

# ob_page_log DAYS PER_HOUR - bench/report-log.sh's synthetic log, and
# five deferrals never retried of a recipient that is HTML (the most lost)
ob_page_log() {
	local i t
	t=$(date -u -d @$(($(date +%s) - 7200)) +%Y-%m-%dT%H:%M:%S+0000)
	"$OB_SRC/bench/report-log.sh" log "$1" "$2" 7
	for i in 1 2 3 4 5; do
		echo "$t greylistd[9]: action=greylist, reason=new, client_name=evil.example, client_address=192.0.2.66, sender=e$i@evil.example, recipient=<img src=x onerror=alert(1)>\"&'@dest0.example"
	done
}

# ob_page NAME - the page of $D/NAME.log as chromium sees it: its DOM
# ($D/NAME.page: what tests/page.py finds), a screenshot ($D/NAME.png)
# and the requests it made ($D/NAME.requests)
ob_page() {
	local n=$1
	ob_chromium --dump-dom "file://$D/$n.html" 2> "$D/$n.chromium" | "$OB_PY" "$OB_SRC/tests/page.py" > "$D/$n.page"
	ob_chromium --screenshot="$D/$n.png" --window-size=1100,1300 --log-net-log="$D/$n.netlog" \
		"file://$D/$n.html" >> "$D/$n.chromium" 2>&1
	"$OB_PY" "$OB_SRC/tests/netlog.py" "$D/$n.netlog" > "$D/$n.requests" 2>&1
}

# ob_shown NAME KEY - a value tests/page.py found on the page
ob_shown() { sed -n "s/^$2=//p" "$D/$1.page"; }

# ob_page_checks NAME WHAT - the page shows what the text report says
ob_page_checks() {
	local n=$1 what=$2 sum tops px

	sum=$(tail -n 1 "$D/$n.err" | sed 's/^# //')
	expect "$what: the page's summary line is the text report's ($sum)" "$sum" "$(ob_shown "$n" summary)"
	expect "$what: its large figures are the summary's" \
		"$(echo "$sum" | sed 's/^deferred=\([0-9]*\) passed_later=\([0-9]*\) never_retried=\([0-9]*\) pending=\([0-9]*\) .*/\1 \2 \3 \4/')" \
		"$(for k in deferred passed_later never_retried pending; do ob_shown "$n" "tile_$k"; done | tr '\n' ' ' | sed 's/ $//')"
	expect "$what: the bars' figures add up to them" \
		"$(for k in deferred passed_later never_retried pending; do ob_shown "$n" "tile_$k"; done | tr '\n' ' ' | sed 's/ $//')" \
		"$(ob_shown "$n" bars_sum)"
	tops=$(sed -n '/^# top/,$p' "$D/$n.top" | grep -v '^# top' | awk '{ $1 = $1; print }' | tr '\n' '|' | sed 's/|$//')
	expect "$what: the tops are report --top=10's, in its order" "$tops" "$(ob_shown "$n" tops)"
	expect "$what: nothing on it fetches (no src, href, script, img, link)" " 0" \
		"$(ob_shown "$n" fetching) $(ob_shown "$n" scripts)"
	expect "$what: and chromium's network log shows no request from the page" "" "$(cat "$D/$n.requests")"
	px=$("$OB_PY" "$OB_SRC/tests/png.py" "$D/$n.png" 1b9e77 d95f02 7570b3)
	check "$what: the screenshot is not blank: bars of each colour, passed later, never retried, delays ($px)" \
		awk -v s="$px" 'BEGIN { n = split(s, f, /[= ]/); for (i = 2; i <= n; i += 2) if (f[i] < 300) exit 1 }'
}

# ob_page_bound - a log whose times span 126 years (they are anyone's to
# write) still makes at most BARS_MAX + 1 bars, and counts every deferral
ob_page_bound() {
	local l='greylistd[1]: action=greylist, reason=new, client_address=192.0.2.1, sender=a@b.example'
	printf '1900-01-01T00:00:00+0000 %s, recipient=x@y.example\n%s %s, recipient=z@y.example\n' \
		"$l" "$(date -u +%Y-%m-%dT%H:%M:%S+0000)" "$l" > "$D/span.log"
	"$GREYLISTCTL" report --db="$D/none" --html="$D/span.html" "$D/span.log" > /dev/null 2>&1
	expect "a log from 1900 to now: at most 97 bars, both deferrals in them" "97 2" \
		"$("$OB_PY" "$OB_SRC/tests/page.py" < "$D/span.html" | sed -n 's/^bars=//p') $("$OB_PY" "$OB_SRC/tests/page.py" < "$D/span.html" | sed -n 's/^bars_sum=\([0-9]*\).*/\1/p')"
}

t_html() {
	local why n days

	newdir html
	ob_page_bound
	if why=$(ob_cannot_browse); then skip "report --html in a browser" "$why"; return; fi
	# shellcheck disable=SC2034 # tests/mta-lib.sh's
	NS_SPAWNED='' NS_PID=''
	if ! ns_start "$D" html.test; then
		skip "report --html in a browser" "no network namespace (unshare --net) to keep the browser off the network"; return
	fi
	if ! ob_chromium --dump-dom about:blank > /dev/null 2> "$D/probe.err"; then
		skip "report --html in a browser" "chromium does not run here: $(grep -v -i dbus "$D/probe.err" | tail -n 1)"
		ns_stop; return
	fi
	ob_page_log 3 30 > "$D/hours.log"
	ob_page_log 30 4 > "$D/days.log"
	for n in hours days; do
		"$GREYLISTCTL" report --db="$D/none" --top=10 "$D/$n.log" > "$D/$n.top" 2> /dev/null
		"$GREYLISTCTL" report --db="$D/none" --html="$D/$n.html" "$D/$n.log" > /dev/null 2> "$D/$n.err"
		expect "report --html ($n): exit 0" 0 $?
		ob_page "$n"
	done
	expect "3 days of log: a bar an hour ($(ob_shown hours bars))" 1 "$(ob_shown hours bars | awk '{ print ($1 >= 72 && $1 <= 74) }')"
	ob_page_checks hours "3 days"
	days=$(ob_shown days bars)
	expect "30 days of log: a bar a day ($days), not 720 an hour" 1 "$(echo "$days" | awk '{ print ($1 == 30 || $1 == 31) }')"
	ob_page_checks days "30 days"
	check "a recipient that is HTML is shown as text, escaped as in the text report, then for HTML" \
		grep -q '<td class="w">\\x3cimg\\x20src=x\\x20onerror=alert(1)\\x3e&quot;&amp;&#39;@dest0.example</td>' "$D/hours.html"
	expect_grep "the page tells the browser to fetch nothing (Content-Security-Policy)" \
		"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\"" "$D/hours.html"
	check "the page is one file of $(stat -c %s "$D/days.html") bytes for 30 days (at most 100 KB)" test "$(stat -c %s "$D/days.html")" -le 102400

	# the network check has teeth: a page that loads an image
	printf '<!DOCTYPE html><html><body><img src="http://192.0.2.1/x.png"></body></html>\n' > "$D/fetch.html"
	ob_chromium --screenshot="$D/fetch.png" --log-net-log="$D/fetch.netlog" "file://$D/fetch.html" > /dev/null 2>&1
	expect "a page with <img src=http://...>: the network log shows its request" "http://192.0.2.1/x.png" \
		"$("$OB_PY" "$OB_SRC/tests/netlog.py" "$D/fetch.netlog")"
	ns_stop

	"$GREYLISTCTL" report --db="$D/none" --html="$D/no/such/dir/x.html" "$D/hours.log" > /dev/null 2> "$D/err"
	expect "--html into a directory that does not exist: exit 1" 1 $?
	expect_grep "and says why" 'greylistctl: .*no/such/dir/x\.html: No such file or directory' "$D/err"
}
