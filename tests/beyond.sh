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
