# tests/postfix.sh - end to end: greylistd as a spawn(8) service of a real
# Postfix, driven over SMTP with swaks.
#
# Sourced by test.sh, which runs t_postfix as the group "postfix". The test
# builds a private Postfix instance under $WORK/postfix (its own main.cf,
# master.cf, queue and data directories, log file and loopback ports), so a
# system Postfix, if one runs, is never touched:
#
#   swaks --XCLIENT--> smtpd 127.0.0.1:PORT --policy--> greylistd (spawn, nobody)
#                        |
#                        +--> qmgr --> smtp --> smtp-sink 127.0.0.1:PORT2
#                                               (dumps each message to a file)
#
# XCLIENT lets swaks choose the client address Postfix sees, so one loopback
# connection can play any IPv4 or IPv6 host. greylistd runs with --delay=3s.
# Each check compares what Postfix answered, what smtp-sink received, or what
# greylistd and Postfix logged. The instance and smtp-sink are stopped by
# their own PIDs, also when test.sh exits early.
#
# Needs root (Postfix's master and spawn's user= need it), postfix >= 3.4,
# swaks and smtp-sink; without them the group is skipped, saying why.

PF_DELAY=3				# greylistd --delay, seconds
PF_FROM=alice@sender.test		# the sender of every message
PF_RCPT=bob@dest.test			# the greylisted recipient
PF_NAME=mx.client.test			# the client name given by XCLIENT

# pf_cannot_run - why this machine cannot run the test (exit 0), or exit 1
pf_cannot_run() {
	local c v
	[ "$(id -u)" -eq 0 ] || { echo "needs root to start a Postfix instance"; return 0; }
	for c in postfix postconf smtp-sink swaks runuser; do
		PATH=$PATH:/usr/sbin:/sbin command -v $c >/dev/null ||
			{ echo "$c not installed (Debian packages postfix, swaks, util-linux)"; return 0; }
	done
	for c in postfix nobody; do
		getent passwd $c >/dev/null || { echo "no user $c"; return 0; }
	done
	getent group postdrop >/dev/null || { echo "no group postdrop"; return 0; }
	# maillog_file is 3.4, check_policy_service { ... } is 3.0
	v=$(postconf -dh mail_version 2>/dev/null)
	case $v in
	[3-9].[4-9]*|[3-9].[1-9][0-9]*|[4-9].*|[1-9][0-9].*) ;;
	*) echo "Postfix ${v:-?} is older than 3.4"; return 0 ;;
	esac
	return 1
}

# pf_free_port - a loopback TCP port nobody listens on (below Linux's
# ephemeral range, so no outgoing connection holds it either)
pf_free_port() {
	local p i
	for i in $(seq 100); do
		p=$((20000 + RANDOM % 12000))
		case " ${PF_PORTS:-} " in *" $p "*) continue ;; esac
		if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then
			PF_PORTS="${PF_PORTS:-} $p"; echo $p; return 0
		fi
	done
	return 1
}

# pf_listening PORT - true once something accepts on 127.0.0.1:PORT (5 s)
pf_listening() {
	local i
	for i in $(seq 50); do
		(exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# pf_setup - write the instance under $PF_DIR; sets the PF_* ports
pf_setup() {
	PF_DIR=$WORK/postfix
	rm -rf "$PF_DIR"
	mkdir -p "$PF_DIR/etc" "$PF_DIR/spool" "$PF_DIR/data" "$PF_DIR/gl" "$PF_DIR/sink" "$PF_DIR/bin"
	# Postfix's daemons (user postfix) and greylistd (user nobody) must
	# reach their directories: mktemp made $WORK mode 700.
	chmod go+x "$WORK"
	chown postfix "$PF_DIR/data"			# data_directory: mail_owner's
	chown nobody "$PF_DIR/gl" "$PF_DIR/sink"		# greylistd's db and log; the dumps
	# Our own copy, so that nobody can run it wherever $GREYLISTD lives.
	cp "$GREYLISTD" "$PF_DIR/bin/greylistd" && chmod 755 "$PF_DIR/bin/greylistd"

	PF_SMTP_PORT=$(pf_free_port) && PF_SINK_PORT=$(pf_free_port) || return 1

	# IPv6 client addresses need inet_protocols=all, which needs a kernel
	# with IPv6. The connections themselves are always IPv4 loopback.
	if [ -e /proc/net/if_inet6 ]; then PF_V6=all; else PF_V6=ipv4; fi

	cat > "$PF_DIR/etc/main.cf" <<-EOF
	# A private instance: nothing here is shared with /etc/postfix.
	compatibility_level = 3.6
	queue_directory = $PF_DIR/spool
	data_directory = $PF_DIR/data
	mail_owner = postfix
	setgid_group = postdrop
	maillog_file = $PF_DIR/maillog
	maillog_file_prefixes = $PF_DIR
	myhostname = mx.greylistd.test
	mydomain = greylistd.test
	myorigin = \$myhostname
	inet_interfaces = 127.0.0.1
	inet_protocols = $PF_V6
	# Not the XCLIENT addresses: those must meet the restrictions.
	mynetworks = 127.0.0.1/32
	smtpd_authorized_xclient_hosts = 127.0.0.1
	smtpd_peername_lookup = no
	# No local delivery; dest.test is relayed to smtp-sink.
	mydestination =
	local_recipient_maps =
	alias_maps =
	alias_database =
	relay_domains = dest.test
	transport_maps = inline:{ dest.test=smtp:[127.0.0.1]:$PF_SINK_PORT }
	smtp_dns_support_level = disabled
	smtpd_recipient_restrictions =
	    permit_mynetworks,
	    reject_unauth_destination,
	    check_policy_service { unix:private/greylistd, default_action=DUNNO }
	greylistd_time_limit = 3600
	EOF

	# chroot column n everywhere: no copies of /etc files in the queue.
	cat > "$PF_DIR/etc/master.cf" <<-EOF
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

# pf_start - start smtp-sink and the instance; sets PF_SINK and PF_MASTER
pf_start() {
	smtp-sink -u nobody -h sink.test -d "$PF_DIR/sink/msg." \
		127.0.0.1:"$PF_SINK_PORT" 10 > "$PF_DIR/sink.out" 2>&1 &
	PF_SINK=$!
	if ! pf_listening "$PF_SINK_PORT"; then
		fail "smtp-sink listens on 127.0.0.1:$PF_SINK_PORT" "$(cat "$PF_DIR/sink.out")"
		return 1
	fi
	# master -w returns once the master is up and listening.
	if ! postfix -c "$PF_DIR/etc" start > "$PF_DIR/start.out" 2>&1; then
		fail "postfix -c $PF_DIR/etc start" "$(tail -n 5 "$PF_DIR/start.out" "$PF_DIR/maillog" 2>/dev/null | tr '\n' ' ')"
		return 1
	fi
	PF_MASTER=$(awk '{ print $1; exit }' "$PF_DIR/spool/pid/master.pid" 2>/dev/null)
	pass "a private Postfix starts (smtpd on 127.0.0.1:$PF_SMTP_PORT, smtp-sink on $PF_SINK_PORT)"
}

# pf_stop - stop the instance and smtp-sink, and reap what they left;
# quiet, safe to call twice, and called from the EXIT trap
pf_stop() {
	if [ -n "${PF_MASTER:-}" ]; then
		postfix -c "$PF_DIR/etc" stop >> "$PF_DIR/start.out" 2>&1
		# The master's children share its session; wait for all of them.
		local i
		for i in $(seq 50); do
			pgrep -s "$PF_MASTER" >/dev/null || break
			sleep 0.1
		done
	fi
	[ -n "${PF_SINK:-}" ] && stop "$PF_SINK"
	PF_SINK=
}

# pf_smtp TAG ADDR RCPT [SWAKS-ARGS...] - one SMTP session that claims,
# through XCLIENT, to come from ADDR (IPV6:... for IPv6), with the Subject
# "greylistd TAG". The transcript is $PF_DIR/TAG.smtp; the server's reply to
# RCPT TO is left in PF_REPLY.
pf_smtp() {
	local tag=$1 addr=$2 rcpt=$3; shift 3
	swaks --server 127.0.0.1 --port "$PF_SMTP_PORT" --helo "$tag.client.test" \
		--xclient "ADDR=$addr NAME=$PF_NAME" \
		--from "$PF_FROM" --to "$rcpt" \
		--header "Subject: greylistd $tag" "$@" > "$PF_DIR/$tag.smtp" 2>&1
	PF_REPLY=$(sed -n '/^ *-> RCPT TO:/{n;s/^<[-*~]* *//;p;q;}' "$PF_DIR/$tag.smtp")
}

# pf_rcpt NAME TAG ADDR RCPT WANT - RCPT TO gets the reply WANT (a glob)
pf_rcpt() {
	local name=$1 tag=$2 addr=$3 rcpt=$4 want=$5
	pf_smtp "$tag" "$addr" "$rcpt" --quit-after RCPT
	case $PF_REPLY in
	$want) pass "$name" ;;
	*) fail "$name" "want [$want] got [$PF_REPLY]" ;;
	esac
}

# pf_dump TAG - the file smtp-sink wrote for message TAG, waiting up to
# 10 s for the delivery; empty when none came
pf_dump() {
	local i f
	for i in $(seq 100); do
		f=$(grep -l "^Subject: greylistd $1\$" "$PF_DIR"/sink/msg.* 2>/dev/null | head -n 1)
		[ -n "$f" ] && { echo "$f"; return; }
		sleep 0.1
	done
}

# pf_log_delay ADDR - the delay greylistd logged on the first pass of ADDR
pf_log_delay() {
	sed -n "s/.*action=pass, reason=triplet found, delay=\([0-9]*\), .*client_address=$1, .*/\1/p" \
		"$PF_DIR/gl/greylistd.log" | head -n 1
}

# pf_session - the SMTP conversations and what arrived at smtp-sink
pf_session() {
	local t0 f hdr n logged

	# --- first sight, and an early retry ---------------------------------
	t0=$(date +%s)
	pf_smtp v4-new 198.51.100.10 "$PF_RCPT"
	expect "a new triplet gets 450 from Postfix" \
		"450 4.7.1 <$PF_RCPT>: Recipient address rejected: Greylisted, please try again in $PF_DELAY seconds" \
		"$PF_REPLY"
	pf_rcpt "an early retry gets 450 with the time left" v4-early 198.51.100.10 "$PF_RCPT" \
		"450 4.7.1 <$PF_RCPT>: Recipient address rejected: Greylisted, please try again in [1-$PF_DELAY] seconds"
	pf_rcpt "IPv6: a new triplet gets 450" v6-new IPV6:2001:db8:1::10 "$PF_RCPT" "450 4.7.1 *Greylisted*"

	# postmaster@ and abuse@ are never delayed: from a client never seen
	pf_rcpt "postmaster@ of the domain is not delayed" pm 203.0.113.99 postmaster@dest.test "250 2.1.5 *"
	pf_rcpt "abuse@ of the domain is not delayed" abuse 203.0.113.99 abuse@dest.test "250 2.1.5 *"
	pf_rcpt "POSTMASTER@ in capitals is not delayed either" pm-caps 203.0.113.98 PostMaster@Dest.Test "250 2.1.5 *"

	# --- after the delay --------------------------------------------------
	while [ "$(date +%s)" -lt $((t0 + PF_DELAY + 1)) ]; do sleep 0.2; done

	pf_smtp v4-pass 198.51.100.10 "$PF_RCPT"
	expect "a retry after the delay gets 250" "250 2.1.5 Ok" "$PF_REPLY"
	expect_grep "and the message is queued" '^<- +250 2\.0\.0 Ok: queued as ' "$PF_DIR/v4-pass.smtp"
	f=$(pf_dump v4-pass)
	if [ -z "$f" ]; then
		fail "the message reaches smtp-sink" "no dump in $PF_DIR/sink; $(grep -h 'status=' "$PF_DIR/maillog" | tail -n 2)"
	else
		pass "the message reaches smtp-sink"
		hdr=$(grep -m 1 '^X-Greylist:' "$f")
		n=$(echo "$hdr" | sed -n 's/^X-Greylist: delayed \([0-9]*\) seconds by greylistd-[0-9][0-9.]* at [^;]*; .*[0-9][0-9][0-9][0-9].*/\1/p')
		if [ -n "$n" ] && [ "$n" -ge "$PF_DELAY" ] && [ "$n" -le 30 ]; then
			pass "it carries X-Greylist: delayed $n seconds by greylistd-..."
		else
			fail "it carries X-Greylist: delayed N seconds by greylistd-..." "[$hdr]"
		fi
		logged=$(pf_log_delay 198.51.100.10)
		expect "the header's delay is the delay greylistd logged" "${n:-none}" "${logged:-none}"
		expect "the recipient at smtp-sink is $PF_RCPT" "TO:<$PF_RCPT>" \
			"$(sed -n 's/^X-Rcpt-Args: //p' "$f")"
	fi

	# A neighbour in the same /24: same sender and recipient, new host.
	pf_smtp v4-neighbour 198.51.100.254 "$PF_RCPT"
	expect "a neighbour in the same IPv4 /24 passes at once" "250 2.1.5 Ok" "$PF_REPLY"
	f=$(pf_dump v4-neighbour)
	if [ -z "$f" ]; then fail "the neighbour's message reaches smtp-sink" "no dump"
	else
		expect "and, the triplet having passed already, has no X-Greylist header" \
			0 "$(grep -c '^X-Greylist:' "$f")"
	fi
	pf_rcpt "a host in the next /24 is a new triplet (450)" v4-other 198.51.101.10 "$PF_RCPT" "450 4.7.1 *Greylisted*"

	pf_rcpt "IPv6: a retry after the delay gets 250" v6-pass IPV6:2001:db8:1::10 "$PF_RCPT" "250 2.1.5 Ok"
	pf_rcpt "IPv6: a neighbour in the same /64 passes at once" v6-neighbour \
		IPV6:2001:db8:1:0:ffff:ffff:ffff:fffe "$PF_RCPT" "250 2.1.5 Ok"
	pf_rcpt "IPv6: a host in the next /64 is a new triplet (450)" v6-other \
		IPV6:2001:db8:1:1::10 "$PF_RCPT" "450 4.7.1 *Greylisted*"
}

# pf_greylistd_log - greylistd's own decision lines
pf_greylistd_log() {
	local L=$PF_DIR/gl/greylistd.log n
	local who="client_name=$PF_NAME, client_address=198\.51\.100\.10, sender=$PF_FROM, recipient=$PF_RCPT"

	expect_grep "greylistd log: action=greylist, reason=new" "action=greylist, reason=new, $who\$" "$L"
	expect "greylistd log: the early retry did not start over (one reason=new)" \
		1 "$(grep -c "reason=new, client_name=$PF_NAME, client_address=198\.51\.100\.10," "$L")"
	expect_grep "greylistd log: action=greylist, reason=early-retry (Ns missing)" \
		"action=greylist, reason=early-retry \([1-$PF_DELAY]s missing\), $who\$" "$L"
	expect_grep "greylistd log: action=pass, reason=triplet found, delay=N" \
		"action=pass, reason=triplet found, delay=[0-9]+, $who\$" "$L"
	n=$(pf_log_delay 198.51.100.10)
	check "greylistd log: the logged delay ($n s) is at least --delay" test "${n:-0}" -ge "$PF_DELAY"
	expect_grep "greylistd log: the /24 neighbour passes as triplet found" \
		"action=pass, reason=triplet found, client_name=$PF_NAME, client_address=198\.51\.100\.254," "$L"
	expect_grep "greylistd log: IPv6 new" \
		"action=greylist, reason=new, client_name=$PF_NAME, client_address=2001:db8:1::10," "$L"
	expect_grep "greylistd log: IPv6 first pass with its delay" \
		"action=pass, reason=triplet found, delay=[0-9]+, client_name=$PF_NAME, client_address=2001:db8:1::10," "$L"
	expect_grep "greylistd log: the /64 neighbour passes as triplet found" \
		"action=pass, reason=triplet found, client_name=$PF_NAME, client_address=2001:db8:1:0:ffff:ffff:ffff:fffe," "$L"
	expect "greylistd log: postmaster@ and abuse@ never greylisted" 0 \
		"$(grep -ciE 'action=greylist, .*recipient=(postmaster|abuse)@' "$L")"
	expect "greylistd log: no warning or error" "" \
		"$(grep -E 'greylistd\[[0-9]+\]: (warning|error):' "$L" | head -n 3)"
	expect "spawn ran greylistd as nobody (the database's owner)" nobody \
		"$(stat -c %U "$PF_DIR/gl/greylistd.db" 2>/dev/null)"
}

# pf_postfix_log - Postfix's own log, read after the instance stopped
pf_postfix_log() {
	local M=$PF_DIR/maillog

	expect_grep "Postfix log: the deferral is logged as a 450 reject" \
		"NOQUEUE: reject: RCPT from $PF_NAME\[198\.51\.100\.10\]: 450 4\.7\.1 <$PF_RCPT>: Recipient address rejected: Greylisted" "$M"
	expect_grep "Postfix log: the message was relayed to smtp-sink" \
		"to=<$PF_RCPT>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:$PF_SINK_PORT, .*status=sent" "$M"
	expect "Postfix log: no 'problem talking to server', no 451 4.3.5" "" \
		"$(grep -E 'problem talking to server|451 4\.3\.5' "$M" | head -n 3)"
	expect "Postfix log: no warning about the policy service or spawn" "" \
		"$(grep -E '(warning|error|fatal|panic):' "$M" \
			| grep -E 'private/greylistd|polic|postfix/spawn|/spawn|bin/greylistd' | head -n 3)"
}

# pf_leftovers - processes of this instance still alive (PIDs)
pf_leftovers() {
	{
		[ -n "${PF_MASTER:-}" ] && pgrep -s "$PF_MASTER"
		pgrep -f -- "$PF_DIR/"
	} 2>/dev/null | sort -u
}

t_postfix() {
	local why old_trap=() left

	if why=$(pf_cannot_run); then skip "postfix end-to-end" "$why"; return; fi
	PF_MASTER= PF_SINK= PF_PORTS=
	if ! pf_setup; then fail "postfix: set-up" "no free loopback port"; return; fi

	# Stop the instance however test.sh ends, then do what test.sh's own
	# EXIT trap did (it removes $WORK).
	eval "old_trap=($(trap -p EXIT))"
	trap "pf_stop; ${old_trap[2]:-}" EXIT

	if pf_start; then
		pf_session
		[ "$PF_V6" = all ] || skip "IPv6 checks" "no IPv6 in this kernel (above results for IPv6 are void)"
	fi
	pf_stop

	left=$(pf_leftovers)
	expect "postfix stop and smtp-sink's end leave no process behind" "" "$left"
	# shellcheck disable=SC2086
	[ -n "$left" ] && kill $left 2>/dev/null

	if [ -n "$PF_MASTER" ]; then
		pf_greylistd_log
		pf_postfix_log
	fi

	if [ ${#old_trap[@]} -ge 3 ]; then trap -- "${old_trap[2]}" EXIT; else trap - EXIT; fi
}
