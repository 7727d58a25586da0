# tests/systemd.sh - the systemd units greylistd.socket and
# greylistd@.service. test.sh sources this file and calls t_systemd; it uses
# the helpers of tests/lib.sh and the environment GREYLISTD (the built
# binary) and WORK (a temp dir).
#
# Without systemd as PID 1 the units cannot be started here. What can be
# checked is checked for real:
#   - systemd-analyze verify and security --offline on copies of the units
#     whose ExecStart names the built binary (verify fails on a missing one);
#   - the settings that keep the socket working under load;
#   - every system call greylistd makes (seen with strace) is allowed by the
#     unit's SystemCallFilter (a refused call would fail with EPERM);
#   - the journal path: a private systemd-journald, started by hand in its
#     own mount, network and PID namespaces, receives greylistd's lines, with
#     their GREYLISTD_* fields, from a connection made over loopback TCP as
#     the socket unit would make it. Nothing outside $WORK and the namespace
#     is touched; everything started is stopped by PID, and the namespace's
#     PID 1 takes down anything left when it exits.

SD_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SD_SOCKET=$SD_SRC/greylistd.socket
SD_SERVICE=$SD_SRC/greylistd@.service
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

# sd_copies - copies of both units in $D, ExecStart pointing at $GREYLISTD
sd_copies() {
	cp "$SD_SOCKET" "$D/greylistd.socket"
	sed "s|^ExecStart=$SD_EXEC\\b|ExecStart=$GREYLISTD|" "$SD_SERVICE" \
		> "$D/greylistd@.service"
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

	# The check has teeth: the same units with a missing binary fail.
	sed -i "s|^ExecStart=$GREYLISTD\\b|ExecStart=$D/no-such-binary|" "$D/greylistd@.service"
	(cd "$D" && systemd-analyze verify --man=no ./greylistd.socket ./greylistd@.service) \
		>/dev/null 2>&1; rc=$?
	check "systemd-analyze verify fails on a missing ExecStart binary" test "$rc" -ne 0
}

sd_security() {
	local out rc score

	newdir systemd-security
	sd_copies
	# --threshold counts in tenths in systemd 252: 10 is an exposure of
	# 1.0 ("--threshold=1.0" is refused as unparsable).
	out=$(cd "$D" && systemd-analyze security --offline=yes --threshold=10 \
		./greylistd@.service 2>&1); rc=$?
	printf '%s\n' "$out" > "$D/security.txt"
	score=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\) .*/\1/p')
	if [ -z "$score" ]; then
		fail "systemd-analyze security --offline=yes: exposure level" "no score in $D/security.txt"
		return
	fi
	if [ "$rc" -eq 0 ] && awk -v s="$score" 'BEGIN { exit !(s <= 1.0) }'; then
		pass "systemd-analyze security --offline=yes greylistd@.service: exposure $score (threshold 1.0)"
	else
		fail "systemd-analyze security --offline=yes greylistd@.service: exposure $score (threshold 1.0)" \
			"exit $rc; settings not met: $(grep '✗' "$D/security.txt" | awk '{print $2}' | tr '\n' ' ')"
	fi
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
	local line first= used bad n

	if ! command -v strace >/dev/null; then
		skip "systemd: greylistd's system calls pass SystemCallFilter" "strace missing"
		return
	fi
	newdir systemd-syscalls
	# Paths greylistd takes: create the database, read it, pass a triplet,
	# move a damaged file aside, give up on a held lock, time out idle,
	# refuse a bad request, check the configuration. The journal path was
	# traced by sd_journal, with a journald listening.
	sd_trace() { strace -f -qq -o "$D/trace.$(date +%s%N)" "$GREYLISTD" "$@" --db="$D/db"; }
	req | sd_trace --log-file="$D/log" --delay=1s >/dev/null
	{ req protocol_state=DATA; req; } | sd_trace --log-file="$D/log" --delay=1s >/dev/null
	sleep 1.1
	{ req; req; } | sd_trace --log-file="$D/log" --delay=1s >/dev/null
	req sender=s@x.org | sd_trace >/dev/null	# syslog
	head -c 5000 /dev/urandom > "$D/db"
	req | sd_trace --log-file="$D/log" >/dev/null
	(req; sleep 2) | sd_trace --log-file="$D/log" --timeout=1s >/dev/null
	flock -x "$D/db" sleep 2 & n=$!
	sleep 0.2
	req sender=l@x.org | sd_trace --log-file="$D/log" --lock-timeout=1s >/dev/null
	stop $n
	printf 'request=bogus\n\n' | sd_trace --log-file="$D/log" >/dev/null
	sd_trace check >/dev/null
	expect_grep "syscall trace: the damaged-file path was taken" 'moved to' "$D/log"
	expect_grep "syscall trace: the lock-timeout path was taken" 'lock not had within 1s' "$D/log"

	cat "$WORK"/systemd-*/trace.* 2>/dev/null \
		| sed -nE 's/^[0-9]+ +([a-z0-9_]+)\(.*/\1/p' | sort -u > "$D/used"
	: > "$D/allowed"
	: > "$D/denied"
	while read -r line; do
		[ -n "$line" ] || { : > "$D/allowed"; : > "$D/denied"; first=; continue; }
		case $line in
		"~"*) sd_expand ${line#\~} >> "$D/denied"; first=${first:-deny} ;;
		*) sd_expand $line >> "$D/allowed"; first=${first:-allow} ;;
		esac
	done < <(sd_all "$SD_SERVICE" Service SystemCallFilter)
	if [ -z "$first" ]; then
		skip "systemd: greylistd's system calls pass SystemCallFilter" "the unit sets no SystemCallFilter"
		return
	fi
	n=$(wc -l < "$D/used")
	if [ "$first" = allow ]; then
		bad=$(sort -u "$D/denied" | comm -23 <(sort -u "$D/allowed") - | comm -23 "$D/used" -)
	else
		bad=$(sort -u "$D/denied" | comm -12 "$D/used" -)
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
	local journald= p rc inv=0123456789abcdef0123456789abcdef export

	for p in /lib/systemd/systemd-journald /usr/lib/systemd/systemd-journald; do
		[ -x "$p" ] && { journald=$p; break; }
	done
	if [ -z "$journald" ]; then
		skip "systemd: journal fields" "no systemd-journald binary"; return
	fi
	if [ "$(id -u)" -ne 0 ]; then
		skip "systemd: journal fields" "needs root for private mount/PID/network namespaces (unshare)"; return
	fi
	for p in unshare journalctl systemd-socket-activate socat ip; do
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
	journalctl --sync 2>/dev/null
	kill $jpid; wait $jpid
	echo "journald exit $?" >> "$D/journald.out"
	EOF
	timeout 60 unshare --mount --net --pid --fork --mount-proc --kill-child \
		bash "$D/inner.sh" "$D" "$GREYLISTD" "$journald" "$inv" > "$D/inner.out" 2>&1; rc=$?
	expect "journal: the namespace with its own journald ran (see $D/inner.out)" 0 "$rc"
	expect "journal: greylistd answered over loopback TCP" \
		"action=DEFER_IF_PERMIT Greylisted, please try again in 300 seconds" "$(grep '^action=' "$D/reply.new" 2>/dev/null)"
	expect_grep "journal: journald stopped cleanly" '^journald exit 0$' "$D/journald.out"

	export=$D/greylist.export
	journalctl --directory="$D/journal" --no-pager -o export GREYLISTD_ACTION=greylist \
		> "$export" 2>"$D/journalctl.err"
	expect "journal: one greylist entry per new triplet" 2 "$(grep -c '^GREYLISTD_ACTION=greylist$' "$export")"
	expect_grep "journal: GREYLISTD_REASON=new" '^GREYLISTD_REASON=new$' "$export"
	expect_grep "journal: GREYLISTD_CLIENT_ADDRESS" '^GREYLISTD_CLIENT_ADDRESS=192\.0\.2\.10$' "$export"
	expect_grep "journal: GREYLISTD_CLIENT_NAME" '^GREYLISTD_CLIENT_NAME=mail\.example\.com$' "$export"
	expect_grep "journal: GREYLISTD_SENDER" '^GREYLISTD_SENDER=alice@example\.com$' "$export"
	expect_grep "journal: GREYLISTD_RECIPIENT" '^GREYLISTD_RECIPIENT=bob@example\.net$' "$export"
	expect_grep "journal: MESSAGE is the postgrey-format line" \
		'^MESSAGE=action=greylist, reason=new, client_name=mail\.example\.com, client_address=192\.0\.2\.10, sender=alice@example\.com, recipient=bob@example\.net$' "$export"
	expect_grep "journal: SYSLOG_IDENTIFIER=greylistd" '^SYSLOG_IDENTIFIER=greylistd$' "$export"
	expect_grep "journal: SYSLOG_FACILITY=2 (mail)" '^SYSLOG_FACILITY=2$' "$export"
	expect_grep "journal: PRIORITY=6 (info)" '^PRIORITY=6$' "$export"
	expect_grep "journal: sent over the native protocol (_TRANSPORT=journal)" '^_TRANSPORT=journal$' "$export"

	journalctl --directory="$D/journal" --no-pager -o export GREYLISTD_ACTION=pass \
		> "$D/pass.export" 2>>"$D/journalctl.err"
	expect_grep "journal: a pass carries GREYLISTD_DELAY" '^GREYLISTD_DELAY=40[01]$' "$D/pass.export"
	expect_grep "journal: and GREYLISTD_REASON=triplet found" '^GREYLISTD_REASON=triplet found$' "$D/pass.export"
	journalctl --directory="$D/journal" --no-pager -o json GREYLISTD_ACTION=greylist \
		> "$D/greylist.json" 2>>"$D/journalctl.err"
	expect_grep "journal: journalctl GREYLISTD_ACTION=greylist -o json shows the fields" \
		'"GREYLISTD_REASON":"new"' "$D/greylist.json"
}

t_systemd() {
	if ! command -v systemd-analyze >/dev/null; then
		skip "systemd units" "systemd-analyze missing (Debian package systemd)"
		return
	fi
	sd_verify
	sd_security
	sd_settings
	sd_journal
	sd_syscalls
}
