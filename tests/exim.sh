# shellcheck shell=bash
# tests/exim.sh - end to end: the shipped exim4-acl.conf in a real Exim
# 4.96, asking the real greylistd, served one process per connection by
# systemd-socket-activate.
#
# Sourced by test.sh, which runs t_exim as the group "exim". Debian's
# exim4-daemon-light conflicts with postfix, so it is downloaded and
# unpacked, never installed (tests/mta-lib.sh; kept in
# /var/cache/greylistd-tests/exim4). Everything runs inside a namespace of
# the test's own (network, mount, UTS):
#
#   exim4 -bh ADDR / -bs -oMa ADDR -odq     (SMTP on stdin; -bh queues
#     |                                      nothing, -bs -odq queues)
#     +-- ${readsocket} --> systemd-socket-activate --> greylistd
#         UNIX socket in $WORK, or inet:127.0.0.1:10023 (the namespace's
#         own loopback)
#   dnsmasq on the namespace's 127.0.0.1:53: the only DNS server Exim
#     can reach; it knows a few names and logs every query
#
# Exim's compiled-in user Debian-exim is added, when the machine has none,
# to copies of /etc/passwd and /etc/group mounted in the namespace only.
# greylistd runs with --delay=1s, so a retry two seconds later passes. The
# checks read what Exim answered, the header lines of the messages it
# queued (spool/input/*-H), greylistd's log and dnsmasq's query log. The
# group also measures the RCPT round trip (connect, request, reply) seen
# from inside Exim, against greylistd and against postgrey --exim.
#
# Needs root (namespaces, mounts), unshare, nsenter, ip, apt-get (first
# run), systemd-socket-activate; dnsmasq and postgrey for some checks.
# Without them the group, or those checks, are skipped, saying why. About
# 12 seconds: 4 of them a readsocket timeout waited out on purpose, 2 the
# greylisting delay, 2 postgrey's.

EX_FROM=alice@sender.test	# the sender of every message
EX_RCPT=bob@dest.test		# the recipient that gets greylisted
EX_TIMEOUT=4			# readsocket's timeout in the shutdown=no checks
EX_RTT_N=100			# RCPTs per round-trip measurement
EX_ACL=$PWD/exim4-acl.conf	# the shipped snippet (test.sh runs in the tree)

# ex_cannot_run - print why this machine cannot run the group and succeed,
# or fail when it can
ex_cannot_run() {
	local c
	[ "$(id -u)" -eq 0 ] || { echo "needs root (namespaces, bind mounts)"; return 0; }
	for c in unshare nsenter ip systemd-socket-activate apt-get dpkg flock; do
		command -v $c >/dev/null ||
			{ echo "$c not found (Debian packages util-linux, iproute2, systemd, apt, dpkg)"; return 0; }
	done
	[ -r "$EX_ACL" ] || { echo "no $EX_ACL"; return 0; }
	return 1
}

# ex_exim ARGS... - the unpacked Exim, inside the namespace
ex_exim() {
	ns_run env LD_LIBRARY_PATH="$EX_ROOT/usr/lib/x86_64-linux-gnu" \
		"$EX_ROOT/usr/sbin/exim4" "$@"
}

# ex_conf NAME SOCKET TIMEOUT [LOOKUP [EXTRA]] - write $EX_DIR/NAME.conf:
# the test's Exim configuration, with the snippet included as the README
# says. LOOKUP is host_lookup's value (empty: no reverse lookups). EXTRA
# "rtt" wraps the snippet in statements that log each round trip;
# "verify" puts "verify = reverse_host_lookup" before it.
ex_conf() {
	local name=$1 sock=$2 timeout=$3 lookup=${4:-} extra=${5:-}
	{
		cat <<-EOF
		# Exim for greylistd's tests: queue only, no TLS, no ident, and
		# reverse lookups only where host_lookup says.
		primary_hostname = mx.exim.test
		qualify_domain = exim.test
		spool_directory = $EX_DIR/spool
		log_file_path = $EX_DIR/log/%slog
		domainlist relay_to_domains = dest.test
		acl_smtp_rcpt = acl_check_rcpt
		host_lookup = $lookup
		rfc1413_hosts =
		tls_advertise_hosts =
		keep_environment =
		queue_only = true
		GREYLISTD_SOCKET = $sock
		GREYLISTD_TIMEOUT = $timeout

		begin acl
		acl_check_rcpt:
		  accept hosts = :
		  deny   !domains = +relay_to_domains
		         message = relay not permitted
		EOF
		[ "$extra" = verify ] && echo '  warn   verify = reverse_host_lookup'
		# shellcheck disable=SC2016 # Exim's variables, for Exim
		[ "$extra" = rtt ] && printf '  warn   set acl_m_rtt0 = $tod_epoch_l\n'
		echo ".include $EX_DIR/exim4-acl.conf"
		# shellcheck disable=SC2016 # Exim's variables, for Exim
		[ "$extra" = rtt ] && printf '  warn   logwrite = greylistd-rtt ${eval:$tod_epoch_l-$acl_m_rtt0}\n'
		cat <<-EOF
		  accept

		begin routers
		dest:
		  driver = manualroute
		  domains = dest.test
		  transport = remote
		  route_list = * 127.0.0.1

		begin transports
		remote:
		  driver = smtp
		EOF
	} > "$EX_DIR/$name.conf"
}

# ex_setup - the directories, users, DNS data and configurations under
# $EX_DIR. On failure sets EX_WHY and returns 1.
ex_setup() {
	local uid
	EX_DIR=$WORK/exim
	rm -rf "$EX_DIR"
	mkdir -p "$EX_DIR"/spool "$EX_DIR"/log "$EX_DIR"/gl
	# Exim runs its ACLs as Debian-exim, which must reach the sockets.
	chmod go+x "$WORK" "$EX_DIR" "$EX_DIR"/gl
	if getent passwd Debian-exim >/dev/null; then
		uid=$(id -u Debian-exim)
	else
		if ! uid=$(free_id) || ! ns_user_file "$EX_DIR" Debian-exim "$uid"; then
			EX_WHY="no free uid, or cannot copy passwd and group"; return 1
		fi
	fi
	chown "$uid:$uid" "$EX_DIR"/spool "$EX_DIR"/log
	# The shipped snippet, as it is, where Exim's user can read it: Exim
	# reads a -C configuration and what it includes without root (seen
	# in the fresh group, whose tree is in /root, mode 0700: "failed to
	# open included configuration file")
	cp "$EX_ACL" "$EX_DIR/exim4-acl.conf" && chmod 0644 "$EX_DIR/exim4-acl.conf" ||
		{ EX_WHY="cannot copy $EX_ACL"; return 1; }
	printf '127.0.0.1 localhost\n' > "$EX_DIR"/hosts
	printf 'nameserver 127.0.0.1\n' > "$EX_DIR"/resolv.conf
	printf 'client mx.client.test\nclient liar.client.test\n' > "$EX_DIR"/whitelist
	ex_conf unix "$EX_DIR/gl/gl.sock" 5s
	ex_conf inet inet:127.0.0.1:10023 5s
	ex_conf missing "$EX_DIR/gl/none.sock" 5s
	ex_conf keepopen "$EX_DIR/gl/exim.sock" "${EX_TIMEOUT}s:shutdown=no"
	ex_conf keepopen-noexim "$EX_DIR/gl/noexim.sock" "${EX_TIMEOUT}s:shutdown=no"
	ex_conf lookup "$EX_DIR/gl/wl.sock" 5s '*'
	ex_conf rtt-greylistd "$EX_DIR/gl/gl.sock" 5s '' rtt
	ex_conf rtt-postgrey "$EX_DIR/gl/pg.sock" 5s '' rtt
	ex_conf verify "$EX_DIR/gl/wl.sock" 5s '' verify
	grep -v '^GREYLISTD_' "$EX_DIR/unix.conf" > "$EX_DIR/nomacros.conf"
}

# ex_serve NAME LISTEN GREYLISTD-ARGS... - greylistd behind
# systemd-socket-activate in the namespace, on LISTEN (a path or
# 127.0.0.1:PORT), with database and log $EX_DIR/gl/NAME.{db,log}. Its
# PID is added to NS_SPAWNED; false when the socket does not appear.
ex_serve() {
	local name=$1 listen=$2; shift 2
	ns_spawn systemd-socket-activate --accept --inetd -l "$listen" \
		"$GREYLISTD" --db="$EX_DIR/gl/$name.db" --log-file="$EX_DIR/gl/$name.log" \
		--delay=1s "$@" > "$EX_DIR/gl/$name.out" 2>&1
	# It says so once it listens (a socket file exists from bind on).
	for _ in $(seq 50); do
		if grep -q '^Listening on' "$EX_DIR/gl/$name.out"; then
			# Exim's user must be able to connect (it made it 0644).
			case $listen in /*) chmod 666 "$listen" ;; esac
			return
		fi
		sleep 0.1
	done
	return 1
}

# ex_dns - dnsmasq on the namespace's 127.0.0.1:53 (PID added to NS_SPAWNED):
# mx.client.test is 198.51.100.7 both ways (a verified name); the PTR of
# 198.51.100.8 says liar.client.test, whose address is another (a name
# that does not verify); nothing else exists. Every query is logged in
# $EX_DIR/dns.log.
ex_dns() {
	: > "$EX_DIR/dns.log" && chown nobody "$EX_DIR/dns.log"
	ns_spawn dnsmasq --keep-in-foreground --no-resolv --no-hosts --pid-file= \
		--listen-address=127.0.0.1 --bind-interfaces --user=nobody \
		--local=/test/ --local=/in-addr.arpa/ --local=/ip6.arpa/ \
		--host-record=mx.client.test,198.51.100.7 \
		--ptr-record=8.100.51.198.in-addr.arpa,liar.client.test \
		--address=/liar.client.test/203.0.113.1 \
		--log-queries --log-facility="$EX_DIR/dns.log" > "$EX_DIR/dns.out" 2>&1
	for _ in $(seq 50); do
		grep -q 'started, version' "$EX_DIR/dns.log" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# ex_dns_queries - how many queries dnsmasq has logged so far
ex_dns_queries() { grep -c ': query\[' "$EX_DIR/dns.log" 2>/dev/null; }

# ex_bh TAG CONF ADDR RCPT... - an ACL test session (-bh: nothing is
# queued) from ADDR, one MAIL from $EX_FROM and a RCPT per argument. The
# transcript is $EX_DIR/TAG.bh; EX_REPLY is the RCPT replies, one line
# each, joined by "|".
ex_bh() {
	local tag=$1 conf=$2 addr=$3 r; shift 3
	{
		printf 'EHLO %s.client.test\r\nMAIL FROM:<%s>\r\n' "$tag" "$EX_FROM"
		for r in "$@"; do printf 'RCPT TO:<%s>\r\n' "$r"; done
		printf 'QUIT\r\n'
	} | ex_exim -C "$EX_DIR/$conf.conf" -bh "$addr" > "$EX_DIR/$tag.bh" 2>&1
	# replies: banner, EHLO (last line), MAIL, then one per RCPT
	EX_REPLY=$(grep -E '^[0-9]{3} ' "$EX_DIR/$tag.bh" | sed -n "4,$((3 + $#))p" \
		| tr -d '\r' | paste -sd '|')
}

# ex_rcpt NAME TAG CONF ADDR RCPT WANT - a -bh session whose one RCPT must
# get a reply matching the glob WANT
ex_rcpt() {
	local name=$1 tag=$2 conf=$3 addr=$4 rcpt=$5 want=$6
	ex_bh "$tag" "$conf" "$addr" "$rcpt"
	# shellcheck disable=SC2254 # $want is a glob
	case $EX_REPLY in
	$want) pass "$name" ;;
	*) fail "$name" "want [$want] got [$EX_REPLY]; $(grep -m 2 '^LOG' "$EX_DIR/$tag.bh" | tr '\n' ' ')" ;;
	esac
}

# ex_bs TAG CONF ADDR NAME MSG... - a real SMTP session (-bs) from ADDR
# whose verified name Exim is told is NAME (-oMs), queueing what it
# accepts (-odq). Each MSG is a comma-separated list of recipients; the
# message i has "Subject: greylistd TAG-i". The transcript is
# $EX_DIR/TAG.bs.
ex_bs() {
	local tag=$1 conf=$2 addr=$3 name=$4 i=0 m r; shift 4
	{
		printf 'EHLO %s.client.test\r\n' "$tag"
		for m in "$@"; do
			i=$((i + 1))
			printf 'MAIL FROM:<%s>\r\n' "$EX_FROM"
			for r in ${m//,/ }; do printf 'RCPT TO:<%s>\r\n' "$r"; done
			printf 'DATA\r\nSubject: greylistd %s-%s\r\n\r\nbody\r\n.\r\n' "$tag" "$i"
		done
		printf 'QUIT\r\n'
	} | ex_exim -C "$EX_DIR/$conf.conf" -bs -oMa "$addr" -oMs "$name" -odq \
		> "$EX_DIR/$tag.bs" 2>&1
}

# ex_queued SUBJECT - the spool header file (-H) of the queued message
# with that Subject; nothing when there is none
ex_queued() {
	grep -l -- "^[0-9]\{3\}  Subject: greylistd $1\$" "$EX_DIR"/spool/input/*-H 2>/dev/null | head -n 1
}

# ex_headers FILE - the header lines of a spool -H file, in order, without
# the length and flag columns (continuation lines left out)
ex_headers() { sed -n 's/^[0-9]\{3\}[A-Z* ] \(.*\)$/\1/p' "$1"; }

# ex_greylisting - first try, retry, the queued message and its header
ex_greylisting() {
	local t0 f n hdr L=$EX_DIR/gl/gl.log

	ex_bh first unix 198.51.100.7 "$EX_RCPT" carol@dest.test dave@dest.test
	t0=$(date +%s)		# the three triplets were first seen by now
	expect "a new triplet gets 451 4.7.1 from Exim, with greylistd's text (three RCPTs)" \
		"451 4.7.1 Greylisted, please try again in 1 seconds|451 4.7.1 Greylisted, please try again in 1 seconds|451 4.7.1 Greylisted, please try again in 1 seconds" \
		"$EX_REPLY"
	expect "the 451 is one line: the reply's newlines were trimmed (no 451- continuation)" \
		0 "$(grep -c '^451-' "$EX_DIR/first.bh")"
	expect_grep "greylistd got Exim's client, sender and recipient (client_name unknown: no lookup)" \
		"action=greylist, reason=new, client_name=unknown, client_address=198\.51\.100\.7, sender=$EX_FROM, recipient=$EX_RCPT\$" "$L"
	expect_grep "Exim logs the deferral as a temporary rejection" \
		"temporarily rejected RCPT <$EX_RCPT>: 4\.7\.1 Greylisted" "$EX_DIR/first.bh"

	ex_rcpt "IPv6: a new client is deferred (451)" v6 unix 2001:db8:1::7 "$EX_RCPT" \
		"451 4.7.1 Greylisted, please try again in 1 seconds"
	expect_grep "IPv6: greylistd got the address as Exim gives it" \
		"action=greylist, reason=new, client_name=unknown, client_address=2001:db8:1::7, " "$L"
	ex_rcpt "postmaster@ is not delayed" pm unix 203.0.113.99 postmaster@dest.test "250 Accepted"
	expect_grep "postmaster@ passes in greylistd as recipient whitelist" \
		"action=pass, reason=recipient whitelist, .*recipient=postmaster@dest\.test\$" "$L"

	while [ "$(date +%s)" -le $((t0 + 1)) ]; do sleep 0.2; done

	# One session, two messages: the first to bob and carol (both pass
	# for the first time), the second to dave (first pass) and bob.
	ex_bs retry unix 198.51.100.7 mx.client.test "$EX_RCPT,carol@dest.test" "dave@dest.test,$EX_RCPT"
	expect "the retry after the delay: every RCPT accepted" 4 \
		"$(grep -c '^250 Accepted' "$EX_DIR/retry.bs")"
	expect "both messages are queued" 2 "$(grep -c '^250 OK id=' "$EX_DIR/retry.bs")"
	f=$(ex_queued retry-1)
	if [ -z "$f" ]; then
		fail "the queued message carries X-Greylist" "no -H file with its Subject in $EX_DIR/spool/input: $(tail -n 3 "$EX_DIR/retry.bs" | tr '\n' ' ')"
	else
		hdr=$(ex_headers "$f" | head -n 1)
		n=$(echo "$hdr" | sed -n 's/^X-Greylist: delayed \([0-9]*\) seconds by greylistd-[0-9][0-9.]* at [^;]*; .*[0-9][0-9][0-9][0-9] .*/\1/p')
		if [ -n "$n" ] && [ "$n" -ge 1 ] && [ "$n" -le 30 ]; then
			pass "the queued message's first header is X-Greylist: delayed $n seconds by greylistd-... (above Received:)"
		else
			fail "the queued message's first header is X-Greylist: delayed N seconds by greylistd-..." "[$hdr]"
		fi
		expect "two first passes in one message: one X-Greylist header" 1 \
			"$(ex_headers "$f" | grep -c '^X-Greylist:')"
	fi
	expect "greylistd sent two first passes for that message" 2 \
		"$(grep -cE "action=pass, reason=triplet found, delay=[0-9]+, client_name=mx\.client\.test, .*recipient=($EX_RCPT|carol@dest\.test)\$" "$L")"
	f=$(ex_queued retry-2)
	if [ -z "$f" ]; then
		fail "the second message of the session is queued" "no -H file"
	else
		expect "the second message (dave's first pass) has its own X-Greylist header" 1 \
			"$(ex_headers "$f" | grep -c '^X-Greylist:')"
	fi
	expect_grep "-oMs: greylistd got the name Exim was given as verified" \
		"client_name=mx\.client\.test, client_address=198\.51\.100\.7, sender=$EX_FROM, recipient=dave@dest\.test\$" "$L"

	ex_rcpt "a neighbour in the same /24 passes at once" neighbour unix 198.51.100.250 "$EX_RCPT" "250 Accepted"
	expect_grep "greylistd: the neighbour passes as triplet found" \
		"action=pass, reason=triplet found, client_name=unknown, client_address=198\.51\.100\.250, " "$L"
	ex_rcpt "a host in the next /24 is a new triplet (451)" other unix 198.51.101.7 "$EX_RCPT" "451 4.7.1 Greylisted*"
}

# ex_sockets - inet: as well as UNIX, and fail-open without greylistd
ex_sockets() {
	if ex_serve inet 127.0.0.1:10023; then
		ex_rcpt "inet:127.0.0.1:10023 works as a UNIX socket does (451)" inet inet 198.51.100.7 "$EX_RCPT" \
			"451 4.7.1 Greylisted, please try again in 1 seconds"
		expect_grep "greylistd behind inet: logged it" "action=greylist, reason=new, .*client_address=198\.51\.100\.7, " \
			"$EX_DIR/gl/inet.log"
	else
		fail "greylistd listens on the namespace's 127.0.0.1:10023" "$(head -c 300 "$EX_DIR/gl/inet.out")"
	fi
	ex_rcpt "no greylistd at the socket: mail is accepted (fail open)" missing missing 198.51.100.9 "$EX_RCPT" "250 Accepted"
	expect_grep "the fail string was used (the ACL trace shows action=DUNNO)" \
		'^>>> +=? ?action=DUNNO$' "$EX_DIR/missing.bh"
}

# ex_action NAME TAG WANT GREYLISTD-ARGS... - greylistd with those options
# on a socket of its own: a new triplet's RCPT must get the reply WANT
ex_action() {
	local name=$1 tag=$2 want=$3; shift 3
	ex_conf "$tag" "$EX_DIR/gl/$tag.sock" 5s
	if ! ex_serve "$tag" "$EX_DIR/gl/$tag.sock" "$@"; then
		fail "$name" "no socket for greylistd $*"; return
	fi
	ex_rcpt "$name" "$tag" "$tag" 198.51.100.7 "$EX_RCPT" "$want"
}

# ex_actions - the snippet's other answers: a 4NN code, a text with its
# own enhanced code, and DEFER_IF_REJECT (which Exim cannot honour)
ex_actions() {
	ex_action "--greylist-action=450: Exim answers with that code" act450 \
		"450 Greylisted, please try again in 1 seconds" --greylist-action=450
	ex_action "a text with its own enhanced code gets no 4.7.1 added" acttext \
		"451 4.7.28 wait 1 s" "--greylist-text=4.7.28 wait %s s"
	ex_action "DEFER_IF_REJECT is not a deferral in Exim: accepted" actreject \
		"250 Accepted" --greylist-action=DEFER_IF_REJECT
}

# ex_keepopen - shutdown=no keeps Exim's side open: with greylistd --exim
# the answer comes at once, without it the answer is lost to the timeout
ex_keepopen() {
	local t0 ms1 ms2
	if ! ex_serve exim "$EX_DIR/gl/exim.sock" --exim ||
	   ! ex_serve noexim "$EX_DIR/gl/noexim.sock"; then
		fail "greylistd sockets for the shutdown=no checks" "did not appear"; return
	fi

	t0=$(date +%s%N)
	ex_bh keepopen keepopen 198.51.100.7 "$EX_RCPT"
	ms1=$(elapsed_ms "$t0")
	expect "shutdown=no with greylistd --exim: greylistd's answer (451)" \
		"451 4.7.1 Greylisted, please try again in 1 seconds" "$EX_REPLY"
	check "and the session takes less than the ${EX_TIMEOUT} s timeout (took $ms1 ms)" \
		test "$ms1" -lt $((EX_TIMEOUT * 1000))

	t0=$(date +%s%N)
	ex_bh keepopen-noexim keepopen-noexim 198.51.100.7 "$EX_RCPT"
	ms2=$(elapsed_ms "$t0")
	expect "shutdown=no without --exim: the answer is lost, the fail string used (250)" \
		"250 Accepted" "$EX_REPLY"
	check "it waited out the ${EX_TIMEOUT} s timeout (took $ms2 ms)" \
		test "$ms2" -ge $((EX_TIMEOUT * 1000 - 100))
	expect_grep "though greylistd had decided (reason=new), Exim never saw it" \
		"action=greylist, reason=new, .*client_address=198\.51\.100\.7, " "$EX_DIR/gl/noexim.log"
}

# ex_names - client_name: the verified name, else unknown; never a lookup
# of the snippet's own
ex_names() {
	local before L=$EX_DIR/gl/wl.log
	if [ -z "$EX_HAVE_DNS" ]; then
		skip "Exim client names" "$EX_HAVE_DNS_WHY"
		return
	fi
	expect "the snippet made no DNS query in the sessions so far (host_lookup unset)" \
		0 "$(ex_dns_queries)"
	if ! ex_serve wl "$EX_DIR/gl/wl.sock" --whitelist="$EX_DIR/whitelist"; then
		fail "greylistd with a name whitelist" "no socket"; return
	fi
	before=$(ex_dns_queries)
	ex_rcpt "host_lookup = *: a verified name on the whitelist passes" named lookup 198.51.100.7 "$EX_RCPT" "250 Accepted"
	check "Exim looked the client up in the namespace's DNS ($(( $(ex_dns_queries) - before )) queries)" \
		test "$(ex_dns_queries)" -gt "$before"
	expect_grep "greylistd got the verified name and passed it as client whitelist" \
		"action=pass, reason=client whitelist, client_name=mx\.client\.test, client_address=198\.51\.100\.7, " "$L"
	ex_rcpt "a PTR name that does not map back is not used: greylisted (451)" liar lookup 198.51.100.8 "$EX_RCPT" \
		"451 4.7.1 Greylisted*"
	expect_grep "greylistd got client_name=unknown for it" \
		"action=greylist, reason=new, client_name=unknown, client_address=198\.51\.100\.8, " "$L"
	ex_rcpt "no PTR at all: greylisted (451)" noname lookup 203.0.113.9 "$EX_RCPT" "451 4.7.1 Greylisted*"
	expect_grep "greylistd got client_name=unknown for it too" \
		"action=greylist, reason=new, client_name=unknown, client_address=203\.0\.113\.9, " "$L"
	ex_rcpt "host_lookup unset, an earlier verify = reverse_host_lookup: the name is sent too" \
		verify verify 198.51.100.7 carol@dest.test "250 Accepted"
	expect_grep "greylistd got it, and passed the client as client whitelist" \
		"action=pass, reason=client whitelist, client_name=mx\.client\.test, client_address=198\.51\.100\.7, .*recipient=carol@dest\.test\$" "$L"
}

# ex_rtt_run TAG CONF - EX_RTT_N RCPTs of one passed triplet in a -bs
# session, each round trip logged by the rtt configuration; prints
# "p50 p90 max n" in microseconds
ex_rtt_run() {
	local tag=$1 conf=$2 rcpts i
	rcpts=$EX_RCPT
	for ((i = 1; i < EX_RTT_N; i++)); do rcpts="$rcpts,$EX_RCPT"; done
	: > "$EX_DIR/log/mainlog"
	ex_bs "$tag" "$conf" 198.51.100.7 mx.client.test "$rcpts"
	sed -n 's/.*greylistd-rtt \([0-9]*\)$/\1/p' "$EX_DIR/log/mainlog" | sort -n |
		awk '{ v[NR] = $1 } END { if (NR) printf "%d %d %d %d\n", v[int((NR + 1) / 2)], v[int((NR * 9 + 9) / 10)], v[NR], NR }'
}

# ex_rtt - the RCPT round trip measured inside Exim ($tod_epoch_l before
# and after the snippet's statements): greylistd behind
# systemd-socket-activate, and postgrey --exim on a UNIX socket
ex_rtt() {
	local g p pg_pid
	g=$(ex_rtt_run rtt-greylistd rtt-greylistd)
	# shellcheck disable=SC2086 # four numbers, one a word
	set -- $g
	if [ "${4:-0}" -eq "$EX_RTT_N" ]; then
		pass "RCPT round trip, greylistd under systemd-socket-activate: p50 $1 us, p90 $2 us, max $3 us ($4 RCPTs)"
	else
		fail "RCPT round trip, greylistd under systemd-socket-activate" "got [$g] from $EX_DIR/log/mainlog"
	fi
	if ! command -v postgrey >/dev/null || ! getent passwd postgrey >/dev/null; then
		skip "RCPT round trip, postgrey --exim" "no postgrey (Debian package postgrey)"
		return
	fi
	mkdir -p "$EX_DIR/pg" && chown postgrey "$EX_DIR/pg"
	ns_spawn postgrey --unix="$EX_DIR/gl/pg.sock" --dbdir="$EX_DIR/pg" --delay=1 --exim \
		--user=postgrey --group=postgrey > "$EX_DIR/pg.out" 2>&1
	pg_pid=$!
	# postgrey makes its socket 0666 once it listens
	for _ in $(seq 100); do
		[ "$(stat -c %a "$EX_DIR/gl/pg.sock" 2>/dev/null)" = 666 ] && break
		sleep 0.1
	done
	if [ "$(stat -c %a "$EX_DIR/gl/pg.sock" 2>/dev/null)" != 666 ]; then
		fail "postgrey --exim starts" "$(tail -n 3 "$EX_DIR/pg.out")"; return
	fi
	# The triplet is new to postgrey: one try, and the retry the delay on.
	ex_bh pg-first rtt-postgrey 198.51.100.7 "$EX_RCPT"
	expect "postgrey --exim through the snippet: a new triplet gets 451" \
		"451 4.7.1 Greylisted, see http://postgrey.schweikert.ch/help/dest.test.html" "$EX_REPLY"
	sleep 2.2
	p=$(ex_rtt_run rtt-postgrey rtt-postgrey)
	# shellcheck disable=SC2086 # four numbers, one a word
	set -- $p
	if [ "${4:-0}" -eq "$EX_RTT_N" ]; then
		pass "RCPT round trip, postgrey --exim: p50 $1 us, p90 $2 us, max $3 us ($4 RCPTs)"
	else
		fail "RCPT round trip, postgrey --exim" "got [$p] from $EX_DIR/log/mainlog"
	fi
	stop "$pg_pid"
}

t_exim() {
	local why old_trap=() left

	if why=$(ex_cannot_run); then skip "exim end to end" "$why"; return; fi
	if ! EX_ROOT=$(deb_root exim4 exim4-daemon-light exim4-base libidn12); then
		skip "exim end to end" "no Exim from Debian's archive: $EX_ROOT"; return
	fi
	# shellcheck disable=SC2034 # tests/mta-lib.sh's
	NS_SPAWNED='' NS_PID=''
	if ! ex_setup; then fail "exim: setup" "$EX_WHY"; return; fi

	eval "old_trap=($(trap -p EXIT))"
	# shellcheck disable=SC2064 # the old command is wanted as it is now
	trap "ns_stop; ${old_trap[2]:-}" EXIT

	if ! ns_start "$EX_DIR" mx.exim.test; then
		fail "a private namespace for Exim" "unshare or its mounts failed"
	elif ! ex_exim -C "$EX_DIR/unix.conf" -bV > "$EX_DIR/version" 2>&1; then
		fail "the unpacked Exim accepts the configuration with the snippet" "$(head -n 3 "$EX_DIR/version" | tr '\n' ' ')"
	else
		pass "$(head -n 1 "$EX_DIR/version" | cut -d' ' -f1-3) accepts the configuration with exim4-acl.conf ($(sed 's/_.*//' "$EX_ROOT/.debs" | tr '\n' ' ' | sed 's/ $//'))"
		ex_exim -C "$EX_DIR/nomacros.conf" -bV > "$EX_DIR/nomacros.out" 2>&1
		expect "without the two macros Exim refuses the configuration" 1 $?
		expect_grep "and names what is missing" \
			'unknown ACL condition/modifier in "GREYLISTD_SOCKET_must_be_defined_in_the_main_section"' \
			"$EX_DIR/nomacros.out"
		EX_HAVE_DNS=1
		if ! command -v dnsmasq >/dev/null; then
			EX_HAVE_DNS='' EX_HAVE_DNS_WHY="no dnsmasq (Debian package dnsmasq-base) for the namespace's DNS"
		elif ! ex_dns; then
			EX_HAVE_DNS='' EX_HAVE_DNS_WHY="dnsmasq did not start: $(head -c 300 "$EX_DIR/dns.out")"
		fi
		if ex_serve gl "$EX_DIR/gl/gl.sock"; then
			ex_greylisting
			ex_sockets
			ex_actions
			ex_keepopen
			ex_names
			ex_rtt
		else
			fail "greylistd behind systemd-socket-activate in the namespace" "$(head -c 300 "$EX_DIR/gl/gl.out")"
		fi
		expect "greylistd logged no warning or error" "" \
			"$(grep -hE 'greylistd\[[0-9]+\]: (warning|error):' "$EX_DIR"/gl/*.log | head -n 3)"
	fi
	ns_stop

	left=$(ns_processes)
	[ -z "$left" ] && left=$(pgrep -f -- "$EX_DIR/" | paste -sd ' ')
	if [ -z "$left" ]; then
		pass "exim: no process left, the namespace is gone"
	else
		fail "exim: no process left, the namespace is gone" \
			"$(ps -o pid=,args= -p "${left// /,}" | tr '\n' ';')"
	fi

	if [ ${#old_trap[@]} -ge 3 ]; then trap -- "${old_trap[2]}" EXIT; else trap - EXIT; fi
}
