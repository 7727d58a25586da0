# tests/ops.sh - the operator commands: stats, dump, load, expire, report.
# Sourced by test.sh (groups ops, report, expiry).

NOW=$(date +%s)

# dump_sorted DB - the records of a database, sorted, without the header
dump_sorted() { "$GREYLISTD" dump --db="$1" | grep -v '^#' | LC_ALL=C sort; }

# stat_of NAME - one figure from `greylistd stats` of $D/db
stat_of() { "$GREYLISTD" stats --db="$D/db" | sed -n "s/^$1=//p"; }

t_ops() {
	local out rc

	newdir ops
	req client_address=192.0.2.1 sender=alice@a.example recipient=bob@b.example | gl >/dev/null
	req client_address=2001:db8::1 sender= recipient=carol@b.example | gl >/dev/null
	req client_address=198.51.100.7 sender=news-77@c.example recipient=dave@b.example | gl >/dev/null
	req client_address=198.51.100.7 sender=news-78@c.example recipient=dave@b.example \
		| at +400s "$GREYLISTD" --db="$D/db" --log-file="$D/log" >/dev/null
	expect "stats: records (3 triplets, 1 client, 1 note)" 5 "$(stat_of records)"
	expect "stats: triplets" 3 "$(stat_of triplets)"
	expect "stats: pending" 2 "$(stat_of pending)"
	expect "stats: passed" 1 "$(stat_of passed)"
	expect "stats: clients" 1 "$(stat_of clients)"
	expect "stats: file size" "$(stat -c %s "$D/db")" "$(stat_of file_size)"
	case $(stat_of oldest) in 20[0-9][0-9]-*Z) pass "stats: oldest record as a UTC time" ;;
	*) fail "stats: oldest record as a UTC time" "$(stat_of oldest)" ;; esac
	"$GREYLISTD" stats --db="$D/none" > "$D/stats-none"
	expect_grep "stats of a database not made yet: records=0" '^records=0$' "$D/stats-none"

	"$GREYLISTD" dump --db="$D/db" > "$D/dump"
	expect_grep "dump: a header line says the format" '^# greylistd dump 1: T FIRST LAST PASSED NET SENDER RECIPIENT' "$D/dump"
	expect_grep "dump: a pending triplet" '^T [0-9]+ [0-9]+ 0 192\.0\.2\.0 alice@a\.example bob@b\.example$' "$D/dump"
	expect_grep "dump: the null sender as <> and an IPv6 network" '^T [0-9]+ [0-9]+ 0 2001:db8:: <> carol@b\.example$' "$D/dump"
	expect_grep "dump: a passed triplet (normalised sender)" '^T [0-9]+ [0-9]+ [1-9][0-9]+ 198\.51\.100\.0 news-#@c\.example dave@b\.example$' "$D/dump"
	expect_grep "dump: an auto-whitelist client" '^C 1 [0-9]+ 198\.51\.100\.7$' "$D/dump"
	expect_grep "dump: greylistd's own note" '^M [0-9]+ expire$' "$D/dump"

	"$GREYLISTD" load --db="$D/copy" < "$D/dump" > "$D/load.out"; rc=$?
	expect "load into a new database: exit 0" 0 "$rc"
	expect_grep "load says how many" '^5 records loaded, 0 bad lines$' "$D/load.out"
	expect "dump, load, dump gives the same records" "$(dump_sorted "$D/db")" "$(dump_sorted "$D/copy")"

	printf 'T 1 2 0 10.0.0.0 x@y.example z@w.example\n' | "$GREYLISTD" load --db="$D/merge" >/dev/null
	"$GREYLISTD" load --db="$D/merge" < "$D/dump" >/dev/null
	expect "load into an existing database keeps its other records" 6 \
		"$("$GREYLISTD" dump --db="$D/merge" | grep -c '^[TCM] ')"

	printf 'T 1795950000 1795950000 0 192.0.2.0 we\\x20ird\\x3cx\\x3e@a.example b@b.example\nX 5f\\x0a 1\\x20zz\n' \
		| "$GREYLISTD" load --db="$D/odd" >/dev/null
	expect "odd bytes survive load and dump, escaped" \
		'T 1795950000 1795950000 0 192.0.2.0 we\x20ird\x3cx\x3e@a.example b@b.example|X 5f\x0a 1\x20zz' \
		"$(dump_sorted "$D/odd" | tr '\n' '|' | sed 's/|$//')"

	printf 'T 5 2 0 10.0.0.0 a@b c@d\nT x 1 0 10.0.0.0 a@b c@d\nQ 1 2\nT 1 2 0 10.0.0.0 a@b\nT 1 2 0 10.0.0.0 a@b c@d\n' \
		| "$GREYLISTD" load --db="$D/bad" > "$D/bad.out" 2> "$D/bad.err"; rc=$?
	expect "load with bad lines: exit 1" 1 "$rc"
	expect "load names each bad line" \
		"greylistd: stdin:1: times out of order|greylistd: stdin:2: bad number|greylistd: stdin:3: unknown record kind|greylistd: stdin:4: wrong number of fields" \
		"$(tr '\n' '|' < "$D/bad.err" | sed 's/|$//')"
	expect_grep "and loads the good ones" '^1 records loaded, 4 bad lines$' "$D/bad.out"

	"$GREYLISTD" load --db="$D/private" --privacy < "$D/dump" >/dev/null
	check "load --privacy stores digests, no addresses" \
		bash -c "! grep -a -q -e example -e 192.0.2 '$D/private'"
	out=$(req client_address=198.51.100.9 sender=news-99@c.example recipient=dave@b.example \
		| "$GREYLISTD" --db="$D/private" --log-file="$D/log" --privacy | actions)
	expect "and serving with --privacy finds the loaded records" "DUNNO" "$out"
	"$GREYLISTD" dump --db="$D/private" > "$D/private.dump"
	"$GREYLISTD" load --db="$D/private2" --privacy < "$D/private.dump" >/dev/null
	expect "a dump of digests loads as it is" "$(dump_sorted "$D/private")" "$(dump_sorted "$D/private2")"
}

# --- report -----------------------------------------------------------------

# syslog_at OFFSET - a traditional syslog time stamp, OFFSET seconds after
# $BASE, in UTC (report runs with TZ=UTC too)
syslog_at() { TZ=UTC date -d "@$((BASE + $1))" '+%b %e %H:%M:%S'; }

# iso_at OFFSET - the same time as report prints it
iso_at() { TZ=UTC date -d "@$((BASE + $1))" '+%Y-%m-%dT%H:%M:%SZ'; }

t_report() {
	local out BASE=$((NOW - 7200))
	local g='Recipient address rejected: Greylisted, please try again in 300 seconds'

	newdir report
	{
	echo "$(syslog_at 0) mx postfix/smtpd[100]: NOQUEUE: reject: RCPT from mail.a.example[192.0.2.1]: 450 4.7.1 <bob@dest.example>: $g; from=<alice@a.example> to=<bob@dest.example> proto=ESMTP helo=<mail.a.example>"
	echo "$(syslog_at 40) mx postfix/smtpd[100]: NOQUEUE: reject: RCPT from mail.a.example[192.0.2.1]: 450 4.7.1 <bob@dest.example>: $g; from=<alice@a.example> to=<bob@dest.example> proto=ESMTP helo=<mail.a.example>"
	echo "$(syslog_at 60) mx postfix/smtpd[101]: NOQUEUE: reject: RCPT from unknown[2001:db8::5]: 451 4.7.1 <carol@dest.example>: $g; from=<> to=<carol@dest.example> proto=ESMTP helo=<x>"
	echo "$(syslog_at 120) mx postfix/smtpd[102]: NOQUEUE: reject: RCPT from good.example[198.51.100.7]: 450 4.7.1 <dave@dest.example>: $g; from=<news-123@good.example> to=<dave@dest.example> proto=ESMTP helo=<x>"
	echo "$(syslog_at 480) mx greylistd[5]: action=pass, reason=triplet found, delay=360, client_name=good.example, client_address=198.51.100.9, sender=news-456@good.example, recipient=dave@dest.example"
	echo "$(syslog_at 180) mx postfix/smtpd[103]: NOQUEUE: reject: RCPT from x.example[203.0.113.5]: 450 4.1.8 <e@dest.example>: Sender address rejected: Domain not found; from=<e@nodomain> to=<e@dest.example> proto=ESMTP helo=<x>"
	echo "$(syslog_at 540) mx postfix/smtpd[104]: NOQUEUE: reject: RCPT from late.example[203.0.113.9]: 450 4.7.1 <erin@dest.example>: $g; from=<f@late.example> to=<erin@dest.example> proto=ESMTP helo=<x>"
	echo "$(syslog_at 600) mx postfix/smtpd[105]: connect from somewhere[192.0.2.200]"
	} > "$D/mail.log"
	TZ=UTC "$GREYLISTD" report --db="$D/db" "$D/mail.log" > "$D/out"
	expect "report: the IPv4 triplet that gave up, with its two tries" \
		"$(iso_at 0) 2 192.0.2.1 mail.a.example alice@a.example bob@dest.example" "$(sed -n 1p "$D/out")"
	expect "report: the IPv6 null-sender triplet, 451" \
		"$(iso_at 60) 1 2001:db8::5 unknown <> carol@dest.example" "$(sed -n 2p "$D/out")"
	expect "report: the summary (a pass by a /24 neighbour with another VERP number; a 4.1.8 is not greylisting; a defer one minute before the end is pending)" \
		"# deferred=4 passed_later=1 never_retried=2 pending=1 median_delay=360s" "$(tail -n 1 "$D/out")"
	TZ=UTC "$GREYLISTD" report --db="$D/db" --window=30s "$D/mail.log" > "$D/out2"
	expect "--window=30s: the sender that came back after 40 s is pending, the late one is judged" \
		"$(iso_at 60) 1 2001:db8::5 unknown <> carol@dest.example|$(iso_at 540) 1 203.0.113.9 late.example f@late.example erin@dest.example|# deferred=4 passed_later=1 never_retried=2 pending=1 median_delay=360s" \
		"$(tr '\n' '|' < "$D/out2" | sed 's/|$//')"
	TZ=UTC "$GREYLISTD" report --db="$D/db" --top=1 - < "$D/mail.log" > "$D/out3"
	expect "--top 1, from stdin: the top client network and recipient" \
		"# top client networks|      1 192.0.2.0|# top recipients|      1 bob@dest.example" \
		"$(grep -A1 '^# top' "$D/out3" | grep -v '^--' | tr '\n' '|' | sed 's/|$//')"
	TZ=UTC "$GREYLISTD" report --db="$D/db" --since=1h "$D/mail.log" > "$D/out4"
	expect "--since=1h: the lines of two hours ago are left out" \
		"# deferred=0 passed_later=0 never_retried=0 pending=0 median_delay=0s" "$(tail -n 1 "$D/out4")"

	# greylistd's own log, and the database confirming a pass the log lost
	newdir report-own
	{ req client_address=192.0.2.1 sender=a@x.example; req client_address=192.0.2.2 sender=b@x.example recipient=c@y.example;
	  req client_address=2001:db8:1::1 sender= recipient=d@y.example; } | gl >/dev/null
	req client_address=192.0.2.1 sender=a@x.example | at +400s "$GREYLISTD" --db="$D/db" --log-file="$D/passlog" >/dev/null
	req client_address=192.0.2.77 sender=z@x.example recipient=z@y.example \
		| at +400s "$GREYLISTD" --db="$D/db" --log-file="$D/log" >/dev/null
	"$GREYLISTD" report --db="$D/db" "$D/log" > "$D/out"
	expect "report from greylistd's own log: the pass only the database knows counts" \
		"# deferred=4 passed_later=1 never_retried=2 pending=1 median_delay=40Xs" \
		"$(tail -n 1 "$D/out" | sed 's/=40[01]s/=40Xs/')"
	expect_grep "and the null-sender IPv6 triplet is listed" ' 1 2001:db8:1::1 mail\.example\.com <> d@y\.example$' "$D/out"

	if [ -d /run/log/journal ] || [ -d /var/log/journal ]; then
		"$GREYLISTD" report --since=1h > "$D/journal.out"
		expect "report from the journal runs" 0 $?
	else
		"$GREYLISTD" report > "$D/journal.out" 2> "$D/journal.err"
		expect "report without files or journal: exit 1" 1 $?
		expect_grep "and says to name log files" 'no systemd journal to read here' "$D/journal.err"
		# (the journal itself is read in the systemd group, from a
		# private journald)
	fi
}

# --- expiry -----------------------------------------------------------------

t_expiry() {
	local old=$((NOW - 40 * 86400)) rec=$((NOW - 3600)) start end

	newdir expiry
	cat > "$D/in" <<-EOF
	T $((NOW - 3 * 86400)) $((NOW - 3 * 86400)) 0 192.0.2.0 pending@old.example r@x.example
	T $old $old $old 192.0.2.0 passed@idle.example r@x.example
	T $rec $rec $rec 192.0.2.0 passed@recent.example r@x.example
	T $rec $rec 0 192.0.2.0 pending@recent.example r@x.example
	C 9 $old 192.0.2.50
	C 9 $rec 192.0.2.51
	X T\x0a192.0.2.0\x0abad@x\x0ar@x 1\x20oops
	M $((NOW - 2 * 86400)) expire
	EOF
	"$GREYLISTD" load --db="$D/db" < "$D/in" >/dev/null
	"$GREYLISTD" expire --db="$D/db" --log-file="$D/log" > "$D/out"
	expect "expire: 8 seen, 4 deleted" "8 records seen, 4 deleted" "$(cat "$D/out")"
	expect "kept: recent triplets, a recent client, the note" \
		"C 9 $rec 192.0.2.51|M|T $rec $rec 0 192.0.2.0 pending@recent.example r@x.example|T $rec $rec $rec 192.0.2.0 passed@recent.example r@x.example" \
		"$(dump_sorted "$D/db" | sed 's/^M .*/M/' | tr '\n' '|' | sed 's/|$//')"
	expect_grep "expiry is logged" 'expiry of .*: 8 records seen, 4 deleted' "$D/log"

	# Automatic: the first request after a day starts it after answering.
	newdir expiry-auto
	sed 's/^M .*/M '$((NOW - 2 * 86400))' expire/' "$WORK/expiry/in" | "$GREYLISTD" load --db="$D/db" >/dev/null
	out=$(req | gl | actions | cut -c1-15)
	expect "a request on a database due for expiry is answered" "DEFER_IF_PERMIT" "$out"
	expect_grep "and expiry ran after the answer" 'expiry of .*: 9 records seen, 4 deleted' "$D/log"
	expect "the note now says today" 1 "$("$GREYLISTD" dump --db="$D/db" | awk -v now="$NOW" '$1 == "M" && $2 >= now { n++ } END { print n + 0 }')"
	: > "$D/log"
	req sender=other@x.example | gl >/dev/null
	check "it does not run again the same day" bash -c "! grep -q 'expiry of' '$D/log'"

	# A million records: no request waits long while expiry runs.
	newdir expiry-1m
	awk -v now="$NOW" 'BEGIN {
		for (i = 0; i < 1000000; i++)
			printf "T %d %d %d 10.%d.%d.0 s%d@example.com r@example.net\n",
				(i % 10 == 0 ? now - 50 * 86400 : now - 3600),
				(i % 10 == 0 ? now - 50 * 86400 : now - 3500),
				(i % 10 == 0 ? now - 50 * 86400 : now - 3500),
				int(i / 65536) % 256, int(i / 256) % 256, i
		printf "M %d expire\n", now
	}' > "$D/in"
	start=$(date +%s)
	"$GREYLISTD" load --db="$D/db" < "$D/in" > "$D/load.out" 2> "$D/load.err"
	end=$(date +%s)
	expect_grep "a million records load (in $((end - start)) s)" '^1000001 records loaded' "$D/load.out"
	probe_latency "$D/db" "$D/probe" &
	local probe=$!
	sleep 1
	"$GREYLISTD" expire --db="$D/db" --log-file="$D/log" > "$D/expire.out"
	sleep 1
	touch "$D/probe.stop"
	wait $probe
	expect_grep "expiry deletes the 100,000 expired of a million" '^1000001 records seen, 100000 deleted$' "$D/expire.out"
	local max n
	read -r n max < "$D/probe"
	check "no request waited 250 ms or more while it ran ($n requests, longest $max ms)" test "$max" -lt 250
	check "no request failed open" bash -c "! grep -q fail-open '$D/probe.log'"
	expect "and every probe request found its triplet" "$n" "$(grep -c 'reason=triplet found' "$D/probe.log")"
	check "a pass that deletes a tenth of the file does not reorganize it" \
		bash -c "! grep -q reorganiz '$D/log' '$D/expire.out'"

	t_expiry_reorganize
}

# expiry_records N LIVE-PER-TEN - N triplets in load's format, the first
# LIVE-PER-TEN of every ten (i % 10 < it) seen an hour ago, the others
# idle for 50 days; then the note of an expiry two days ago
expiry_records() {
	awk -v now="$NOW" -v n="$1" -v live="$2" 'BEGIN {
		for (i = 0; i < n; i++) {
			t = i % 10 < live ? now - 3600 : now - 50 * 86400
			printf "T %d %d %d 10.%d.%d.0 s%d@example.com r@example.net\n",
				t, t + 100, t + 100, int(i / 65536) % 256, int(i / 256) % 256, i
		}
		printf "M %d expire\n", now - 2 * 86400
	}'
}

# After a flood has expired, most of the file is free for good: the daily
# pass reorganizes it (copies the live records into a new file renamed over
# the old one) while requests go on; a file too big to copy quickly is left
# to `greylistd expire`.
t_expiry_reorganize() {
	local size0 size1 n max ino0 want

	newdir expiry-reorganize
	expiry_records 100000 2 > "$D/in"
	"$GREYLISTD" load --db="$D/db" < "$D/in" > /dev/null
	chmod 640 "$D/db"	# not greylistd's 0600: the copy must take the file's
	size0=$(stat -c %s "$D/db") ino0=$(stat -c %i "$D/db")
	expiry_records 100000 2 | awk '$1 == "T" && $2 > '"$((NOW - 86400))"' { print $5, $6, $7 }' \
		| LC_ALL=C sort > "$D/want"
	# the probe's first request finds the day's expiry due: its child
	# expires and reorganizes while the probe goes on asking
	probe_latency "$D/db" "$D/probe" &
	local probe=$!
	for n in $(seq 300); do
		grep -q 'reorganized\|reorganizing' "$D/probe.log" 2>/dev/null && break
		sleep 0.1
	done
	sleep 0.5
	touch "$D/probe.stop"
	wait $probe
	read -r n max < "$D/probe"
	expect_grep "automatic expiry: 80,000 of 100,000 deleted" \
		'expiry of .*: 100001 records seen, 80000 deleted' "$D/probe.log"
	expect_grep "then the file is reorganized (a fifth of it is left)" \
		"reorganized $D/db: 20001 records, [0-9]+ KiB -> [0-9]+ KiB, [0-9]+ ms" "$D/probe.log"
	size1=$(stat -c %s "$D/db")
	check "the file shrank ($size0 -> $size1 bytes) and is a new one" \
		test "$size1" -lt $((size0 / 3)) -a "$(stat -c %i "$D/db")" != "$ino0"
	check "it keeps the old file's mode (0640)" test "$(stat -c %a "$D/db")" = 640
	expect "every live triplet is still there, and nothing else" "$(cat "$D/want")" \
		"$(dump_sorted "$D/db" | awk '$1 == "T" { print $5, $6, $7 }' | LC_ALL=C sort)"
	check "no request waited 250 ms or more meanwhile ($n requests, longest $max ms)" test "$max" -lt 250
	check "no request failed open" bash -c "! grep -q fail-open '$D/probe.log'"
	expect "every probe request found its triplet, in the old file or the new" "$n" \
		"$(grep -c 'reason=triplet found' "$D/probe.log")"
	check "no copy is left beside it" bash -c "[ \$(ls '$D' | grep -c '^db\.') = 0 ]"
	expect "the note remembers the records left" "M 20001 peak" "$(dump_sorted "$D/db" | grep '^M .* peak$')"
	: > "$D/log"
	"$GREYLISTD" expire --db="$D/db" --log-file="$D/log" > "$D/out"
	expect "a second pass finds nothing to do (20,000 triplets, 2 notes)" "20002 records seen, 0 deleted" "$(cat "$D/out")"

	# Too big for the daily pass: it says what to run; the command does it,
	# knowing from the note how big the file was
	newdir expiry-reorganize-big
	expiry_records 130000 4 | "$GREYLISTD" load --db="$D/db" > /dev/null
	size0=$(stat -c %s "$D/db")
	req | gl > /dev/null
	for n in $(seq 300); do
		grep -q 'expiry of' "$D/log" 2>/dev/null && break
		sleep 0.1
	done
	sleep 0.5
	expect_grep "52,000 records left: the daily pass does not reorganize, and says what to run" \
		"$D/db holds 5200[0-9] records, room for 13000[0-9]: to shrink it, run .greylistd expire. at a quiet time" "$D/log"
	check "and the file is as big as before" test "$(stat -c %s "$D/db")" -ge "$size0"
	"$GREYLISTD" expire --db="$D/db" --log-file="$D/log" > "$D/out"
	want="52003 records seen, 0 deleted"	# 52,001 triplets, 2 notes
	expect "greylistd expire reorganizes it" "$want|reorganized" \
		"$(sed 's/^reorganized: .*/reorganized/' "$D/out" | tr '\n' '|' | sed 's/|$//')"
	size1=$(stat -c %s "$D/db")
	check "the file shrank ($size0 -> $size1 bytes)" test "$size1" -lt $((size0 / 2))
	expect "and holds the 52,000 live triplets and the new one" 52001 "$(dump_sorted "$D/db" | grep -c '^T ')"
}

# probe_latency DB OUT - one connection, a request every 10 ms until
# OUT.stop exists; writes "REQUESTS LONGEST-MS" to OUT
probe_latency() {
	local db=$1 outf=$2 n=0 max=0 t0 t1 line
	coproc PROBE { exec "$GREYLISTD" --db="$db" --log-file="$outf.log" --lock-timeout=10s; }
	while [ ! -e "$outf.stop" ]; do
		t0=$(date +%s%N)
		# a known triplet of the loaded ones (i % 10 != 0, i < 256): the
		# probe reads, and waits as long for the lock as any request
		req client_address=10.0.0.9 sender=s$((n % 25 * 10 + 1))@example.com \
			recipient=r@example.net >&"${PROBE[1]}"
		while IFS= read -r line <&"${PROBE[0]}"; do [ -z "$line" ] && break; done
		t1=$(date +%s%N)
		[ $(( (t1 - t0) / 1000000 )) -gt "$max" ] && max=$(( (t1 - t0) / 1000000 ))
		n=$((n + 1))
		sleep 0.01
	done
	exec {PROBE[1]}>&-
	wait "$PROBE_PID" 2>/dev/null
	echo "$n $max" > "$outf"
}
