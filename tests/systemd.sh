# shellcheck shell=bash
# tests/systemd.sh - the systemd units greylistd.socket and
# greylistd@.service, the milter's greylistd-milter.socket and
# greylistd-milter@.service, and greylistd-protocol.socket and
# greylistd-protocol@.service (Exim, Debian greylistd's protocol). test.sh
# sources this file and calls t_systemd; it uses
# the helpers of tests/lib.sh and the environment GREYLISTD (the built
# binary) and WORK (a temp dir).
#
# Checked for real, without systemd as PID 1:
#   - systemd-analyze verify and security --offline on copies of the units
#     whose ExecStart names the built binary (verify fails on a missing one);
#   - the settings that keep the socket working under load;
#   - every system call greylistd makes (seen with strace) is allowed by the
#     unit's SystemCallFilter (a refused call would fail with EPERM);
#   - the journal path: a private systemd-journald, started by hand in its
#     own mount, network and PID namespaces, receives greylistd's lines, with
#     their GREYLISTD_* fields, from a connection made over loopback TCP as
#     the socket unit would make it.
# As root (GREYLISTD_LIVE=0 leaves it out): the units themselves, under a
# real systemd booted as PID 1 of private namespaces (see sd_live).
# Nothing outside $WORK and the namespaces is touched (sd_live adds and
# removes one cgroup); everything started is stopped by PID, and a
# namespace's PID 1 takes down anything left when it exits.

SD_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SD_SOCKET=$SD_SRC/greylistd.socket
SD_SERVICE=$SD_SRC/greylistd@.service
SD_MSOCKET=$SD_SRC/greylistd-milter.socket
SD_MSERVICE=$SD_SRC/greylistd-milter@.service
SD_GP_SOCKET=$SD_SRC/greylistd-protocol.socket
SD_GP_SERVICE=$SD_SRC/greylistd-protocol@.service
SD_EXEC=/usr/sbin/greylistd		# ExecStart in the source; make install rewrites it

# sd_get FILE SECTION KEY - the value systemd uses for KEY in [SECTION]
# (the last assignment); fails when it is not set
sd_get() {
	awk -v sec="[$2]" -v key="$3" '
		/^[ \t]*([#;]|$)/ { next }
		/^[ \t]*\[/ { ins = ($1 == sec); next }
		ins && index($0, "=") {
			k = substr($0, 1, index($0, "=") - 1); gsub(/[ \t]/, "", k)
			if (k != key) next
			v = substr($0, index($0, "=") + 1); sub(/^[ \t]+/, "", v)
			sub(/[ \t]+$/, "", v); val = v; found = 1
		}
		END { if (found) print val; else exit 1 }' "$1"
}

# sd_all FILE SECTION KEY - every assignment of KEY, in order, one a line
sd_all() {
	awk -v sec="[$2]" -v key="$3" '
		/^[ \t]*([#;]|$)/ { next }
		/^[ \t]*\[/ { ins = ($1 == sec); next }
		ins && index($0, "=") {
			k = substr($0, 1, index($0, "=") - 1); gsub(/[ \t]/, "", k)
			if (k != key) next
			v = substr($0, index($0, "=") + 1); sub(/^[ \t]+/, "", v)
			print v
		}' "$1"
}

# sd_copies - copies of the six units in $D, ExecStart pointing at
# $GREYLISTD
sd_copies() {
	cp "$SD_SOCKET" "$D/greylistd.socket"
	cp "$SD_MSOCKET" "$D/greylistd-milter.socket"
	sed "s|^ExecStart=$SD_EXEC\\b|ExecStart=$GREYLISTD|" "$SD_SERVICE" \
		> "$D/greylistd@.service"
	sed "s|^ExecStart=$SD_EXEC\\b|ExecStart=$GREYLISTD|" "$SD_MSERVICE" \
		> "$D/greylistd-milter@.service"
	cp "$SD_GP_SOCKET" "$D/greylistd-protocol.socket"
	sed "s|^ExecStart=$SD_EXEC\\b|ExecStart=$GREYLISTD|" "$SD_GP_SERVICE" \
		> "$D/greylistd-protocol@.service"
}

sd_verify() {
	local out rc man=--man=no manpage

	newdir systemd-verify
	sd_copies
	expect "service: ExecStart is $SD_EXEC (the path make install rewrites)" \
		"$SD_EXEC" "$(sd_get "$SD_SERVICE" Service ExecStart | cut -d' ' -f1)"
	expect "copy to verify: ExecStart is the built binary" \
		"$GREYLISTD" "$(sd_get "$D/greylistd@.service" Service ExecStart | cut -d' ' -f1)"

	# Documentation=man:greylistd(8): verify runs man(1) on it. Check it
	# against the page in the tree when there is one.
	for manpage in "$SD_SRC/greylistd.8" "$SD_SRC/man/greylistd.8" "$SD_SRC/doc/greylistd.8"; do
		[ -f "$manpage" ] || continue
		mkdir -p "$D/man/man8" && cp "$manpage" "$D/man/man8/greylistd.8"
		man=--man=yes
		break
	done
	[ $man = --man=no ] && skip "systemd: Documentation=man:greylistd(8) resolves" \
		"no greylistd.8 in the tree; verify runs with --man=no"

	out=$(cd "$D" && MANPATH=$D/man systemd-analyze verify $man \
		./greylistd.socket ./greylistd@.service 2>&1); rc=$?
	expect "systemd-analyze verify greylistd.socket greylistd@.service: exit 0" 0 "$rc"
	expect "systemd-analyze verify: no warnings" "" "$out"
	out=$(cd "$D" && MANPATH=$D/man systemd-analyze verify $man \
		./greylistd-milter.socket ./greylistd-milter@.service 2>&1); rc=$?
	expect "systemd-analyze verify greylistd-milter.socket greylistd-milter@.service: exit 0, no warnings" \
		"0 " "$rc $out"
	out=$(cd "$D" && MANPATH=$D/man systemd-analyze verify $man \
		./greylistd-protocol.socket ./greylistd-protocol@.service 2>&1); rc=$?
	expect "systemd-analyze verify greylistd-protocol.socket greylistd-protocol@.service: exit 0" 0 "$rc"
	expect "systemd-analyze verify greylistd-protocol.*: no warnings" "" "$out"

	# The check has teeth: the same units with a missing binary fail.
	sed -i "s|^ExecStart=$GREYLISTD\\b|ExecStart=$D/no-such-binary|" "$D/greylistd@.service"
	(cd "$D" && systemd-analyze verify --man=no ./greylistd.socket ./greylistd@.service) \
		>/dev/null 2>&1; rc=$?
	check "systemd-analyze verify fails on a missing ExecStart binary" test "$rc" -ne 0
}

sd_security() {
	local out rc score unit

	newdir systemd-security
	sd_copies
	for unit in greylistd@.service greylistd-milter@.service greylistd-protocol@.service; do
		# --threshold counts in tenths in systemd 252: 10 is an exposure of
		# 1.0 ("--threshold=1.0" is refused as unparsable).
		out=$(cd "$D" && systemd-analyze security --offline=yes --threshold=10 \
			"./$unit" 2>&1); rc=$?
		printf '%s\n' "$out" > "$D/security.$unit.txt"
		score=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\) .*/\1/p')
		if [ -z "$score" ]; then
			fail "systemd-analyze security --offline=yes $unit: exposure level" "no score in $D/security.$unit.txt"
		elif [ "$rc" -eq 0 ] && awk -v s="$score" 'BEGIN { exit !(s <= 1.0) }'; then
			pass "systemd-analyze security --offline=yes $unit: exposure $score (threshold 1.0)"
		else
			fail "systemd-analyze security --offline=yes $unit: exposure $score (threshold 1.0)" \
				"exit $rc; settings not met: $(grep '✗' "$D/security.$unit.txt" | awk '{print $2}' | tr '\n' ' ')"
		fi
	done
}

# sd_unit_lines FILE - the settings of a unit, comments and blank lines
# left out, without Description= and ExecStart=
sd_unit_lines() { grep -vE '^[ \t]*([#;]|$)|^(Description|ExecStart)=' "$1"; }

# sd_milter_settings - the milter's units: what greylistd.socket's checks
# ask of a socket, a UNIX socket only root can reach, and a service that
# is greylistd@.service's line for line but for --milter
sd_milter_settings() {
	local s=$SD_MSOCKET v=$SD_MSERVICE max il listen

	expect "milter socket: Accept=yes (one greylistd --milter per connection)" yes "$(sd_get "$s" Socket Accept)"
	max=$(sd_get "$s" Socket MaxConnections)
	check "milter socket: MaxConnections=$max is above the systemd default of 64" test "${max:-0}" -gt 300
	il=$(sd_get "$s" Socket TriggerLimitIntervalSec)
	expect "milter socket: trigger limit off (TriggerLimitIntervalSec=0)" 0 "$il"
	listen=$(sd_get "$s" Socket ListenStream)
	expect "milter socket: ListenStream=/run/greylistd/milter.sock (the path the README's sendmail.mc line names)" \
		/run/greylistd/milter.sock "$listen"
	expect "milter socket: SocketMode=0600, owned by root (Sendmail's sessions connect as root, nobody else can)" \
		"0600 root" "$(sd_get "$s" Socket SocketMode) $(sd_get "$s" Socket SocketUser || echo root)"
	expect "milter service: ExecStart=$SD_EXEC --milter" "$SD_EXEC --milter" "$(sd_get "$v" Service ExecStart)"
	expect "milter service: every other setting is greylistd@.service's (user, state, hardening)" "" \
		"$(diff <(sd_unit_lines "$SD_SERVICE") <(sd_unit_lines "$v") | head -n 6)"
	expect "milter service: Description names the milter" "greylistd greylisting milter (connection %i)" \
		"$(sd_get "$v" Unit Description)"
}

sd_settings() {
	local s=$SD_SOCKET v=$SD_SERVICE max il ib listen

	expect "socket: Accept=yes (one greylistd per connection)" yes "$(sd_get "$s" Socket Accept)"
	max=$(sd_get "$s" Socket MaxConnections)
	check "socket: MaxConnections=$max is above 3 smtpd services x default_process_limit 100" \
		test "${max:-0}" -gt 300
	il=$(sd_get "$s" Socket TriggerLimitIntervalSec)
	ib=$(sd_get "$s" Socket TriggerLimitBurst)
	# systemd counts refused connections too, and fails the socket for good
	# past the limit: only "off" survives a flood.
	if [ "$il" = 0 ] || [ "$ib" = 0 ]; then
		pass "socket: trigger limit off (TriggerLimitIntervalSec=${il:-unset} TriggerLimitBurst=${ib:-unset})"
	else
		fail "socket: trigger limit off" \
			"TriggerLimitIntervalSec=${il:-unset (2s)} TriggerLimitBurst=${ib:-unset (200)}: a burst fails the socket unit"
	fi
	listen=$(sd_get "$s" Socket ListenStream)
	case $listen in
	/*) case $listen in
	    /var/spool/postfix/*) pass "socket: $listen is inside Postfix's chroot" ;;
	    *) fail "socket: reachable from Postfix's chroot" "$listen" ;;
	    esac ;;
	*)  case $listen in
	    127.*:*|"[::1]:"*) pass "socket: $listen is loopback TCP" ;;
	    *) fail "socket: loopback TCP" "ListenStream=$listen" ;;
	    esac
	    expect "socket: IPAddressDeny=any" any "$(sd_get "$s" Socket IPAddressDeny)"
	    expect "socket: IPAddressAllow=localhost" localhost "$(sd_get "$s" Socket IPAddressAllow)" ;;
	esac

	expect "service: CollectMode=inactive-or-failed" inactive-or-failed "$(sd_get "$v" Unit CollectMode)"
	expect "service: StandardInput=socket" socket "$(sd_get "$v" Service StandardInput)"
	expect "service: StandardError=journal" journal "$(sd_get "$v" Service StandardError)"
	expect "service: StateDirectory=greylistd" greylistd "$(sd_get "$v" Service StateDirectory)"
	case $("$GREYLISTD" --help 2>&1) in
	*"(/var/lib/greylistd/greylistd.db)"*) pass "service: the StateDirectory holds greylistd's default --db" ;;
	*) fail "service: the StateDirectory holds greylistd's default --db" \
		"greylistd --help does not name /var/lib/greylistd/greylistd.db" ;;
	esac
	case $(sd_get "$v" Service User) in
	""|root|0) fail "service: runs as a user other than root" "User=$(sd_get "$v" Service User)" ;;
	*) pass "service: runs as User=$(sd_get "$v" Service User)" ;;
	esac
	if sd_get "$v" Service SystemCallFilter >/dev/null; then
		expect "service: SystemCallFilter comes with SystemCallArchitectures=native" \
			native "$(sd_get "$v" Service SystemCallArchitectures)"
	fi
	case $(sd_get "$v" Service ExecStart) in
	*--log-file*) fail "service: logs to the journal" "ExecStart has --log-file" ;;
	*) pass "service: ExecStart has no --log-file (greylistd logs to the journal)" ;;
	esac
	sd_gp_settings
}

# sd_settings_of FILE - every setting of a unit but ExecStart= and
# Description=, in order, without comments
sd_settings_of() { grep -vE '^[[:space:]]*(#|$)|^(ExecStart|Description)=' "$1"; }

# sd_gp_settings - greylistd-protocol.socket and greylistd-protocol@.service
sd_gp_settings() {
	local s=$SD_GP_SOCKET v=$SD_GP_SERVICE listen il ib

	expect "protocol socket: Accept=yes (one greylistd per connection)" yes "$(sd_get "$s" Socket Accept)"
	listen=$(sd_get "$s" Socket ListenStream)
	case $listen in
	/run/greylistd/socket|/var/run/greylistd/socket)
		fail "protocol socket: not Debian greylistd's socket path" "ListenStream=$listen" ;;
	/run/*) pass "protocol socket: $listen, beside Debian greylistd's /run/greylistd/socket, never on it" ;;
	*) fail "protocol socket: a UNIX socket under /run" "ListenStream=$listen" ;;
	esac
	expect "protocol socket: 0660, group greylistd (Exim's user joins it)" "0660 greylistd" \
		"$(sd_get "$s" Socket SocketMode) $(sd_get "$s" Socket SocketGroup)"
	check "protocol socket: MaxConnections=$(sd_get "$s" Socket MaxConnections) is above 300 (a connection per RCPT)" \
		test "$(sd_get "$s" Socket MaxConnections || echo 0)" -gt 300
	il=$(sd_get "$s" Socket TriggerLimitIntervalSec)
	ib=$(sd_get "$s" Socket TriggerLimitBurst)
	if [ "$il" = 0 ] || [ "$ib" = 0 ]; then
		pass "protocol socket: trigger limit off (a message to 100 recipients is 200 connections)"
	else
		fail "protocol socket: trigger limit off" "TriggerLimitIntervalSec=${il:-unset} TriggerLimitBurst=${ib:-unset}"
	fi
	expect "protocol service: ExecStart is $SD_EXEC --greylistd-protocol" "$SD_EXEC --greylistd-protocol" \
		"$(sd_get "$v" Service ExecStart)"
	expect "protocol service: every other setting is greylistd@.service's, in its order" "" \
		"$(diff <(sd_settings_of "$SD_SERVICE") <(sd_settings_of "$v"))"
}

# sd_expand NAME... - the system calls a SystemCallFilter= word stands for
sd_expand() {
	local w s
	for w in "$@"; do
		case $w in
		@*) systemd-analyze syscall-filter "$w" 2>/dev/null \
			| awk 'NR > 1 && $1 !~ /^#/ && NF { print $1 }' \
			| while read -r s; do sd_expand "$s"; done ;;
		*) echo "$w" ;;
		esac
	done
}

# sd_syscalls - every system call greylistd made in $WORK/systemd-*/trace.*
# is one the unit's SystemCallFilter lets through
sd_syscalls() {
	local line first='' bad n kind

	if ! command -v strace >/dev/null; then
		skip "systemd: greylistd's system calls pass SystemCallFilter" "strace missing"
		return
	fi
	newdir systemd-syscalls
	# Paths greylistd takes: create the database, read it, pass a triplet,
	# move a damaged file aside, give up on a held lock, time out idle,
	# refuse a bad request, check the configuration, expire and reorganize
	# the file in the child of a serving process (gdbm_reorganize, which
	# is gdbm_recover: the repair path's calls too). The journal path was
	# traced by sd_journal, with a journald listening.
	sd_trace() { strace -f -qq -o "$D/trace.$(date +%s%N)" "$GREYLISTD" "$@" --db="$D/db"; }
	req | sd_trace --log-file="$D/log" --delay=1s >/dev/null
	{ req protocol_state=DATA; req; } | sd_trace --log-file="$D/log" --delay=1s >/dev/null
	sleep 1.1
	{ req; req; } | sd_trace --log-file="$D/log" --delay=1s >/dev/null
	req sender=s@x.org | sd_trace >/dev/null	# syslog
	mt_packets 192.0.2.1 m@x.org r@x.org 'p("E")' | sd_trace --milter --log-file="$D/log" >/dev/null
	head -c 5000 /dev/urandom > "$D/db"
	req | sd_trace --log-file="$D/log" >/dev/null
	(req; sleep 2) | sd_trace --log-file="$D/log" --timeout=1s >/dev/null
	flock -x "$D/db" sleep 2 & n=$!
	sleep 0.2
	req sender=l@x.org | sd_trace --log-file="$D/log" --lock-timeout=1s >/dev/null
	stop $n
	printf 'request=bogus\n\n' | sd_trace --log-file="$D/log" >/dev/null
	# Debian greylistd's protocol (greylistd-protocol@.service)
	printf -- '--grey 198.51.100.0/24 a@x.org b@x.org' | sd_trace --log-file="$D/log" --greylistd-protocol >/dev/null
	printf -- 'stats' | sd_trace --log-file="$D/log" --greylistd-protocol >/dev/null
	printf 'client /[/\n' > "$D/wl"		# maintenance logs the bad line
	req sender=w@x.org | sd_trace --log-file="$D/log" --whitelist="$D/wl" >/dev/null
	rm -f "$D/db"
	awk -v now="$(date +%s)" 'BEGIN {
		for (i = 0; i < 3000; i++)
			printf "T %d %d %d 10.0.%d.0 s%d@x.org r@x.org\n", now - 50 * 86400,
				now - 50 * 86400, now - 50 * 86400, i % 256, i
		printf "M expire %d\n", now - 2 * 86400
	}' | "$GREYLISTCTL" load --db="$D/db" >/dev/null
	(req sender=r@x.org; sleep 1) | sd_trace --log-file="$D/log" >/dev/null
	expect_grep "syscall trace: the reorganizing path was taken (greylistctl maintain, exec'd by the serving process)" 'info: reorganized .*: [0-9]+ records' "$D/log"
	expect_grep "syscall trace: the damaged-file path was taken" 'moved to' "$D/log"
	expect_grep "syscall trace: the lock-timeout path was taken" 'lock not had within 1s' "$D/log"

	cat "$WORK"/systemd-*/trace.* 2>/dev/null \
		| sed -nE 's/^[0-9]+ +([a-z0-9_]+)\(.*/\1/p' | sort -u > "$D/used"
	# systemd.exec(5): the first line decides the kind of list (an allow
	# list starts from @default); each later line adds its calls to it or
	# takes them away, in order. $D/set is the list so far.
	: > "$D/set"
	while read -r line; do
		[ -n "$line" ] || { : > "$D/set"; first=; continue; }
		case $line in
		"~"*) first=${first:-deny}
		      sd_expand ${line#\~} | sort -u > "$D/words" ;;
		*) [ -n "$first" ] || sd_expand @default | sort -u > "$D/set"
		   first=${first:-allow}
		   sd_expand $line | sort -u > "$D/words" ;;
		esac
		kind=allow
		[ "${line#\~}" = "$line" ] || kind=deny
		if [ "$kind" = "$first" ]; then
			sort -u "$D/set" "$D/words" > "$D/set.new"	# the list grows
		else
			comm -23 <(sort -u "$D/set") "$D/words" > "$D/set.new"	# it shrinks
		fi
		mv "$D/set.new" "$D/set"
	done < <(sd_all "$SD_SERVICE" Service SystemCallFilter)
	if [ -z "$first" ]; then
		skip "systemd: greylistd's system calls pass SystemCallFilter" "the unit sets no SystemCallFilter"
		return
	fi
	n=$(wc -l < "$D/used")
	if [ "$first" = allow ]; then
		bad=$(comm -23 "$D/used" "$D/set")	# used, not allowed
	else
		bad=$(comm -12 "$D/used" "$D/set")	# used and denied
	fi
	if [ "$n" -ge 20 ] && [ -z "$bad" ]; then
		pass "systemd: all $n system calls greylistd made pass SystemCallFilter"
	else
		fail "systemd: all $n system calls greylistd made pass SystemCallFilter" \
			"refused: $(echo $bad) (traces in $WORK/systemd-*/)"
	fi
}

# sd_journal - greylistd under INVOCATION_ID logs to a real journald
sd_journal() {
	local journald='' p rc inv=0123456789abcdef0123456789abcdef ex

	for p in /lib/systemd/systemd-journald /usr/lib/systemd/systemd-journald; do
		[ -x "$p" ] && { journald=$p; break; }
	done
	if [ -z "$journald" ]; then
		skip "systemd: journal fields" "no systemd-journald binary"; return
	fi
	if [ "$(id -u)" -ne 0 ]; then
		skip "systemd: journal fields" "needs root for private mount/PID/network namespaces (unshare)"; return
	fi
	for p in unshare journalctl systemd-socket-activate socat ip faketime; do
		command -v $p >/dev/null || { skip "systemd: journal fields" "$p missing"; return; }
	done
	newdir systemd-journal
	mkdir "$D/journal"
	cat > "$D/journald.conf" <<-'EOF'
	[Journal]
	Storage=volatile
	ReadKMsg=no
	ForwardToSyslog=no
	ForwardToKMsg=no
	ForwardToConsole=no
	ForwardToWall=no
	EOF
	req > "$D/req.new"
	req sender=second@example.org > "$D/req.second"

	# Runs as PID 1 of new mount, network and PID namespaces: /run,
	# /var/log and /etc/systemd are tmpfs there, so the journald started
	# here binds its sockets and writes its files ($D/journal, bound on
	# /run/log/journal) in the namespace only. Port 10023 is the private
	# network namespace's.
	cat > "$D/inner.sh" <<-'EOF'
	D=$1 GREYLISTD=$2 JOURNALD=$3 INV=$4
	mount -t tmpfs -o mode=0755 tmpfs /run || exit 10
	mkdir -p /run/systemd/journal /run/log/journal
	mount --bind "$D/journal" /run/log/journal || exit 11
	mount -t tmpfs tmpfs /var/log || exit 12
	mount -t tmpfs tmpfs /etc/systemd || exit 13
	cp "$D/journald.conf" /etc/systemd/journald.conf
	ip link set lo up || exit 14
	"$JOURNALD" > "$D/journald.out" 2>&1 &
	jpid=$!
	i=0; while [ ! -S /run/systemd/journal/socket ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	[ -S /run/systemd/journal/socket ] || { kill $jpid; wait $jpid; exit 15; }
	# As the socket unit runs it: one process per TCP connection, the
	# connection on stdin/stdout, INVOCATION_ID set.
	: > "$D/activate.err"
	systemd-socket-activate --accept --inetd -l 127.0.0.1:10023 -E INVOCATION_ID=$INV \
		"$GREYLISTD" --db="$D/db" 2> "$D/activate.err" &
	apid=$!
	i=0; while ! grep -q Listening "$D/activate.err" && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	socat -t 5 - TCP:127.0.0.1:10023 < "$D/req.new" > "$D/reply.new"
	kill $apid; wait $apid
	# The same triplet 400 s later, and (traced) a second sender.
	INVOCATION_ID=$INV FAKETIME_DONT_FAKE_MONOTONIC=1 faketime -f +400s \
		"$GREYLISTD" --db="$D/db" < "$D/req.new" > "$D/reply.pass"
	if command -v strace >/dev/null; then
		INVOCATION_ID=$INV strace -f -qq -o "$D/trace.journal" \
			"$GREYLISTD" --db="$D/db" < "$D/req.second" > /dev/null
	else
		INVOCATION_ID=$INV "$GREYLISTD" --db="$D/db" < "$D/req.second" > /dev/null
	fi
	# Postfix's own reject line, as syslog(3) sends it, and then
	# `greylistd report` reading this journal (its default input).
	logger -u /run/systemd/journal/dev-log -p mail.info -t postfix/smtpd "NOQUEUE: reject: RCPT from unknown[2001:db8::7]: 450 4.7.1 <carol@example.net>: Recipient address rejected: Greylisted, please try again in 300 seconds; from=<> to=<carol@example.net> proto=ESMTP helo=<x>"
	journalctl --sync 2>/dev/null
	sleep 2
	"$GREYLISTCTL" report --journal --db="$D/db" --window=1s > "$D/report.journal" 2> "$D/report.err"
	echo "report exit $?" >> "$D/report.err"
	kill $jpid; wait $jpid
	echo "journald exit $?" >> "$D/journald.out"
	EOF
	timeout -s KILL 60 unshare --mount --net --pid --fork --mount-proc --kill-child \
		bash "$D/inner.sh" "$D" "$GREYLISTD" "$journald" "$inv" > "$D/inner.out" 2>&1; rc=$?
	expect "journal: the namespace with its own journald ran (see $D/inner.out)" 0 "$rc"
	expect "journal: greylistd answered over loopback TCP" \
		"action=DEFER_IF_PERMIT Greylisted, please try again in 300 seconds" "$(grep '^action=' "$D/reply.new" 2>/dev/null)"
	expect_grep "journal: journald stopped cleanly" '^journald exit 0$' "$D/journald.out"

	ex=$D/greylist.export
	journalctl --directory="$D/journal" --no-pager -o export GREYLISTD_ACTION=greylist \
		> "$ex" 2>"$D/journalctl.err"
	expect "journal: one greylist entry per new triplet" 2 "$(grep -c '^GREYLISTD_ACTION=greylist$' "$ex")"
	expect_grep "journal: GREYLISTD_REASON=new" '^GREYLISTD_REASON=new$' "$ex"
	expect_grep "journal: GREYLISTD_CLIENT_ADDRESS" '^GREYLISTD_CLIENT_ADDRESS=192\.0\.2\.10$' "$ex"
	expect_grep "journal: GREYLISTD_CLIENT_NAME" '^GREYLISTD_CLIENT_NAME=mail\.example\.com$' "$ex"
	expect_grep "journal: GREYLISTD_SENDER" '^GREYLISTD_SENDER=alice@example\.com$' "$ex"
	expect_grep "journal: GREYLISTD_RECIPIENT" '^GREYLISTD_RECIPIENT=bob@example\.net$' "$ex"
	expect_grep "journal: MESSAGE is the postgrey-format line" \
		'^MESSAGE=action=greylist, reason=new, client_name=mail\.example\.com, client_address=192\.0\.2\.10, sender=alice@example\.com, recipient=bob@example\.net$' "$ex"
	expect_grep "journal: SYSLOG_IDENTIFIER=greylistd" '^SYSLOG_IDENTIFIER=greylistd$' "$ex"
	expect_grep "journal: SYSLOG_FACILITY=2 (mail)" '^SYSLOG_FACILITY=2$' "$ex"
	expect_grep "journal: PRIORITY=6 (info)" '^PRIORITY=6$' "$ex"
	expect_grep "journal: sent over the native protocol (_TRANSPORT=journal)" '^_TRANSPORT=journal$' "$ex"

	journalctl --directory="$D/journal" --no-pager -o export GREYLISTD_ACTION=pass \
		> "$D/pass.export" 2>>"$D/journalctl.err"
	expect_grep "journal: a pass carries GREYLISTD_DELAY" '^GREYLISTD_DELAY=40[01]$' "$D/pass.export"
	expect_grep "journal: and GREYLISTD_REASON=triplet found" '^GREYLISTD_REASON=triplet found$' "$D/pass.export"
	journalctl --directory="$D/journal" --no-pager -o json GREYLISTD_ACTION=greylist \
		> "$D/greylist.json" 2>>"$D/journalctl.err"
	expect_grep "journal: journalctl GREYLISTD_ACTION=greylist -o json shows the fields" \
		'"GREYLISTD_REASON":"new"' "$D/greylist.json"

	expect_grep "report from the journal: runs" '^report exit 0$' "$D/report.err"
	expect_grep "report from the journal: greylistd's deferral that never came back" \
		'^192\.0\.2\.10 mail\.example\.com second@example\.org bob@example\.net$' "$D/report.journal"
	expect_grep "report from the journal: Postfix's IPv6 null-sender reject" \
		'^2001:db8::7 unknown <> carol@example\.net$' "$D/report.journal"
	expect "report from the journal: the summary on stderr (the retried triplet passed)" \
		"# deferred=3 passed_later=1 never_retried=2 pending=0" \
		"$(grep '^# deferred' "$D/report.err" | sed 's/ median_delay=.*//')"
}

# --- live: the units under a real systemd ------------------------------------
#
# Unless GREYLISTD_LIVE=0: boots systemd as PID 1 of new mount, PID,
# network, UTS, IPC and cgroup namespaces, on an overlay of / whose writes go
# to $WORK, with only greylistd's units and journald's (SYSTEMD_UNIT_PATH).
# The units are used as they are, with the binary at their ExecStart path
# in the overlay. It needs root and cgroup2, and it creates (and removes) one
# cgroup below the test's own: that is outside $WORK, hence opt-in.

# sd_in CMD... - run CMD in the container
sd_in() { nsenter -t "$SD_PID" -a "$@"; }

# sd_cannot_boot - print why systemd cannot be booted here and succeed, or
# fail when it can
sd_cannot_boot() {
	local p
	[ "$(id -u)" -eq 0 ] || { echo "needs root"; return 0; }
	for p in unshare nsenter pivot_root socat flock; do
		command -v $p >/dev/null || { echo "$p missing"; return 0; }
	done
	[ -n "$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)" ] &&
		[ -n "$(sed -n 's/^0:://p' /proc/self/cgroup)" ] || { echo "no cgroup2 hierarchy"; return 0; }
	return 1
}

# sd_boot_files - what every boot needs besides its units: the greylistd
# user, the bare targets, journald's units, gltest.target (journald and
# the units in SD_WANTS), a sanitizer build's options for every greylistd
# service (the templates and greylistd-metrics.service), and inner.sh, which makes the root and execs systemd
sd_boot_files() {
	local u=$D/upper/gltest/units t sd
	for t in sysinit basic sockets shutdown; do
		printf '[Unit]\nDefaultDependencies=no\n' > "$u/$t.target"
	done
	for sd in /lib/systemd/system /usr/lib/systemd/system; do
		[ -f $sd/systemd-journald.service ] && break
	done
	cp $sd/systemd-journald.socket $sd/systemd-journald-dev-log.socket "$u/"
	sed -e 's/ systemd-journald-audit.socket//g' -e 's/ syslog.socket//g' \
		$sd/systemd-journald.service > "$u/systemd-journald.service"
	printf '[Unit]\nWants=systemd-journald.socket systemd-journald.service %s\n' \
		"$SD_WANTS" > "$u/gltest.target"
	# A sanitizer build's options reach the instances, whose environment
	# systemd sets afresh (CI runs the suite against such a build too).
	if [ -n "${ASAN_OPTIONS:-}" ]; then
		for t in "$u"/greylistd*.service; do
			[ -f "$t" ] || continue
			mkdir -p "$t.d"
			printf '[Service]\nEnvironment=ASAN_OPTIONS=%s\n' "$ASAN_OPTIONS" \
				> "$t.d/sanitizer.conf"
		done
	fi

	cat > "$D/inner.sh" <<-'EOF'
	set -e
	D=$1 R=$1/root
	mount -t overlay overlay -o lowerdir=/,upperdir=$D/upper,workdir=$D/work $R
	mount -t proc proc $R/proc
	mount --bind $R/proc/sys $R/proc/sys
	mount -o remount,bind,ro $R/proc/sys
	mount -t sysfs -o ro sysfs $R/sys
	mount -t cgroup2 cgroup2 $R/sys/fs/cgroup
	mount -t tmpfs -o mode=0755 tmpfs $R/dev
	for d in null zero full random urandom tty; do
		touch $R/dev/$d; mount --bind /dev/$d $R/dev/$d
	done
	mkdir $R/dev/pts $R/dev/shm
	mount -t devpts -o newinstance,ptmxmode=0666 devpts $R/dev/pts
	ln -s pts/ptmx $R/dev/ptmx
	touch $R/dev/console; mount --bind $D/console.log $R/dev/console
	mount -t tmpfs -o mode=0755 tmpfs $R/run
	mount -t tmpfs -o mode=1777 tmpfs $R/tmp
	cd $R; mkdir -p oldroot; pivot_root . oldroot; umount -l /oldroot
	exec /usr/bin/env -i container=greylistd-test SYSTEMD_UNIT_PATH=/gltest/units \
		/lib/systemd/systemd --unit=gltest.target --log-target=journal
	EOF
}

# sd_boot NAME UNITS-FN - boot systemd as PID 1 of new mount, PID, network,
# UTS, IPC and cgroup namespaces, on an overlay of / whose writes go to
# $WORK/NAME/upper. Before the boot UNITS-FN writes its units into
# $D/upper/gltest/units (the binary is at /usr/sbin/greylistd, the user
# greylistd has uid SD_UID, /etc/greylistd/whitelist is empty) and names in
# SD_WANTS those to start. Sets D, SD_PID, SD_UPID and SD_CG (the cgroup made
# for it); returns 1 with SD_WHY when systemd did not come up. sd_halt
# undoes it either way.
sd_boot() {
	local cgmnt cgpath state=''
	newdir "$1"
	mkdir -p "$D/upper/gltest/units" "$D/upper/usr/sbin" "$D/upper/etc/greylistd" \
		"$D/work" "$D/root"
	: > "$D/console.log"
	cp "$GREYLISTD" "$D/upper/usr/sbin/greylistd"
	cp "$GREYLISTCTL" "$D/upper/usr/sbin/greylistctl"
	echo '# no entries' > "$D/upper/etc/greylistd/whitelist"
	cp /etc/passwd /etc/group "$D/upper/etc/"
	SD_UID=$(awk -F: '{ u[$3] = 1 } END { for (i = 999; i > 100; i--) if (!(i in u)) { print i; exit } }' /etc/passwd /etc/group)
	echo "greylistd:x:$SD_UID:$SD_UID::/var/lib/greylistd:/usr/sbin/nologin" >> "$D/upper/etc/passwd"
	echo "greylistd:x:$SD_UID:" >> "$D/upper/etc/group"
	SD_WANTS=
	"$2"
	sd_boot_files

	SD_PID='' SD_UPID=''
	cgmnt=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
	cgpath=$(sed -n 's/^0:://p' /proc/self/cgroup)
	SD_CG=$cgmnt${cgpath%/}/greylistd-test-$$-$1
	mkdir "$SD_CG" || { SD_WHY="cannot create a cgroup in $cgmnt$cgpath"; return 1; }
	unshare --mount --pid --fork --net --uts --ipc --kill-child --propagation private \
		bash -c 'echo 0 > "$1/cgroup.procs" && exec unshare --cgroup bash "$2/inner.sh" "$2"' \
		sh "$SD_CG" "$D" > "$D/unshare.out" 2>&1 &
	SD_UPID=$!
	for _ in $(seq 200); do
		SD_PID=$(ps -o pid= --ppid $SD_UPID | tr -d ' ')
		[ -n "$SD_PID" ] && [ "$(cat /proc/$SD_PID/comm 2>/dev/null)" = systemd ] && \
			state=$(sd_in systemctl is-system-running 2>/dev/null) && \
			case $state in running|degraded) break ;; esac
		sleep 0.1
	done
	if [ "$(cat /proc/$SD_PID/comm 2>/dev/null)" != systemd ] || [ "$state" != running ]; then
		SD_WHY="state [$state]; $(tail -n 3 "$D/unshare.out" "$D/console.log" 2>/dev/null | tr '\n' ' ')"
		return 1
	fi
}

# sd_halt - end the systemd of sd_boot (its namespace's PID 1: all in it
# die with it) and remove its cgroup; quiet, safe to call twice
sd_halt() {
	if [ -n "${SD_PID:-}" ] && [ "$(cat "/proc/$SD_PID/comm" 2>/dev/null)" = systemd ]; then
		kill -KILL "$SD_PID" 2>/dev/null
	elif [ -n "${SD_UPID:-}" ]; then
		# unshare --fork holds SIGTERM until its child ends: with systemd
		# never found (a slow boot) only SIGKILL ends it, and --kill-child
		# then takes the namespaces' PID 1 with it
		kill -KILL "$SD_UPID" 2>/dev/null
	fi
	[ -n "${SD_UPID:-}" ] && wait "$SD_UPID" 2>/dev/null
	SD_PID='' SD_UPID=''
	# the namespaces' last processes may still be exiting
	for _ in $(seq 50); do
		[ -n "${SD_CG:-}" ] && [ -e "$SD_CG" ] || break
		find "$SD_CG" -depth -type d -exec rmdir {} + 2>/dev/null
		[ -e "$SD_CG" ] || break
		sleep 0.1
	done
	return 0
}

# sd_live_units - greylistd's units as they are, the same units with
# MaxConnections=10 (glsmall), and the clients' script and requests
sd_live_units() {
	local u=$D/upper/gltest/units
	cp "$SD_SOCKET" "$SD_SERVICE" "$SD_MSOCKET" "$SD_MSERVICE" "$SD_GP_SOCKET" "$SD_GP_SERVICE" "$u/"
	# the same units with MaxConnections=10, to overrun it cheaply
	sed -e 's|^ListenStream=.*|ListenStream=127.0.0.1:10031|' \
		-e 's|^MaxConnections=.*|MaxConnections=10|' "$SD_SOCKET" > "$u/glsmall.socket"
	cp "$SD_SERVICE" "$u/glsmall@.service"
	SD_WANTS="greylistd.socket glsmall.socket greylistd-milter.socket greylistd-protocol.socket"
	mt_packets 192.0.2.77 milter@example.org bob@example.net > "$D/upper/gltest/milter.in"

	# client.sh lat N | eof | hold N PORT - clients run in the container
	cat > "$D/upper/gltest/client.sh" <<-'EOF'
	ask() { # ask PORT FILE - one connection, one request; the reply's first line
		exec 5<>/dev/tcp/127.0.0.1/$1 || return 1
		cat "$2" >&5
		IFS= read -r -t 10 line <&5 && echo "$line"
		exec 5<&-
	}
	case $1 in
	lat)	for i in $(seq $2); do
			t=$EPOCHREALTIME; r=$(ask 10023 /gltest/req.data)
			[ "$r" = action=DUNNO ] || echo bad
			echo $(( (${EPOCHREALTIME/./} - ${t/./}) / 1000 ))
			sleep 0.02
		done ;;
	eof)	exec 5<>/dev/tcp/127.0.0.1/10023
		cat /gltest/req.rcpt >&5
		IFS= read -r -t 10 line <&5; echo "$line"; read -r -t 10 <&5
		t=$EPOCHREALTIME
		printf 'request=bogus\n\n' >&5
		while IFS= read -r -t 30 line <&5; do :; done
		echo $(( (${EPOCHREALTIME/./} - ${t/./}) / 1000 )) ;;
	hold)	for i in $(seq $2); do
			( exec 5<>/dev/tcp/127.0.0.1/$3 && cat /gltest/req.data >&5 \
			  && IFS= read -r -t 10 line <&5 && echo "$line"; sleep 3 ) > /tmp/hold.$i 2>/dev/null &
		done
		wait; cat /tmp/hold.* | grep -c '^action=' ;;
	esac
	EOF
	req > "$D/upper/gltest/req.rcpt"
	req protocol_state=DATA > "$D/upper/gltest/req.data"
}

sd_live() {
	local why

	if [ "${GREYLISTD_LIVE:-1}" = 0 ]; then
		skip "systemd live: the units under a real systemd" \
			"left out with GREYLISTD_LIVE=0 (it boots systemd as PID 1 in private namespaces and adds a cgroup below the test's own)"
		return
	fi
	if why=$(sd_cannot_boot); then skip "systemd live" "$why"; return; fi
	if ! sd_boot systemd-live sd_live_units; then
		case $SD_WHY in
		"cannot create a cgroup"*) skip "systemd live" "$SD_WHY"; return ;;
		esac
		fail "systemd live: systemd boots in the namespaces" "$SD_WHY"
	else
		pass "systemd live: systemd $(sd_in systemctl --version | awk 'NR == 1 { print $2 }') runs as PID 1 of the namespaces"
		sd_live_checks
	fi
	sd_halt
	check "systemd live: its cgroup is removed again" test ! -e "$SD_CG"
}

sd_live_checks() {
	local out lat holder

	expect "live: greylistd.socket listening" "active" "$(sd_in systemctl is-active greylistd.socket)"
	out=$(sd_in socat -t 5 - TCP:127.0.0.1:10023 < "$D/upper/gltest/req.rcpt" | grep '^action=')
	expect "live: a connection to 127.0.0.1:10023 is greylisted" \
		"action=DEFER_IF_PERMIT Greylisted, please try again in 300 seconds" "$out"
	sleep 0.5
	sd_in journalctl --no-pager -o export GREYLISTD_ACTION=greylist > "$D/greylist.export"
	expect_grep "live: journal entry from a greylistd@ instance" '^_SYSTEMD_UNIT=greylistd@[0-9]+-127\.0\.0\.1:10023-127\.0\.0\.1:[0-9]+\.service$' "$D/greylist.export"
	expect_grep "live: with GREYLISTD_REASON=new" '^GREYLISTD_REASON=new$' "$D/greylist.export"
	expect_grep "live: logged as user greylistd (uid $SD_UID)" "^_UID=$SD_UID\$" "$D/greylist.export"
	expect_grep "live: without capabilities" '^_CAP_EFFECTIVE=0$' "$D/greylist.export"
	expect "live: StateDirectory /var/lib/greylistd: greylistd, 700" "greylistd 700" \
		"$(sd_in stat -c '%U %a' /var/lib/greylistd)"
	expect "live: the database: greylistd, 600" "greylistd 600" \
		"$(sd_in stat -c '%U %a' /var/lib/greylistd/greylistd.db)"
	sd_live_protocol

	# The milter's units: a session on the UNIX socket, as Sendmail sends it
	expect "live: greylistd-milter.socket listening" active "$(sd_in systemctl is-active greylistd-milter.socket)"
	expect "live: /run/greylistd/milter.sock is a socket, mode 600, root's" "socket 600 root" \
		"$(sd_in stat -c '%F %a %U' /run/greylistd/milter.sock)"
	sd_in socat -t 5 - UNIX-CONNECT:/run/greylistd/milter.sock < "$D/upper/gltest/milter.in" > "$D/milter.out"
	expect "live: a milter session there is answered OPTNEG, continue (CONNECT), continue (MAIL), 451 (RCPT)" \
		"Occy" "$(mc_commands "$D/milter.out")"
	expect "live: and the 451 is the greylist text" "   55 y 451 4.7.1 Greylisted, please try again in 300 seconds|" \
		"$(mc_dump "$D/milter.out" | sed -n 4p)"
	sleep 0.5
	sd_in journalctl --no-pager -o export GREYLISTD_SENDER=milter@example.org > "$D/milter.export"
	expect_grep "live: logged by a greylistd-milter@ instance" '^_SYSTEMD_UNIT=greylistd-milter@[0-9]+-[0-9]+-0\.service$' "$D/milter.export"
	expect_grep "live: as user greylistd, into the same database" "^_UID=$SD_UID\$" "$D/milter.export"

	# A protocol violation: the instance exits 76, fails, and is collected.
	printf 'request=bogus\n\n' | sd_in socat -t 5 - TCP:127.0.0.1:10023 >/dev/null
	sleep 0.5
	sd_in journalctl --no-pager -o cat > "$D/journal.txt"
	expect_grep "live: an instance failing with status 76 is logged" \
		"greylistd@.*status=76" "$D/journal.txt"
	expect "live: and collected (CollectMode): no greylistd@ unit failed or loaded" "" \
		"$(sd_in systemctl list-units --all --plain --no-legend 'greylistd@*' | grep -v '^$')"

	# More connections than MaxConnections: the surplus is refused, the
	# socket stays up (trigger limit off), the next connection is served.
	out=$(sd_in bash /gltest/client.sh hold 40 10031)
	expect "live: 40 connections on MaxConnections=10: 10 served" 10 "$out"
	expect "live: the socket unit survives the overrun" active "$(sd_in systemctl is-active glsmall.socket)"
	expect "live: the 30 over the limit were refused" "NRefused=30" \
		"$(sd_in systemctl show glsmall.socket -p NRefused)"
	out=$(sd_in socat -t 5 - TCP:127.0.0.1:10031 < "$D/upper/gltest/req.data" | grep '^action=')
	expect "live: and the next connection is served" "action=DUNNO" "$out"

	# Spawn cost: connect to first answer, fresh instance each time.
	sd_in bash /gltest/client.sh lat 30 > "$D/lat.txt"
	lat=$(grep -v bad "$D/lat.txt" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
	expect "live: 30 fresh instances all answered" 0 "$(grep -c bad "$D/lat.txt")"
	check "live: connect to first answer, median ${lat} ms (hardened instance started per connection)" \
		test "${lat:-99999}" -lt 1000

	# greylistd closes the connection (protocol violation) while a
	# maintenance child still runs: PID 1 holds its own copy of the
	# connection until the unit is gone, so only shutdown(2) ends it at once.
	# A whitelist with a bad line makes every process fork a child after
	# its first RCPT answer, to report it; the child waits for the lock.
	sd_in sh -c "printf 'client /[/\n' > /etc/greylistd/whitelist"
	sd_in flock -x /var/lib/greylistd/greylistd.db sleep 6 &
	holder=$!
	sleep 0.3
	out=$(sd_in bash /gltest/client.sh eof)
	wait $holder
	sleep 0.5
	expect "live: eof test: the request is answered (fail-open, lock held)" "action=DUNNO" "$(echo "$out" | head -n 1)"
	sd_in journalctl --no-pager -o cat > "$D/journal.txt"
	expect_grep "live: eof test: a maintenance child ran (the bad whitelist line is reported)" \
		'whitelist:1: .*line skipped' "$D/journal.txt"
	check "live: after a protocol violation the client sees EOF at once, not when maintenance ends ($(echo "$out" | tail -n 1) ms)" \
		test "$(echo "$out" | tail -n 1)" -lt 1000
}

# sd_live_protocol - greylistd-protocol.socket under the real systemd:
# Debian greylistd's line in, "true" or "false" out
sd_live_protocol() {
	local out
	expect "live: greylistd-protocol.socket listening" active "$(sd_in systemctl is-active greylistd-protocol.socket)"
	expect "live: /run/greylistd/protocol.sock is 0660, root, group greylistd" "srw-rw---- root greylistd" \
		"$(sd_in stat -c '%A %U %G' /run/greylistd/protocol.sock)"
	out=$(printf -- '--grey 198.51.100.0/24 alice@sender.test bob@dest.test' |
		sd_in socat -t 5 - UNIX-CONNECT:/run/greylistd/protocol.sock)
	expect "live: --grey for a new triplet: true, and nothing else" true "$out"
	out=$(printf -- '--black 198.51.100.7 alice@sender.test bob@dest.test' |
		sd_in socat -t 5 - UNIX-CONNECT:/run/greylistd/protocol.sock)
	expect "live: --black: false" false "$out"
	sleep 0.5
	sd_in journalctl --no-pager -o export GREYLISTD_CLIENT_ADDRESS=198.51.100.0 > "$D/protocol.export"
	expect_grep "live: journal entry from a greylistd-protocol@ instance" \
		'^_SYSTEMD_UNIT=greylistd-protocol@[0-9]+-[0-9]+-0\.service$' "$D/protocol.export"
	expect_grep "live: logged as user greylistd" "^_UID=$SD_UID\$" "$D/protocol.export"
}

t_systemd() {
	if ! command -v systemd-analyze >/dev/null; then
		skip "systemd units" "systemd-analyze missing (Debian package systemd)"
		return
	fi
	sd_verify
	sd_security
	sd_settings
	sd_milter_settings
	sd_journal
	sd_syscalls
	sd_live
}
