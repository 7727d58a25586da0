# shellcheck shell=bash
# tests/multimx.sh - several MX hosts, one greylist: the central greylistd
# of the README's "Several MX hosts", in network namespaces of the test's
# own.
#
# Sourced by test.sh, which runs t_multimx as the group "multimx". It uses
# tests/postfix.sh (a private Postfix per MX host, pf_setup with a policy
# service and a namespace) and tests/systemd.sh (a real systemd as PID 1 of
# private namespaces, sd_boot). The layout, all of it inside namespaces
# whose names end in the test's PID:
#
#   glmm-PID-lan: bridge br0 (no address), one veth port per host
#     |- glmm-PID-gl    10.23.0.1  fd23::1   the greylist host (phase 1)
#     |- (systemd's)    10.23.0.1  fd23::1   the greylist host (phase 2)
#     |- glmm-PID-mx1   10.23.0.11 fd23::11  Postfix, policy inet:10.23.0.1:10023
#     |- glmm-PID-mx2   10.23.0.12 fd23::12  Postfix, policy inet:[fd23::1]:10023
#     `- glmm-PID-mx3   10.23.0.13 fd23::13  Postfix, policy inet:10.23.0.1:10023,
#                                            NOT in the allow list
#
# Each MX has smtpd on its own 127.0.0.1 (swaks connects there and names the
# SMTP client with XCLIENT) and delivers to its own smtp-sink -d. Phase 1:
# greylistd under systemd-socket-activate --accept --inetd on the LAN
# addresses. Phase 2: greylistd.socket and greylistd@.service as shipped,
# with the shipped drop-in greylistd-lan.conf (its addresses replaced by the
# test's), under a real systemd whose network namespace gets the veth; its
# IPAddressAllow= must keep MX3 out. greylistd runs with --delay=3s: a
# retry waits until 3 s after the first try's answer, so it can only be
# late, never early. Everything started is stopped by PID, and the links
# and namespaces are deleted by name, also when test.sh ends early (EXIT
# trap). Needs root, ip (iproute2), what tests/postfix.sh needs, and for
# phase 2 what sd_boot needs; about 50 seconds, 14 of them waiting for
# timeouts on purpose (the dropped connections of MX3).

MM_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MM_TAG=glmm-$$			# namespace names start with it
MM_GL=10.23.0.1 MM_GL6=fd23::1	# the greylist host
MM_DELAY=3			# greylistd --delay, seconds
MM_HOSTS="mx1 mx2 mx3"		# the MX hosts, by namespace suffix
# each host's addresses; sd is the greylist host of phase 2 (systemd's)
declare -A MM_ADDR=([gl]=$MM_GL [sd]=$MM_GL [mx1]=10.23.0.11 [mx2]=10.23.0.12 [mx3]=10.23.0.13)
declare -A MM_ADDR6=([gl]=$MM_GL6 [sd]=$MM_GL6 [mx1]=fd23::11 [mx2]=fd23::12 [mx3]=fd23::13)
declare -A MM_POLICY=(
	[mx1]="inet:$MM_GL:10023, default_action=DUNNO, timeout=10s"
	[mx2]="inet:[$MM_GL6]:10023, default_action=DUNNO, timeout=10s"
	[mx3]="inet:$MM_GL:10023, default_action=DUNNO, timeout=3s"
)
declare -A MM_STATE=()		# each MX's tests/postfix.sh variables

# mm_ns HOST - the name of HOST's network namespace
mm_ns() { echo "$MM_TAG-$1"; }

# mm_link HOST NETNS - a veth from the bridge to HOST: its end eth0 in NETNS
# (a name or a PID) with HOST's addresses, the other end p-HOST a port of
# br0 in the LAN namespace
mm_link() {
	local lan host=$1 ns=$2 in
	lan=$(mm_ns lan)
	if [ -z "${ns##*[!0-9]*}" ]; then in=(ip -n "$ns"); else in=(nsenter -t "$ns" -n ip); fi
	ip link add name "p-$host" netns "$lan" type veth peer name eth0 netns "$ns" &&
	ip -n "$lan" link set "p-$host" master br0 up &&
	"${in[@]}" link set lo up &&
	"${in[@]}" addr add "${MM_ADDR[$host]}/24" dev eth0 &&
	"${in[@]}" addr add "${MM_ADDR6[$host]}/64" dev eth0 nodad &&
	"${in[@]}" link set eth0 up
}

# mm_net_up - the namespaces, the bridge, and a link for every host
mm_net_up() {
	local h lan
	lan=$(mm_ns lan)
	ip netns add "$lan" || return 1
	ip -n "$lan" link add br0 type bridge || return 1
	ip -n "$lan" link set br0 up || return 1
	for h in gl $MM_HOSTS; do
		ip netns add "$(mm_ns "$h")" && mm_link "$h" "$(mm_ns "$h")" || return 1
	done
}

# mm_net_down - delete the links and the namespaces, by name; quiet, safe
# to call twice
mm_net_down() {
	local h lan
	lan=$(mm_ns lan)
	for h in gl sd $MM_HOSTS; do
		ip -n "$lan" link del "p-$h" 2>/dev/null
	done
	ip -n "$lan" link del br0 2>/dev/null
	for h in lan gl $MM_HOSTS; do
		ip netns del "$(mm_ns "$h")" 2>/dev/null
	done
	return 0
}

# mm_save HOST / mm_use HOST - keep and bring back the tests/postfix.sh
# variables of HOST's instance (pf_* work on the current one)
mm_save() {
	MM_STATE[$1]=$(declare -p PF_DIR PF_NS PF_IN PF_SMTP_PORT PF_SINK_PORT PF_V6 \
		PF_MASTER PF_SINK PF_PORTS 2>/dev/null)
}
mm_use() {
	eval "${MM_STATE[$1]//declare -/declare -g -}"
}

# mm_pf_up - set up (first time) and start the three MX instances; each
# gets a first-time setup only once, so their logs span both phases
mm_pf_up() {
	local h
	for h in $MM_HOSTS; do
		if [ -z "${MM_STATE[$h]:-}" ]; then
			pf_setup "$h" "${MM_POLICY[$h]}" "$(mm_ns "$h")" || { MM_WHY="$h: no free port"; return 1; }
			PF_MASTER='' PF_SINK=''
		else
			mm_use "$h"
		fi
		if ! pf_start; then MM_WHY="$h: $PF_WHY"; mm_save "$h"; return 1; fi
		mm_save "$h"
	done
}

# mm_pf_down - stop the three instances and wait until their processes
# are gone (pf_stop); what is left after that is killed by PID
mm_pf_down() {
	local h left
	for h in $MM_HOSTS; do
		[ -n "${MM_STATE[$h]:-}" ] || continue
		mm_use "$h"
		pf_stop
		left=$(pf_processes)
		# shellcheck disable=SC2086 # one PID a word
		[ -z "$left" ] || kill -KILL $left 2>/dev/null
		mm_save "$h"
	done
	return 0
}

# mm_lan_conf - the shipped drop-in with the test's addresses in place of
# its examples: every non-empty ListenStream= and IPAddressAllow= line
mm_lan_conf() {
	sed -e "s|^ListenStream=\[.*|ListenStream=[$MM_GL6]:10023|" \
		-e "s|^ListenStream=[0-9].*|ListenStream=$MM_GL:10023|" \
		-e "s|^IPAddressAllow=[0-9a-f]*:.*|IPAddressAllow=${MM_ADDR6[mx1]} ${MM_ADDR6[mx2]}|" \
		-e "s|^IPAddressAllow=[0-9].*|IPAddressAllow=${MM_ADDR[mx1]} ${MM_ADDR[mx2]}|" \
		"$MM_SRC/greylistd-lan.conf"
}

# mm_sd_units - for sd_boot: greylistd's units as shipped, the drop-in,
# and a drop-in for the test's --delay; glnofree, the same socket without
# FreeBind= on port 10024; the MX hosts in the whitelist
mm_sd_units() {
	local u=$D/upper/gltest/units
	cp "$SD_SOCKET" "$SD_SERVICE" "$u/"
	mkdir -p "$u/greylistd.socket.d" "$u/greylistd@.service.d"
	mm_lan_conf > "$u/greylistd.socket.d/greylistd-lan.conf"
	printf '[Service]\nExecStart=\nExecStart=/usr/sbin/greylistd --delay=%ss\n' "$MM_DELAY" \
		> "$u/greylistd@.service.d/delay.conf"
	sed "s|^ListenStream=.*|ListenStream=$MM_GL:10024|" "$SD_SOCKET" > "$u/glnofree.socket"
	cp "$SD_SERVICE" "$u/glnofree@.service"
	# shellcheck disable=SC2034 # tests/systemd.sh's
	SD_WANTS=greylistd.socket
	printf 'client %s\n' "${MM_ADDR[mx1]}" "${MM_ADDR[mx2]}" > "$D/upper/etc/greylistd/whitelist"
}

# mm_rtt NETNS same|fresh ADDR N - tests/rtt.pl in NETNS: N round trips
# of $D/req.known to ADDR:10023, one a line (microseconds, or "bad")
mm_rtt() {
	ip netns exec "$1" perl "$MM_SRC/tests/rtt.pl" "$2" "$3" "$4" "$D/req.known"
}

# mm_median FILE - the median of the numbers in FILE (the bad lines aside)
mm_median() {
	grep -v bad "$1" | sort -n | awk '{ a[NR] = $1 } END { print (NR ? a[int((NR + 1) / 2)] : "none") }'
}

# mm_cannot_run - print why this machine cannot run the namespaces and
# the MX hosts and succeed, or fail when it can
mm_cannot_run() {
	local c
	pf_cannot_run && return 0
	for c in ip systemd-socket-activate nsenter timeout socat; do
		command -v $c >/dev/null || { echo "$c not found (Debian packages iproute2, systemd, util-linux, coreutils, socat)"; return 0; }
	done
	return 1
}

# mm_verify - systemd-analyze verify reads the shipped drop-in with the
# units, and finds nothing to warn about; the settings that matter
mm_verify() {
	local out rc u f=$MM_SRC/greylistd-lan.conf

	if ! command -v systemd-analyze >/dev/null; then
		skip "drop-in: systemd-analyze verify" "systemd-analyze missing (Debian package systemd)"
		return
	fi
	newdir multimx-verify
	u=$D/units
	mkdir -p "$u/greylistd.socket.d"
	cp "$SD_SOCKET" "$u/"
	sed "s|^ExecStart=$SD_EXEC\\b|ExecStart=$GREYLISTD|" "$SD_SERVICE" > "$u/greylistd@.service"
	cp "$f" "$u/greylistd.socket.d/"
	# By name, so that systemd finds the drop-in; in $u, because verify
	# takes a name that is a file in the working directory for that file.
	# Only the test's units and the system's own targets: a drop-in on
	# this machine in /etc/systemd/system must not count.
	out=$(cd "$u" && SYSTEMD_UNIT_PATH=$u:/lib/systemd/system systemd-analyze verify \
		--man=no greylistd.socket greylistd@.service 2>&1); rc=$?
	expect "drop-in: systemd-analyze verify greylistd.socket with greylistd-lan.conf: exit 0" 0 "$rc"
	expect "drop-in: systemd-analyze verify: no warnings" "" "$out"
	# The check has teeth: verify does read the drop-in (a bad key in it
	# is reported with its path).
	printf 'NoSuchSetting=1\n' >> "$u/greylistd.socket.d/greylistd-lan.conf"
	out=$(cd "$u" && SYSTEMD_UNIT_PATH=$u:/lib/systemd/system systemd-analyze verify \
		--man=no greylistd.socket greylistd@.service 2>&1)
	case $out in
	*greylistd-lan.conf*NoSuchSetting*) pass "drop-in: verify reads it (a bad key in it is reported)" ;;
	*) fail "drop-in: verify reads it (a bad key in it is reported)" "[$out]" ;;
	esac

	expect "drop-in: the first ListenStream= is empty (clears the loopback one)" "" \
		"$(sd_all "$f" Socket ListenStream | head -n 1)"
	expect "drop-in: the first IPAddressAllow= is empty (clears localhost)" "" \
		"$(sd_all "$f" Socket IPAddressAllow | head -n 1)"
	expect "drop-in: IPAddressDeny=any" any "$(sd_get "$f" Socket IPAddressDeny)"
	expect "drop-in: FreeBind=yes (the address may come up after the socket)" yes \
		"$(sd_get "$f" Socket FreeBind)"
	expect_grep "drop-in: says the connection is plaintext and unauthenticated" \
		'PLAINTEXT AND UNAUTHENTICATED' "$f"
}

# mm_wait_grep REGEX FILE [TENTHS] - until FILE has a line matching REGEX
# (5 s)
mm_wait_grep() {
	local i=0
	while ! grep -qE -- "$1" "$2" 2>/dev/null && [ $i -lt "${3:-50}" ]; do
		sleep 0.1; i=$((i + 1))
	done
	grep -qE -- "$1" "$2" 2>/dev/null
}

# mm_ssa_start - phase 1's greylist host: greylistd under
# systemd-socket-activate in the gl namespace, on both LAN addresses; sets
# MM_SSA (its PID) and MM_GLD (database, log, whitelist)
mm_ssa_start() {
	MM_GLD=$WORK/multimx-gl
	rm -rf "$MM_GLD"; mkdir -p "$MM_GLD"
	echo '# no entries' > "$MM_GLD/whitelist"
	ip netns exec "$(mm_ns gl)" systemd-socket-activate --accept --inetd \
		-l "$MM_GL:10023" -l "[$MM_GL6]:10023" \
		"$GREYLISTD" --db="$MM_GLD/db" --log-file="$MM_GLD/log" \
		--whitelist="$MM_GLD/whitelist" --delay=${MM_DELAY}s \
		2> "$MM_GLD/ssa.err" &
	MM_SSA=$!
	mm_wait_grep "Listening on \\[$MM_GL6\\]:10023" "$MM_GLD/ssa.err" ||
		{ MM_WHY="systemd-socket-activate: $(head -c 300 "$MM_GLD/ssa.err")"; return 1; }
}

# mm_ssa_children - the greylistd processes systemd-socket-activate spawned
# (it names each PID), those still running
mm_ssa_children() {
	local p
	for p in $(sed -n 's/^Spawned .* as PID \([0-9]*\)\.$/\1/p' "$MM_GLD/ssa.err" 2>/dev/null); do
		[ -e "/proc/$p" ] && echo "$p"
	done
}

# mm_ssa_stop - stop systemd-socket-activate and the greylistd processes
# it started (by SIGTERM, which greylistd obeys once no file is open), and
# wait (3 s at most) until they are gone
mm_ssa_stop() {
	local left
	[ -n "${MM_SSA:-}" ] || return 0
	stop "$MM_SSA"
	MM_SSA=
	left=$(mm_ssa_children)
	# shellcheck disable=SC2086 # one PID a word
	[ -z "$left" ] || kill $left 2>/dev/null
	for _ in $(seq 30); do
		[ -z "$(mm_ssa_children)" ] && return 0
		sleep 0.1
	done
	return 0
}

# mm_ssa_peer PID - the MX address whose connection greylistd PID served
# (systemd-socket-activate logs "Connection from" before each "Spawned")
mm_ssa_peer() {
	awk -v pid="$1" '
		/^Connection from / { peer = $3 }
		/^Spawned / && $NF == pid "." { print peer; exit }' "$MM_GLD/ssa.err"
}

# mm_pid_of REGEX - the PID of the greylistd that logged the first line
# matching REGEX in phase 1's log
mm_pid_of() {
	grep -E -- "$1" "$MM_GLD/log" 2>/dev/null | head -n 1 | sed -n 's/.* greylistd\[\([0-9]*\)\]: .*/\1/p'
}

# mm_xgreylist FILE - N of "X-Greylist: delayed N seconds by greylistd-"
mm_xgreylist() {
	sed -n 's/^X-Greylist: delayed \([0-9]*\) seconds by greylistd-.*/\1/p' "$1" | head -n 1
}

# mm_two_mx PHASE CLIENT - the first try of a triplet at MX1 and its
# retries at MX2: an early one, and one after the delay, which passes with
# an X-Greylist header counted from MX1's try. The sender is PF_FROM.
mm_two_mx() {
	local ph=$1 client=$2 rcpt=$PF_RCPT t1 t2 t3 t4 f n lo hi
	t1=$(date +%s)
	mm_use mx1
	pf_smtp "$ph-first" "$client" "$rcpt" --quit-after RCPT
	t2=$(date +%s)
	expect "$ph: a first try at MX1 gets 450" \
		"450 4.7.1 <$rcpt>: Recipient address rejected: Greylisted, please try again in $MM_DELAY seconds" \
		"$PF_REPLY"
	mm_use mx2
	pf_rcpt "$ph: an early retry at MX2 gets 450 with the time left" "$ph-early" "$client" "$rcpt" \
		"450 4.7.1 <$rcpt>: Recipient address rejected: Greylisted, please try again in [1-$MM_DELAY] seconds"

	while [ "$(date +%s)" -le $((t2 + MM_DELAY)) ]; do sleep 0.2; done
	t3=$(date +%s)
	pf_smtp "$ph-retry" "$client" "$rcpt"
	t4=$(date +%s)
	expect "$ph: the retry at MX2 after the delay gets 250" "250 2.1.5 Ok" "$PF_REPLY"
	f=$(pf_dump "$ph-retry")
	if [ -z "$f" ]; then
		fail "$ph: MX2 delivers the message to its smtp-sink" \
			"no dump in $PF_DIR/sink; $(grep -h 'status=' "$PF_DIR"/maillog | tail -n 2)"
		return
	fi
	n=$(mm_xgreylist "$f")
	# greylistd saw the first try within [t1, t2] and the retry within
	# [t3, t4]; a second more each way, as its time(2) is the coarse
	# clock, which may lag date's by a tick across a second's turn.
	lo=$((t3 - t2 - 1)) hi=$((t4 - t1 + 1))
	if [ -n "$n" ] && [ "$n" -ge "$lo" ] && [ "$n" -le "$hi" ]; then
		pass "$ph: MX2's message has X-Greylist: delayed $n seconds, counted from MX1's try ($lo..$hi s)"
	else
		fail "$ph: MX2's message has X-Greylist counted from MX1's try ($lo..$hi s)" \
			"[$(grep -m 1 '^X-Greylist:' "$f")]"
	fi
	MM_HDR_DELAY=${n:-none}
}

# mm_phase_ssa - phase 1: greylistd under systemd-socket-activate on the
# LAN addresses, shared by MX1 and MX2; MX3 is served too (nothing keeps it
# out here); the cost of a request over the LAN against loopback. Fails
# when the greylist host or the MX hosts did not start.
mm_phase_ssa() {
	local who pid
	if ! mm_ssa_start; then fail "ssa: greylistd listens on $MM_GL:10023 and [$MM_GL6]:10023" "$MM_WHY"; return 1; fi
	pass "ssa: greylistd under systemd-socket-activate listens on $MM_GL:10023 and [$MM_GL6]:10023"
	if ! mm_pf_up; then fail "ssa: three MX hosts run" "$MM_WHY"; return 1; fi
	pass "ssa: a Postfix runs in each MX namespace (MX1 asks $MM_GL, MX2 [$MM_GL6], MX3 $MM_GL)"

	PF_FROM=alice@sender.test
	mm_two_mx ssa 198.51.100.10
	who="client_address=198\\.51\\.100\\.10, sender=alice@sender\\.test, recipient=$PF_RCPT"
	expect "ssa: one record for both MX hosts (one reason=new)" 1 \
		"$(grep -cE "reason=new, .*$who\$" "$MM_GLD/log")"
	pid=$(mm_pid_of "reason=new, .*$who\$")
	expect "ssa: the first sight came over MX1's connection" "${MM_ADDR[mx1]}" \
		"$(mm_ssa_peer "${pid:-none}" | sed 's/:[0-9]*$//')"
	pid=$(mm_pid_of "reason=early-retry .*$who\$")
	expect "ssa: the early retry came over MX2's, by IPv6" "[${MM_ADDR6[mx2]}]" \
		"$(mm_ssa_peer "${pid:-none}" | sed 's/:[0-9]*$//')"
	pid=$(mm_pid_of "action=pass, reason=triplet found, delay=[0-9]+, .*$who\$")
	expect "ssa: and the pass too" "[${MM_ADDR6[mx2]}]" \
		"$(mm_ssa_peer "${pid:-none}" | sed 's/:[0-9]*$//')"
	expect "ssa: the pass's logged delay is the header's" "$MM_HDR_DELAY" \
		"$(sed -n "s/.*action=pass, reason=triplet found, delay=\([0-9]*\), .*$who\$/\1/p" "$MM_GLD/log" | head -n 1)"

	# Without an allow list any host that reaches the port is served.
	PF_FROM=dave@sender.test
	mm_use mx3
	pf_rcpt "ssa: MX3 reaches this greylistd too (no allow list): 450" ssa-mx3 198.51.100.30 "$PF_RCPT" \
		"450 4.7.1 <$PF_RCPT>: *Greylisted*"

	# The cost of one request: the same known triplet (a reader) from MX1
	# over the LAN, from MX2 over the LAN by IPv6, and from the greylist
	# host itself over loopback (to its own LAN address); 5 rounds of 200
	# each, taking turns, so that a busy moment of the machine falls on all
	# of them. Then fresh connections (a greylistd started for each).
	D=$MM_GLD
	req client_address=198.51.100.10 sender=alice@sender.test recipient="$PF_RCPT" > "$D/req.known"
	: > "$D/rtt.lan"; : > "$D/rtt.lan6"; : > "$D/rtt.lo"; : > "$D/fresh.lan"; : > "$D/fresh.lo"
	for _ in 1 2 3 4 5; do
		mm_rtt "$(mm_ns mx1)" same "$MM_GL" 200 >> "$D/rtt.lan"
		mm_rtt "$(mm_ns mx2)" same "$MM_GL6" 200 >> "$D/rtt.lan6"
		mm_rtt "$(mm_ns gl)" same "$MM_GL" 200 >> "$D/rtt.lo"
		mm_rtt "$(mm_ns mx1)" fresh "$MM_GL" 10 >> "$D/fresh.lan"
		mm_rtt "$(mm_ns gl)" fresh "$MM_GL" 10 >> "$D/fresh.lo"
	done
	expect "ssa: 3 x 1000 requests on one connection answered DUNNO (median round trip: LAN $(mm_median "$D/rtt.lan") us, LAN IPv6 $(mm_median "$D/rtt.lan6") us, loopback $(mm_median "$D/rtt.lo") us)" \
		"3000 0" "$(cat "$D"/rtt.* | grep -c .) $(cat "$D"/rtt.* | grep -c bad)"
	expect "ssa: 2 x 50 fresh connections answered (median connect to answer: LAN $(mm_median "$D/fresh.lan") us, loopback $(mm_median "$D/fresh.lo") us)" \
		"100 0" "$(cat "$D"/fresh.* | grep -c .) $(cat "$D"/fresh.* | grep -c bad)"
	expect "ssa: greylistd logged no warning or error" "" \
		"$(grep -E 'greylistd\[[0-9]+\]: (warning|error):' "$MM_GLD/log" | head -n 3)"
}

# mm_refused - with phase 1's greylistd gone (its host up, nothing on the
# port), MX1 fails open at once: Postfix's two tries are refused, a second
# apart, and default_action=DUNNO lets the mail through
mm_refused() {
	local t0 dt f
	PF_FROM=gina@sender.test
	mm_use mx1
	t0=${EPOCHREALTIME/./}
	pf_smtp ssa-down 198.51.100.40 "$PF_RCPT"
	dt=$(( (${EPOCHREALTIME/./} - t0) / 1000 ))
	expect "down: with no greylistd on the port MX1's mail passes (default_action=DUNNO), after $dt ms" \
		"250 2.1.5 Ok" "$PF_REPLY"
	f=$(pf_dump ssa-down)
	if [ -n "$f" ]; then
		expect "down: MX1 delivers it, without X-Greylist" 0 "$(grep -c '^X-Greylist:' "$f")"
	else
		fail "down: MX1 delivers it" "no dump in $PF_DIR/sink"
	fi
	expect_grep "down: MX1's Postfix was refused" \
		"warning: connect to $MM_GL:10023: Connection refused" "$PF_DIR/maillog"
}

# mm_journal FILTER... - journal entries of the booted systemd, in export
# format, once journald has written what it was sent
mm_journal() {
	sd_in journalctl --sync 2>/dev/null
	sd_in journalctl --no-pager -o export "$@" 2>/dev/null
}

# mm_unit_of REGEX - the _SYSTEMD_UNIT of the first journal entry whose
# MESSAGE matches REGEX
mm_unit_of() {
	mm_journal SYSLOG_IDENTIFIER=greylistd | awk -v re="$1" '
		/^_SYSTEMD_UNIT=/ { unit = substr($0, 15) }
		/^MESSAGE=/ { msg = substr($0, 9) }
		/^$/ { if (msg ~ re) { print unit; exit } unit = msg = "" }'
}

# mm_probe NETNS ADDR - how a bare connection from NETNS to ADDR:10023
# ends within 3 s: "answered" (a DUNNO), "timeout" (packets dropped) or
# "refused"/"error"
mm_probe() {
	local out rc
	out=$(ip netns exec "$1" timeout 3 bash -c '
		exec 5<>"/dev/tcp/$1/10023" || exit 7
		cat "$2" >&5; IFS= read -r -t 2 line <&5; echo "$line"' _ "$2" "$D/req.data" 2>&1); rc=$?
	case $rc:$out in
	0:action=DUNNO) echo answered ;;
	124:*) echo timeout ;;
	*refused*) echo refused ;;
	*) echo "error ($rc: $out)" ;;
	esac
}

# mm_phase_sd - phase 2: the greylist host is a real systemd with the
# shipped socket, service and drop-in; MX1 and MX2 share it, MX3 is kept
# out by IPAddressAllow= and fails open
mm_phase_sd() {
	local acc t0 dt f unit why h

	if [ "${GREYLISTD_LIVE:-1}" = 0 ]; then
		skip "sd: the shipped drop-in under a real systemd" \
			"left out with GREYLISTD_LIVE=0 (it boots systemd as PID 1 in private namespaces and adds a cgroup below the test's own)"
		return
	fi
	if why=$(sd_cannot_boot); then skip "sd: the shipped drop-in under a real systemd" "$why"; return; fi
	# The greylist host changes: its address moves to systemd's namespace.
	ip -n "$(mm_ns lan)" link del p-gl
	if ! sd_boot multimx-sd mm_sd_units; then
		case $SD_WHY in
		"cannot create a cgroup"*) skip "sd: the shipped drop-in under a real systemd" "$SD_WHY"; return ;;
		esac
		fail "sd: systemd boots in the namespaces" "$SD_WHY"; return
	fi
	pass "sd: systemd $(sd_in systemctl --version | awk 'NR == 1 { print $2 }') runs as PID 1, before the greylist host's address exists"
	req protocol_state=DATA > "$D/req.data"

	# FreeBind=yes: the socket came up without its addresses; without it
	# the bind fails.
	expect "sd: greylistd.socket with the drop-in is active before its address exists (FreeBind=yes)" \
		active "$(sd_in systemctl is-active greylistd.socket)"
	sd_in systemctl start glnofree.socket >/dev/null 2>&1
	expect "sd: the same socket without FreeBind= fails" failed "$(sd_in systemctl is-active glnofree.socket)"
	sd_in journalctl --sync 2>/dev/null
	sd_in journalctl --no-pager -o cat > "$D/journal.boot"
	expect_grep "sd: its bind found no such address" \
		'glnofree\.socket: Failed to create listening socket .*Cannot assign requested address' \
		"$D/journal.boot"
	if ! mm_link sd "$SD_PID"; then fail "sd: a veth into systemd's network namespace" "ip link failed"; return; fi
	# The address now has another MAC: the MX hosts would send to the old
	# one until their neighbour entries go stale (5 s and more).
	for h in $MM_HOSTS; do ip -n "$(mm_ns "$h")" neigh flush all; done
	pass "sd: a veth into systemd's network namespace, with $MM_GL and $MM_GL6"

	expect "sd: it listens on the LAN addresses only (the empty ListenStream= drops loopback)" \
		"Listen=$MM_GL:10023 (Stream)|Listen=[$MM_GL6]:10023 (Stream)" \
		"$(sd_in systemctl show greylistd.socket -p Listen | sort | paste -sd '|')"
	expect "sd: IPAddressAllow= is MX1's and MX2's addresses, nothing else" \
		"${MM_ADDR[mx1]}/32 ${MM_ADDR[mx2]}/32 ${MM_ADDR6[mx1]}/128 ${MM_ADDR6[mx2]}/128" \
		"$(sd_in systemctl show greylistd.socket -p IPAddressAllow --value | tr ' ' '\n' | sort | paste -sd ' ')"
	expect "sd: IPAddressDeny= is everything" "0.0.0.0/0 ::/0" \
		"$(sd_in systemctl show greylistd.socket -p IPAddressDeny --value | tr ' ' '\n' | sort | paste -sd ' ')"
	expect "sd: no BPF or firewall warning in systemd's journal" "" \
		"$(grep -iE 'bpf|firewall' "$D/journal.boot" | head -n 3)"

	# Bare connections first: the allowed hosts over IPv4 and IPv6, then
	# the one outside the list.
	expect "sd: MX1 connects over IPv4 and is answered" answered "$(mm_probe "$(mm_ns mx1)" "$MM_GL")"
	expect "sd: MX2 connects over IPv6 and is answered" answered "$(mm_probe "$(mm_ns mx2)" "$MM_GL6")"
	expect "sd: MX3's connection over IPv4 is dropped (no answer, not even a reset)" timeout \
		"$(mm_probe "$(mm_ns mx3)" "$MM_GL")"
	expect "sd: and over IPv6" timeout "$(mm_probe "$(mm_ns mx3)" "$MM_GL6")"

	if ! mm_pf_up; then fail "sd: the MX hosts run again" "$MM_WHY"; return; fi
	PF_FROM=carol@sender.test
	mm_two_mx sd 198.51.100.20
	unit=$(mm_unit_of 'reason=new, .*client_address=198\.51\.100\.20, sender=carol@')
	case $unit in
	greylistd@*-"$MM_GL:10023-${MM_ADDR[mx1]}":*.service) pass "sd: the first sight was MX1's connection ($unit)" ;;
	*) fail "sd: the first sight was MX1's connection" "unit [$unit]" ;;
	esac
	unit=$(mm_unit_of 'reason=triplet found, delay=[0-9]+, .*client_address=198\.51\.100\.20, sender=carol@')
	case $unit in
	greylistd@*-"$MM_GL6:10023-${MM_ADDR6[mx2]}":*.service) pass "sd: the pass was MX2's, by IPv6 ($unit)" ;;
	*) fail "sd: the pass was MX2's, by IPv6" "unit [$unit]" ;;
	esac

	# The MX hosts whitelist each other: mail one forwards to the other.
	PF_FROM=frank@sender.test
	mm_use mx1
	pf_rcpt "sd: mail from MX2's address at MX1 passes at once" sd-from-mx2 "${MM_ADDR[mx2]}" \
		"$PF_RCPT" "250 2.1.5 Ok"
	mm_use mx2
	pf_rcpt "sd: mail from MX1's address at MX2 passes at once" sd-from-mx1 "${MM_ADDR[mx1]}" \
		"$PF_RCPT" "250 2.1.5 Ok"
	expect "sd: both as reason=client whitelist" 2 \
		"$(mm_journal SYSLOG_IDENTIFIER=greylistd | grep -cE '^MESSAGE=action=pass, reason=client whitelist, .*client_address=10\.23\.0\.1[12], sender=frank@')"

	# MX3, outside the list, fails open: its policy connection times out
	# (twice, timeout=3s), Postfix applies default_action=DUNNO.
	PF_FROM=erin@sender.test
	mm_use mx3
	t0=${EPOCHREALTIME/./}
	pf_smtp sd-mx3 198.51.100.30 "$PF_RCPT"
	dt=$(( (${EPOCHREALTIME/./} - t0) / 1000 ))
	expect "sd: MX3's mail passes all the same (default_action=DUNNO), after ${dt} ms" "250 2.1.5 Ok" "$PF_REPLY"
	f=$(pf_dump sd-mx3)
	if [ -n "$f" ]; then
		expect "sd: MX3 delivers it, without X-Greylist" 0 "$(grep -c '^X-Greylist:' "$f")"
	else
		fail "sd: MX3 delivers it" "no dump in $PF_DIR/sink"
	fi
	expect_grep "sd: MX3's Postfix could not connect (timed out)" \
		"warning: connect to $MM_GL:10023: Connection timed out" "$PF_DIR/maillog"
	acc=$(sd_in systemctl show greylistd.socket -p NAccepted --value)
	mm_journal | sed -n 's/^UNIT=\(greylistd@.*\.service\)$/\1/p' | sort -u > "$D/instances"
	expect "sd: systemd started one instance per connection it accepted ($acc)" \
		"$acc" "$(grep -c . "$D/instances")"
	expect "sd: every one from MX1 or MX2" "" \
		"$(grep -vE -- "-(${MM_ADDR[mx1]}|${MM_ADDR[mx2]}|${MM_ADDR6[mx1]}|${MM_ADDR6[mx2]}):[0-9]+\.service\$" "$D/instances")"
	expect "sd: greylistd never saw MX3's triplet" 0 \
		"$(mm_journal SYSLOG_IDENTIFIER=greylistd | grep -c '^MESSAGE=.*sender=erin@')"
}

# mm_cleanup - stop everything the group started and delete its links and
# namespaces: the MX hosts first (their smtpd processes hold greylistd's
# connections), then the greylist hosts. Quiet, safe to call twice; the
# EXIT trap calls it too.
mm_cleanup() {
	mm_pf_down
	mm_ssa_stop
	sd_halt
	mm_net_down
}

# mm_left - what the group left behind: namespaces, processes, the cgroup
mm_left() {
	local h p
	ip netns list 2>/dev/null | grep -o "^$MM_TAG-[a-z0-9]*" | sed 's/^/netns /'
	for h in $MM_HOSTS; do
		[ -n "${MM_STATE[$h]:-}" ] || continue
		mm_use "$h"
		for p in $(pf_processes); do echo "process $p"; done
	done
	for p in $(mm_ssa_children); do echo "process $p"; done
	[ -z "${SD_CG:-}" ] || [ ! -e "$SD_CG" ] || echo "cgroup $SD_CG"
}

t_multimx() {
	local why old_trap=() left

	mm_verify
	if why=$(mm_cannot_run); then skip "multimx: MX hosts in network namespaces" "$why"; return; fi
	# shellcheck disable=SC2034 # SD_UPID: tests/systemd.sh's
	MM_STATE=() MM_SSA='' MM_GLD=$WORK/multimx-gl SD_PID='' SD_UPID='' SD_CG=''
	PF_RCPT=bob@dest.test

	# However test.sh ends from here on, clean up first, then do what
	# test.sh's own EXIT trap does (remove $WORK).
	eval "old_trap=($(trap -p EXIT))"
	# shellcheck disable=SC2064 # the old command is wanted as it is now
	trap "mm_cleanup; ${old_trap[2]:-}" EXIT

	if ! mm_net_up; then
		fail "multimx: namespaces $MM_TAG-*, a bridge and veth links" "ip failed"
	else
		pass "multimx: namespaces $MM_TAG-{lan,gl,mx1,mx2,mx3}, a bridge, a veth per host"
		mm_phase_ssa && { mm_ssa_stop; mm_refused; }
		mm_ssa_stop
		mm_pf_down
		mm_phase_sd
	fi
	mm_cleanup

	left=$(mm_left)
	expect "multimx: no namespace, process or cgroup left behind" "" "$(echo "$left" | tr '\n' ' ' | sed 's/ $//')"
	# shellcheck disable=SC2034 # tests/postfix.sh's, set back for the groups after this one
	PF_FROM=alice@sender.test

	if [ ${#old_trap[@]} -ge 3 ]; then trap -- "${old_trap[2]}" EXIT; else trap - EXIT; fi
}
