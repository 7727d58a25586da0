# shellcheck shell=bash
# tests/postfix.sh - end to end: greylistd as a spawn(8) service of a real
# Postfix, driven over SMTP with swaks.
#
# Sourced by test.sh, which runs t_postfix as the group "postfix". It builds
# a private Postfix instance under $WORK/postfix (its own main.cf and
# master.cf, queue and data directories, log file and loopback ports), so a
# system Postfix, if one runs, is never touched:
#
#   swaks --XCLIENT--> smtpd 127.0.0.1:PORT --policy--> greylistd (spawn, nobody)
#                        |
#                        +--> qmgr --> smtp --> smtp-sink 127.0.0.1:PORT2
#                                               (dumps each message to a file)
#
# XCLIENT lets swaks choose the client address Postfix sees, so one IPv4
# loopback connection can play any IPv4 or IPv6 host. greylistd runs with
# --delay=3s. Every check compares what Postfix answered, what smtp-sink
# received, or what greylistd and Postfix logged. The instance and smtp-sink
# are stopped by their own PIDs, also when test.sh ends early.
#
# Needs root (Postfix's master, and spawn's user=), Postfix >= 3.4 (for
# maillog_file), swaks and smtp-sink; without them the group is skipped,
# saying why. It takes about 9 seconds, 4 of them waiting out the delay.

PF_DELAY=3			# greylistd --delay, seconds
PF_FROM=alice@sender.test	# the sender of every message
PF_RCPT=bob@dest.test		# the recipient that gets greylisted
PF_NAME=mx.client.test		# the client name given through XCLIENT

# pf_cannot_run - print why this machine cannot run the test and succeed,
# or fail when it can
pf_cannot_run() {
	local c v
	[ "$(id -u)" -eq 0 ] || { echo "needs root to start a Postfix instance"; return 0; }
	for c in postfix postconf smtp-sink swaks pgrep; do
		command -v $c >/dev/null ||
			{ echo "$c not found (Debian packages postfix, swaks, procps)"; return 0; }
	done
	for c in postfix nobody; do
		getent passwd $c >/dev/null || { echo "no user $c"; return 0; }
	done
	getent group postdrop >/dev/null || { echo "no group postdrop"; return 0; }
	v=$(postconf -dh mail_version 2>/dev/null)
	case $v in
	3.[4-9]*|3.[1-9][0-9]*|[4-9].*|[1-9][0-9]*.*) ;;
	*) echo "Postfix ${v:-?} is older than 3.4 (no maillog_file)"; return 0 ;;
	esac
	return 1
}

# pf_in CMD... - run CMD in the instance's network namespace (PF_NS, a
# name given to pf_setup), or here when it has none. PF_IN is the prefix
# that does it, for a command run in the background (whose $! must be
# the command's own PID).
pf_in() { "${PF_IN[@]}" "$@"; }

# pf_accepts PORT - true when something accepts on 127.0.0.1:PORT, in the
# instance's network namespace
pf_accepts() {
	pf_in bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# pf_free_port - a loopback TCP port that nothing listens on, below Linux's
# ephemeral range (so no outgoing connection holds it either)
pf_free_port() {
	local p
	for _ in $(seq 100); do
		p=$((20000 + RANDOM % 12000))
		case " $PF_PORTS " in *" $p "*) continue ;; esac
		if ! pf_accepts "$p"; then
			PF_PORTS="$PF_PORTS $p"; echo "$p"; return 0
		fi
	done
	return 1
}

# pf_listening PORT - true once something accepts on 127.0.0.1:PORT (5 s)
pf_listening() {
	for _ in $(seq 50); do
		pf_accepts "$1" && return 0
		sleep 0.1
	done
	return 1
}

# pf_setup [NAME [POLICY [NETNS]]] - write the instance under
# $PF_DIR=$WORK/NAME (postfix); sets PF_SMTP_PORT, PF_SINK_PORT, PF_V6 and
# PF_NS. POLICY is what check_policy_service gets between its braces (the
# spawn service, failing open). With NETNS, every program of the instance
# runs in that network namespace (see pf_in), and its myhostname is
# NAME.greylistd.test.
# shellcheck disable=SC2120 # the other groups pass NAME, POLICY and NETNS (tests/beyond.sh, milter.sh, multimx.sh, redis.sh)
pf_setup() {
	local name=${1:-postfix} host=mx.greylistd.test
	local policy=${2:-unix:private/greylistd, default_action=DUNNO}
	PF_NS=${3:-} PF_IN=()
	[ -z "$PF_NS" ] || { host=$name.greylistd.test; PF_IN=(ip netns exec "$PF_NS"); }
	PF_DIR=$WORK/$name
	rm -rf "$PF_DIR"
	mkdir -p "$PF_DIR"/etc "$PF_DIR"/spool "$PF_DIR"/data "$PF_DIR"/gl \
		"$PF_DIR"/sink "$PF_DIR"/bin
	# Postfix's daemons (user postfix) and greylistd (user nobody) must
	# get to their directories, and mktemp made $WORK mode 700.
	chmod go+x "$WORK"
	chown postfix "$PF_DIR"/data		# data_directory: mail_owner's
	chown nobody "$PF_DIR"/gl		# greylistd's database and log
	chown nobody "$PF_DIR"/sink		# smtp-sink -u nobody writes here
	# A copy nobody can run, wherever $GREYLISTD lives.
	cp "$GREYLISTD" "$PF_DIR"/bin/greylistd && chmod 755 "$PF_DIR"/bin/greylistd
	cp "$GREYLISTCTL" "$PF_DIR"/bin/greylistctl && chmod 755 "$PF_DIR"/bin/greylistctl

	PF_PORTS=
	PF_SMTP_PORT=$(pf_free_port) && PF_SINK_PORT=$(pf_free_port) || return 1

	# XCLIENT ADDR=IPV6:... is refused ("501 5.5.4 Bad ADDR syntax")
	# unless inet_protocols includes ipv6, which needs a kernel with IPv6.
	# The connections themselves are always IPv4 loopback.
	if pf_in test -e /proc/net/if_inet6; then PF_V6=all; else PF_V6=ipv4; fi

	cat > "$PF_DIR"/etc/main.cf <<-EOF
	# A private instance: nothing is shared with /etc/postfix but the
	# programs. Errors of "postfix start" go to maillog_file.
	compatibility_level = 3.6
	queue_directory = $PF_DIR/spool
	data_directory = $PF_DIR/data
	mail_owner = postfix
	setgid_group = postdrop
	maillog_file = $PF_DIR/maillog
	maillog_file_prefixes = $PF_DIR
	myhostname = $host
	mydomain = greylistd.test
	myorigin = \$myhostname
	inet_interfaces = 127.0.0.1
	inet_protocols = $PF_V6
	# Only the real client, never an address given through XCLIENT: those
	# must go through the restrictions like any client.
	mynetworks = 127.0.0.1/32
	smtpd_authorized_xclient_hosts = 127.0.0.1
	smtpd_peername_lookup = no
	# No local delivery, no DNS: dest.test is relayed to smtp-sink.
	mydestination =
	local_recipient_maps =
	alias_maps =
	alias_database =
	relay_domains = dest.test
	transport_maps = inline:{ dest.test=smtp:[127.0.0.1]:$PF_SINK_PORT }
	smtp_dns_support_level = disabled
	# As the README tells admins to.
	smtpd_recipient_restrictions =
	    permit_mynetworks,
	    reject_unauth_destination,
	    check_policy_service { $policy }
	greylistd_time_limit = 3600
	EOF

	# chroot n everywhere: no copies of /etc files inside the queue.
	cat > "$PF_DIR"/etc/master.cf <<-EOF
	# service   type  private unpriv chroot wakeup maxproc command + args
	127.0.0.1:$PF_SMTP_PORT inet n - n - - smtpd
	cleanup     unix  n       -      n      -      0       cleanup
	qmgr        unix  n       -      n      300    1       qmgr
	rewrite     unix  -       -      n      -      -       trivial-rewrite
	bounce      unix  -       -      n      -      0       bounce
	defer       unix  -       -      n      -      0       bounce
	trace       unix  -       -      n      -      0       bounce
	verify      unix  -       -      n      -      1       verify
	flush       unix  n       -      n      1000?  0       flush
	proxymap    unix  -       -      n      -      -       proxymap
	smtp        unix  -       -      n      -      -       smtp
	relay       unix  -       -      n      -      -       smtp
	error       unix  -       -      n      -      -       error
	retry       unix  -       -      n      -      -       error
	discard     unix  -       -      n      -      -       discard
	anvil       unix  -       -      n      -      1       anvil
	scache      unix  -       -      n      -      1       scache
	postlog     unix-dgram n  -      n      -      1       postlogd
	greylistd   unix  -       n      n      -      0       spawn
	  user=nobody argv=$PF_DIR/bin/greylistd --db=$PF_DIR/gl/greylistd.db
	  --log-file=$PF_DIR/gl/greylistd.log --delay=${PF_DELAY}s
	EOF
}

# pf_start - start smtp-sink and the instance; sets PF_SINK and PF_MASTER.
# On failure sets PF_WHY and returns 1.
pf_start() {
	"${PF_IN[@]}" smtp-sink -u nobody -h sink.test -d "$PF_DIR/sink/msg." \
		"127.0.0.1:$PF_SINK_PORT" 10 > "$PF_DIR"/sink.out 2>&1 &
	PF_SINK=$!
	if ! pf_listening "$PF_SINK_PORT"; then
		PF_WHY="smtp-sink did not listen on 127.0.0.1:$PF_SINK_PORT: $(head -c 300 "$PF_DIR"/sink.out)"
		return 1
	fi
	# master -w returns once the master is up and its services listen.
	if ! pf_in postfix -c "$PF_DIR"/etc start > "$PF_DIR"/start.out 2>&1; then
		PF_WHY="postfix -c $PF_DIR/etc start failed: $( { cat "$PF_DIR"/start.out
			tail -n 4 "$PF_DIR"/maillog; } 2>/dev/null | tr '\n' ' ')"
		return 1
	fi
	PF_MASTER=$(awk '{ print $1; exit }' "$PF_DIR"/spool/pid/master.pid 2>/dev/null)
}

# pf_processes - PIDs of this instance still alive: the master's session
# (master and its daemons), anything run from $PF_DIR (smtp-sink, and the
# greylistd processes), and the sessions those lead (spawn starts each
# command in a session of its own)
pf_processes() {
	local p leaders=$PF_MASTER
	for p in $(pgrep -f -- "$PF_DIR/"); do
		[ "$(ps -o sid= -p "$p" 2>/dev/null | tr -d ' ')" = "$p" ] && leaders="$leaders $p"
	done
	{
		pgrep -f -- "$PF_DIR/"
		for p in $leaders; do pgrep -s "$p"; done
	} 2>/dev/null | sort -nu | tr '\n' ' ' | sed 's/ $//'
}

# pf_stop - stop smtp-sink and the instance, and wait (5 s at most) until
# all their processes are gone. Quiet, safe to call twice; the EXIT trap
# calls it too.
pf_stop() {
	[ -n "$PF_SINK" ] && stop "$PF_SINK"
	PF_SINK=
	[ -e "$PF_DIR"/spool/pid/master.pid ] &&
		pf_in postfix -c "$PF_DIR"/etc stop >> "$PF_DIR"/start.out 2>&1
	for _ in $(seq 50); do
		[ -z "$(pf_processes)" ] && break
		sleep 0.1
	done
}

# pf_smtp TAG ADDR RCPT [SWAKS-ARGS...] - one SMTP session that says,
# through XCLIENT, that it comes from ADDR (IPV6:... for IPv6), sending a
# message with Subject "greylistd TAG". The transcript is $PF_DIR/TAG.smtp;
# the server's reply to RCPT TO is left in PF_REPLY.
pf_smtp() {
	local tag=$1 addr=$2 rcpt=$3; shift 3
	pf_in swaks --server 127.0.0.1 --port "$PF_SMTP_PORT" --helo "$tag.client.test" \
		--xclient "ADDR=$addr NAME=$PF_NAME" \
		--from "$PF_FROM" --to "$rcpt" \
		--header "Subject: greylistd $tag" "$@" > "$PF_DIR/$tag.smtp" 2>&1
	PF_REPLY=$(sed -n '/^ *-> RCPT TO:/{n;s/^<[-*~]* *//;p;q;}' "$PF_DIR/$tag.smtp")
}

# pf_rcpt NAME TAG ADDR RCPT WANT - a session that ends after RCPT TO,
# which must get a reply matching the glob WANT
pf_rcpt() {
	local name=$1 tag=$2 addr=$3 rcpt=$4 want=$5
	pf_smtp "$tag" "$addr" "$rcpt" --quit-after RCPT
	# shellcheck disable=SC2254 # $want is a glob
	case $PF_REPLY in
	$want) pass "$name" ;;
	*) fail "$name" "want [$want] got [$PF_REPLY]" ;;
	esac
}

# pf_dump TAG - the file smtp-sink wrote for message TAG, waiting up to
# 10 s for the delivery; nothing when none came
pf_dump() {
	local f
	for _ in $(seq 100); do
		f=$(grep -l "^Subject: greylistd $1\$" "$PF_DIR"/sink/msg.* 2>/dev/null | head -n 1)
		[ -n "$f" ] && { echo "$f"; return; }
		sleep 0.1
	done
}

# pf_log_delay ADDR-REGEX - the delay greylistd logged on the first pass
# of the client ADDR
pf_log_delay() {
	sed -n "s/.*action=pass, reason=triplet found, delay=\([0-9]*\), .*client_address=$1, .*/\1/p" \
		"$PF_DIR"/gl/greylistd.log 2>/dev/null | head -n 1
}

# pf_session - the SMTP sessions, and what arrived at smtp-sink
pf_session() {
	local t0 f hdr n logged

	# --- first sight, and an early retry ---------------------------------
	pf_smtp v4-new 198.51.100.10 "$PF_RCPT"
	expect "a new triplet gets 450 from Postfix" \
		"450 4.7.1 <$PF_RCPT>: Recipient address rejected: Greylisted, please try again in $PF_DELAY seconds" \
		"$PF_REPLY"
	pf_rcpt "an early retry gets 450 with the time left" v4-early 198.51.100.10 "$PF_RCPT" \
		"450 4.7.1 <$PF_RCPT>: Recipient address rejected: Greylisted, please try again in [1-$PF_DELAY] seconds"
	if [ "$PF_V6" = all ]; then
		pf_rcpt "IPv6: a new triplet gets 450" v6-new IPV6:2001:db8:1::10 "$PF_RCPT" \
			"450 4.7.1 <$PF_RCPT>: *Greylisted*"
	fi
	t0=$(date +%s)		# both triplets were first seen by now

	# postmaster@ and abuse@ are never delayed, even from unknown clients
	pf_rcpt "postmaster@ of the domain is not delayed" pm 203.0.113.99 postmaster@dest.test "250 2.1.5 *"
	pf_rcpt "abuse@ of the domain is not delayed" abuse 203.0.113.99 abuse@dest.test "250 2.1.5 *"
	pf_rcpt "PostMaster@ in any case is not delayed" pm-case 203.0.113.98 PostMaster@Dest.Test "250 2.1.5 *"

	# --- after the delay --------------------------------------------------
	while [ "$(date +%s)" -le $((t0 + PF_DELAY)) ]; do sleep 0.2; done

	pf_smtp v4-pass 198.51.100.10 "$PF_RCPT"
	expect "a retry after the delay gets 250" "250 2.1.5 Ok" "$PF_REPLY"
	expect_grep "and the message is queued" '^<- +250 2\.0\.0 Ok: queued as ' "$PF_DIR"/v4-pass.smtp
	f=$(pf_dump v4-pass)
	if [ -z "$f" ]; then
		fail "the message reaches smtp-sink" \
			"no dump in $PF_DIR/sink; $(grep -h 'status=' "$PF_DIR"/maillog | tail -n 2)"
	else
		expect "the message reaches smtp-sink, for $PF_RCPT" "<$PF_RCPT>" \
			"$(sed -n 's/^X-Rcpt-Args: \([^ ]*\).*/\1/p' "$f")"
		hdr=$(grep -m 1 '^X-Greylist:' "$f")
		n=$(echo "$hdr" | sed -n 's/^X-Greylist: delayed \([0-9]*\) seconds by greylistd-[0-9][0-9.]* at [^;]*; .*[0-9][0-9][0-9][0-9] .*/\1/p')
		if [ -n "$n" ] && [ "$n" -ge "$PF_DELAY" ] && [ "$n" -le 30 ]; then
			pass "it carries X-Greylist: delayed $n seconds by greylistd-..."
		else
			fail "it carries X-Greylist: delayed N seconds by greylistd-..." "[$hdr]"
		fi
		logged=$(pf_log_delay '198\.51\.100\.10')
		expect "the header's delay is the one greylistd logged" "${n:-none}" "${logged:-none}"
	fi

	# A neighbour in the same /24: same sender and recipient, new host.
	pf_smtp v4-neighbour 198.51.100.254 "$PF_RCPT"
	expect "a neighbour in the same IPv4 /24 passes at once" "250 2.1.5 Ok" "$PF_REPLY"
	f=$(pf_dump v4-neighbour)
	if [ -z "$f" ]; then
		fail "the neighbour's message reaches smtp-sink" "no dump in $PF_DIR/sink"
	else
		expect "the neighbour's message has no X-Greylist (the triplet passed before)" \
			0 "$(grep -c '^X-Greylist:' "$f")"
	fi
	pf_rcpt "a host in the next /24 is a new triplet (450)" v4-other 198.51.101.10 "$PF_RCPT" \
		"450 4.7.1 <$PF_RCPT>: *Greylisted*"

	if [ "$PF_V6" = all ]; then
		pf_rcpt "IPv6: a retry after the delay gets 250" v6-pass IPV6:2001:db8:1::10 \
			"$PF_RCPT" "250 2.1.5 Ok"
		pf_rcpt "IPv6: a neighbour in the same /64 passes at once" v6-neighbour \
			IPV6:2001:db8:1:0:ffff:ffff:ffff:fffe "$PF_RCPT" "250 2.1.5 Ok"
		pf_rcpt "IPv6: a host in the next /64 is a new triplet (450)" v6-other \
			IPV6:2001:db8:1:1::10 "$PF_RCPT" "450 4.7.1 <$PF_RCPT>: *Greylisted*"
	else
		skip "IPv6 clients" "this kernel has no IPv6 (no /proc/net/if_inet6), so Postfix refuses XCLIENT ADDR=IPV6:..."
	fi
}

# pf_greylistd_log - greylistd's decision lines in its --log-file
pf_greylistd_log() {
	local L=$PF_DIR/gl/greylistd.log n
	local name=${PF_NAME//./\\.}
	local who="client_name=$name, client_address=198\.51\.100\.10, sender=$PF_FROM, recipient=$PF_RCPT"

	expect_grep "greylistd log: action=greylist, reason=new" "action=greylist, reason=new, $who\$" "$L"
	expect "greylistd log: the early retry did not start over (one reason=new)" \
		1 "$(grep -c "reason=new, $who\$" "$L" 2>/dev/null)"
	expect_grep "greylistd log: action=greylist, reason=early-retry (Ns missing)" \
		"action=greylist, reason=early-retry \([1-$PF_DELAY]s missing\), $who\$" "$L"
	expect_grep "greylistd log: action=pass, reason=triplet found, delay=N" \
		"action=pass, reason=triplet found, delay=[0-9]+, $who\$" "$L"
	n=$(pf_log_delay '198\.51\.100\.10')
	check "greylistd log: the logged delay (${n:-none} s) is at least --delay" \
		test "${n:-0}" -ge "$PF_DELAY"
	expect_grep "greylistd log: the /24 neighbour passes as triplet found" \
		"action=pass, reason=triplet found, client_name=$name, client_address=198\.51\.100\.254," "$L"
	if [ "$PF_V6" = all ]; then
		expect_grep "greylistd log: IPv6 reason=new" \
			"action=greylist, reason=new, client_name=$name, client_address=2001:db8:1::10," "$L"
		expect_grep "greylistd log: IPv6 first pass with its delay" \
			"action=pass, reason=triplet found, delay=[0-9]+, client_name=$name, client_address=2001:db8:1::10," "$L"
		expect_grep "greylistd log: the /64 neighbour passes as triplet found" \
			"action=pass, reason=triplet found, client_name=$name, client_address=2001:db8:1:0:ffff:ffff:ffff:fffe," "$L"
	fi
	expect "greylistd log: postmaster@, abuse@, PostMaster@ pass as recipient whitelist" 3 \
		"$(grep -ciE 'action=pass, reason=recipient whitelist, .*recipient=(postmaster|abuse)@dest\.test$' "$L" 2>/dev/null)"
	expect "greylistd log: postmaster@ and abuse@ never greylisted" "" \
		"$(grep -iE 'action=greylist, .*recipient=(postmaster|abuse)@' "$L" 2>/dev/null | head -n 2)"
	expect "greylistd log: no warning or error" "" \
		"$(grep -E 'greylistd\[[0-9]+\]: (warning|error):' "$L" 2>/dev/null | head -n 3)"
	expect "spawn ran greylistd as nobody (who owns the database)" nobody \
		"$(stat -c %U "$PF_DIR"/gl/greylistd.db 2>/dev/null)"
}

# pf_postfix_log - Postfix's own log, read once the instance has stopped
pf_postfix_log() {
	local M=$PF_DIR/maillog name=${PF_NAME//./\\.}

	expect_grep "Postfix log: the deferral is logged as a 450 reject" \
		"NOQUEUE: reject: RCPT from $name\[198\.51\.100\.10\]: 450 4\.7\.1 <$PF_RCPT>: Recipient address rejected: Greylisted" "$M"
	expect_grep "Postfix log: the passed message was relayed to smtp-sink" \
		"to=<$PF_RCPT>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:$PF_SINK_PORT, .*status=sent" "$M"
	expect "Postfix log: no 'problem talking to server', no 451 4.3.5" "" \
		"$(grep -E 'problem talking to server|451 4\.3\.5' "$M" | head -n 3)"
	expect "Postfix log: no warning about the policy service or spawn" "" \
		"$(grep -E '(warning|error|fatal|panic):' "$M" \
			| grep -E 'private/greylistd|polic|/spawn|spawn\[|bin/greylistd' | head -n 3)"
}

t_postfix() {
	local why old_trap=() left

	if why=$(pf_cannot_run); then skip "postfix end to end" "$why"; return; fi
	PF_MASTER='' PF_SINK=''
	if ! pf_setup; then fail "postfix: a free loopback port" "none found in 100 tries"; return; fi

	# However test.sh ends from here on, stop the instance first, then do
	# what test.sh's own EXIT trap does (remove $WORK).
	eval "old_trap=($(trap -p EXIT))"
	# shellcheck disable=SC2064 # the old command is wanted as it is now
	trap "pf_stop; ${old_trap[2]:-}" EXIT

	if ! pf_start; then
		fail "a private Postfix runs" "$PF_WHY"
	else
		pass "a private Postfix runs (smtpd on 127.0.0.1:$PF_SMTP_PORT, smtp-sink on :$PF_SINK_PORT)"
		pf_session
	fi
	pf_stop

	left=$(pf_processes)
	if [ -z "$left" ]; then
		pass "postfix stop and the end of smtp-sink leave no process behind"
	else
		fail "postfix stop and the end of smtp-sink leave no process behind" \
			"$(ps -o pid=,user=,args= -p "${left// /,}" | tr '\n' ';')"
		# shellcheck disable=SC2086 # one PID a word
		kill $left 2>/dev/null
	fi

	if [ -n "$PF_MASTER" ]; then
		pf_greylistd_log
		pf_postfix_log
	fi

	if [ ${#old_trap[@]} -ge 3 ]; then trap -- "${old_trap[2]}" EXIT; else trap - EXIT; fi
}
