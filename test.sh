#!/usr/bin/env bash
# test.sh - the whole test suite, against the real binary.
#
#   ./test.sh            all tests (run `make check` to build and install
#                        the Debian packages the tests need first)
#   ./test.sh NAME...    only the named groups (see ALL_GROUPS below;
#                        ./test.sh fresh, the README on a new Debian, runs
#                        only when named)
#
# Each line of output is PASS, FAIL or SKIP; the last line is
# "N passed, N failed". The exit status is 0 only when nothing failed.
set -u
cd "$(dirname "$0")" || exit 2
HERE=$PWD
export GREYLISTD=${GREYLISTD:-$HERE/greylistd}
export GREYLISTCTL=${GREYLISTCTL:-$(dirname "$GREYLISTD")/greylistctl}
WORK=$(mktemp -d /tmp/greylistd-test.XXXXXX) || exit 2
export WORK
export RESULTS=$WORK/results
: > "$RESULTS"
trap 'rm -rf "$WORK"' EXIT
. tests/lib.sh

[ -x "$GREYLISTD" ] && [ -x "$GREYLISTCTL" ] || { echo "no $GREYLISTD or $GREYLISTCTL: run make check" >&2; exit 2; }

# --- the protocol -----------------------------------------------------------

t_protocol() {
	local out

	newdir proto
	out=$(req | gl | actions)
	expect "new triplet is deferred" \
		"DEFER_IF_PERMIT Greylisted, please try again in 300 seconds" "$out"
	expect_grep "new triplet logged in postgrey's format" \
		'greylistd\[[0-9]+\]: action=greylist, reason=new, client_name=mail.example.com, client_address=192.0.2.10, sender=alice@example.com, recipient=bob@example.net$' "$D/log"

	out=$(at +100s bash -c "$(declare -f req); req" | at +100s "$GREYLISTD" --db="$D/db" --log-file="$D/log" | actions)
	expect "early retry is deferred with the time left" \
		"DEFER_IF_PERMIT Greylisted, please try again in 200 seconds" "$out"
	expect_grep "early retry logged with seconds missing" \
		'action=greylist, reason=early-retry \((199|200)s missing\)' "$D/log"

	out=$( { req instance=m1; req instance=m1; req instance=m2; } \
		| at +301s "$GREYLISTD" --db="$D/db" --log-file="$D/log" | actions)
	case $out in
	"PREPEND X-Greylist: delayed 30"[12]" seconds by greylistd-"*" at "*"; "*[0-9][0-9][0-9][0-9]*)
		pass "retry after the delay passes with the X-Greylist header" ;;
	*) fail "retry after the delay passes with the X-Greylist header" "$out" ;;
	esac
	expect "same message, second request: DUNNO; next message: DUNNO" \
		"DUNNO DUNNO" "$(echo "$out" | tail -n 2 | tr '\n' ' ' | sed 's/ $//')"
	expect_grep "first pass logged with its delay" \
		'action=pass, reason=triplet found, delay=30[12], client_name' "$D/log"
	expect_grep "later pass logged as triplet found" \
		'action=pass, reason=triplet found, client_name' "$D/log"

	newdir pipeline
	out=$( { req sender=a@x.org; req protocol_state=DATA; req sender=b@x.org; \
		req sender=a@x.org; } | gl | actions | cut -c1-15 | tr '\n' ' ')
	expect "pipelined requests are answered in order" \
		"DEFER_IF_PERMIT DUNNO DEFER_IF_PERMIT DEFER_IF_PERMIT " "$out"
	expect "four requests, three decisions logged" 3 "$(grep -c 'action=' "$D/log")"

	newdir states
	out=$(for s in CONNECT EHLO HELO MAIL DATA END-OF-MESSAGE VRFY ETRN; do
		req protocol_state=$s; done | gl | actions | sort -u)
	expect "every state but RCPT gets DUNNO" "DUNNO" "$out"
	check "other states touch no database" test ! -s "$D/db"
	out=$(req -protocol_state | gl | actions | cut -c1-15)
	expect "a request without protocol_state counts as RCPT" "DEFER_IF_PERMIT" "$out"

	newdir empty-reply
	out=$(req | gl 2>"$D/stderr" | od -c | head -n 1)
	check "nothing on stderr while serving" test ! -s "$D/stderr"
	out=$(req | gl | tail -c 2 | od -An -c | tr -d ' ')
	expect "each answer ends with an empty line" '\n\n' "$out"
}

# --- bad input --------------------------------------------------------------

# violation NAME INPUT-COMMAND WHY-PATTERN - the input ends the connection
# with exit 76, no reply to the bad request, one warning naming WHY. The
# answers that were sent are left in $ANSWERS.
violation() {
	local name=$1 input=$2 why=$3 out rc
	newdir "viol-$name"
	eval "$input" > "$D/in"
	gl < "$D/in" > "$D/out"; rc=$?
	ANSWERS=$(actions < "$D/out" | tr '\n' ' ')
	expect "$name: exit 76" 76 "$rc"
	expect_grep "$name: warning logged" "warning: protocol violation: $why" "$D/log"
}

t_bad_input() {
	local out v8192 long

	violation "wrong request type" \
		"{ req; req request=junk; req; }" "request is not smtpd_access_policy"
	expect "wrong request type: earlier request answered, none after" \
		"DEFER_IF_PERMIT Greylisted, please try again in 300 seconds " "$ANSWERS"

	v8192=$(head -c 8192 /dev/zero | tr '\0' x)
	newdir long-ok
	out=$(req "sender=$v8192@example.com" ccert_subject=$v8192 | gl | actions | cut -c1-15)
	expect "an 8192-byte value is accepted" "DEFER_IF_PERMIT" "$out"
	long=$(head -c 8500 /dev/zero | tr '\0' x)
	violation "line too long" "req ccert_subject=$long" "line longer than 8448 bytes"
	violation "NUL byte" "{ printf 'request=smtpd_access_policy\nsender=a\0b\n\n'; }" "NUL byte"
	violation "too many attributes" \
		"{ for i in \$(seq 200); do echo x\$i=1; done; req; }" "more than 128 attributes"
	violation "request too large" \
		"{ for i in \$(seq 12); do echo x\$i=$v8192; done; req; }" "request larger than 65536 bytes"
	violation "line without =" "{ printf 'request=smtpd_access_policy\nnonsense\n\n'; }" "line is not name=value"
	violation "attribute twice" "{ printf 'request=smtpd_access_policy\nsender=a@b\nsender=c@d\nrecipient=x@y\n\n'; }" "attribute sender given twice"
	violation "end of input inside a request" "{ printf 'request=smtpd_access_policy\nsender=a@b\n'; }" "connection closed inside a request"

	newdir missing
	out=$( { req -sender; req -recipient; req -client_address; \
		req client_address=unknown; req client_address=1.2.3; req; } | gl | actions | cut -c1-15 | tr '\n' ' ')
	expect "missing attributes or a non-IP address: DUNNO, and serving goes on" \
		"DUNNO DUNNO DUNNO DUNNO DUNNO DEFER_IF_PERMIT " "$out"
	expect_grep "missing sender is logged" 'action=pass, reason=bad request \(no sender\)' "$D/log"
	expect_grep "non-IP address is logged" 'reason=bad request \(client_address is not an IP address\), client_name=mail.example.com, client_address=unknown' "$D/log"

	newdir log-sanitised
	req $'sender=a\x01b,c\\d@x.org' "recipient=$(head -c 600 /dev/zero | tr '\0' r)@x.org" | gl >/dev/null
	expect_grep "control characters, commas and backslashes are escaped in the log" \
		'sender=a\\x01b\\x2cc\\x5cd@x.org' "$D/log"
	expect_grep "long values are cut in the log and marked" 'recipient=r{256}\.\.\.$' "$D/log"

	newdir gp-long
	out=$(printf -- '--grey 192.0.2.10 alice@example.com bob@%s\n' "$long" | gl --greylistd-protocol)
	expect "Debian greylistd's protocol: a recipient longer than 8448 bytes is refused, false (it overflowed the triplet)" \
		"false 0" "$out $?"
	expect_grep "and said" 'warning: greylistd protocol: a word longer than 8448 bytes; answered false' "$D/log"
}

# --- the triplet ------------------------------------------------------------

# same_key NAME REQ1-ARGS REQ2-ARGS - the second request finds the first's
# record (early-retry), so both map to one key
same_key() {
	local name=$1 first=$2 second=$3
	newdir "key-$name"
	{ req $first; req $second; } | gl >/dev/null
	expect_grep "$name" 'reason=early-retry' "$D/log"
}

# other_key NAME REQ1-ARGS REQ2-ARGS - the two requests are both new
other_key() {
	local name=$1 first=$2 second=$3
	newdir "key-$name"
	{ req $first; req $second; } | gl >/dev/null
	expect "$name" 2 "$(grep -c 'reason=new' "$D/log")"
}

t_triplet() {
	same_key "IPv4 /24 neighbours share a key" client_address=198.51.100.7 client_address=198.51.100.250
	other_key "IPv4 outside the /24 is another key" client_address=198.51.100.7 client_address=198.51.101.7
	same_key "IPv6 /64 neighbours share a key" client_address=2001:db8:1:2::1 client_address=2001:db8:1:2:ffff::9
	other_key "IPv6 outside the /64 is another key" client_address=2001:db8:1:2::1 client_address=2001:db8:1:3::1
	same_key "IPv6 spellings of one address share a key" client_address=2001:DB8:0:0:0:0:0:1 client_address=2001:db8::1
	same_key "IPv4-mapped IPv6 counts as IPv4" client_address=::ffff:203.0.113.5 client_address=203.0.113.77
	same_key "sender case does not matter" sender=Alice@Example.COM sender=alice@example.com
	same_key "recipient case does not matter" recipient=Bob@Example.NET recipient=bob@example.net
	same_key "BATV prvs=TAG=user is unwrapped" sender=prvs=0123456789=alice@example.com sender=alice@example.com
	same_key "BATV prvs=user=TAG is unwrapped" sender=prvs=alice=0123456789@example.com sender=alice@example.com
	same_key "+extension is removed" sender=alice+list-42@example.com sender=alice@example.com
	same_key "standalone numbers collapse" sender=bounce-12345-67@example.com sender=bounce-999-1@example.com
	other_key "numbers inside words are kept" sender=user1@example.com sender=user2@example.com
	same_key "the null sender is a sender" sender= sender=
	other_key "the null sender differs from a real one" sender= sender=alice@example.com
	other_key "recipients differ" recipient=a@example.net recipient=b@example.net

	newdir key-null
	printf 'request=smtpd_access_policy\nclient_address=192.0.2.1\nsender=\nrecipient=x@y\n\n' | gl | grep -q DEFER
	check "an empty sender= is the null sender, greylisted" test $? -eq 0

	newdir key-host
	{ req client_address=198.51.100.7; req client_address=198.51.100.8; } | gl --lookup-by-host >/dev/null
	expect "--lookup-by-host keys on the whole address" 2 "$(grep -c 'reason=new' "$D/log")"
	newdir key-cidr
	{ req client_address=198.51.100.7; req client_address=198.51.7.8; } | gl --ipv4cidr=16 >/dev/null
	expect_grep "--ipv4cidr=16 groups a /16" 'reason=early-retry' "$D/log"
	newdir key-cidr6
	{ req client_address=2001:db8:1:2::1; req client_address=2001:db8:1:3::1; } | gl --ipv6cidr=48 >/dev/null
	expect_grep "--ipv6cidr=48 groups a /48" 'reason=early-retry' "$D/log"

	newdir key-db
	req sender=prvs=0123456789=Bounce-77@Example.COM client_address=2001:db8::1:2 recipient=Bob@Example.NET | gl >/dev/null
	expect "the stored key is net, normalised sender and recipient" \
		'T\n2001:db8::\nbounce-#@example.com\nbob@example.net' \
		"$(printf 'list\n' | gdbmtool "$D/db" | grep '^T' | cut -d' ' -f1)"
}

# --- time -------------------------------------------------------------------

t_time() {
	local out

	newdir window
	req | gl >/dev/null
	out=$(req | at +3d "$GREYLISTD" --db="$D/db" --log-file="$D/log" | actions | cut -c1-15)
	expect "a retry after the retry window starts over" "DEFER_IF_PERMIT" "$out"
	expect "it is logged as new again" 2 "$(grep -c 'reason=new' "$D/log")"

	newdir window-option
	req | gl >/dev/null
	out=$(req | at +5h "$GREYLISTD" --db="$D/db" --log-file="$D/log" --retry-window=6h | actions | cut -c1-7)
	expect "--retry-window=6h accepts a retry after 5 hours" "PREPEND" "$out"

	newdir maxage
	req | gl >/dev/null
	req | at +10m "$GREYLISTD" --db="$D/db" --log-file="$D/log" >/dev/null
	out=$(req | at +20d "$GREYLISTD" --db="$D/db" --log-file="$D/log" | actions)
	expect "a passed triplet seen within max-age passes" "DUNNO" "$out"
	out=$(req | at +60d "$GREYLISTD" --db="$D/db" --log-file="$D/log" | actions | cut -c1-15)
	expect "a triplet idle past --max-age starts over" "DEFER_IF_PERMIT" "$out"

	newdir maxage-touch
	req | gl >/dev/null
	req | at +10m "$GREYLISTD" --db="$D/db" --log-file="$D/log" >/dev/null
	req | at +30d "$GREYLISTD" --db="$D/db" --log-file="$D/log" >/dev/null
	out=$(req | at +60d "$GREYLISTD" --db="$D/db" --log-file="$D/log" | actions)
	expect "each pass keeps a triplet alive for another max-age" "DUNNO" "$out"

	newdir delay-option
	req | gl --delay=1m >/dev/null
	out=$(req | at +61s "$GREYLISTD" --db="$D/db" --log-file="$D/log" --delay=1m | actions | cut -c1-7)
	expect "--delay=1m passes after 61 seconds" "PREPEND" "$out"

	newdir future
	req | at +1h "$GREYLISTD" --db="$D/db" --log-file="$D/log" >/dev/null
	out=$(req | gl | actions | cut -c1-15)
	expect "a pending record from the future (clock stepped back) starts over" "DEFER_IF_PERMIT" "$out"
	expect "and is logged as new" 2 "$(grep -c 'reason=new' "$D/log")"
}

# --- options ----------------------------------------------------------------

# bad_option NAME ARGS WHY - refused with exit 64 and a message naming it
bad_option() {
	local name=$1 args=$2 why=$3 err rc
	newdir "opt-$name"
	err=$(req | "$GREYLISTD" --db="$D/db" $args 2>&1 >/dev/null); rc=$?
	expect "option $name: exit 64" 64 "$rc"
	case $err in *"$why"*) pass "option $name: message names it" ;;
	*) fail "option $name: message names it" "$err" ;; esac
}

t_options() {
	local out

	bad_option delay-word "--delay=soon" "--delay=soon: not a duration"
	bad_option delay-range "--delay=8d" "--delay=8d: not a duration from 1s to 604800s"
	bad_option delay-suffix "--delay=5x" "--delay=5x"
	bad_option cidr-range "--ipv4cidr=33" "--ipv4cidr=33: not a number from 0 to 32"
	bad_option cidr-sign "--ipv6cidr=-1" "--ipv6cidr=-1"
	bad_option unknown "--no-such-thing" "unknown option --no-such-thing"
	bad_option action "--greylist-action=REJECT" "--greylist-action=REJECT"
	bad_option text "--greylist-text=wait%x" "unknown placeholder %x"
	bad_option header "--x-greylist-header=nocolon" "must be \"Name: value\""
	bad_option window "--delay=2h --retry-window=1h" "--retry-window (3600s) must be longer than --delay (7200s)"
	bad_option missing-value "--delay" "--delay needs a value"
	bad_option overflow "--max-age=99999999999999999999d" "--max-age="

	newdir opt-units
	out=$(req | gl --max-age=35 --retry-window=2 --delay=300 | actions | cut -c1-15)
	expect "postgrey's bare numbers (days for max-age, retry-window) work" "DEFER_IF_PERMIT" "$out"
	out=$(req | gl --max-age=35d --retry-window=2d --delay=5m --timeout=6m --lock-timeout=3s | actions | cut -c1-15)
	expect "every suffix works on every duration (2d, 35d, 5m, 6m, 3s)" "DEFER_IF_PERMIT" "$out"
	out=$(req | at +90000s "$GREYLISTD" --db="$D/db" --log-file="$D/log" --retry-window=24h | actions | cut -c1-15)
	expect "--retry-window=24h: a retry after 25 hours starts over" "DEFER_IF_PERMIT" "$out"

	newdir opt-text
	out=$(req recipient=bob@Example.NET | gl --greylist-action=450 '--greylist-text=4.7.1 wait %s s for %r (100%%)' | actions)
	expect "--greylist-action and --greylist-text with %s, %r and %%" \
		"450 4.7.1 wait 300 s for Example.NET (100%)" "$out"

	newdir opt-header
	req | gl >/dev/null
	out=$(req | at +400s "$GREYLISTD" --db="$D/db" --log-file="$D/log" '--x-greylist-header=X-Grey: %t s by %v at %h' --hostname=mx.test | actions)
	expect "--x-greylist-header and --hostname" "PREPEND X-Grey: 40[01] s by 0.2 at mx.test" \
		"$(echo "$out" | sed 's/40[01]/40[01]/')"
	newdir opt-noheader
	req | gl >/dev/null
	out=$(req | at +400s "$GREYLISTD" --db="$D/db" --log-file="$D/log" --x-greylist-header= | actions)
	expect "an empty --x-greylist-header sends no header" "DUNNO" "$out"

	out=$("$GREYLISTD" --version)
	expect "--version" "greylistd 0.2" "$out"
	"$GREYLISTD" --help > /dev/full
	expect "--help into a full disk fails" 1 $?
	"$GREYLISTD" --help | grep -q -- '--retry-window'
	check "--help lists the options" test $? -eq 0
}

# --- timeouts ---------------------------------------------------------------

# timed NAME LIMIT CMD... - run CMD, pass when it ends within LIMIT
# seconds; its exit status is left in RC. CMD's own redirections go
# inside it (gl_io): one on the call would take the PASS/FAIL line too.
timed() {
	local name=$1 limit=$2 start end; shift 2
	start=$(date +%s%N)
	"$@"; RC=$?
	end=$(date +%s%N)
	check "$name (took $(( (end - start) / 1000000 )) ms)" \
		test $(( (end - start) / 1000000 )) -le $((limit * 1000))
}

# gl_io IN OUT ARGS... - gl ARGS with stdin from IN and stdout to OUT
gl_io() {
	local in=$1 out=$2; shift 2
	gl "$@" < "$in" > "$out"
}

t_timeouts() {
	local writer

	# Input comes from a FIFO whose writer lingers, so that the time
	# measured is greylistd's own.
	newdir idle
	mkfifo "$D/in"
	(req; sleep 30) > "$D/in" & writer=$!
	timed "an idle connection is closed after --timeout" 10 \
		gl_io "$D/in" /dev/null --timeout=2s
	expect "idle close: exit 0" 0 "$RC"
	expect_grep "idle close is logged" 'idle for 2s; closing the connection' "$D/log"
	stop $writer

	newdir slow
	mkfifo "$D/in"
	(printf 'request=smtpd_access_policy\n'; for i in $(seq 30); do printf x; sleep 1; done) > "$D/in" & writer=$!
	timed "a request dribbled a byte a second is cut at the timeout" 12 \
		gl_io "$D/in" /dev/null --timeout=3s
	expect "dribbled request: exit 76" 76 "$RC"
	expect_grep "dribbled request: logged" 'request not completed before the timeout' "$D/log"
	stop $writer

	# A client that sends many requests and never reads: the answers fill
	# the pipe and greylistd gives up after --timeout. The requests are
	# made beforehand: made on the fly, their making was timed too (10 s
	# on a loaded machine).
	newdir noread
	mkfifo "$D/in" "$D/out"
	for i in $(seq 12000); do req protocol_state=DATA; done > "$D/requests"
	(cat "$D/requests"; sleep 30) > "$D/in" & writer=$!
	exec 7<>"$D/out"
	timed "a client that never reads its answers is dropped" 15 \
		gl_io "$D/in" "$D/out" --timeout=2s
	exec 7<&-
	expect "never-reading client: exit 74" 74 "$RC"
	expect_grep "never-reading client: logged" 'client does not read its answers' "$D/log"
	stop $writer
}

# --- database ---------------------------------------------------------------

t_database() {
	local out holder start end

	newdir db-bad-record
	req | gl >/dev/null
	printf 'store "T\\n192.0.2.0\\nalice@example.com\\nbob@example.net" "2 1 2 3"\n' | gdbmtool "$D/db"
	out=$(req | at +400s "$GREYLISTD" --db="$D/db" --log-file="$D/log" | actions | cut -c1-15)
	expect "a record of another shape is treated as absent" "DEFER_IF_PERMIT" "$out"
	expect "and rewritten in the current layout" 1 \
		"$(printf 'list\n' | gdbmtool "$D/db" | grep -c ' 1 [0-9]* [0-9]* 0$')"

	newdir db-create
	req | "$GREYLISTD" --db="$D/sub/db" --log-file="$D/log" | actions >/dev/null
	expect_grep "a missing directory answers DUNNO and says why" 'reason=fail-open \(cannot open .*/sub/db: No such file or directory\)' "$D/log"

	newdir db-garbage
	head -c 10000 /dev/urandom > "$D/db"
	out=$(req | gl | actions | cut -c1-15)
	expect "a garbage database file: the request fails open" "DUNNO" "$out"
	expect_grep "the fault is logged" 'reason=fail-open \(database damaged, repair scheduled\)' "$D/log"
	expect_grep "the maintenance it starts moves the file aside (logged)" 'error: database .* is damaged .*: moved to .*db.damaged-' "$D/log"
	check "the damaged file is kept for the admin" ls "$D"/db.damaged-*
	out=$(req | gl | actions | cut -c1-15)
	expect "and greylisting goes on with a fresh file" "DEFER_IF_PERMIT" "$out"

	newdir db-lock
	req | gl >/dev/null
	flock -x "$D/db" sleep 6 & holder=$!
	sleep 0.3
	start=$(date +%s%N)
	out=$(req | gl --lock-timeout=1s | actions)
	end=$(date +%s%N)
	stop $holder
	expect "a lock held too long: DUNNO" "DUNNO" "$out"
	check "within the lock budget (took $(( (end - start) / 1000000 )) ms)" test $(( (end - start) / 1000000 )) -lt 2500
	expect_grep "and the reason is logged" 'reason=fail-open \(lock not had within 1s\)' "$D/log"
}

# --- concurrency and sockets ---------------------------------------------------

t_concurrency() {
	local i pids=() out

	newdir race
	for i in $(seq 16); do
		(req | gl > "$D/out.$i") & pids+=($!)
	done
	wait "${pids[@]}"
	expect "16 processes racing on one new triplet: one is new" 1 "$(grep -c 'reason=new' "$D/log")"
	expect "the other 15 are early retries" 15 "$(grep -c 'reason=early-retry' "$D/log")"
	expect "all 16 answered" 16 "$(cat "$D"/out.* | grep -c '^action=DEFER_IF_PERMIT')"

	newdir many
	pids=()
	for i in $(seq 20); do
		(for j in $(seq 25); do req sender=s$i-$((j % 5))@x.org recipient=r$j@y.org; done \
			| gl > "$D/out.$i") & pids+=($!)
	done
	wait "${pids[@]}"
	out=$(cat "$D"/out.* | grep -c '^action=')
	expect "20 concurrent connections x 25 requests all answered" 500 "$out"
	expect "and every distinct triplet recorded once" 500 \
		"$(( $(grep -c 'reason=new' "$D/log") + $(grep -c 'reason=early-retry' "$D/log") ))"
	expect "one record per distinct triplet" \
		"$(grep -c 'reason=new' "$D/log")" "$(printf 'list\n' | gdbmtool "$D/db" | grep -c '^T')"
}

# sock_session NAME MODE - greylistd under systemd-socket-activate, in the
# inetd form (stdin/stdout) or the fd 3 form (LISTEN_FDS=1)
sock_session() {
	local name=$1 mode=$2 pid out i pids=()
	newdir "sock-$name"
	systemd-socket-activate --accept $mode -l "$D/sock" \
		"$GREYLISTD" --db="$D/db" --log-file="$D/log" >/dev/null 2>&1 &
	pid=$!
	if ! wait_for "$D/sock"; then fail "$name: socket appears"; stop $pid; return; fi
	out=$( { req; req; } | socat -t 5 - UNIX-CONNECT:"$D/sock" | actions | cut -c1-15 | tr '\n' ' ')
	expect "$name: two requests on one connection" "DEFER_IF_PERMIT DEFER_IF_PERMIT " "$out"
	for i in $(seq 10); do
		(req sender=c$i@x.org | socat -t 5 - UNIX-CONNECT:"$D/sock" > "$D/out.$i") & pids+=($!)
	done
	wait "${pids[@]}"
	expect "$name: 10 concurrent connections answered" 10 "$(cat "$D"/out.* | grep -c '^action=DEFER')"
	stop $pid
}

t_sockets() {
	if ! command -v systemd-socket-activate >/dev/null; then
		skip "socket activation" "systemd-socket-activate missing"; return
	fi
	sock_session "inetd form" --inetd
	sock_session "fd 3 form" ""
	expect_grep "fd 3 form: requests logged" 'action=greylist, reason=new' "$WORK/sock-fd 3 form/log"
	inetd_session
	make_run
}

# make_run - the README's first command serves, and prints how to use it
make_run() {
	local pid i out
	newdir make-run
	setsid make -s run RUNDIR="$D/run" > "$D/out" 2>&1 &
	pid=$!
	wait_for "$D/run/greylistd.sock" 100
	expect_grep "make run says how to talk to it" "socat - UNIX-CONNECT:$D/run/greylistd.sock" "$D/out"
	out=$(req | socat -t 5 - UNIX-CONNECT:"$D/run/greylistd.sock" | actions)
	expect "make run serves: a new triplet is deferred for its 60 s" \
		"DEFER_IF_PERMIT Greylisted, please try again in 60 seconds" "$out"
	kill -- -"$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	expect_grep "its log is in the run directory" 'action=greylist, reason=new' "$D/run/greylistd.log"
}

# inetd_session - greylistd under a real inetd (openbsd-inetd), with the
# README's inetd.conf line on a free loopback port
inetd_session() {
	local port pid out i
	if ! command -v inetd >/dev/null; then
		skip "inetd" "no inetd (Debian package openbsd-inetd)"; return
	fi
	newdir inetd
	for i in $(seq 50); do
		port=$((20000 + RANDOM % 12000))
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
	done
	echo "127.0.0.1:$port stream tcp nowait root $GREYLISTD greylistd --db=$D/db --log-file=$D/log" > "$D/inetd.conf"
	inetd -d "$D/inetd.conf" > "$D/inetd.out" 2>&1 &
	pid=$!
	for i in $(seq 50); do
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
		sleep 0.1
	done
	out=$( { req; req; } | socat -t 5 - TCP:127.0.0.1:$port | actions | cut -c1-15 | tr '\n' ' ')
	expect "inetd: two requests on one connection" "DEFER_IF_PERMIT DEFER_IF_PERMIT " "$out"
	expect_grep "inetd: the decisions are logged" 'action=greylist, reason=early-retry' "$D/log"
	stop $pid
}

. tests/postfix.sh
. tests/ops.sh
. tests/config.sh
. tests/design.sh
. tests/systemd.sh
. tests/stress.sh
. tests/faults.sh
. tests/mta-lib.sh
. tests/exim.sh
. tests/exim-gp.sh
. tests/sendmail.sh
. tests/milter.sh
. tests/multimx.sh
. tests/redis.sh
. tests/observe.sh
. tests/beyond.sh
. fuzz/fuzz.sh
. tests/deps.sh
. tests/fresh.sh

# --- installing and the manual ------------------------------------------------

t_install() {
	local o missing="" opts

	newdir install
	chmod go+x "$WORK"		# mktemp made it 0700
	chmod 0777 "$D"
	if [ "$(id -u)" -eq 0 ] && getent passwd nobody >/dev/null; then
		setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups \
			make -s install DESTDIR="$D/root" PREFIX=/usr > "$D/out" 2>&1
		expect "make install DESTDIR=... works as an ordinary user" 0 $?
	else
		make -s install DESTDIR="$D/root" PREFIX=/usr > "$D/out" 2>&1
		expect "make install DESTDIR=... works" 0 $?
	fi
	expect "it installs both programs, the units (policy, milter, Debian greylistd's protocol, the metrics timer and service), the man pages, the configuration, the whitelist, the Exim ACL, the LAN drop-in, the Prometheus rules and the user" \
		"etc/greylistd/greylistd.conf etc/greylistd/whitelist usr/lib/systemd/system/greylistd-metrics.service usr/lib/systemd/system/greylistd-metrics.timer usr/lib/systemd/system/greylistd-milter.socket usr/lib/systemd/system/greylistd-milter@.service usr/lib/systemd/system/greylistd-protocol.socket usr/lib/systemd/system/greylistd-protocol@.service usr/lib/systemd/system/greylistd.socket usr/lib/systemd/system/greylistd@.service usr/lib/sysusers.d/greylistd.conf usr/sbin/greylistctl usr/sbin/greylistd usr/share/doc/greylistd/exim4-acl.conf usr/share/doc/greylistd/greylistd-lan.conf usr/share/doc/greylistd/prometheus-rules.yml usr/share/man/man8/greylistctl.8 usr/share/man/man8/greylistd.8" \
		"$(cd "$D/root" && find . -type f | sed 's|^\./||' | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//')"
	expect_grep "the unit runs the installed binary" '^ExecStart=/usr/sbin/greylistd$' "$D/root/usr/lib/systemd/system/greylistd@.service"
	expect_grep "and the milter's unit, with --milter" '^ExecStart=/usr/sbin/greylistd --milter$' "$D/root/usr/lib/systemd/system/greylistd-milter@.service"
	expect "and a symlink in node_exporter's textfile directory names the metrics file" \
		/var/lib/greylistd-metrics/greylistd.prom "$(readlink "$D/root/var/lib/prometheus/node-exporter/greylistd.prom")"
	expect_grep "and the protocol unit, with --greylistd-protocol" '^ExecStart=/usr/sbin/greylistd --greylistd-protocol$' \
		"$D/root/usr/lib/systemd/system/greylistd-protocol@.service"

	# from a copy of the tree: other paths build other binaries
	newdir install-local
	# A copy without this tree's binaries, built again with the install's paths
	copy_tree "$HERE" "$D/src" && make -s -C "$D/src" clean
	make -s -C "$D/src" install DESTDIR="$D/root" PREFIX=/usr/local SYSCONFDIR=/usr/local/etc > "$D/out" 2>&1
	check "PREFIX=/usr/local: the units go where systemd looks for local ones, never /lib" \
		test -f "$D/root/usr/local/lib/systemd/system/greylistd.socket" -a ! -e "$D/root/lib"
	expect_grep "every path it installs is rewritten: the unit's ExecStart" '^ExecStart=/usr/local/sbin/greylistd$' \
		"$D/root/usr/local/lib/systemd/system/greylistd@.service"
	expect_grep "the milter unit's ExecStart" '^ExecStart=/usr/local/sbin/greylistd --milter$' \
		"$D/root/usr/local/lib/systemd/system/greylistd-milter@.service"
	expect_grep "the protocol unit's ExecStart" '^ExecStart=/usr/local/sbin/greylistd --greylistd-protocol$' \
		"$D/root/usr/local/lib/systemd/system/greylistd-protocol@.service"
	expect "the protocol socket keeps its own path, not Debian greylistd's" "ListenStream=/run/greylistd/protocol.sock" \
		"$(grep '^ListenStream=' "$D/root/usr/local/lib/systemd/system/greylistd-protocol.socket")"
	expect_grep "the man page's inetd line" '/usr/local/sbin/greylistd greylistd$' "$D/root/usr/local/share/man/man8/greylistd.8"
	expect_grep "the man page's configuration file" '/usr/local/etc/greylistd/greylistd\.conf' "$D/root/usr/local/share/man/man8/greylistd.8"
	check "no /usr/sbin/greylistd is left in what it installed" \
		bash -c "! grep -rq '/usr/sbin/greylist' '$D/root/usr/local/share' '$D/root/usr/local/lib' '$D/root/usr/local/etc'"
	expect "the built-in paths follow the Makefile's: the installed greylistd reads /usr/local/etc/greylistd/greylistd.conf" \
		"/usr/local/etc/greylistd/greylistd.conf" \
		"$("$D/root/usr/local/sbin/greylistd" --help | sed -n 's/^  --config  *configuration file (\(.*\))$/\1/p')"
	expect "and /usr/local/etc/greylistd/whitelist" "/usr/local/etc/greylistd/whitelist" \
		"$("$D/root/usr/local/sbin/greylistd" --help | sed -n 's/^  --whitelist  *whitelist file, repeatable (\(.*\))$/\1/p')"
	echo "# mine" > "$D/root/usr/local/etc/greylistd/greylistd.conf"
	make -s -C "$D/src" install DESTDIR="$D/root" PREFIX=/usr/local SYSCONFDIR=/usr/local/etc > "$D/out" 2>&1
	expect "an admin's configuration file is kept" "# mine" "$(cat "$D/root/usr/local/etc/greylistd/greylistd.conf")"
	expect_grep "and make install says so" 'kept .*greylistd\.conf' "$D/out"

	# Another package's file: a stand-in dpkg says Debian's greylistd owns it
	newdir install-owned
	mkdir -p "$D/bin"
	printf '#!/bin/sh\n[ "$1" = -S ] || exit 2\ncase $2 in */greylistd.socket) echo "greylistd: /lib/systemd/system/greylistd.socket"; exit 0 ;; esac\nexit 1\n' > "$D/bin/dpkg"
	chmod 755 "$D/bin/dpkg"
	PATH=$D/bin:$PATH make -s install DESTDIR="$D/root" PREFIX=/usr/local OWNER_CHECK=yes > "$D/out" 2>&1
	expect "a file another package owns: make install refuses (exit 2 from make)" 2 $?
	expect_grep "and says which and whose" 'refusing: .*greylistd\.socket belongs to a Debian package' "$D/out"
	check "and installs nothing" test ! -e "$D/root"

	man --warnings -l greylistd.8 > /dev/null 2> "$D/man.err"
	man --warnings -l greylistctl.8 > /dev/null 2>> "$D/man.err"
	check "man ./greylistd.8 and ./greylistctl.8 format without a warning" test ! -s "$D/man.err"
	opts=$("$GREYLISTD" --help | sed -n 's/^  --\([a-z0-9-]*\).*/\1/p')
	for o in $opts; do
		grep -q -- "\\\-\\\-$(echo "$o" | sed 's/-/\\\\-/g')" greylistd.8 || missing="$missing $o"
	done
	expect "greylistd.8 documents every option of --help" "" "$missing"
	missing=
	for o in $opts; do
		case $o in config|help|version) continue ;; esac
		grep -q "^#$o = " greylistd.conf || missing="$missing $o"
	done
	expect "the shipped greylistd.conf shows every option" "" "$missing"
	"$GREYLISTCTL" check --config=greylistd.conf --db="$D/none" --whitelist=whitelist >/dev/null
	expect "and passes check as it is" 0 $?
	missing=
	for o in check stats dump load expire repair report explain maintain; do
		grep -q "^\.B greylistctl $o" greylistctl.8 && grep -q "^\.B $o\$" greylistctl.8 || missing="$missing $o"
		for p in $("$GREYLISTCTL" --help "$o" | sed -n 's/^  --\([a-z0-9_-]*\)  *\(stats\|dump\|expire\|maintain\|report\):.*/\1/p'); do
			grep -q -- "\\\-\\\-$(echo "$p" | sed 's/-/\\\\-/g')" greylistctl.8 || missing="$missing $o:$p"
		done
	done
	expect "greylistctl.8 documents every command and its options" "" "$missing"
}

# --- valgrind ---------------------------------------------------------------

# vg NAME ARGS... - run greylistd under memcheck with stdin as given; pass
# when valgrind finds no error and no leak
vg() {
	local name=$1; shift
	valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite,indirect \
		--errors-for-leak-kinds=definite,indirect --error-exitcode=99 \
		--trace-children=yes --log-file="$D/vg.$name" "$@" > /dev/null 2>&1
	if [ $? -eq 99 ] || ! grep -q 'ERROR SUMMARY: 0 errors' "$D/vg.$name"; then
		fail "valgrind: $name" "$(grep -A5 -E 'Invalid|uninitialised|definitely|indirectly' "$D/vg.$name" | head -n 12)"
	else
		pass "valgrind: $name: no error, no leak"
	fi
}

t_valgrind() {
	if ! command -v valgrind >/dev/null; then
		fail "valgrind" "valgrind is missing (Debian package valgrind)"; return
	fi
	if ldd "$GREYLISTD" 2>/dev/null | grep -q 'libasan'; then
		skip "valgrind" "the binary is built with AddressSanitizer, which valgrind cannot run"; return
	fi
	newdir valgrind
	printf 'client 192.0.2.99\nclient /^mx\\d+\\.example\\.org$/\nrecipient sales@\nbad line\n' > "$D/wl"
	{ req; req; req client_name=mx7.example.org; req recipient=sales@x.example; req -sender;
	  req client_address=nonsense; req protocol_state=DATA; } > "$D/in1"
	vg "a serving session (new, early retry, whitelists, bad requests)" \
		"$GREYLISTD" --db="$D/db" --log-file="$D/log" --whitelist="$D/wl" < "$D/in1"
	{ req instance=a; req instance=a; req instance=b; } > "$D/in2"
	vg "passing after the delay, with the header" \
		env FAKETIME_DONT_FAKE_MONOTONIC=1 faketime -f +400s \
		"$GREYLISTD" --db="$D/db" --log-file="$D/log" < "$D/in2"
	{ req; printf 'request=smtpd_access_policy\nno-equals-sign\n\n'; } > "$D/in3"
	vg "a protocol violation" "$GREYLISTD" --db="$D/db" --log-file="$D/log" < "$D/in3"
	vg "--privacy" "$GREYLISTD" --db="$D/pdb" --log-file="$D/log" --privacy < "$D/in1"
	vg "stats" "$GREYLISTCTL" stats --db="$D/db" < /dev/null
	"$GREYLISTCTL" dump --db="$D/db" > "$D/dump"
	vg "dump" "$GREYLISTCTL" dump --db="$D/db" < /dev/null
	vg "load" "$GREYLISTCTL" load --db="$D/db2" < "$D/dump"
	vg "expire" "$GREYLISTCTL" expire --db="$D/db" < /dev/null
	vg "report" "$GREYLISTCTL" report --db="$D/db" "$D/log" < /dev/null
	vg "report --top --html" "$GREYLISTCTL" report --db="$D/db" --top=3 --html="$D/page.html" "$D/log" < /dev/null
	vg "stats --openmetrics --output" "$GREYLISTCTL" stats --openmetrics --db="$D/db" --output="$D/m.prom" < /dev/null
	vg "check" "$GREYLISTCTL" check --whitelist="$D/wl" < /dev/null
	vg "explain" "$GREYLISTCTL" explain --db="$D/db" --whitelist="$D/wl" \
		--client-address=192.0.2.10 --sender=alice@example.com --recipient=bob@example.net < /dev/null
	{ req instance=d recipient=a@x.example; req instance=d protocol_state=DATA recipient=; } > "$D/in4"
	vg "--defer-at=data" "$GREYLISTD" --db="$D/db3" --log-file="$D/log" --defer-at=data < "$D/in4"
	vg "--learn" "$GREYLISTD" --db="$D/db3" --log-file="$D/log" --learn < "$D/in1"
	if command -v db5.3_load >/dev/null; then
		mkdir -p "$D/pg"
		printf '%s\n' '192.0.2.0/a@b.example/c@d.example' '1796150005,1796150405' \
			'192.0.2.0/e/f@b.example/c@d.example' '1,2' | db5.3_load -T -t btree "$D/pg/postgrey.db"
		printf '%s\n' '192.0.2.10' '1,1796150405' '2001:DB8:1:0:0:0:0:10' '2,1796150405' \
			| db5.3_load -T -t btree "$D/pg/postgrey_clients.db"
		vg "load --from-postgrey" "$GREYLISTCTL" load --db="$D/db4" --from-postgrey="$D/pg" < /dev/null
	fi
}

# --- static analysis ----------------------------------------------------------

# t_analyze - tests/analyze.sh: the C analysers on the sources, shellcheck
# on the shell scripts (its lines come last, from its "analyze: shellcheck:
# VERSION, N scripts" on)
t_analyze() {
	local out sc tool
	out=$(tests/analyze.sh 2>&1)
	sc=$(echo "$out" | sed -n '/^analyze: shellcheck: /,$p')
	out=$(echo "$out" | sed '/^analyze: shellcheck: /,$d')
	for tool in "gcc -fanalyzer" cppcheck clang-tidy; do
		if echo "$out" | grep -q "^analyze: $tool: clean"; then
			pass "$tool finds nothing"
		else
			fail "$tool finds nothing" "$(echo "$out" | grep -v '^analyze' | head -n 20)"
		fi
	done
	if echo "$sc" | grep -q '^analyze: shellcheck: NOT INSTALLED'; then
		skip "shellcheck finds nothing in the shell scripts" "shellcheck is missing (Debian package shellcheck)"
	elif echo "$sc" | grep -q '^analyze: shellcheck: clean'; then
		pass "shellcheck -S warning -x finds nothing in the shell scripts ($(echo "$sc" | sed -n 's/^analyze: shellcheck: .*, \([0-9]*\) scripts.*/\1/p') of them)"
	else
		fail "shellcheck -S warning -x finds nothing in the shell scripts" \
			"$(echo "$sc" | grep -v '^analyze' | head -n 20)"
	fi
}

# --- whitelists ------------------------------------------------------------

# wl_case NAME WANT-REASON REQ-ARGS - one request against $D/wl
wl_case() {
	local name=$1 want=$2; shift 2
	: > "$D/log"
	req "$@" | gl --whitelist="$D/wl" >/dev/null
	if [ "$want" = greylist ]; then
		expect_grep "$name" 'action=greylist, reason=' "$D/log"
	else
		expect_grep "$name" "action=pass, reason=$want," "$D/log"
	fi
}

t_whitelist() {
	local out i

	newdir wl
	cat > "$D/wl" <<-'EOF'
	# clients
	client 192.0.2.25
	client 198.51.100.0/24
	client 2001:db8:1::7
	client 2001:db8:2::/48
	client trusted.example
	client /^mx\d+\.regex\.example$/
	# recipients
	recipient sales@
	recipient boss@example.net
	recipient friends.example
	recipient /^noc-[a-z]+@ops\.example$/
	EOF
	wl_case "client IPv4 address" "client whitelist" client_address=192.0.2.25
	wl_case "client IPv4 neighbour of a listed address is not listed" greylist client_address=192.0.2.26
	wl_case "client IPv4 CIDR" "client whitelist" client_address=198.51.100.200
	wl_case "client IPv4-mapped address in a CIDR" "client whitelist" client_address=::ffff:198.51.100.9
	wl_case "client IPv6 address" "client whitelist" client_address=2001:db8:1:0:0:0:0:7
	wl_case "client IPv6 CIDR" "client whitelist" client_address=2001:db8:2:ffff::1
	wl_case "client IPv6 outside the CIDR" greylist client_address=2001:db8:3::1
	wl_case "client host name" "client whitelist" client_name=trusted.example
	wl_case "client subdomain" "client whitelist" client_name=mx1.out.Trusted.Example
	wl_case "client name that only ends alike is not a subdomain" greylist client_name=untrusted.example
	wl_case "client unverified name is never used" greylist client_name=unknown reverse_client_name=mx.trusted.example
	wl_case "client regex (Perl \\d)" "client whitelist" client_name=MX12.regex.example
	wl_case "client regex anchored" greylist client_name=mx12.regex.example.com
	wl_case "recipient user@ at any domain" "recipient whitelist" recipient=sales@anything.example
	wl_case "recipient user@domain" "recipient whitelist" recipient=Boss@Example.NET
	wl_case "recipient user@domain, other domain" greylist recipient=boss@example.org
	wl_case "recipient +extension matches its base" "recipient whitelist" recipient=boss+2026@example.net
	wl_case "recipient +extension matches user@" "recipient whitelist" recipient=sales+eu@shop.example
	wl_case "recipient domain" "recipient whitelist" recipient=anyone@friends.example
	wl_case "recipient subdomain" "recipient whitelist" recipient=anyone@eu.friends.example
	wl_case "recipient regex" "recipient whitelist" recipient=noc-paris@ops.example
	wl_case "postmaster@ is never greylisted" "recipient whitelist" recipient=postmaster@example.net
	wl_case "abuse@ is never greylisted" "recipient whitelist" recipient=Abuse@example.net
	cp "$D/wl" "$WORK/wl.saved"
	newdir wl-nowrite
	for a in client_address=192.0.2.25 client_name=trusted.example recipient=sales@x.example recipient=postmaster@example.net; do
		req $a | gl --whitelist="$WORK/wl.saved" >/dev/null
	done
	expect "whitelisted requests are answered" 4 "$(grep -c 'whitelist,' "$D/log")"
	check "and write nothing to the database" test ! -s "$D/db"
	req | gl --whitelist="$WORK/wl.saved" >/dev/null
	check "(a greylisted one writes it)" test -s "$D/db"

	newdir wl-default
	req recipient=postmaster@example.net | gl --whitelist=/nonexistent/only-default >/dev/null
	expect_grep "postmaster@ needs no file" 'reason=recipient whitelist' "$D/log"

	newdir wl-bad
	printf 'client 192.0.2.1\nclient 192.0.2.300\nrecipient a b\nhost x\nclient /^[z-a]$/\nclient /^(broken$/\nclient ok.example\n' > "$D/wl"
	out=$("$GREYLISTCTL" check --whitelist="$D/wl"); i=$?
	expect "check exits non-zero on bad lines" 1 "$i"
	expect "check names each bad line as FILE:LINE" \
		"$D/wl:2 $D/wl:3 $D/wl:4 $D/wl:5 $D/wl:6" "$(echo "$out" | cut -d: -f1,2 | tr '\n' ' ' | sed 's/ $//')"
	expect_grep "check says what is wrong" '^.*wl:3: one value is expected after the keyword$' <(echo "$out")
	"$GREYLISTCTL" check --whitelist=whitelist
	expect "the shipped whitelist passes check" 0 $?
	"$GREYLISTCTL" check --whitelist=/nonexistent/wl >/dev/null
	expect "check fails on a named file that is missing" 1 $?
	for i in 1 2 3; do
		req client_address=192.0.2.1 | gl --whitelist="$D/wl" >/dev/null
		req client_name=ok.example | gl --whitelist="$D/wl" >/dev/null
	done
	sleep 0.5
	expect "serving skips bad lines and uses the good ones" 6 "$(grep -c 'reason=client whitelist' "$D/log")"
	expect "each bad line is logged once over six connections" 5 "$(grep -c 'line skipped' "$D/log")"
	expect_grep "the log names the line and what PCRE2 says" "warning: $D/wl:6: not a valid regular expression: missing closing parenthesis \\(at offset 9\\); line skipped" "$D/log"
	printf 'client 192.0.2.1\nclient 999.1.1.1\n' > "$D/wl"
	req | gl --whitelist="$D/wl" >/dev/null
	sleep 0.5
	expect_grep "a changed file is reported again" "$D/wl:2: not an address" "$D/log"

	newdir wl-postgrey
	for args in "client_name=mail42.perl.example" "client_name=relay7.lazy.example" \
		"client_name=fallback-3.eu.example.org" "client_address=198.51.100.100" \
		"client_address=203.0.113.200" "client_address=2001:db8:77:1::5" \
		"client_name=mx.partner.example" "recipient=helpdesk@any.example" \
		"recipient=ceo+x@bigcorp.example" "recipient=a@sub.nogreylist.example" \
		"recipient=list-dev@lists.example"; do
		req $args | gl --whitelist-clients=tests/postgrey/whitelist_clients \
			--whitelist-recipients=tests/postgrey/whitelist_recipients >/dev/null
	done
	expect "postgrey's files are read unchanged: all 11 entries match" 11 "$(grep -c 'whitelist,' "$D/log")"
	req client_address=198.51.100.200 | gl --whitelist-clients=tests/postgrey/whitelist_clients >/dev/null
	expect_grep "postgrey CIDR /25 bounds hold" 'action=greylist, reason=new' "$D/log"
	"$GREYLISTCTL" check --whitelist-clients=tests/postgrey/whitelist_clients \
		--whitelist-recipients=tests/postgrey/whitelist_recipients
	expect "check accepts postgrey's files" 0 $?
}

# --- auto-whitelist and privacy -----------------------------------------------

# pass_triplet N WHEN ARGS - greylist triplet N, then pass it 10 minutes on
pass_triplet() {
	local n=$1 when=$2; shift 2
	req recipient=r$n@example.net "$@" | at "+${when}s" "$GREYLISTD" --db="$D/db" --log-file="$D/log" >/dev/null
	req recipient=r$n@example.net "$@" | at "+$((when + 600))s" "$GREYLISTD" --db="$D/db" --log-file="$D/log" >/dev/null
}

t_awl() {
	local i out

	newdir awl
	for i in 1 2 3 4 5; do pass_triplet $i $((i * 3700)); done
	expect "five passes, an hour apart" 5 "$(grep -cE 'delay=60[01],' "$D/log")"
	expect_grep "the client's becoming whitelisted is logged" 'whitelisted: mail.example.com\[192.0.2.10\]' "$D/log"
	out=$(req recipient=new@example.net | at +6h "$GREYLISTD" --db="$D/db" --log-file="$D/log" | actions)
	expect "then a new triplet from it passes at once" "DUNNO" "$out"
	expect_grep "logged as client AWL" 'action=pass, reason=client AWL, client_name=mail.example.com, client_address=192.0.2.10' "$D/log"
	out=$(req recipient=new2@example.net client_address=192.0.2.11 | at +6h "$GREYLISTD" --db="$D/db" --log-file="$D/log" | actions | cut -c1-15)
	expect "an IPv4 neighbour is not auto-whitelisted" "DEFER_IF_PERMIT" "$out"
	out=$(req recipient=new3@example.net | at +40d "$GREYLISTD" --db="$D/db" --log-file="$D/log" | actions | cut -c1-15)
	expect "after max-age idle the client is greylisted again" "DEFER_IF_PERMIT" "$out"
	expect "whitelisted: logged once" 1 "$(grep -c 'whitelisted: ' "$D/log")"

	newdir awl-hourly
	for i in 1 2 3 4 5 6; do pass_triplet $i $((i * 60)); done
	out=$(req recipient=new@example.net | at +2h "$GREYLISTD" --db="$D/db" --log-file="$D/log" | actions | cut -c1-15)
	expect "passes within one hour count once" "DEFER_IF_PERMIT" "$out"

	newdir awl-v6
	for i in 1 2; do pass_triplet $i $((i * 3700)) client_address=2001:db8:9::$i; done
	out=$(req recipient=new@example.net client_address=2001:db8:9::77 | at +3h "$GREYLISTD" --db="$D/db" --log-file="$D/log" --auto-whitelist-clients=2 | actions)
	expect "IPv6 clients count per /64" "DUNNO" "$out"

	newdir awl-off
	for i in 1 2 3 4 5 6; do
		req recipient=r$i@example.net | at "+$((i * 3700))s" "$GREYLISTD" --db="$D/db" --log-file="$D/log" --auto-whitelist-clients=0 >/dev/null
		req recipient=r$i@example.net | at "+$((i * 3700 + 600))s" "$GREYLISTD" --db="$D/db" --log-file="$D/log" --auto-whitelist-clients=0 >/dev/null
	done
	expect "--auto-whitelist-clients=0 keeps no client records" 0 \
		"$(printf 'list\n' | gdbmtool "$D/db" | grep -c '^C')"

	newdir privacy
	req client_address=203.0.113.9 sender=secret.sender@example.org recipient=hidden@example.net | gl --privacy >/dev/null
	out=$(req client_address=203.0.113.9 sender=secret.sender@example.org recipient=hidden@example.net \
		| at +400s "$GREYLISTD" --db="$D/db" --log-file="$D/log" --privacy | actions | cut -c1-7)
	expect "--privacy: greylisting works" "PREPEND" "$out"
	check "--privacy: no address in the database file" \
		bash -c "! grep -a -q -e secret -e hidden -e 203.0.113 -e example '$D/db'"
	expect "--privacy: keys are digests" 2 \
		"$(printf 'list\n' | gdbmtool "$D/db" | grep -cE '^[TC]\\n[0-9a-f]{64} ')"
}

ALL_GROUPS="protocol bad_input triplet time options options2 config crlf wlreload timeouts database concurrency sockets whitelist awl ops truth report expiry systemd faults stress postfix exim exim_gp sendmail milter multimx redis_harness redis metrics html learn explain deferdata pgimport install valgrind fuzz loglines design analyze deps"
# Run only when named: fresh (tests/fresh.sh; a default run says so).
# shellcheck disable=SC2068 # group names are single words: $ALL_GROUPS is split on purpose
for g in ${@:-$ALL_GROUPS}; do
	echo "== $g"
	"t_$g"
done
[ $# -eq 0 ] && fr_left_out

passed=$(grep -c '^PASS' "$RESULTS")
failed=$(grep -c '^FAIL' "$RESULTS")
skipped=$(grep -c '^SKIP' "$RESULTS")
[ "$skipped" -gt 0 ] && echo "($skipped skipped, listed above)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
