# shellcheck shell=bash
# tests/ops.sh - greylistctl, the operator's program: stats, dump, load,
# check, repair, expire, report; and that none of them exits 0 on a partial
# or wrong answer. Sourced by test.sh (groups ops, truth, report, expiry).

NOW=$(date +%s)

# dump_sorted DB - the records of a database, sorted, without the header,
# times in Unix seconds
dump_sorted() { "$GREYLISTCTL" dump --raw --db="$1" | grep -v '^#' | LC_ALL=C sort; }

# stat_of NAME - one figure from `greylistctl stats` of $D/db
stat_of() { "$GREYLISTCTL" stats --db="$D/db" | sed -n "s/^$1=//p"; }

# ops_seed - three triplets (one passed, the null sender from IPv6), one
# client, in $D/db
ops_seed() {
	req client_address=192.0.2.1 sender=alice@a.example recipient=bob@b.example | gl >/dev/null
	req client_address=2001:db8::1 sender= recipient=carol@b.example | gl >/dev/null
	req client_address=198.51.100.7 sender=news-77@c.example recipient=dave@b.example | gl >/dev/null
	req client_address=198.51.100.7 sender=news-78@c.example recipient=dave@b.example \
		| at +400s "$GREYLISTD" --db="$D/db" --log-file="$D/log" >/dev/null
}

t_ops() {
	local out rc notes

	newdir ops
	ops_seed
	notes=$(dump_sorted "$D/db" | grep -c '^M ')
	expect "stats: records (3 triplets, 1 client, the notes)" $((4 + notes)) "$(stat_of records)"
	expect "stats: triplets, pending, passed, clients" "3 2 1 1" \
		"$(stat_of triplets) $(stat_of pending) $(stat_of passed) $(stat_of clients)"
	expect "stats: the key kind" plain "$(stat_of keys)"
	expect "stats: file size" "$(stat -c %s "$D/db")" "$(stat_of file_size)"
	case $(stat_of oldest) in 20[0-9][0-9]-*Z) pass "stats: oldest record as a UTC time" ;;
	*) fail "stats: oldest record as a UTC time" "$(stat_of oldest)" ;; esac

	"$GREYLISTCTL" dump --db="$D/db" > "$D/dump"
	expect_grep "dump: a header line says the format" '^# greylistd dump 2: T FIRST LAST PASSED NET SENDER RECIPIENT' "$D/dump"
	expect "dump: the notes come first, the key kind among them" "M keys plain" "$(sed -n '2,/^[^M]/p' "$D/dump" | grep '^M keys')"
	expect_grep "dump: a pending triplet, times in ISO 8601 UTC" '^T 20[0-9-]{8}T[0-9:]{8}Z 20[0-9-]{8}T[0-9:]{8}Z - 192\.0\.2\.0 alice@a\.example bob@b\.example$' "$D/dump"
	expect_grep "dump: the null sender as <> and an IPv6 network" '^T [^ ]+ [^ ]+ - 2001:db8:: <> carol@b\.example$' "$D/dump"
	expect_grep "dump: a passed triplet (normalised sender)" '^T [^ ]+ [^ ]+ 20[^ ]+Z 198\.51\.100\.0 news-#@c\.example dave@b\.example$' "$D/dump"
	expect_grep "dump: an auto-whitelist client" '^C 1 20[^ ]+Z 198\.51\.100\.7$' "$D/dump"
	expect "dump: the records sorted by key, the notes first" "$(grep -v '^#' "$D/dump" | cut -c1)" \
		"$(grep -v '^#' "$D/dump" | cut -c1 | sort | awk '$1 == "M" { m++; next } { r = r $1 "\n" } END { while (m--) print "M"; printf "%s", r }')"
	"$GREYLISTCTL" dump --raw --db="$D/db" > "$D/dump.raw"
	expect_grep "dump --raw: Unix seconds, 0 for none" '^T [0-9]+ [0-9]+ 0 192\.0\.2\.0 alice@a\.example bob@b\.example$' "$D/dump.raw"

	"$GREYLISTCTL" load --db="$D/copy" < "$D/dump" > "$D/load.out"; rc=$?
	expect "load into a new database: exit 0" 0 "$rc"
	expect_grep "load says how many (the key-kind note is the file's own)" "^$((3 + notes)) records loaded, 0 bad lines\$" "$D/load.out"
	expect "dump, load, dump gives the same records" "$(dump_sorted "$D/db")" "$(dump_sorted "$D/copy")"
	"$GREYLISTCTL" load --db="$D/copy2" < "$D/dump.raw" >/dev/null
	expect "a --raw dump loads the same" "$(dump_sorted "$D/db")" "$(dump_sorted "$D/copy2")"

	printf 'T 1 2 0 10.0.0.0 x@y.example z@w.example\n' | "$GREYLISTCTL" load --db="$D/merge" >/dev/null
	"$GREYLISTCTL" load --db="$D/merge" < "$D/dump" >/dev/null
	expect "load into an existing database keeps its other records" 5 \
		"$(dump_sorted "$D/merge" | grep -c '^[TC] ')"

	printf 'T 1795950000 1795950000 0 192.0.2.0 we\\x20ird\\x3cx\\x3e@a.example b@b.example\n' \
		| "$GREYLISTCTL" load --db="$D/odd" >/dev/null
	expect "odd bytes survive load and dump, escaped" \
		'T 1795950000 1795950000 0 192.0.2.0 we\x20ird\x3cx\x3e@a.example b@b.example' \
		"$(dump_sorted "$D/odd" | grep '^T')"

	ops_load_checks
	ops_privacy
	ops_owner
}

# ops_load_checks - load refuses what the server would never have written,
# naming each line, and loads the rest
ops_load_checks() {
	local rc
	newdir load-bad
	cat > "$D/in" <<-'EOF'
	T 5 2 0 10.0.0.0 a@b c@d
	T x 1 0 10.0.0.0 a@b c@d
	Q 1 2
	T 1 2 0 10.0.0.0 a@b
	T 1 2 0 300.0.0.0 a@b c@d
	T 1 2 0 10.0.0.0 Alice+x@b c@d
	T 1 2 0 10.0.0.0 a@b C@D
	C 1 2 2001:DB8::
	X 5f\x0a 1\x20zz
	M nonsense 5
	T 1 2 0 10.0.0.0 a@b c@d
	EOF
	"$GREYLISTCTL" load --db="$D/db" < "$D/in" > "$D/out" 2> "$D/err"; rc=$?
	expect "load with bad lines: exit 1" 1 "$rc"
	expect "load names each bad line and what is wrong" \
		"stdin:1: times out of order|stdin:2: bad time or number|stdin:3: not a record (T, C or M)|stdin:4: wrong number of fields|stdin:5: the network is not an IP address in canonical form|stdin:6: the sender is not normalised as greylistd stores it|stdin:7: the recipient is not in lower case|stdin:8: the client is not an IP address in canonical form|stdin:9: a record of no known shape (X): not loaded|stdin:10: not a note greylistd keeps" \
		"$(sed 's/^greylistctl: //' "$D/err" | tr '\n' '|' | sed 's/|$//')"
	expect_grep "and loads the good one" '^1 records loaded, 10 bad lines$' "$D/out"
}

# ops_privacy - keyed digests: not the plain SHA-256, different in each
# file; a file of the other kind is refused, never served as new
ops_privacy() {
	local a b plain out
	newdir privacy-ops
	ops_seed
	"$GREYLISTCTL" dump --db="$D/db" > "$D/dump"
	"$GREYLISTCTL" load --db="$D/p1" --privacy < "$D/dump" > /dev/null
	expect "load --privacy: a plain dump goes into a new file as digests" 0 $?
	check "no address in the hashed file" bash -c "! grep -a -q -e example -e 192.0.2 '$D/p1'"
	out=$(req client_address=198.51.100.9 sender=news-99@c.example recipient=dave@b.example \
		| "$GREYLISTD" --db="$D/p1" --log-file="$D/log" --privacy | actions)
	expect "and serving with --privacy finds the loaded records" "DUNNO" "$out"
	expect "stats says the keys are hashed" hmac-sha256 "$("$GREYLISTCTL" stats --db="$D/p1" | sed -n 's/^keys=//p')"

	req client_address=203.0.113.9 sender=s@x.example recipient=r@y.example | gl --db="$D/p2" --privacy >/dev/null
	req client_address=203.0.113.9 sender=s@x.example recipient=r@y.example | gl --db="$D/p3" --privacy >/dev/null
	a=$(dump_sorted "$D/p2" | awk '$1 == "T" { print $5 }')
	b=$(dump_sorted "$D/p3" | awk '$1 == "T" { print $5 }')
	plain=$(printf '203.0.113.0\ns@x.example\nr@y.example' | sha256sum | cut -d' ' -f1)
	check "the stored key is not the plain SHA-256 of the triplet ($a)" test -n "$a" -a "$a" != "$plain"
	check "two files made apart give the same triplet different keys" test -n "$b" -a "$a" != "$b"

	"$GREYLISTCTL" dump --db="$D/p1" > "$D/p1.dump"
	"$GREYLISTCTL" load --db="$D/p4" --privacy < "$D/p1.dump" > /dev/null
	expect "a dump of digests goes into a new file with its secret" "$(dump_sorted "$D/p1")" "$(dump_sorted "$D/p4")"
	"$GREYLISTCTL" load --db="$D/p2" --privacy < "$D/p1.dump" > /dev/null 2> "$D/err"
	expect "but not into a file with another secret (exit 1)" 1 $?
	expect_grep "and says why" "digests under another file's secret" "$D/err"
	"$GREYLISTCTL" load --db="$D/plain" < "$D/p1.dump" > /dev/null 2> "$D/err"
	expect "a dump of digests is refused by a plain file (exit 1)" 1 $?
	expect_grep "and says why" "privacy is off" "$D/err"

	out=$(req | "$GREYLISTD" --db="$D/p1" --log-file="$D/log" | actions)
	expect "a hashed file served without --privacy fails open" DUNNO "$out"
	expect_grep "and logs why" "fail-open \\($D/p1 holds hashed keys but privacy is off" "$D/log"
	out=$(req | "$GREYLISTD" --db="$D/db" --log-file="$D/log" --privacy | actions)
	expect "a plain file served with --privacy fails open" DUNNO "$out"
	expect_grep "and logs why" "fail-open \\($D/db holds plain keys but privacy is on" "$D/log"
	"$GREYLISTCTL" check --db="$D/db" --privacy > "$D/check" 2>&1
	expect "check says so too (exit 1)" 1 $?
	expect_grep "naming the file" "$D/db: holds plain keys, but privacy is on" "$D/check"
}

# ops_owner - root writing a new database gives it the directory's owner
ops_owner() {
	newdir owner
	if [ "$(id -u)" -ne 0 ] || ! id -u nobody >/dev/null 2>&1; then
		skip "ownership of a file root creates" "needs root and the user nobody"; return
	fi
	chmod go+x "$WORK" "$D"		# mktemp made $WORK 0700
	mkdir -m 0750 "$D/state"
	chown nobody:nogroup "$D/state"
	printf 'T 1 2 0 10.0.0.0 a@b c@d\n' | "$GREYLISTCTL" load --db="$D/state/db" > /dev/null
	expect "root's load into a missing file: owned by the directory's owner, mode from it" \
		"nobody 640" "$(stat -c '%U %a' "$D/state/db")"
	out=$(req | setpriv --reuid=nobody --regid=nogroup --clear-groups "$GREYLISTD" --db="$D/state/db" \
		--log-file=/dev/null | actions | cut -c1-15)
	expect "and the service's user can then write it" DEFER_IF_PERMIT "$out"
}

# --- every answer true ------------------------------------------------------

# damage_bucket DB - overwrite 600 bytes inside the bucket of the first
# seeded triplet, as a failing disk would
damage_bucket() {
	local addr
	addr=$(printf 'fetch "T\\n10.0.0.0\\ns1@seed.example\\nr@seed.example"\nbucket\n' \
		| gdbmtool -r "$1" | awk '/^address/ { print $3; exit }')
	head -c 600 /dev/urandom | dd of="$1" bs=1 seek=$((addr + 100)) conv=notrunc status=none
}

# seed_triplets N - N passed triplets sI@seed.example in $D/db
seed_triplets() {
	awk -v now="$NOW" -v n="$1" 'BEGIN {
		for (i = 1; i <= n; i++)
			printf "T %d %d %d 10.%d.%d.0 s%d@seed.example r@seed.example\n",
				now - 900, now - 60, now - 600, int(i / 65536) % 256, int(i / 256) % 256, i
	}' | "$GREYLISTCTL" load --db="$D/db" > /dev/null
}

t_truth() {
	local rc out n t0
	newdir damaged
	seed_triplets 2000
	cp "$D/db" "$D/whole"
	damage_bucket "$D/db"
	n=$(printf 'count\n' | gdbmtool -r "$D/db" 2>/dev/null)
	"$GREYLISTCTL" stats --db="$D/db" > "$D/stats" 2> "$D/stats.err"; rc=$?
	expect "stats of a file with a damaged bucket: exit 1 (GDBM counts $n records)" 1 "$rc"
	expect_grep "and says it is damaged" "is damaged: its records cannot all be read" "$D/stats.err"
	check "and prints no figures" test ! -s "$D/stats"
	"$GREYLISTCTL" dump --db="$D/db" > "$D/backup" 2> "$D/dump.err"; rc=$?
	expect "dump > backup of it: exit 1" 1 "$rc"
	check "and writes no partial backup (nothing on stdout)" test ! -s "$D/backup"
	expect_grep "and says what to do" 'no dump written \(greylistctl dump --recover' "$D/dump.err"
	"$GREYLISTCTL" dump --recover --db="$D/db" > "$D/rescue" 2> "$D/rescue.err"; rc=$?
	expect "dump --recover: what a recovery of a copy keeps; exit 1, since records were lost" 1 "$rc"
	expect_grep "and it says how many it kept" 'dumping what a recovery of a copy kept: [0-9]+ records' "$D/rescue.err"
	check "the file itself is left as it was" cmp -s "$D/db" "$D/db"
	"$GREYLISTCTL" expire --db="$D/db" --log-file="$D/log" > "$D/expire.out" 2>&1; rc=$?
	expect "expire on it: repairs the file and goes on (exit 0)" 0 "$rc"
	expect_grep "and says what it did" 'the database is damaged: repairing it' "$D/expire.out"
	expect_grep "the repair's log line counts what was kept and lost" \
		"warning: database $D/db recovered: [0-9]+ records after, ([0-9]+|an unknown number \(GDBM could not count the damaged file\)) lost; the damaged file is kept as $D/db\.~1~\$" "$D/log"
	cp "$D/whole" "$D/db2"
	damage_bucket "$D/db2"
	"$GREYLISTCTL" repair --db="$D/db2" > "$D/repair.out"; rc=$?
	expect "repair of another damaged copy: exit 0" 0 "$rc"
	expect "and its count of records kept is what a dump then finds" \
		"$(sed -n 's/^recovered: \([0-9]*\) records kept.*/\1/p' "$D/repair.out")" \
		"$(dump_sorted "$D/db2" | grep -c '^[TCM] ')"
	"$GREYLISTCTL" stats --db="$D/db" > /dev/null
	expect "after the repair, stats works again" 0 $?

	newdir repair-whole
	seed_triplets 300
	"$GREYLISTCTL" repair --db="$D/db" > "$D/out"; rc=$?
	expect "repair of a whole file: exit 0, says so, changes nothing" "0 $D/db is whole" "$rc $(cat "$D/out")"

	newdir not-a-db
	"$GREYLISTCTL" stats --db=/typo/x.db > "$D/out" 2> "$D/err"; rc=$?
	expect "stats --db=/typo/x.db: exit 1" 1 "$rc"
	expect_grep "and says there is no database there" 'no database there' "$D/err"
	mkfifo "$D/fifo"
	t0=$(date +%s%N)
	timeout 10 "$GREYLISTCTL" stats --db="$D/fifo" > /dev/null 2> "$D/err"; rc=$?
	expect "stats of a FIFO: exit 1 at once, not a hang" "1 fast" "$rc $( [ $(( ($(date +%s%N) - t0) / 1000000 )) -lt 5000 ] && echo fast)"
	expect_grep "and says why" 'not a regular file' "$D/err"
	t0=$(date +%s%N)
	out=$(req | timeout 10 "$GREYLISTD" --db="$D/fifo" --log-file="$D/log" | actions)
	expect "a FIFO at the server's database path: DUNNO, at once" "DUNNO fast" \
		"$out $( [ $(( ($(date +%s%N) - t0) / 1000000 )) -lt 5000 ] && echo fast)"
	expect_grep "and the reason is logged" "fail-open \\($D/fifo is not a regular file\\)" "$D/log"

	newdir lock-held
	seed_triplets 10
	flock -x "$D/db" sleep 8 & local holder=$!
	sleep 0.3
	"$GREYLISTCTL" dump --db="$D/db" --wait=1s > "$D/out" 2> "$D/err"; rc=$?
	stop $holder
	expect "dump while a writer holds the lock past --wait: exit 1" 1 "$rc"
	check "and no copy taken without the lock (nothing on stdout)" test ! -s "$D/out"
	expect_grep "and says so" 'the lock was not had within 1s' "$D/err"
}

# --- report -----------------------------------------------------------------

# syslog_at OFFSET - a traditional syslog time stamp, OFFSET seconds after
# $BASE, in UTC (report runs with TZ=UTC too)
syslog_at() { TZ=UTC date -d "@$((BASE + $1))" '+%b %e %H:%M:%S'; }

# iso_at OFFSET - the same time as report prints it
iso_at() { TZ=UTC date -d "@$((BASE + $1))" '+%Y-%m-%dT%H:%M:%SZ'; }

# report_log - a Postfix log with greylisting rejects (IPv4, IPv6, null
# senders), a retry that passed, one Postfix logs as delivered, and lines
# that are not greylisting
report_log() {
	local g='Recipient address rejected: Greylisted, please try again in 300 seconds'
	echo "$(syslog_at 0) mx postfix/smtpd[100]: NOQUEUE: reject: RCPT from mail.a.example[192.0.2.1]: 450 4.7.1 <bob@dest.example>: $g; from=<alice@a.example> to=<bob@dest.example> proto=ESMTP helo=<mail.a.example>"
	echo "$(syslog_at 40) mx postfix/smtpd[100]: NOQUEUE: reject: RCPT from mail.a.example[192.0.2.1]: 450 4.7.1 <bob@dest.example>: $g; from=<alice@a.example> to=<bob@dest.example> proto=ESMTP helo=<mail.a.example>"
	echo "$(syslog_at 50) mx postfix/smtpd[100]: NOQUEUE: reject: RCPT from mail.a.example[192.0.2.1]: 450 4.7.1 <zoe@dest.example>: $g; from=<alice@a.example> to=<zoe@dest.example> proto=ESMTP helo=<mail.a.example>"
	echo "$(syslog_at 60) mx postfix/smtpd[101]: NOQUEUE: reject: RCPT from unknown[2001:db8::5]: 451 4.7.1 <carol@dest.example>: $g; from=<> to=<carol@dest.example> proto=ESMTP helo=<x>"
	echo "$(syslog_at 70) mx postfix/smtpd[101]: NOQUEUE: reject: RCPT from unknown[2001:db8::6]: 451 4.7.1 <carl@dest.example>: $g; from=<> to=<carl@dest.example> proto=ESMTP helo=<x>"
	echo "$(syslog_at 120) mx postfix/smtpd[102]: NOQUEUE: reject: RCPT from good.example[198.51.100.7]: 450 4.7.1 <dave@dest.example>: $g; from=<news-123@good.example> to=<dave@dest.example> proto=ESMTP helo=<x>"
	echo "$(syslog_at 480) mx greylistd[5]: action=pass, reason=triplet found, delay=360, client_name=good.example, client_address=198.51.100.9, sender=news-456@good.example, recipient=dave@dest.example"
	echo "$(syslog_at 130) mx postfix/smtpd[106]: NOQUEUE: reject: RCPT from relay.example[203.0.113.20]: 450 4.7.1 <fay@dest.example>: $g; from=<g@relay.example> to=<fay@dest.example> proto=ESMTP helo=<x>"
	echo "$(syslog_at 500) mx postfix/smtpd[106]: 4A1B2C3D4E: client=relay.example[203.0.113.20]"
	echo "$(syslog_at 501) mx postfix/qmgr[7]: 4A1B2C3D4E: from=<g@relay.example>, size=1234, nrcpt=1 (queue active)"
	echo "$(syslog_at 502) mx postfix/local[8]: 4A1B2C3D4E: to=<fay@dest.example>, relay=local, delay=2, delays=1/0/0/1, dsn=2.0.0, status=sent (delivered to mailbox)"
	echo "$(syslog_at 503) mx postfix/qmgr[7]: 4A1B2C3D4E: removed"
	echo "$(syslog_at 180) mx postfix/smtpd[103]: NOQUEUE: reject: RCPT from x.example[203.0.113.5]: 450 4.1.8 <e@dest.example>: Sender address rejected: Domain not found; from=<e@nodomain> to=<e@dest.example> proto=ESMTP helo=<x>"
	echo "$(syslog_at 540) mx postfix/smtpd[104]: NOQUEUE: reject: RCPT from late.example[203.0.113.9]: 450 4.7.1 <erin@dest.example>: $g; from=<f@late.example> to=<erin@dest.example> proto=ESMTP helo=<x>"
	echo "$(syslog_at 600) mx postfix/smtpd[105]: connect from somewhere[192.0.2.200]"
}

t_report() {
	local out BASE=$((NOW - 7200))

	newdir report
	report_log > "$D/mail.log"
	TZ=UTC "$GREYLISTCTL" report --db="$D/db" < "$D/mail.log" > "$D/out" 2> "$D/err"
	expect "report reads the log on stdin and prints postgreyreport's columns, sorted by address" \
		"192.0.2.1 mail.a.example alice@a.example bob@dest.example|192.0.2.1 mail.a.example alice@a.example zoe@dest.example|2001:db8::5 unknown <> carol@dest.example|2001:db8::6 unknown <> carl@dest.example" \
		"$(tr '\n' '|' < "$D/out" | sed 's/|$//')"
	expect_grep "the header goes to stderr" '^# client_address client_name sender recipient: deferred, not retried within 300s$' "$D/err"
	expect "and the summary (a /24 neighbour's pass with another VERP number, Postfix's delivery of a retried message, a 4.1.8 that is not greylisting, a defer one minute before the end)" \
		"# deferred=7 passed_later=2 never_retried=4 pending=1 median_delay=372s" "$(tail -n 1 "$D/err")"
	expect_grep "without a database it says so" 'the database .* could not be read: passes are taken from the log alone' "$D/err"
	expect "the guide's pipeline for the top sources" "      2 192.0.2.1|      1 2001:db8::6|      1 2001:db8::5" \
		"$(TZ=UTC "$GREYLISTCTL" report --delay=300 --db="$D/db" < "$D/mail.log" 2>/dev/null | awk '{print $1}' | sort | uniq -c | sort -nr | head -n20 | tr '\n' '|' | sed 's/|$//')"
	expect "and for the top recipients" "      1 zoe@dest.example|      1 carol@dest.example|      1 carl@dest.example|      1 bob@dest.example" \
		"$(cat "$D/mail.log" | TZ=UTC "$GREYLISTCTL" report --delay=300 --db="$D/db" 2>/dev/null | awk '{print $4}' | sort | uniq -c | sort -nr | head -n20 | tr '\n' '|' | sed 's/|$//')"
	out=$(TZ=UTC "$GREYLISTCTL" report --db="$D/db" --show_time --show_tries --tab < "$D/mail.log" 2>/dev/null | head -n 1)
	expect "--show_time --show_tries --tab: the time and the tries in front, tab-separated" \
		"$(iso_at 0)	2	192.0.2.1	mail.a.example	alice@a.example	bob@dest.example" "$out"
	out=$(TZ=UTC "$GREYLISTCTL" report --db="$D/db" --delay=30 < "$D/mail.log" 2>&1 >/dev/null | tail -n 1)
	expect "--delay=30 (postgreyreport's name for the window): the sender back after 40 s is pending, the late one judged" \
		"# deferred=7 passed_later=2 never_retried=4 pending=1 median_delay=372s" "$out"
	out=$(TZ=UTC "$GREYLISTCTL" report --db="$D/db" --separate_by_subnet='==\n' < "$D/mail.log" 2>/dev/null | tr '\n' '|')
	expect "--separate_by_subnet prints its text before each network" \
		"==|192.0.2.1 mail.a.example alice@a.example bob@dest.example|192.0.2.1 mail.a.example alice@a.example zoe@dest.example|==|2001:db8::5 unknown <> carol@dest.example|2001:db8::6 unknown <> carl@dest.example|" "$out"
	printf '192.0.2.0/24\n' > "$D/skip"
	out=$(TZ=UTC "$GREYLISTCTL" report --db="$D/db" --skip_clients="$D/skip" < "$D/mail.log" 2>/dev/null | cut -d' ' -f1 | sort -u | tr '\n' ' ')
	expect "--skip_clients leaves out the clients in a postgrey client file" "2001:db8::5 2001:db8::6 " "$out"
	out=$(TZ=UTC "$GREYLISTCTL" report --db="$D/db" --match_clients="$D/skip" < "$D/mail.log" 2>/dev/null | cut -d' ' -f1 | sort -u | tr '\n' ' ')
	expect "--match_clients keeps only those" "192.0.2.1 " "$out"
	TZ=UTC "$GREYLISTCTL" report --db="$D/db" --top=1 < "$D/mail.log" > "$D/out3" 2>/dev/null
	expect "--top 1: the top client network (with its prefix) and recipient" \
		"# top client networks|      2 192.0.2.0/24|# top recipients|      1 bob@dest.example" \
		"$(grep -A1 '^# top' "$D/out3" | grep -v '^--' | tr '\n' '|' | sed 's/|$//')"
	out=$(TZ=UTC "$GREYLISTCTL" report --db="$D/db" --since=1h "$D/mail.log" 2>&1 >/dev/null | tail -n 1)
	expect "--since=1h: the lines of two hours ago are left out" \
		"# deferred=0 passed_later=0 never_retried=0 pending=0 median_delay=0s" "$out"
	"$GREYLISTCTL" report --db="$D/db" < /dev/null > "$D/none.out" 2> "$D/none.err"
	expect "report of empty input: exit 1" 1 $?
	expect_grep "and says there was nothing to read" 'nothing to read' "$D/none.err"

	# greylistd's own log, and the database confirming a pass the log lost
	newdir report-own
	{ req client_address=192.0.2.1 sender=a@x.example; req client_address=192.0.2.2 sender=b@x.example recipient=c@y.example;
	  req client_address=2001:db8:1::1 sender= recipient=d@y.example; } | gl >/dev/null
	req client_address=192.0.2.1 sender=a@x.example | at +400s "$GREYLISTD" --db="$D/db" --log-file="$D/passlog" >/dev/null
	req client_address=192.0.2.77 sender=z@x.example recipient=z@y.example \
		| at +400s "$GREYLISTD" --db="$D/db" --log-file="$D/log" >/dev/null
	"$GREYLISTCTL" report --db="$D/db" "$D/log" > "$D/out" 2> "$D/err"
	expect "report from greylistd's own log: the pass only the database knows counts" \
		"# deferred=4 passed_later=1 never_retried=2 pending=1 median_delay=40Xs" \
		"$(tail -n 1 "$D/err" | sed 's/=40[01]s/=40Xs/')"
	expect_grep "and the null-sender IPv6 triplet is listed" '^2001:db8:1::1 mail\.example\.com <> d@y\.example$' "$D/out"
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
	M expire $((NOW - 2 * 86400))
	EOF
	"$GREYLISTCTL" load --db="$D/db" < "$D/in" >/dev/null
	printf 'store "T\\n192.0.2.0\\nbad@x\\nr@x" "1 oops"\n' | gdbmtool "$D/db"
	"$GREYLISTCTL" expire --db="$D/db" --log-file="$D/log" > "$D/out"
	expect "expire: 9 seen (with the notes), 4 deleted (one of another shape)" "9 records seen, 4 deleted" "$(cat "$D/out")"
	expect "kept: recent triplets, a recent client, the notes" \
		"C 9 $rec 192.0.2.51|M|M|T $rec $rec 0 192.0.2.0 pending@recent.example r@x.example|T $rec $rec $rec 192.0.2.0 passed@recent.example r@x.example" \
		"$(dump_sorted "$D/db" | sed 's/^M .*/M/' | tr '\n' '|' | sed 's/|$//')"
	expect_grep "expiry is logged" 'info: expiry of .*: 9 records seen, 4 deleted' "$D/log"

	# Automatic: the first request after a day starts it after answering.
	newdir expiry-auto
	"$GREYLISTCTL" load --db="$D/db" < "$WORK/expiry/in" >/dev/null
	out=$(req | gl | actions | cut -c1-15)
	expect "a request on a database due for expiry is answered" "DEFER_IF_PERMIT" "$out"
	expect_grep "and expiry ran after the answer (greylistctl maintain)" 'expiry of .*: [0-9]+ records seen, 3 deleted' "$D/log"
	expect "the note now says today" 1 "$(dump_sorted "$D/db" | awk -v now="$NOW" '$1 == "M" && $2 == "expire" && $3 >= now { n++ } END { print n + 0 }')"
	: > "$D/log"
	req sender=other@x.example | gl >/dev/null
	check "it does not run again the same day" bash -c "! grep -q 'expiry of' '$D/log'"
	"$GREYLISTCTL" expire --if-due --db="$D/db" > "$D/out"
	expect "expire --if-due: nothing due today" "no expiry due" "$(cat "$D/out")"

	# A million records: no request waits long while expiry runs.
	newdir expiry-1m
	awk -v now="$NOW" 'BEGIN {
		for (i = 0; i < 1000000; i++)
			printf "T %d %d %d 10.%d.%d.0 s%d@example.com r@example.net\n",
				(i % 10 == 0 ? now - 50 * 86400 : now - 3600),
				(i % 10 == 0 ? now - 50 * 86400 : now - 3500),
				(i % 10 == 0 ? now - 50 * 86400 : now - 3500),
				int(i / 65536) % 256, int(i / 256) % 256, i
		printf "M expire %d\n", now
	}' > "$D/in"
	start=$(date +%s)
	"$GREYLISTCTL" load --db="$D/db" < "$D/in" > "$D/load.out" 2> "$D/load.err"
	end=$(date +%s)
	expect_grep "a million records load (in $((end - start)) s)" '^1000001 records loaded' "$D/load.out"
	probe_latency "$D/db" "$D/probe" &
	local probe=$!
	sleep 1
	"$GREYLISTCTL" expire --db="$D/db" --log-file="$D/log" > "$D/expire.out"
	sleep 1
	touch "$D/probe.stop"
	wait $probe
	expect_grep "expiry deletes the 100,000 expired of a million" '^100000[0-9] records seen, 100000 deleted$' "$D/expire.out"
	local max n
	read -r n max < "$D/probe"
	# The contract is the default --lock-timeout (2 s): a request that
	# waited longer would have failed open. Expiry's slices are far
	# shorter; the bound is that contract, not their length, so that a
	# loaded machine does not fail the check.
	check "no request waited as long as the default lock-timeout (2 s) while it ran ($n requests, longest $max ms)" test "$max" -lt 2000
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
		printf "M expire %d\n", now - 2 * 86400
	}'
}

# After a flood has expired, most of the file is free for good: the daily
# pass reorganizes it (copies the live records into a new file renamed over
# the old one) while requests go on; a file too big to copy quickly is left
# to `greylistctl expire`.
t_expiry_reorganize() {
	local size0 size1 n max ino0

	newdir expiry-reorganize
	expiry_records 100000 2 > "$D/in"
	"$GREYLISTCTL" load --db="$D/db" < "$D/in" > /dev/null
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
		'expiry of .*: 10000[0-9] records seen, 80000 deleted' "$D/probe.log"
	expect_grep "then the file is reorganized (a fifth of it is left)" \
		"info: reorganized $D/db: 2000[0-9] records, [0-9]+ KiB -> [0-9]+ KiB, [0-9]+ ms" "$D/probe.log"
	size1=$(stat -c %s "$D/db")
	check "the file shrank ($size0 -> $size1 bytes) and is a new one" \
		test "$size1" -lt $((size0 / 3)) -a "$(stat -c %i "$D/db")" != "$ino0"
	check "it keeps the old file's mode (0640)" test "$(stat -c %a "$D/db")" = 640
	expect "every live triplet is still there, and nothing else" "$(cat "$D/want")" \
		"$(dump_sorted "$D/db" | awk '$1 == "T" { print $5, $6, $7 }' | LC_ALL=C sort)"
	check "no request waited as long as the default lock-timeout (2 s) meanwhile ($n requests, longest $max ms)" test "$max" -lt 2000
	check "no request failed open" bash -c "! grep -q fail-open '$D/probe.log'"
	expect "every probe request found its triplet, in the old file or the new" "$n" \
		"$(grep -c 'reason=triplet found' "$D/probe.log")"
	check "no copy is left beside it" bash -c "[ \$(ls -A '$D' | grep -c '^\.\?db\.') = 0 ]"
	expect "the note remembers the records left" "M peak 2000X" "$(dump_sorted "$D/db" | grep '^M peak' | sed 's/ 2000[0-9]$/ 2000X/')"
	: > "$D/log"
	"$GREYLISTCTL" expire --db="$D/db" --log-file="$D/log" > "$D/out"
	expect "a second pass finds nothing to do" "0 deleted" "$(sed 's/.* seen, //' "$D/out")"

	# Too big for the daily pass: it says what to run; the command does it,
	# knowing from the note how big the file was
	newdir expiry-reorganize-big
	expiry_records 130000 4 | "$GREYLISTCTL" load --db="$D/db" > /dev/null
	size0=$(stat -c %s "$D/db")
	req | gl > /dev/null
	expect_grep "52,000 records left: the daily pass does not reorganize, and says what to run" \
		"$D/db holds 5200[0-9] records, room for 13000[0-9]: to shrink it, run .greylistctl expire. at a quiet time" "$D/log"
	check "and the file is as big as before" test "$(stat -c %s "$D/db")" -ge "$size0"
	"$GREYLISTCTL" expire --db="$D/db" --log-file="$D/log" > "$D/out"
	expect "greylistctl expire reorganizes it" "0 deleted|reorganized" \
		"$(sed -e 's/^reorganized: .*/reorganized/' -e 's/.* seen, //' "$D/out" | tr '\n' '|' | sed 's/|$//')"
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
	# shellcheck disable=SC1083,SC2093 # bash closes the fd in PROBE[1]; shellcheck 0.9 reads {PROBE[1]} as a word
	exec {PROBE[1]}>&-
	wait "$PROBE_PID" 2>/dev/null
	echo "$n $max" > "$outf"
}
