# shellcheck shell=bash
# tests/sendmail.sh - a real Sendmail 8.17 and its milter client, and
# Postfix's milter client, for the coming greylistd --milter.
#
# Sourced by test.sh, which runs t_sendmail as the group "sendmail".
# Debian's sendmail-bin conflicts with postfix, so it is downloaded and
# unpacked, never installed (tests/mta-lib.sh; kept in
# /var/cache/greylistd-tests/sendmail). Sendmail runs inside a namespace of
# the test's own (network, mount, UTS) with its own fully qualified host
# name and /etc/hosts: with an unqualified name it sleeps 60 s and asks
# the DNS. swaks runs in the same namespace; --local-interface 127.0.X.Y
# chooses the client address Sendmail sees (all of 127/8 is loopback).
#
#   swaks --local-interface 127.0.0.7 --> sendmail -bD 127.0.0.1:PORT
#                                          |  (queueonly: qf/df files)
#                                          +-- milter --> unix:SOCKET
#
# The harness (sm_setup, sm_start, sm_send, sm_queue_has_header, sm_stop)
# is meant for the milter tests to come: start greylistd --milter on
# SOCKET (systemd-socket-activate) and call them. What the group checks
# now, with no milter running: with F=T (a milter that cannot be reached
# fails the message temporarily) mail gets 451 4.3.2, with no F flag it
# passes. And it records what each MTA sends to a milter (mc_respond, a
# minimal milter that negotiates as greylistd will and answers "continue"
# to everything): one MAIL and two RCPTs, from Sendmail and from a private
# Postfix (tests/postfix.sh's pf_setup, with smtpd_milters), saved as
# tests/milter-captures/{sendmail,postfix}-N.bin, one file per milter
# connection, when MILTER_CAPTURE_SAVE=1; otherwise they are compared
# with the saved ones, packet by packet (command bytes in order).
#
# Needs root, unshare, nsenter, ip, m4, swaks, socat, apt-get (first run);
# the Postfix capture needs what the postfix group needs. About 14 s.

SM_FROM=alice@sender.test	# the sender of every message
SM_CAPTURES=$PWD/tests/milter-captures	# where the captures are kept

# sm_cannot_run - print why this machine cannot run the group and succeed,
# or fail when it can
sm_cannot_run() {
	local c
	[ "$(id -u)" -eq 0 ] || { echo "needs root (namespaces, bind mounts, Sendmail)"; return 0; }
	for c in unshare nsenter ip m4 swaks socat dd od apt-get dpkg flock; do
		command -v $c >/dev/null ||
			{ echo "$c not found (Debian packages util-linux, iproute2, m4, swaks, socat, coreutils, apt, dpkg)"; return 0; }
	done
	return 1
}

# sm_setup DIR FLAGS SOCKET - write a Sendmail instance under DIR (the .mc,
# the .cf m4 makes of it, queue, aliases, service switch, hosts) whose one
# milter "greylist" is at unix:SOCKET with the flags FLAGS ("T", "R" or
# ""). Sets SM_DIR and SM_PORT (the daemon listens on 127.0.0.1:SM_PORT in
# the namespace: every port is free there). On failure sets SM_WHY and
# returns 1.
sm_setup() {
	local dir=$1 flags=$2 sock=$3
	SM_DIR=$dir SM_PORT=2525
	rm -rf "$SM_DIR"
	mkdir -p "$SM_DIR"/queue && chmod 700 "$SM_DIR"/queue
	# Sendmail refuses files in group- or world-writable directories.
	chmod go-w "$SM_DIR"
	printf 'postmaster: root\n' > "$SM_DIR"/aliases
	printf 'hosts files\n' > "$SM_DIR"/service.switch
	printf '127.0.0.1 mx.sendmail.test mx localhost\n' > "$SM_DIR"/hosts
	printf 'nameserver 127.0.0.1\n' > "$SM_DIR"/resolv.conf
	cat > "$SM_DIR"/sendmail.mc <<-EOF
	divert(-1)
	# Sendmail for greylistd's tests: queue only, no DNS, its own files.
	divert(0)dnl
	OSTYPE(\`linux')dnl
	define(\`QUEUE_DIR', \`$SM_DIR/queue')dnl
	define(\`confPID_FILE', \`$SM_DIR/sendmail.pid')dnl
	define(\`ALIAS_FILE', \`$SM_DIR/aliases')dnl
	define(\`STATUS_FILE', \`$SM_DIR/statistics')dnl
	define(\`confHOST_STATUS_DIRECTORY', \`')dnl
	define(\`confSERVICE_SWITCH_FILE', \`$SM_DIR/service.switch')dnl
	define(\`confDELIVERY_MODE', \`queueonly')dnl
	define(\`confDONT_BLAME_SENDMAIL', \`TrustStickyBit')dnl
	define(\`confLOG_LEVEL', \`14')dnl
	define(\`confMILTER_LOG_LEVEL', \`14')dnl
	FEATURE(\`nocanonify')dnl
	FEATURE(\`accept_unresolvable_domains')dnl
	FEATURE(\`no_default_msa')dnl
	RELAY_DOMAIN(\`dest.test')dnl
	DAEMON_OPTIONS(\`Port=$SM_PORT, Addr=127.0.0.1, Name=MTA')dnl
	INPUT_MAIL_FILTER(\`greylist', \`S=unix:$sock${flags:+, F=$flags}, T=C:10s;S:10s;R:10s;E:1m')dnl
	MAILER(\`smtp')dnl
	EOF
	if ! m4 -D_CF_DIR_="$SM_ROOT/usr/share/sendmail/cf/" \
		"$SM_ROOT/usr/share/sendmail/cf/m4/cf.m4" "$SM_DIR"/sendmail.mc \
		> "$SM_DIR"/sendmail.cf 2> "$SM_DIR"/m4.err; then
		SM_WHY="m4 failed: $(head -c 300 "$SM_DIR"/m4.err)"
		return 1
	fi
}

# sm_start - start the namespace (hostname mx.sendmail.test) and Sendmail
# in it, in the foreground (-bD) so that its PID is known; wait until it
# accepts connections. On failure sets SM_WHY and returns 1.
sm_start() {
	ns_start "$SM_DIR" mx.sendmail.test || { SM_WHY="unshare or its mounts failed"; return 1; }
	ns_spawn "$SM_ROOT/usr/libexec/sendmail/sendmail" -bD -C "$SM_DIR"/sendmail.cf > "$SM_DIR"/sendmail.out 2>&1
	SM_PID=$!
	for _ in $(seq 100); do
		ns_run bash -c "exec 3<>/dev/tcp/127.0.0.1/$SM_PORT" 2>/dev/null && return 0
		kill -0 "$SM_PID" 2>/dev/null || break
		sleep 0.1
	done
	SM_WHY="sendmail -bD did not listen on 127.0.0.1:$SM_PORT: $(head -c 300 "$SM_DIR"/sendmail.out)"
	return 1
}

# sm_send TAG CLIENT RCPTS [SWAKS-ARGS...] - one SMTP session from the
# client address CLIENT (127.0.X.Y) to the namespace's Sendmail, with
# "Subject: greylistd TAG"; RCPTS is comma-separated. The transcript is
# $SM_DIR/TAG.smtp; SM_REPLY is the server's reply to the first RCPT (to MAIL
# when it refused that), and
# SM_QUEUED the queue id when the message was accepted.
sm_send() {
	local tag=$1 client=$2 rcpts=$3; shift 3
	ns_run swaks --server 127.0.0.1 --port "$SM_PORT" --local-interface "$client" \
		--helo "$tag.client.test" --from "$SM_FROM" --to "$rcpts" \
		--header "Subject: greylistd $tag" --timeout 30 "$@" > "$SM_DIR/$tag.smtp" 2>&1
	SM_REPLY=$(sed -n '/^ *-> RCPT TO:/{n;s/^<[-*~]* *//;p;q;}' "$SM_DIR/$tag.smtp")
	[ -n "$SM_REPLY" ] ||
		SM_REPLY=$(sed -n '/^ *-> MAIL FROM:/{n;s/^<[-*~]* *//;p;q;}' "$SM_DIR/$tag.smtp")
	SM_QUEUED=$(sed -n 's/^<- *250 2\.0\.0 \([^ ]*\) Message accepted for delivery.*/\1/p' "$SM_DIR/$tag.smtp")
}

# sm_queue_file ID - the queue control file (qf) of the message ID
sm_queue_file() { ls "$SM_DIR"/queue/qf"$1" 2>/dev/null; }

# sm_queue_has_header ID REGEX - true when the queued message ID has a
# header line matching REGEX (qf files are binary: grep -a). Header lines
# in a qf file are "H??Name: value", where ?? holds Sendmail's flags.
sm_queue_has_header() {
	local f
	f=$(sm_queue_file "$1") && [ -n "$f" ] || return 1
	sed -n 's/^H\(?[^?]*?\)\{0,1\}//p' "$f" | grep -aqE -- "$2"
}

# sm_stop - stop Sendmail (by its PID) and the namespace, and wait for
# its session children. Quiet, safe to call twice; the EXIT trap calls it.
sm_stop() { ns_stop; SM_PID=; }

# --- a milter that records --------------------------------------------------

# mc_respond FILE - a minimal milter on stdin/stdout (socat runs one per
# connection): append every packet the MTA sends, as it came (u32 length,
# command byte, data), to FILE; answer OPTNEG with version 6, the action
# SMFIF_ADDHDRS and the stages greylistd does not want (no body, headers,
# end of headers, unknown commands, DATA: 0x370, masked with the MTA's
# offer); answer "continue" to every command that takes an answer; end at
# QUIT. dd bs=1 reads exactly what a packet holds, and no more.
mc_respond() {
	local out=$1 len cmd offer
	export LC_ALL=C
	while :; do
		len=$(dd bs=1 count=4 2>/dev/null | od -An -tu1 |
			awk 'NF == 4 { print $1 * 16777216 + $2 * 65536 + $3 * 256 + $4 }')
		[ -n "$len" ] && [ "$len" -ge 1 ] && [ "$len" -le 65536 ] || return 0
		dd bs=1 count="$len" 2>/dev/null > "$out.pkt"
		mc_u32 "$len" >> "$out"
		cat "$out.pkt" >> "$out"
		cmd=$(head -c 1 "$out.pkt")
		case $cmd in
		O)	offer=$(od -An -tu4 --endian=big -j 9 -N 4 "$out.pkt" | tr -d ' ')
			mc_u32 13; printf O; mc_u32 6; mc_u32 1; mc_u32 $((0x370 & offer)) ;;
		D|A|K)	;;
		Q)	rm -f "$out.pkt"; return 0 ;;
		*)	mc_u32 1; printf c ;;
		esac
	done
}

# mc_u32 N - N as 4 bytes, big-endian
mc_u32() {
	# shellcheck disable=SC2059 # the format is made of \xHH escapes
	printf "\\x$(printf %02x $((($1 >> 24) & 255)))\\x$(printf %02x $((($1 >> 16) & 255)))\\x$(printf %02x $((($1 >> 8) & 255)))\\x$(printf %02x $(($1 & 255)))"
}

# mc_listen SOCKET DIR - socat on the UNIX socket SOCKET (mode 666), one
# mc_respond per connection, each writing DIR/conn-NANOSECONDS.bin; its PID
# is left in MC_PID. In the namespace when one runs (NS_PID set).
mc_listen() {
	local sock=$1 dir=$2 script=$2/respond.sh
	mkdir -p "$dir"
	{
		declare -f mc_respond mc_u32
		echo "mc_respond \"$dir/conn-\$(date +%s%N).bin\""
	} > "$script"
	if [ -n "${NS_PID:-}" ]; then
		ns_spawn socat -d -d UNIX-LISTEN:"$sock",fork,mode=666 EXEC:"bash $script" 2> "$dir/socat.err"
	else
		socat -d -d UNIX-LISTEN:"$sock",fork,mode=666 EXEC:"bash $script" 2> "$dir/socat.err" &
	fi
	MC_PID=$!
	# socat -d -d says so once it listens (the file exists from bind on)
	for _ in $(seq 50); do
		grep -q ' listening on ' "$dir/socat.err" && return 0
		sleep 0.1
	done
	return 1
}

# mc_commands FILE - the command bytes of the packets in FILE, in order,
# as one word ("ODCDHDMDRDRE...")
mc_commands() {
	local f=$1 off=0 size len
	size=$(stat -c %s "$f")
	while [ "$off" -lt "$size" ]; do
		len=$(od -An -tu4 --endian=big -j "$off" -N 4 "$f" | tr -d ' ')
		head -c $((off + 5)) "$f" | tail -c 1
		off=$((off + 4 + len))
	done
	echo
}

# mc_dump FILE - the packets in FILE, one a line: length, command, and the
# data with each NUL shown as "|" (for reading a capture)
mc_dump() {
	local f=$1 off=0 size len
	size=$(stat -c %s "$f")
	while [ "$off" -lt "$size" ]; do
		len=$(od -An -tu4 --endian=big -j "$off" -N 4 "$f" | tr -d ' ')
		printf '%5d %s ' "$len" "$(head -c $((off + 5)) "$f" | tail -c 1)"
		tail -c +$((off + 6)) "$f" | head -c $((len - 1)) | tr '\0' '|' | cat -v
		echo
		off=$((off + 4 + len))
	done
}

# mc_save PREFIX DIR - the connections recorded in DIR, oldest first,
# as PREFIX-1.bin, PREFIX-2.bin ... in DIR (the names mc_check compares)
mc_save() {
	local prefix=$1 dir=$2 i=0 f
	# the names have as many digits each, so the glob's order is the time's
	for f in "$dir"/conn-*.bin; do
		[ -e "$f" ] || continue
		i=$((i + 1)); mv "$f" "$dir/$prefix-$i.bin"
	done
}

# mc_check NAME PREFIX DIR - compare the connections recorded in DIR with
# the saved tests/milter-captures/PREFIX-*.bin: as many connections, and
# the same commands in each (the data holds ports and dates that change),
# or, with MILTER_CAPTURE_SAVE=1, save them there
mc_check() {
	local name=$1 prefix=$2 dir=$3 f n got want
	mc_save "$prefix" "$dir"
	if [ "${MILTER_CAPTURE_SAVE:-}" = 1 ]; then
		mkdir -p "$SM_CAPTURES" && rm -f "$SM_CAPTURES/$prefix"-*.bin &&
			cp "$dir/$prefix"-*.bin "$SM_CAPTURES"/
		set -- "$dir/$prefix"-*.bin
		pass "$name: saved $# connection(s) in $SM_CAPTURES"
		return
	fi
	got=$(for f in "$dir/$prefix"-*.bin; do [ -e "$f" ] && mc_commands "$f"; done | paste -sd ' ')
	want=$(for f in "$SM_CAPTURES/$prefix"-*.bin; do [ -e "$f" ] && mc_commands "$f"; done | paste -sd ' ')
	n=$(echo "$got" | wc -w)
	expect "$name: $n connection(s), the commands of the saved captures" "$want" "$got"
}

# --- the checks ------------------------------------------------------------

# sm_no_milter NAME FLAGS WANT - Sendmail with its milter configured with
# FLAGS but nothing listening: the RCPT reply must match the glob WANT
sm_no_milter() {
	local name=$1 flags=$2 want=$3 dir
	dir=$WORK/sendmail-${flags:-none}
	if ! sm_setup "$dir" "$flags" "$dir/milter.sock"; then fail "$name" "$SM_WHY"; return; fi
	if ! sm_start; then fail "$name" "$SM_WHY"; sm_stop; return; fi
	sm_send nomilter 127.0.0.7 bob@dest.test
	# shellcheck disable=SC2254 # $want is a glob
	case $SM_REPLY in
	$want) pass "$name (reply: $SM_REPLY)" ;;
	*) fail "$name" "want [$want] got [$SM_REPLY]: $(grep -m 3 '^<-\*\{0,1\} *[45]' "$SM_DIR/nomilter.smtp" | tr '\n' ' ')" ;;
	esac
	SM_LAST_QUEUED=$SM_QUEUED
	sm_stop
}

# sm_capture - one session with one MAIL and two RCPTs through Sendmail
# with the recording milter, and the message it queued
sm_capture() {
	local dir=$WORK/sendmail-capture
	if ! sm_setup "$dir" T "$dir/milter.sock"; then fail "sendmail capture: setup" "$SM_WHY"; return; fi
	if ! sm_start; then fail "sendmail capture: start" "$SM_WHY"; sm_stop; return; fi
	if ! mc_listen "$dir/milter.sock" "$dir/cap"; then
		fail "sendmail capture: the recording milter listens" "$(head -c 300 "$dir/cap/socat.err")"
		sm_stop; return
	fi
	sm_send capture 127.0.0.7 bob@dest.test,carol@dest.test
	expect "Sendmail with the recording milter (F=T): RCPT accepted" "250 2.1.5 <bob@dest.test>... Recipient ok" "$SM_REPLY"
	if [ -n "$SM_QUEUED" ] && sm_queue_has_header "$SM_QUEUED" '^Subject: greylistd capture$'; then
		pass "the message is queued ($SM_QUEUED), and sm_queue_has_header finds its Subject in qf$SM_QUEUED"
	else
		fail "the message is queued, with its Subject in the qf file" "id [$SM_QUEUED]; $(tail -n 3 "$dir/capture.smtp" | tr '\n' ' ')"
	fi
	sm_stop
	mc_check "Sendmail's milter packets" sendmail "$dir/cap"
}

# pfm_capture - the same session through Postfix's milter client: the
# postfix group's private instance, with smtpd_milters and no policy
# service, and XCLIENT choosing the client address (Postfix then ends the
# first milter connection and opens a second)
pfm_capture() {
	local why sock cap
	if why=$(pf_cannot_run); then skip "postfix milter capture" "$why"; return; fi
	PF_MASTER='' PF_SINK=''
	if ! pf_setup; then fail "postfix milter capture: a free loopback port" "none found"; return; fi
	sock=$PF_DIR/milter/milter.sock cap=$PF_DIR/milter
	mkdir -p "$cap" && chmod 755 "$cap"
	postconf -c "$PF_DIR"/etc -e \
		"smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination" \
		"smtpd_milters = unix:$sock" "milter_default_action = accept" \
		"milter_protocol = 6"
	if ! mc_listen "$sock" "$cap"; then
		fail "postfix milter capture: the recording milter listens" "$(head -c 300 "$cap/socat.err")"; return
	fi
	if ! pf_start; then
		fail "postfix milter capture: a private Postfix runs" "$PF_WHY"
	else
		pf_smtp milter 198.51.100.7 bob@dest.test,carol@dest.test
		# shellcheck disable=SC2153 # pf_smtp sets it
		expect "Postfix with the recording milter: RCPT accepted" "250 2.1.5 Ok" "$PF_REPLY"
		expect_grep "and the message is queued" '^<- +250 2\.0\.0 Ok: queued as ' "$PF_DIR"/milter.smtp
	fi
	pf_stop
	stop "$MC_PID"
	mc_check "Postfix's milter packets" postfix "$cap"
}

t_sendmail() {
	local why old_trap=() left

	if why=$(sm_cannot_run); then skip "sendmail" "$why"; return; fi
	if ! SM_ROOT=$(deb_root sendmail sendmail-bin sendmail-base sendmail-cf); then
		skip "sendmail" "no Sendmail from Debian's archive: $SM_ROOT"; return
	fi
	# shellcheck disable=SC2034 # tests/mta-lib.sh's
	NS_SPAWNED='' NS_PID='' SM_PID='' SM_LAST_QUEUED=''
	PF_MASTER=${PF_MASTER:-} PF_SINK=${PF_SINK:-}
	eval "old_trap=($(trap -p EXIT))"
	# shellcheck disable=SC2064 # the old command is wanted as it is now
	trap "sm_stop; [ -z \"\${PF_DIR:-}\" ] || pf_stop; ${old_trap[2]:-}" EXIT

	sm_no_milter "Sendmail, milter F=T and none listening: 451 4.3.2 at MAIL" T \
		"451 4.3.2 Please try again later"
	sm_no_milter "Sendmail, milter without F and none listening: mail passes" "" \
		"250 2.1.5 <bob@dest.test>... Recipient ok"
	if [ -n "$SM_LAST_QUEUED" ]; then
		pass "and the message is queued ($SM_LAST_QUEUED)"
	else
		fail "and the message is queued" "no queue id in the transcript"
	fi
	sm_capture
	pfm_capture

	left=$( { pgrep -f -- "$WORK/sendmail-"; [ -n "${PF_DIR:-}" ] && pf_processes | tr ' ' '\n'; } | sort -nu | paste -sd ' ')
	if [ -z "$left" ]; then
		pass "sendmail: no process left (Sendmail, its namespace, socat, Postfix)"
	else
		fail "sendmail: no process left (Sendmail, its namespace, socat, Postfix)" \
			"$(ps -o pid=,args= -p "${left// /,}" | tr '\n' ';')"
	fi

	if [ ${#old_trap[@]} -ge 3 ]; then trap -- "${old_trap[2]}" EXIT; else trap - EXIT; fi
}
