# tests/exim-gp.sh - greylistd --greylistd-protocol, Debian greylistd's
# one-line protocol, for Exim ACLs written for that package. Sourced by
# test.sh, which runs t_exim_gp as the group "exim_gp".
#
# First the protocol on its own (eg_protocol): greylistd behind
# systemd-socket-activate on a UNIX socket in $WORK, asked with socat as
# Exim asks (one line, half-close, the answer read to EOF): every form
# Debian's statements send, the forms greylistd refuses, and bad input.
# Every answer must be exactly "true" or "false".
#
# Then end to end (eg_exim, as root): Debian greylistd's own statements,
# written by that package's greylistd-setup-exim4 ("add -netmask=24", run
# with python3 from the unpacked package) into a configuration shaped like
# Debian's exim4-config (the ACLs acl_check_rcpt and acl_check_data, the
# lists and acl_local_deny_exceptions they refer to), in the real Exim 4.96
# of tests/exim.sh, inside a namespace of the test's own. greylistd listens
# where Debian's greylistd does, /run/greylistd/socket (a tmpfs over /run in
# the namespace only), 0660 and group greylist, of which Debian-exim is a
# member, as Debian's greylistd.socket and its postinst make it: the
# statements are used exactly as the script wrote them. greylistd runs
# with --lookup-by-host, so that the /24 a client is keyed by is Exim's
# ${mask}, taken as it is. Both packages are downloaded and unpacked, never
# installed (tests/mta-lib.sh; /var/cache/greylistd-tests).
#
# Time: greylistd runs with --delay=1s, and a retry waits until two whole
# seconds have passed since the first try (as tests/exim.sh does); nothing
# else is timed. About 15 seconds.

EG_FROM=alice@sender.test

# eg_ask TAG LINE - one request as Exim's ${readsocket} sends it (LINE
# through printf %b, then half-close); the answer's bytes go to
# $EG_P/TAG.ans, EG_ANS is the answer with every byte but letters shown as
# \ooo (od -b), and the answer is listed in $EG_P/answers
eg_ask() {
	printf '%b' "$2" | socat -t 5 - "UNIX-CONNECT:$EG_SOCK" > "$EG_P/$1.ans" 2>> "$EG_P/socat.err"
	EG_ANS=$(od -An -c "$EG_P/$1.ans" | tr -d ' \n')
	printf '%s %s\n' "$1" "$EG_ANS" >> "$EG_P/answers"
}

# eg_expect NAME TAG LINE WANT - ask, and expect the answer WANT
eg_expect() {
	eg_ask "$2" "$3"
	expect "$1" "$4" "$EG_ANS"
}

# eg_dump - the T records of the protocol checks' database: "NET SENDER
# RECIPIENT", sorted
eg_dump() { "$GREYLISTCTL" dump --db="$EG_P/db" | awk '$1 == "T" { print $5, $6, $7 }' | sort; }

# eg_protocol - the protocol on its own
eg_protocol() {
	local t0 ssa sleeper long words i L

	newdir exim-gp-protocol
	EG_P=$D EG_SOCK=$D/gp.sock L=$D/log
	: > "$D/answers"
	systemd-socket-activate --accept --inetd -l "$EG_SOCK" "$GREYLISTD" --greylistd-protocol \
		--db="$D/db" --log-file="$L" --delay=1s --timeout=1s > "$D/ssa.out" 2>&1 &
	ssa=$!
	if ! wait_for "$EG_SOCK"; then
		fail "greylistd --greylistd-protocol behind systemd-socket-activate" "$(head -c 300 "$D/ssa.out")"
		stop $ssa; return
	fi

	# What Debian's statements send: acl_check_rcpt's line with the client
	# masked (-netmask=24), acl_check_data's for the null sender.
	eg_expect "--grey IP/24 SENDER RCPT: a new triplet is deferred (true)" new \
		'--grey 198.51.100.0/24 alice@sender.test bob@dest.test' true
	expect_grep "logged as postgrey's greylist line, the client as Exim masked it" \
		'action=greylist, reason=new, client_address=198\.51\.100\.0, sender=alice@sender\.test, recipient=bob@dest\.test$' "$L"
	eg_expect "update --grey (the command Debian's greylistd assumes, spelled out): deferred" update \
		'update --grey 198.51.100.7 carol@sender.test bob@dest.test' true
	eg_expect "--grey IP RCPT (the data ACL, the null sender, one recipient): deferred" data1 \
		'--grey 198.51.100.0/24 grace@dest.test' true
	eg_expect "--grey IP RCPT, RCPT (Exim's \$recipients): deferred" data2 \
		'--grey 198.51.100.0/24 bob@dest.test, dave@dest.test' true
	eg_expect "--white: the opposite of --grey (a new triplet: false)" white \
		'--white 198.51.100.9 erin@sender.test bob@dest.test' false
	eg_expect "--black: false, always (greylistd keeps no blacklist)" black \
		'--black 198.51.100.7 alice@sender.test bob@dest.test' false
	eg_expect "IPv6 as Exim's \${mask} writes it (full, dots for colons): deferred" v6 \
		'--grey 2001.0db8.0001.0000.0000.0000.0000.0000/64 alice@sender.test bob@dest.test' true
	eg_expect "upper case, and a newline at the end: taken (the line lower-cased, as Debian's greylistd does)" upper \
		'UPDATE --GREY 198.51.100.0/24 Heidi@Sender.TEST BOB@dest.test\n' true
	t0=$(date +%s)
	expect "the database: each triplet once, keyed by the network; the null sender as <>" \
		"$(printf '%s\n' '198.51.100.0 <> bob@dest.test' '198.51.100.0 <> dave@dest.test' \
			'198.51.100.0 <> grace@dest.test' '198.51.100.0 alice@sender.test bob@dest.test' \
			'198.51.100.0 carol@sender.test bob@dest.test' '198.51.100.0 erin@sender.test bob@dest.test' \
			'198.51.100.0 heidi@sender.test bob@dest.test' \
			'2001:db8:1:: alice@sender.test bob@dest.test' | sort)" "$(eg_dump)"

	while [ "$(date +%s)" -le $((t0 + 1)) ]; do sleep 0.2; done
	eg_expect "after the delay: --grey passes (false)" pass '--grey 198.51.100.0/24 alice@sender.test bob@dest.test' false
	eg_expect "a neighbour in the /24 as the same triplet: false" neighbour '--grey 198.51.100.77 alice@sender.test bob@dest.test' false
	eg_expect "update --grey passes too" update-pass 'update --grey 198.51.100.7 carol@sender.test bob@dest.test' false
	eg_expect "the null sender's two recipients pass" data2-pass '--grey 198.51.100.0/24 bob@dest.test, dave@dest.test' false
	eg_expect "one recipient of them still new: the line is deferred" data-mixed \
		'--grey 198.51.100.0/24 bob@dest.test, frank@dest.test' true
	eg_expect "--white after the delay: true" white-pass '--white 198.51.100.9 erin@sender.test bob@dest.test' true
	eg_expect "IPv6 after the delay: passes" v6-pass '--grey 2001.0db8.0001.0000.0000.0000.0000.0000/64 alice@sender.test bob@dest.test' false

	# Debian greylistd's other commands, and the bare triplet whose answer
	# would be a word: refused, "false", a warning naming them.
	: > "$D/dump.before"; eg_dump > "$D/dump.before"
	eg_expect "check --grey (Debian's look without recording): refused, false" check \
		'check --grey 203.0.113.1 a@sender.test b@dest.test' false
	expect_grep "and a warning names it" 'warning: greylistd protocol: "check" is a command of Debian.s greylistd that greylistd does not serve; answered false$' "$L"
	for words in stats "add --white 203.0.113.2 a@sender.test b@dest.test" \
		"delete 203.0.113.3 a@sender.test b@dest.test" "list" "clear"; do
		eg_expect "Debian's \"${words%% *}\": refused, false" "cmd-${words%% *}" "$words" false
	done
	eg_expect "a bare triplet (Debian answers white or grey): refused, false" bare \
		'203.0.113.4 a@sender.test b@dest.test' false
	expect_grep "and the warning shows the line" 'warning: greylistd protocol: not .*: 203\.0\.113\.4 a@sender\.test b@dest\.test; answered false$' "$L"
	expect "refused lines record nothing" "$(cat "$D/dump.before")" "$(eg_dump)"

	# Bad input: logged, answered exactly false, the connection closed.
	long=$(head -c 70000 /dev/zero | tr '\0' a)
	eg_expect "a line over 64 KiB: false" toolong "--grey 203.0.113.5 a@sender.test $long" false
	expect_grep "logged" 'warning: greylistd protocol: a line longer than 64 KiB; answered false$' "$L"
	eg_expect "a sender longer than a policy value (8448 bytes): false" longword \
		"--grey 203.0.113.5 ${long:0:9000}@sender.test b@dest.test" false
	expect_grep "logged" 'warning: greylistd protocol: a word longer than 8448 bytes; answered false$' "$L"
	eg_expect "more than 64 words: false" words "--grey 203.0.113.5 $(seq 70 | sed 's/.*/r&@dest.test,/' | tr '\n' ' ')" false
	expect_grep "logged" 'warning: greylistd protocol: more than 64 words; answered false$' "$L"
	eg_expect "a missing field (--grey IP): false" missing '--grey 203.0.113.6' false
	eg_expect "--grey alone: false" grey-alone '--grey' false
	eg_expect "an empty line: false" empty '' false
	expect_grep "logged" 'warning: greylistd protocol: not .*: \(an empty line\); answered false$' "$L"
	eg_expect "four words, no commas (neither shape): false" four '--grey 203.0.113.6 a@sender.test b@dest.test c@dest.test' false
	eg_expect "a bad IP: false" badip '--grey 203.0.113.999 a@sender.test b@dest.test' false
	expect_grep "logged as a bad request (as DUNNO is)" 'action=pass, reason=bad request \(client_address is not an IP address\), client_address=203\.0\.113\.999, ' "$L"
	eg_expect "a NUL byte in the line: false" nul '--grey 203.0.113.7 a@sender.test b@dest.test\0x' false
	expect_grep "logged" 'warning: greylistd protocol: a NUL byte in the line; answered false$' "$L"
	expect "bad input recorded nothing" "$(cat "$D/dump.before")" "$(eg_dump)"

	# A client that sends half a line and then nothing (Exim with
	# shutdown=no, or anything else): greylistd answers at its --timeout
	# (1 s) and closes; the client, which would wait 30 s, is still there.
	socat -t 0.2 - "UNIX-CONNECT:$EG_SOCK" > "$D/stall.ans" \
		< <(printf -- '--grey 203.0.113.8 a@sender.test'; echo "$BASHPID" > "$D/sleeper"; exec sleep 30)
	sleeper=$(cat "$D/sleeper" 2>/dev/null)
	if [ -n "$sleeper" ] && kill -0 "$sleeper" 2>/dev/null; then
		pass "a stalled line: greylistd ends the connection itself (the client still had 30 s to go)"
		kill "$sleeper"
	else
		fail "a stalled line: greylistd ends the connection itself" "the client's writer was gone first"
	fi
	expect "and answers it: false" false "$(cat "$D/stall.ans")"
	expect_grep "logged" 'warning: greylistd protocol: no line before the timeout; answered false$' "$L"

	expect "every answer was exactly true or false ($(wc -l < "$D/answers") asked)" "" \
		"$(awk '$2 != "true" && $2 != "false"' "$D/answers")"
	stop $ssa
	for i in $(seq 50); do [ -z "$(pgrep -P $ssa)" ] && break; sleep 0.1; done
	expect "greylistd wrote nothing on stderr or stdout (systemd-socket-activate's own lines only)" "" \
		"$(grep -vE '^(Listening on|Communication attempt|Connection from|Spawned|Execing) |^Child [0-9]+ died with code 0$|^Received SIG' "$D/ssa.out" | head -n 3)"
	expect "no warning but those asked for, no error" "" \
		"$(grep -E 'greylistd\[[0-9]+\]: (warning|error):' "$L" | grep -vE 'answered false$' | head -n 3)"
}

# eg_conf FILE - an Exim configuration shaped like Debian's exim4-config
# (ACL and list names; acl_local_deny_exceptions as Debian's, its files
# absent here), greylistd's statements not yet in it
eg_conf() {
	cat > "$1" <<-EOF
	# Exim for greylistd's tests, with Debian's ACL and list names.
	primary_hostname = mx.exim.test
	qualify_domain = exim.test
	spool_directory = $EX_DIR/spool
	log_file_path = $EX_DIR/log/%slog
	domainlist local_domains = dest.test
	domainlist relay_to_domains =
	hostlist relay_from_hosts = 127.0.0.1
	acl_smtp_rcpt = acl_check_rcpt
	acl_smtp_data = acl_check_data
	host_lookup =
	rfc1413_hosts =
	tls_advertise_hosts =
	keep_environment =
	queue_only = true
	CONFDIR = $EX_DIR/etc-exim4

	begin acl
	acl_local_deny_exceptions:
	  accept
	    hosts = \${if exists{CONFDIR/host_local_deny_exceptions}\\
	                 {CONFDIR/host_local_deny_exceptions}\\
	                 {}}
	  accept
	    senders = \${if exists{CONFDIR/sender_local_deny_exceptions}\\
	                   {CONFDIR/sender_local_deny_exceptions}\\
	                   {}}

	acl_check_rcpt:
	  accept hosts = :
	  deny   !domains = +local_domains : +relay_to_domains
	         message = relay not permitted
	  require verify = recipient
	  accept

	acl_check_data:
	  accept

	begin routers
	local_user:
	  driver = accept
	  domains = +local_domains
	  local_parts = bob : carol : dave : postmaster
	  transport = local_delivery

	begin transports
	local_delivery:
	  driver = appendfile
	  file = /dev/null
	EOF
}

# eg_smtp TAG ADDR SENDER RCPT... - a real SMTP session with the Exim
# daemon, from ADDR (an address on the namespace's loopback), driven by
# swaks: EHLO TAG.client.test, MAIL FROM:<SENDER> ("<>": the null
# sender), a RCPT per argument and, when one is accepted, a message with
# "Subject: greylistd TAG". The transcript is $EX_DIR/TAG.smtp; EG_REPLY
# is the replies after EHLO's and before QUIT's, each joined into one line
# (Exim splits a long one), separated by "|".
eg_smtp() {
	local tag=$1 addr=$2 from=$3 server=127.0.0.1 to; shift 3
	case $addr in *:*) server=::1 ;; esac
	to=$(IFS=,; echo "$*")
	ns_run swaks --server "$server" --port 2525 --local-interface "$addr" \
		--ehlo "$tag.client.test" --from "$from" --to "$to" \
		--h-Subject "greylistd $tag" --timeout 20 > "$EX_DIR/$tag.smtp" 2>&1
	EG_REPLY=$(sed -n 's/^<\(-\|\*\*\) *\([0-9]\{3\}[ -].*\)$/\2/p' "$EX_DIR/$tag.smtp" | tr -d '\r' |
		awk '{ text = text (text == "" ? "" : " ") substr($0, 5) }
		     substr($0, 4, 1) == " " { print substr($0, 1, 3) " " text; text = "" }' |
		sed '1,2d;$d' | paste -sd '|')
}

# eg_connections - how many connections greylistd has served at Debian's
# socket so far (systemd-socket-activate says "Spawned ..." for each)
eg_connections() { grep -c '^Spawned ' "$EX_DIR/gl/ssa.out"; }

# eg_setup - the configuration with Debian's statements, the users, the
# namespace with /run a tmpfs, greylistd at /run/greylistd/socket. On
# failure sets EG_WHY and returns 1.
eg_setup() {
	local uid gid n a
	EX_DIR=$WORK/exim-gp
	rm -rf "$EX_DIR"
	mkdir -p "$EX_DIR"/spool "$EX_DIR"/log "$EX_DIR"/gl "$EX_DIR"/etc-exim4
	chmod go+x "$WORK" "$EX_DIR"
	eg_conf "$EX_DIR/exim.conf"
	if ! python3 "$EG_DEB/usr/sbin/greylistd-setup-exim4" add -netmask=24 -no-reload \
		"$EX_DIR/exim.conf" acl_check_rcpt > "$EX_DIR/setup.out" 2>&1 ||
	   ! python3 "$EG_DEB/usr/sbin/greylistd-setup-exim4" add -netmask=24 -no-reload \
		"$EX_DIR/exim.conf" acl_check_data >> "$EX_DIR/setup.out" 2>&1; then
		EG_WHY="greylistd-setup-exim4 add failed: $(tail -n 2 "$EX_DIR/setup.out" | tr '\n' ' ')"
		return 1
	fi
	# Exim's user, and Debian's group greylist with it as a member
	cp /etc/passwd "$EX_DIR/passwd" && cp /etc/group "$EX_DIR/group" || { EG_WHY="cannot copy passwd and group"; return 1; }
	if getent passwd Debian-exim >/dev/null; then
		uid=$(id -u Debian-exim)
	else
		uid=$(free_id) || { EG_WHY="no free uid"; return 1; }
		echo "Debian-exim:x:$uid:$uid:Debian-exim (greylistd tests):/nonexistent:/usr/sbin/nologin" >> "$EX_DIR/passwd"
		echo "Debian-exim:x:$uid:" >> "$EX_DIR/group"
	fi
	gid=$(getent group greylist | cut -d: -f3)
	if [ -z "$gid" ]; then
		gid=$(awk -F: -v u="$uid" '{ g[$3] = 1 } END { for (i = u - 1; i > 60000; i--) if (!(i in g)) { print i; exit } }' "$EX_DIR/group")
		echo "greylist:x:$gid:Debian-exim" >> "$EX_DIR/group"
	else
		awk -F: -v OFS=: '$1 == "greylist" { $4 = ($4 == "" ? "" : $4 ",") "Debian-exim" } 1' \
			"$EX_DIR/group" > "$EX_DIR/group.new" && mv "$EX_DIR/group.new" "$EX_DIR/group"
	fi
	chown "$uid:$uid" "$EX_DIR"/spool "$EX_DIR"/log
	printf '127.0.0.1 localhost\n' > "$EX_DIR"/hosts
	ns_start "$EX_DIR" mx.exim.test || { EG_WHY="unshare or its mounts failed"; return 1; }
	# Debian's socket path, /var/run/greylistd/socket, in the namespace only
	[ "$(ns_run readlink -f /var/run)" = /run ] || { EG_WHY="/var/run is not /run here"; return 1; }
	ns_run mount -t tmpfs -o mode=0755 tmpfs /run && ns_run mkdir -m 0755 /run/greylistd ||
		{ EG_WHY="cannot mount a tmpfs on the namespace's /run"; return 1; }
	# the clients' addresses, on the namespace's own loopback
	for a in 198.51.100.7/32 198.51.100.9/32 198.51.100.250/32 198.51.101.7/32 2001:db8:1::7/128; do
		ns_run ip addr add "$a" dev lo || { EG_WHY="cannot add $a to the namespace's lo"; return 1; }
	done
	ns_spawn systemd-socket-activate --accept --inetd -l /run/greylistd/socket \
		"$GREYLISTD" --greylistd-protocol --db="$EX_DIR/gl/db" --log-file="$EX_DIR/gl/log" \
		--delay=1s --lookup-by-host > "$EX_DIR/gl/ssa.out" 2>&1
	for n in $(seq 50); do
		grep -q '^Listening on' "$EX_DIR/gl/ssa.out" && break
		sleep 0.1
	done
	# as Debian's greylistd.socket: SocketMode=0660, SocketGroup=greylist
	ns_run chgrp greylist /run/greylistd/socket && ns_run chmod 0660 /run/greylistd/socket ||
		{ EG_WHY="greylistd did not listen at /run/greylistd/socket: $(head -c 300 "$EX_DIR/gl/ssa.out")"; return 1; }
	# Exim's daemon, in the foreground, on the namespace's port 2525
	ns_spawn env LD_LIBRARY_PATH="$EX_ROOT/usr/lib/x86_64-linux-gnu" "$EX_ROOT/usr/sbin/exim4" \
		-C "$EX_DIR/exim.conf" -bdf -oX 2525 -oP "$EX_DIR/exim.pid" > "$EX_DIR/daemon.out" 2>&1
	for n in $(seq 50); do
		grep -q 'daemon started' "$EX_DIR/log/mainlog" 2>/dev/null && return 0
		sleep 0.1
	done
	EG_WHY="Exim's daemon did not start: $(tail -n 2 "$EX_DIR/daemon.out" "$EX_DIR/log/paniclog" 2>/dev/null | tr '\n' ' ')"
	return 1
}

# eg_exim - Debian's statements in Exim
eg_exim() {
	local t0 n L=$EX_DIR/gl/log f q=" is not yet authorized to deliver mail from"

	expect "greylistd-setup-exim4 add -netmask=24: both ACLs, OK" 2 "$(grep -c ': OK$' "$EX_DIR/setup.out")"
	expect "it wrote its four statements' readsockets (--grey and --black, rcpt and data)" 4 \
		"$(grep -c 'condition      = ${readsocket{/var/run/greylistd/socket}' "$EX_DIR/exim.conf")"
	expect "the client as \${mask:\$sender_host_address/24}, in both --grey statements" 2 \
		"$(grep -cE '^ +\$\{mask:\$sender_host_address/24\} \\$' "$EX_DIR/exim.conf")"
	if ! ex_exim -C "$EX_DIR/exim.conf" -bV > "$EX_DIR/version" 2>&1; then
		fail "Exim accepts the configuration with Debian's statements" "$(head -n 3 "$EX_DIR/version" | tr '\n' ' ')"
		return
	fi
	pass "$(head -n 1 "$EX_DIR/version" | cut -d' ' -f1-3) accepts the configuration with Debian's statements (greylistd $(sed -n 's/^greylistd_\([^_]*\)_.*/\1/p' "$EG_DEB/.debs"))"
	expect "greylistd listens at Debian's path, 0660, group greylist" "srw-rw---- greylist" \
		"$(ns_run stat -c '%A %G' /var/run/greylistd/socket)"

	eg_smtp first 198.51.100.7 "$EG_FROM" bob@dest.test carol@dest.test nobody@dest.test
	t0=$(date +%s)
	expect "first try: Debian's 451 for each known recipient, 550 for an unknown one" \
		"250 OK|451 198.51.100.7$q <$EG_FROM> to <bob@dest.test>. Please try later.|451 198.51.100.7$q <$EG_FROM> to <carol@dest.test>. Please try later.|550 Unrouteable address" \
		"$EG_REPLY"
	expect_grep "greylistd got the client as Exim masked it (198.51.100.0; greylistd runs --lookup-by-host)" \
		"action=greylist, reason=new, client_address=198\.51\.100\.0, sender=$EG_FROM, recipient=bob@dest\.test\$" "$L"
	check "the unknown recipient never reached greylistd (verify = recipient comes first)" \
		bash -c "! grep -q nobody@ '$L'"
	eg_smtp v6 2001:db8:1::7 "$EG_FROM" bob@dest.test
	expect "an IPv6 client is deferred too (Exim's \${mask} writes it with dots)" \
		"250 OK|451 2001:db8:1::7$q <$EG_FROM> to <bob@dest.test>. Please try later." "$EG_REPLY"
	expect_grep "greylistd keyed it by Exim's /24" "action=greylist, reason=new, client_address=2001:0d00:0000:0000:0000:0000:0000:0000, " "$L"
	eg_smtp null-first 198.51.100.7 '<>' bob@dest.test carol@dest.test
	expect "null sender: the RCPTs are accepted, the data ACL's --grey defers the message" \
		"250 OK|250 Accepted|250 Accepted|354 Enter message, ending with \".\" on a line by itself|451 198.51.100.7$q <> to <bob@dest.test, carol@dest.test>. Please try later." \
		"$EG_REPLY"
	expect "greylistd judged both recipients of \$recipients, with the null sender" 2 \
		"$(grep -cE 'action=greylist, reason=new, client_address=198\.51\.100\.0, recipient=(bob|carol)@dest\.test$' "$L")"

	while [ "$(date +%s)" -le $((t0 + 1)) ]; do sleep 0.2; done
	n=$(eg_connections)
	eg_smtp retry 198.51.100.7 "$EG_FROM" bob@dest.test carol@dest.test
	expect "the retry after the delay: accepted and queued (--black never denies)" \
		"250 OK|250 Accepted|250 Accepted|354 Enter message, ending with \".\" on a line by itself|250 OK id=*" \
		"$(echo "$EG_REPLY" | sed 's/id=[^|]*$/id=*/')"
	expect "two passed RCPTs and their message: five connections, five greylistd processes (--grey and --black for each RCPT, --black at DATA)" \
		5 "$(( $(eg_connections) - n ))"
	eg_smtp neighbour 198.51.100.250 "$EG_FROM" bob@dest.test
	expect "another address in the same /24: passes at once" \
		"250 OK|250 Accepted|354 Enter message, ending with \".\" on a line by itself|250 OK id=*" \
		"$(echo "$EG_REPLY" | sed 's/id=[^|]*$/id=*/')"
	eg_smtp other 198.51.101.7 "$EG_FROM" bob@dest.test
	expect "a host in the next /24: deferred" \
		"250 OK|451 198.51.101.7$q <$EG_FROM> to <bob@dest.test>. Please try later." "$EG_REPLY"
	eg_smtp null-retry 198.51.100.9 '<>' bob@dest.test carol@dest.test
	expect "the null sender's message retried (from another host of the /24): queued" \
		"250 OK|250 Accepted|250 Accepted|354 Enter message, ending with \".\" on a line by itself|250 OK id=*" \
		"$(echo "$EG_REPLY" | sed 's/id=[^|]*$/id=*/')"
	f=$(grep -l '^[0-9]\{3\}  Subject: greylistd null-retry$' "$EX_DIR"/spool/input/*-H 2>/dev/null | head -n 1)
	check "its spool file has the null sender" grep -qx '<>' "${f:-/nonexistent}"
	expect "greylistctl dump: one key per /24 (the neighbour and the second null-sender host added none)" \
		"$(printf '%s\n' '198.51.100.0 <> bob@dest.test' '198.51.100.0 <> carol@dest.test' \
			"198.51.100.0 $EG_FROM bob@dest.test" "198.51.100.0 $EG_FROM carol@dest.test" \
			"198.51.101.0 $EG_FROM bob@dest.test" "2001:d00:: $EG_FROM bob@dest.test" | sort)" \
		"$("$GREYLISTCTL" dump --db="$EX_DIR/gl/db" | awk '$1 == "T" { print $5, $6, $7 }' | sort)"
	expect "greylistd logged no warning or error" "" \
		"$(grep -E 'greylistd\[[0-9]+\]: (warning|error):' "$L" | head -n 3)"
	expect "Exim logged no panic" "" "$(cat "$EX_DIR/log/paniclog" 2>/dev/null | head -n 3)"
}

t_exim_gp() {
	local why old_trap=() left

	if ! command -v socat >/dev/null || ! command -v systemd-socket-activate >/dev/null; then
		skip "greylistd protocol" "socat or systemd-socket-activate missing (Debian packages socat, systemd)"
		return
	fi
	eg_protocol

	if why=$(ex_cannot_run); then skip "Debian greylistd's statements in Exim" "$why"; return; fi
	command -v python3 >/dev/null ||
		{ skip "Debian greylistd's statements in Exim" "no python3 for greylistd-setup-exim4"; return; }
	command -v swaks >/dev/null ||
		{ skip "Debian greylistd's statements in Exim" "no swaks (Debian package swaks)"; return; }
	if ! EX_ROOT=$(deb_root exim4 exim4-daemon-light exim4-base libidn12); then
		skip "Debian greylistd's statements in Exim" "no Exim from Debian's archive: $EX_ROOT"; return
	fi
	if ! EG_DEB=$(deb_root greylistd-deb greylistd); then
		skip "Debian greylistd's statements in Exim" "no greylistd package from Debian's archive: $EG_DEB"; return
	fi
	NS_SPAWNED='' NS_PID=''
	eval "old_trap=($(trap -p EXIT))"
	# shellcheck disable=SC2064 # the old command is wanted as it is now
	trap "ns_stop; ${old_trap[2]:-}" EXIT
	if eg_setup; then
		eg_exim
	else
		fail "exim_gp: setup" "$EG_WHY"
	fi
	ns_stop
	left=$(ns_processes)
	[ -z "$left" ] && left=$(pgrep -f -- "$EX_DIR/" | paste -sd ' ')
	if [ -z "$left" ]; then
		pass "exim_gp: no process left, the namespace is gone"
	else
		fail "exim_gp: no process left, the namespace is gone" \
			"$(ps -o pid=,args= -p "${left// /,}" | tr '\n' ';')"
	fi
	if [ ${#old_trap[@]} -ge 3 ]; then trap -- "${old_trap[2]}" EXIT; else trap - EXIT; fi
}
