# shellcheck shell=bash
# tests/beyond.sh - what no other greylister does: learning before
# enforcing (group learn), explaining a decision (explain), deferring a
# whole message at DATA (deferdata) and importing postgrey's database
# (pgimport). Sourced by test.sh.

# --- learning before enforcing -------------------------------------------------

t_learn() {
	local out

	newdir learn
	out=$( { req; req recipient=carol@example.net; req recipient=postmaster@example.net; } \
		| gl --learn | actions | tr '\n' ' ')
	expect "--learn: new triplets are answered DUNNO" "DUNNO DUNNO DUNNO " "$out"
	expect_grep "and logged with what enforcing would have done" \
		'action=pass, reason=learning \(would greylist: new\), client_name=mail.example.com, client_address=192.0.2.10, sender=alice@example.com, recipient=bob@example.net$' "$D/log"
	expect_grep "a whitelisted recipient is logged as always" \
		'action=pass, reason=recipient whitelist, .*recipient=postmaster@example.net$' "$D/log"
	expect "the triplets are recorded as passed (PASSED set)" 2 \
		"$("$GREYLISTCTL" dump --db="$D/db" --raw | awk '$1 == "T" && $4 > 0' | wc -l)"
	out=$(req | at +7d "$GREYLISTD" --db="$D/db" --log-file="$D/log" | actions)
	expect "a week later, enforcing: a triplet seen while learning passes at once, without a header" "DUNNO" "$out"
	expect_grep "as triplet found" 'action=pass, reason=triplet found, client_name=mail.example.com, client_address=192.0.2.10, sender=alice@example.com, recipient=bob@example.net$' "$D/log"
	out=$(req recipient=dave@example.net | at +7d "$GREYLISTD" --db="$D/db" --log-file="$D/log" | actions | cut -c1-15)
	expect "a triplet not seen while learning is greylisted" "DEFER_IF_PERMIT" "$out"
	out=$(req recipient=carol@example.net | at +36d "$GREYLISTD" --db="$D/db" --log-file="$D/log" | actions | cut -c1-15)
	expect "a learned triplet idle longer than max-age starts over" "DEFER_IF_PERMIT" "$out"

	newdir learn-early
	req | gl >/dev/null
	out=$(req | at +100s "$GREYLISTD" --db="$D/db" --log-file="$D/log" --learn | actions)
	expect "a pending triplet's early retry, learning: DUNNO" "DUNNO" "$out"
	expect_grep "logged as the early retry it would have been" \
		'action=pass, reason=learning \(would greylist: early-retry \((199|200)s missing\)\), ' "$D/log"
	out=$(req | at +200s "$GREYLISTD" --db="$D/db" --log-file="$D/log" | actions)
	expect "and recorded as passed: enforcing passes it before the delay is over" "DUNNO" "$out"

	newdir learn-awl
	for i in 1 2 3 4 5 6; do
		req recipient=r$i@example.net | at "+$((i * 3700))s" "$GREYLISTD" --db="$D/db" --log-file="$D/log" --learn >/dev/null
	done
	expect "learning counts no client towards the auto-whitelist (no C record after six triplets, hours apart)" 0 \
		"$("$GREYLISTCTL" dump --db="$D/db" | grep -c '^C ')"
	out=$(req recipient=new@example.net | at +8h "$GREYLISTD" --db="$D/db" --log-file="$D/log" | actions | cut -c1-15)
	expect "so the client's new triplet is greylisted once enforcing" "DEFER_IF_PERMIT" "$out"

	newdir learn-conf
	printf 'learn = yes\n' > "$D/conf"
	out=$(req | gl --config="$D/conf" | actions)
	expect "learn = yes in the configuration file" "DUNNO" "$out"
	out=$(printf -- '--grey 192.0.2.10 alice@example.com bob2@example.net\n' | gl --config="$D/conf" --greylistd-protocol)
	expect "Debian greylistd's protocol, learning: false (do not defer)" "false" "$out"
	expect_grep "and logged as learning" 'reason=learning \(would greylist: new\), client_address=192.0.2.10, sender=alice@example.com, recipient=bob2@example.net' "$D/log"

	newdir learn-report
	{ req; req recipient=carol@example.net; req; req recipient=postmaster@example.net; } | gl --learn >/dev/null
	"$GREYLISTCTL" report --db="$D/db" "$D/log" > "$D/out" 2> "$D/err"
	expect "report on a learning log: exit 0" 0 $?
	expect "it lists the triplets enforcing would have deferred, in postgreyreport's columns" \
		"192.0.2.10 mail.example.com alice@example.com bob@example.net|192.0.2.10 mail.example.com alice@example.com carol@example.net" \
		"$(paste -sd'|' "$D/out")"
	expect_grep "its summary counts them as would_delay" '^# deferred=0 passed_later=0 never_retried=0 pending=0 median_delay=0s would_delay=2$' "$D/err"
	"$GREYLISTCTL" report --db="$D/db" --show_tries "$D/log" > "$D/out" 2>/dev/null
	expect "--show_tries counts the learning lines" "1 1" "$(cut -d' ' -f1 "$D/out" | tr '\n' ' ' | sed 's/ $//')"
}

# --- explaining a decision --------------------------------------------------------

# frozen EPOCH CMD... - run CMD with the wall clock stopped at EPOCH
frozen() {
	local t=$1; shift
	FAKETIME_DONT_FAKE_MONOTONIC=1 faketime -f "$(date -d "@$t" '+%Y-%m-%d %H:%M:%S')" "$@"
}

# ex EPOCH [OPTIONS...] - greylistctl explain of the test's request at EPOCH
ex() {
	local t=$1; shift
	frozen "$t" "$GREYLISTCTL" explain --db="$D/db" --client-address=198.51.100.7 \
		--client-name=mx.sender.example --sender=Alice+news@sender.example \
		--recipient=bob@dest.example "$@"
}

# rq EPOCH [REQ-ARGS...] -- [OPTIONS...] - the same request to greylistd at EPOCH
rq() {
	local t=$1 a=(); shift
	while [ $# -gt 0 ] && [ "$1" != -- ]; do a+=("$1"); shift; done
	[ $# -gt 0 ] && shift
	req client_address=198.51.100.7 client_name=mx.sender.example \
		sender=Alice+news@sender.example recipient=bob@dest.example "${a[@]}" \
		| frozen "$t" "$GREYLISTD" --db="$D/db" --log-file="$D/log" "$@"
}

# answer_of - explain's answer line, as a decision line starts
answer_of() { sed -n 's/^answer  *//p'; }

# logged - greylistd's last decision, without the request's attributes
logged() { grep 'action=' "$D/log" | tail -n 1 | sed 's/^.*greylistd\[[0-9]*\]: //; s/, client_name=.*//'; }

# agree NAME EPOCH [ATTR=VALUE...] [-- OPTIONS...] - explain at EPOCH says
# what a request (with these attributes) to greylistd at EPOCH then logs;
# the options go to both
agree() {
	local name=$1 t=$2 said x; shift 2
	local o=() r=() e=() seen=
	for x in "$@"; do
		if [ "$x" = -- ]; then seen=1
		elif [ -n "$seen" ]; then o+=("$x")
		else r+=("$x"); e+=("--$(echo "${x%%=*}" | tr _ -)=${x#*=}"); fi
	done
	said=$(ex "$t" "${e[@]}" "${o[@]}" | answer_of)
	rq "$t" "${r[@]}" -- "${o[@]}" > /dev/null
	expect "$name: explain says [$said], greylistd logs it" "$said" "$(logged)"
}

t_explain() {
	local t0 out when sum

	newdir explain
	t0=$(( $(date +%s) / 60 * 60 ))
	out=$(ex $t0)
	expect "explain: exit 0" 0 $?
	check "explain writes nothing: no database made" test ! -e "$D/db"
	expect "the normalised triplet" "network 198.51.100.0, sender alice@sender.example, recipient bob@dest.example" \
		"$(echo "$out" | sed -n 's/^triplet  *//p')"
	expect "its key, escaped as dump shows it" 'T\x0a198.51.100.0\x0aalice@sender.example\x0abob@dest.example' \
		"$(echo "$out" | sed -n 's/^key  *//p')"
	expect "the client key" 'C\x0a198.51.100.7' "$(echo "$out" | sed -n 's/^client key  *//p')"
	expect "no whitelist entry" "none matched" "$(echo "$out" | sed -n 's/^whitelist  *//p')"
	expect "no record" "none" "$(echo "$out" | sed -n 's/^record  *//p')"
	agree "a new triplet" $t0
	agree "an early retry" $((t0 + 100))
	out=$(ex $((t0 + 100)))
	expect_grep "explain says what the next request writes, with readable times" \
		"^writes +nothing$" <(echo "$out")
	expect_grep "and the stored record, with readable times" \
		"^record +first $(date -u -d "@$t0" +%Y-%m-%dT%H:%M:%SZ) \(100s ago\), last .*, passed -$" <(echo "$out")
	when=$(echo "$out" | sed -n 's/^  from \([^ ]*\): action=pass, reason=triplet found, delay=300$/\1/p')
	expect "and from when the answer changes: the delay's end" \
		"$(date -u -d "@$((t0 + 300))" +%Y-%m-%dT%H:%M:%SZ)" "$when"
	expect_grep "and, with no retry, when the retry window ends" \
		"^  from $(date -u -d "@$((t0 + 2 * 86400 + 1))" +%Y-%m-%dT%H:%M:%SZ): action=greylist, reason=new$" <(echo "$out")
	sum=$(md5sum < "$D/db")
	ex $((t0 + 100)) > /dev/null
	expect "explain leaves the database as it was" "$sum" "$(md5sum < "$D/db")"
	agree "a second before the change" $((t0 + 299))
	agree "at the change" $((t0 + 300))
	agree "a later message of the passed triplet" $((t0 + 400))

	printf '# clients\nclient 203.0.113.0/24\n' > "$D/wl"
	out=$(frozen $((t0 + 500)) "$GREYLISTCTL" explain --db="$D/db" --whitelist="$D/wl" \
		--client-address=203.0.113.9 --sender=x@y.example --recipient=z@dest.example)
	expect "a whitelist entry is shown as FILE:LINE with its value" "$D/wl:2: client 203.0.113.0/24" \
		"$(echo "$out" | sed -n 's/^whitelist  *//p')"
	said=$(echo "$out" | answer_of)
	req client_address=203.0.113.9 sender=x@y.example recipient=z@dest.example | gl --whitelist="$D/wl" >/dev/null
	expect "a whitelisted client: explain says [$said], greylistd logs it" "$said" "$(logged)"
	out=$(ex $((t0 + 600)) --recipient=postmaster@dest.example)
	expect "the built-in entries are named so" "(built-in): recipient postmaster@" \
		"$(echo "$out" | sed -n 's/^whitelist  *//p')"

	out=$(ex $((t0 + 4000)) --recipient=carol@dest.example --auto-whitelist-clients=1)
	expect_grep "the client's auto-whitelist count" \
		"^awl +client 198.51.100.7: 1 passes counted, 1 make it whitelisted; last counted $(date -u -d "@$((t0 + 300))" +%Y-%m-%dT%H:%M:%SZ) " <(echo "$out")
	agree "an auto-whitelisted client" $((t0 + 4000)) recipient=carol@dest.example -- --auto-whitelist-clients=1
	agree "learning" $((t0 + 4000)) recipient=dave@dest.example -- --learn
	agree "a client_address that is no IP address" $((t0 + 4000)) client_address=unknown

	newdir explain-privacy
	rq $t0 -- --privacy > /dev/null
	out=$(ex $((t0 + 10)) --privacy)
	expect_grep "--privacy: the key is the digest the file holds" '^key +T\\x0a[0-9a-f]{64}$' <(echo "$out")
	expect "and is the one in the file" "$(echo "$out" | sed -n 's/^key  *T\\x0a//p')" \
		"$("$GREYLISTCTL" dump --db="$D/db" --privacy | awk '$1 == "T" { print $5 }')"
	agree "--privacy: an early retry" $((t0 + 10)) -- --privacy
	ex $((t0 + 20)) > "$D/out" 2> "$D/err"
	expect "a file of the other key kind: explain exits 1" 1 $?
	expect_grep "and says the server fails open" 'holds hashed keys but privacy is off: the server fails open' "$D/err"
	rq $((t0 + 20)) > /dev/null
	expect_grep "as the server then does" 'action=pass, reason=fail-open \(.*holds hashed keys but privacy is off' "$D/log"

	"$GREYLISTCTL" explain --db="$D/db" --client-address=198.51.100.7 --sender=a@b.example > /dev/null 2> "$D/err"
	expect "explain without --recipient: exit 64" 64 $?
	expect_grep "and says what it needs" 'explain needs --client-address, --sender and --recipient' "$D/err"
}

# --- never splitting a message: --defer-at=data, with a real Postfix -------------

# dd_send TAG - one message from 198.51.100.20 to three recipients of
# dest.test, two of them known; the transcript is $PF_DIR/TAG.smtp, the
# replies to RCPT TO and DATA are left in DD_RCPT and DD_DATA
dd_send() {
	local tag=$1
	pf_in swaks --server 127.0.0.1 --port "$PF_SMTP_PORT" --helo "$tag.client.test" \
		--xclient "ADDR=198.51.100.20 NAME=$PF_NAME" --from "$PF_FROM" \
		--to known1@dest.test,known2@dest.test,new@dest.test \
		--header "Subject: greylistd $tag" > "$PF_DIR/$tag.smtp" 2>&1
	DD_RCPT=$(sed -n '/^ *-> RCPT TO:/{n;s/^<[-*~]* *\([0-9]*\).*/\1/p;}' "$PF_DIR/$tag.smtp" | tr '\n' ' ' | sed 's/ $//')
	DD_DATA=$(sed -n '/^ *-> DATA$/{n;s/^<[-*~]* *//p;}' "$PF_DIR/$tag.smtp")
}

# dd_instance NAME [GREYLISTD-OPTIONS] - a private Postfix whose policy
# service is also asked at DATA (smtpd_data_restrictions), with known1@ and
# known2@ passed triplets of 198.51.100.0/24 in greylistd's database;
# started, or false with DD_WHY
dd_instance() {
	local name=$1 opts=$2 now
	pf_setup "$name" || { DD_WHY="no free loopback port"; return 1; }
	sed -i "s|--delay=${PF_DELAY}s\$|--delay=${PF_DELAY}s $opts|" "$PF_DIR"/etc/master.cf
	printf 'smtpd_data_restrictions =\n    check_policy_service { unix:private/greylistd, default_action=DUNNO }\n' \
		>> "$PF_DIR"/etc/main.cf
	now=$(date +%s)
	printf 'T %s %s %s 198.51.100.0 %s known%s@dest.test\n' \
		$((now - 9000)) $((now - 60)) $((now - 8000)) "$PF_FROM" 1 \
		$((now - 9000)) $((now - 60)) $((now - 8000)) "$PF_FROM" 2 \
		| "$GREYLISTCTL" load --db="$PF_DIR"/gl/greylistd.db > "$PF_DIR"/load.out 2>&1 \
		|| { DD_WHY="greylistctl load: $(cat "$PF_DIR"/load.out)"; return 1; }
	pf_start || { DD_WHY=$PF_WHY; return 1; }
}

# dd_rcpts TAG - the recipients smtp-sink received message TAG for
dd_rcpts() {
	local f
	f=$(pf_dump "$1")
	[ -n "$f" ] || { echo none; return; }
	sed -n 's/^X-Rcpt-Args: <\([^>]*\)>.*/\1/p' "$f" | sort | tr '\n' ' ' | sed 's/ $//'
}

# dd_stop - stop the instance; fail when a process of it is left
dd_stop() {
	local left
	pf_stop
	left=$(pf_processes)
	[ -z "$left" ] || { fail "$1: no process left behind" "$left"; kill $left 2>/dev/null; }
}

t_deferdata() {
	local why old_trap=() t0 L out

	newdir deferdata-pipe
	out=$( { req instance=m1 recipient=a@x.example; req instance=m1 recipient=b@x.example;
		req instance=m1 protocol_state=DATA recipient=; } | gl --defer-at=data | actions)
	expect "defer-at=data: RCPT DUNNO, DUNNO; DATA deferred with the text of the recipients' deferral" \
		"DUNNO|DUNNO|DEFER_IF_PERMIT Greylisted, please try again in 300 seconds" "$(echo "$out" | paste -sd'|')"
	newdir deferdata-warn
	{ req instance=m1; req instance=m2 recipient=c@x.example; req instance=m3 recipient=d@x.example; } \
		| gl --defer-at=data > /dev/null
	expect "deferrals that never meet a DATA request are said, once per connection" 1 \
		"$(grep -c 'warning: defer-at = data: a message.s 1 deferred recipients met no DATA request, and none has come on this connection: check_policy_service must be in smtpd_data_restrictions' "$D/log")"
	newdir deferdata-milter
	gl --milter < tests/milter-captures/postfix-2.bin > "$D/plain" 2>&1
	rm -f "$D/db"
	gl --milter --defer-at=data < tests/milter-captures/postfix-2.bin > "$D/data" 2>&1
	check "the milter answers at RCPT as before (Postfix's capture: the same bytes with defer-at=data)" cmp "$D/plain" "$D/data"
	check "(and those are two 451s)" test "$(grep -c 'y451 4.7.1' <(tr '\0' '\n' < "$D/data"))" -eq 2
	out=$(printf -- '--grey 192.0.2.10 alice@example.com bob@example.net\n' | gl --greylistd-protocol --defer-at=data)
	expect "Debian greylistd's protocol answers at once as before: true" "true" "$out"
	out=$(req recipient=e@x.example | gl --exim --defer-at=data | actions | cut -c1-15)
	expect "--exim (one request a connection) defers at RCPT as before" "DEFER_IF_PERMIT" "$out"
	gl --defer-at=later < /dev/null 2> "$D/err"
	expect "defer-at takes rcpt or data: another word is refused (exit 64)" 64 $?

	if why=$(pf_cannot_run); then skip "defer-at=data with Postfix" "$why"; return; fi
	# shellcheck disable=SC2034 # tests/postfix.sh's
	PF_MASTER='' PF_SINK=''
	eval "old_trap=($(trap -p EXIT))"
	# shellcheck disable=SC2064 # the old command is wanted as it is now
	trap "pf_stop; ${old_trap[2]:-}" EXIT

	if ! dd_instance pf-data --defer-at=data; then
		fail "defer-at=data: a private Postfix runs" "$DD_WHY"
	else
		dd_send dd-first
		t0=$(date +%s)
		expect "defer-at=data: every RCPT TO gets 250, the new recipient's too" "250 250 250" "$DD_RCPT"
		expect "and DATA gets 450: the whole message is deferred" \
			"450 4.7.1 <DATA>: Data command rejected: Greylisted, please try again in $PF_DELAY seconds" "$DD_DATA"
		expect "no recipient got the message alone" none "$(dd_rcpts dd-first)"
		while [ "$(date +%s)" -le $((t0 + PF_DELAY)) ]; do sleep 0.2; done
		dd_send dd-retry
		expect "the retry after the delay: RCPT TO 250 for all three" "250 250 250" "$DD_RCPT"
		expect "and DATA 354" "354 End data with <CR><LF>.<CR><LF>" "$DD_DATA"
		expect "one message, delivered to all three at once" \
			"known1@dest.test known2@dest.test new@dest.test" "$(dd_rcpts dd-retry)"
		check "with the X-Greylist header of the new recipient's first pass" \
			grep -q '^X-Greylist: delayed ' "$(pf_dump dd-retry)"
		dd_stop "defer-at=data"
		L=$PF_DIR/gl/greylistd.log
		expect_grep "greylistd logged the new recipient's deferral at RCPT" \
			"action=greylist, reason=new, client_name=${PF_NAME//./\\.}, client_address=198\.51\.100\.20, sender=$PF_FROM, recipient=new@dest\.test\$" "$L"
		expect_grep "and the message's at DATA" \
			"action=greylist, reason=defer-at-data \(1 of 3 recipients greylisted\), client_name=${PF_NAME//./\\.}, client_address=198\.51\.100\.20, sender=$PF_FROM\$" "$L"
		expect "and no warning (Postfix asked at DATA on the same connection)" "" \
			"$(grep -E 'greylistd\[[0-9]+\]: (warning|error):' "$L" | head -n 3)"
		expect_grep "Postfix logged the DATA deferral" \
			"(NOQUEUE|[0-9A-Za-z]+): reject: DATA from .*: 450 4\.7\.1 <DATA>: Data command rejected: Greylisted" "$PF_DIR"/maillog
	fi

	if ! dd_instance pf-rcpt ""; then
		fail "without defer-at=data: a private Postfix runs" "$DD_WHY"
	else
		dd_send dd-split
		expect "without the option (today): the new recipient's RCPT TO gets 450, the known ones 250" "250 250 450" "$DD_RCPT"
		expect "and DATA 354" "354 End data with <CR><LF>.<CR><LF>" "$DD_DATA"
		expect "the message is split: the known recipients get it now" \
			"known1@dest.test known2@dest.test" "$(dd_rcpts dd-split)"
		dd_stop "without defer-at=data"
	fi
	if [ ${#old_trap[@]} -ge 3 ]; then trap -- "${old_trap[2]}" EXIT; else trap - EXIT; fi
}

# --- importing postgrey's database, from a real postgrey ---------------------------

# pg_start DIR [POSTGREY-OPTIONS...] - Debian's postgrey on DIR/sock with
# --dbdir=DIR/db, no whitelists, as a process of this test (PG_PID); false
# when it does not listen within 10 s
pg_start() {
	local dir=$1 who=(); shift
	mkdir -p "$dir/db"
	if [ "$(id -u)" -eq 0 ]; then
		chmod go+x "$WORK" "$dir"
		chown postgrey:postgrey "$dir/db"
		who=(--user=postgrey --group=postgrey)
	else
		who=(--user="$(id -un)" --group="$(id -gn)")
	fi
	rm -f "$dir/sock"
	/usr/sbin/postgrey --unix="$dir/sock" --dbdir="$dir/db" "${who[@]}" \
		--whitelist-clients=/dev/null --whitelist-recipients=/dev/null \
		"--greylist-text=Greylisted, please try again in %s seconds" "$@" \
		>> "$dir/postgrey.log" 2>&1 &
	PG_PID=$!
	wait_for "$dir/sock" 100
}

# pg_stop - end this test's postgrey, by its PID: SIGTERM, again each
# second (Net::Server::Multiplex can miss one that comes while it is
# between two waits), SIGKILL after 5 s
pg_stop() {
	local i
	[ -n "${PG_PID:-}" ] || return 0
	for i in $(seq 50); do
		[ $((i % 10)) -eq 1 ] && kill "$PG_PID" 2>/dev/null
		kill -0 "$PG_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$PG_PID" 2>/dev/null
	wait "$PG_PID" 2>/dev/null
	PG_PID=
}

# pg_ask DIR - the requests on stdin to postgrey, each on a connection of
# its own and after the last one's answer, as Postfix asks (postgrey
# 1.37 loses a request whose lines are split between two reads when
# requests are pipelined)
pg_ask() {
	local request='' line
	while IFS= read -r line; do
		if [ -n "$line" ]; then request+="$line"$'\n'; continue; fi
		printf '%s\n' "$request" | socat -t 5 - "UNIX-CONNECT:$1/sock"
		request=''
	done
}

# pg_q TIME CLIENT SENDER RECIPIENT - one request, at postgrey's test time
# (its policy_test_time attribute, which it takes as the time of the
# request)
pg_q() { req policy_test_time="$1" client_address="$2" client_name=mx.sender.example sender="$3" recipient="$4"; }

# pg_history DIR TE DELAY AWL - what postgrey is fed before time TE, when
# run with DELAY and AWL: one client whose AWL passes make it
# auto-whitelisted (an hour apart), clients with one passed triplet (the
# null sender, a VERP sender, IPv6 from two addresses of one /64), and
# three pending triplets: early at TE, due at TE, beyond the retry window
pg_history() {
	local dir=$1 te=$2 d=$3 n=$4 i t
	{
		pg_q $((te - 3 * 86400)) 192.0.2.52 p3@x.example r1@dest.example
		for i in $(seq "$n"); do
			t=$((te - 30000 + i * 3700))
			pg_q $t 198.51.100.7 "news+$i@sender.example" "r$i@dest.example"
			pg_q $((t + d + 100)) 198.51.100.7 "news+$i@sender.example" "r$i@dest.example"
		done
		t=$((te - 20000))
		pg_q $t 203.0.113.9 "" r1@dest.example
		pg_q $((t + d + 5)) 203.0.113.9 "" r1@dest.example
		pg_q $t 203.0.113.9 bounce-4711@lists.example r2@dest.example
		pg_q $((t + d + 7)) 203.0.113.9 bounce-4711@lists.example r2@dest.example
		pg_q $t 2001:db8:5::7 bob@v6.example r1@dest.example
		pg_q $((t + d + 1)) 2001:db8:5::7 bob@v6.example r1@dest.example
		pg_q $t 2001:db8:5::8 carol@v6.example r2@dest.example
		pg_q $((t + 3 * d)) 2001:db8:5::8 carol@v6.example r2@dest.example
		pg_q $((te - d / 3)) 192.0.2.50 p1@x.example r1@dest.example
		pg_q $((te - d - 100)) 192.0.2.51 p2@x.example r1@dest.example
	} | pg_ask "$dir" > "$dir/history.out"
}

# pg_probes TE - the probes, each a request at TE: passed triplets (from
# their clients and from neighbours), the auto-whitelisted client and its
# neighbour with new recipients, the pending triplets, a new one
pg_probes() {
	local te=$1
	pg_q "$te" 198.51.100.7 news+3@sender.example r3@dest.example
	pg_q "$te" 198.51.100.7 someone@else.example new@dest.example
	pg_q "$te" 198.51.100.8 someone@else.example new@dest.example
	pg_q "$te" 198.51.100.8 news+2@sender.example r2@dest.example
	pg_q "$te" 203.0.113.9 "" r1@dest.example
	pg_q "$te" 203.0.113.9 bounce-99@lists.example r2@dest.example
	pg_q "$te" 203.0.113.10 "" r1@dest.example
	pg_q "$te" 203.0.113.9 someone@else.example new@dest.example
	pg_q "$te" 2001:db8:5::7 bob@v6.example r1@dest.example
	pg_q "$te" 2001:db8:5::99 bob@v6.example r1@dest.example
	pg_q "$te" 2001:db8:5::8 carol@v6.example r2@dest.example
	pg_q "$te" 192.0.2.50 p1@x.example r1@dest.example
	pg_q "$te" 192.0.2.51 p2@x.example r1@dest.example
	pg_q "$te" 192.0.2.52 p3@x.example r1@dest.example
	pg_q "$te" 192.0.2.99 nobody@new.example r9@dest.example
}

# pg_norm - answers as both write them, but postgrey's enhanced code 4.2.0
# and the X-Greylist header past its delay (names and dates differ)
pg_norm() {
	actions | sed -e 's/ 4\.2\.0 / /' -e 's/^\(PREPEND X-Greylist: delayed [0-9]* seconds\).*/\1/'
}

# pg_reasons FILE SKIP - the decision lines after the first SKIP lines,
# action and reason only
pg_reasons() {
	tail -n +"$(($2 + 1))" "$1" | grep -o 'action=[a-z]*, reason=[^,]*\(, delay=[0-9]*\)\?' 
}

# pg_truth NAME OPTIONS... - (NAME without spaces: postgrey's taint
# checks refuse such a path) feed a real postgrey run with OPTIONS, stop
# it, import its database with the same options, then send the same
# probes at the same time to greylistd and to postgrey (restarted on its
# database): the answers and the logged reasons must be the same
pg_truth() {
	local name=$1; shift
	local dir te d=300 n=5 m=3 o lines pg gl
	for o in "$@"; do
		case $o in
		--delay=*) d=${o#--delay=} ;;
		--auto-whitelist-clients=*) n=${o#*=} ;;
		--lookup-by-host) m=4 ;;	# no IPv6 clients of one /64 merged
		esac
	done
	newdir "pgimport-$name"
	dir=$D/pg te=$(( $(date +%s) / 60 * 60 + 86400 ))
	if ! pg_start "$dir" "$@"; then
		fail "$name: postgrey runs" "$(tail -n 3 "$dir/postgrey.log")"; pg_stop; return
	fi
	pg_history "$dir" "$te" "$d" "$n"
	pg_stop
	expect_grep "$name: postgrey auto-whitelisted a client" "whitelisted: mx.sender.example\[198.51.100.7\]" "$dir/postgrey.log"
	: > "$D/empty"
	"$GREYLISTCTL" load --db="$D/db" --from-postgrey="$dir/db" "$@" > "$D/load.out" 2> "$D/load.err"
	expect "$name: greylistctl load --from-postgrey $* exits 0" 0 $?
	expect "$name: and counts what it imported" \
		"postgrey $dir/db: $((n + 7)) triplets ($((n + 4)) passed, 3 pending), 4 clients ($m in greylistd's keys); $((n + 7 + m)) records loaded, 0 of postgrey's not imported" \
		"$(cat "$D/load.out")"
	check "$name: with nothing on stderr" test ! -s "$D/load.err"
	pg_start "$dir" "$@" || { fail "$name: postgrey restarts on its database"; pg_stop; return; }
	lines=$(wc -l < "$dir/postgrey.log")
	pg=$(pg_probes "$te" | pg_ask "$dir" | pg_norm)
	pg_stop
	gl=$(pg_probes "$te" | frozen "$te" "$GREYLISTD" --db="$D/db" --log-file="$D/log" \
		--whitelist="$D/empty" "$@" | pg_norm)
	expect "$name: greylistd answers the 15 probes as postgrey does" "$pg" "$gl"
	expect "$name: and logs the same reasons" "$(pg_reasons "$dir/postgrey.log" "$lines")" "$(pg_reasons "$D/log" 0)"
	for o in "client AWL" "triplet found, delay" "triplet found$" "early-retry" "reason=new"; do
		check "$name: (the probes include $o)" grep -q "$o" <(pg_reasons "$D/log" 0)
	done
}

t_pgimport() {
	local dir out

	if [ ! -x /usr/sbin/postgrey ] || ! command -v db5.3_dump >/dev/null || ! command -v socat >/dev/null; then
		fail "pgimport" "needs postgrey, db5.3-util and socat (make check installs them)"; return
	fi
	PG_PID=
	pg_truth defaults
	pg_truth prefixes-delay-awl --ipv4cidr=16 --ipv6cidr=48 --delay=120 --auto-whitelist-clients=2
	pg_truth lookup-by-host --lookup-by-host --auto-whitelist-clients=3

	dir=$WORK/pgimport-defaults/pg
	"$GREYLISTCTL" load --db="$D/other" --from-postgrey="$dir/db" --ipv4cidr=16 > "$D/out" 2> "$D/err"
	expect "other options than postgrey's: exit 1" 1 $?
	expect_grep "each record is said" "not imported: its network has host bits under --ipv4cidr or --ipv6cidr: give the options postgrey ran with" "$D/err"
	"$GREYLISTCTL" load --db="$D/other2" --from-postgrey="$dir/db" --lookup-by-host > "$D/out" 2> "$D/err"
	expect "--lookup-by-host when postgrey ran without: exit 1" 1 $?
	expect_grep "and said" "not imported: not a key of --lookup-by-host" "$D/err"
	expect_grep "and counted" "; [0-9]+ records loaded, [0-9]+ of postgrey's not imported$" "$D/out"

	pg_start "$dir" || fail "postgrey restarts"
	"$GREYLISTCTL" load --db="$D/other3" --from-postgrey="$dir/db" > "$D/out" 2> "$D/err"
	expect "a running postgrey: load refuses (exit 1)" 1 $?
	expect_grep "and says why" "postgrey.lock: postgrey runs \(it holds the lock\): stop it first" "$D/err"
	check "and writes nothing" test ! -s "$D/other3"
	# a sender holding "/": postgrey's key cannot be split for sure
	pg_q $(( $(date +%s) + 86400 )) 192.0.2.77 "odd/local@x.example" r1@dest.example | pg_ask "$dir" > /dev/null
	pg_stop
	"$GREYLISTCTL" load --db="$D/slash" --from-postgrey="$dir/db" > "$D/out" 2> "$D/err"
	expect "an ambiguous key: exit 1" 1 $?
	expect_grep "it is said, never guessed" 'odd/local@x.example/r1@dest.example: not imported: a "/" in its sender or recipient' "$D/err"
	expect_grep "and the rest is imported" '; [0-9]+ records loaded, 1 of postgrey.s not imported$' "$D/out"
	mkdir -p "$D/nobin"
	PATH=$D/nobin "$GREYLISTCTL" load --db="$D/other4" --from-postgrey="$dir/db" > "$D/out" 2> "$D/err"
	expect "without db5.3_dump: exit 1" 1 $?
	expect_grep "and it says what to install" "db5.3_dump not found: install Debian's db5.3-util" "$D/err"

	# records postgrey would not write, put in with db5.3_load: each is
	# said and counted, the good one imported
	newdir pgimport-bad
	printf '%s\n' '192.0.2.0/a@b.example/c@d.example' "$(( $(date +%s) - 900 )),$(( $(date +%s) - 10 ))" \
		'192.0.2.0/e@b.example/c@d.example' 'x,y' '192.0.2.0/nul\00@b.example/c@d.example' '1,2' \
		'300.1.2.0/a@b.example/c@d.example' '1,2' '192.0.2.0/bounce-123@b.example/c@d.example' '1,2' \
		'192.0.2.0/f@b.example/c@d.example' '5,3' \
		| db5.3_load -T -t btree "$D/postgrey.db"
	"$GREYLISTCTL" load --db="$D/db" --from-postgrey="$D" > "$D/out" 2> "$D/err"
	expect "records of no postgrey shape: exit 1" 1 $?
	expect "each is said with its key and why" \
		"192.0.2.0/bounce-123@b.example/c@d.example: not imported: the sender is not normalised as greylistd stores it|192.0.2.0/e@b.example/c@d.example: not imported: its value is not FIRST,LAST|192.0.2.0/f@b.example/c@d.example: not imported: its value is not FIRST,LAST|192.0.2.0/nul: not imported: a NUL byte or a newline, which no request holds|300.1.2.0/a@b.example/c@d.example: not imported: its network is not an IP address" \
		"$(sed "s|^greylistctl: $D/postgrey.db: ||" "$D/err" | paste -sd'|')"
	expect "counted, and the good record imported" \
		"postgrey $D: 1 triplets (1 passed, 0 pending), 0 clients (0 in greylistd's keys); 1 records loaded, 5 of postgrey's not imported" \
		"$(cat "$D/out")"
	expect "it is in the database" 1 "$("$GREYLISTCTL" dump --db="$D/db" | grep -c '^T .* 192.0.2.0 a@b.example c@d.example$')"

	newdir pgimport-privacy
	pg_start "$D/pg" --privacy || fail "postgrey --privacy runs"
	pg_q "$(date +%s)" 192.0.2.1 a@b.example c@dest.example | pg_ask "$D/pg" > /dev/null
	pg_stop
	"$GREYLISTCTL" load --db="$D/db" --from-postgrey="$D/pg/db" > "$D/out" 2> "$D/err"
	expect "postgrey --privacy: exit 1" 1 $?
	expect_grep "its digests cannot be turned back: said" "the keys are SHA-1 digests \(postgrey ran with --privacy\): no triplet or client can be recovered from them; nothing imported" "$D/err"
	check "and nothing is written" test ! -s "$D/db"
	"$GREYLISTCTL" load --db="$D/db" --from-postgrey="$D/none" > "$D/out" 2> "$D/err"
	expect "a directory without postgrey.db: exit 1" 1 $?
}
