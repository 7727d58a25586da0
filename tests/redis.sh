# shellcheck shell=bash
# tests/redis.sh - a harness of private Redis servers for tests, the
# group redis_harness that proves it, and the group redis: greylistd on
# the Redis store (see that section, at the end).
#
# Sourced by test.sh (and by bench/bench.sh, for rd_start). The functions
# are for the tests of a Redis store (issue 15, part 2); t_redis_harness
# checks them. Every server is a
# redis-server (Debian's, 7.0: Sentinel is the same binary) started here,
# in the foreground (daemonize no) as a child of the test, with its own
# config file, log, working directory and UNIX socket in a directory of
# the test's, and/or a free loopback TCP port; nothing is persisted unless
# the caller asks for it. Each is stopped by its PID (kept in DIR/pid), and
# rd_cleanup stops all that are left, also from test.sh's EXIT trap.
#
#   rd_start DIR [unix|tcp|both] [LINE...]   a server; LINEs are appended to
#                          its redis.conf ("requirepass PW", "protected-mode
#                          no", "maxmemory 1mb", "appendonly yes" ...)
#                          sets RD_DIR RD_PID RD_PORT RD_SOCK RD_PASS; with
#                          RD_NETNS set, it runs in that network namespace
#                          (a test's own: then a LINE "bind ADDR" for TCP;
#                          rd_cli uses its socket)
#   rd_cli DIR ARGS...     redis-cli on that server (socket, else port;
#                          with its password)
#   rd_stop DIR            SIGTERM, and wait until it is gone
#   rd_kill DIR            SIGKILL, and wait until it is gone
#   rd_restart DIR         start it again: same config, port and socket
#   rd_sentinel_setup DIR  a primary, a replica and three Sentinels (quorum
#                          2) on loopback, ready to fail over; sets
#                          RD_PRIMARY RD_REPLICA (their DIRs), RD_SENTINELS
#                          (three DIRs) and RD_MASTER_NAME
#   rd_master_addr [SDIR]  "127.0.0.1 PORT": what a Sentinel reports
#   rd_failover [SECS]     SIGKILL RD_PRIMARY, wait until the Sentinels
#                          report the replica; sets RD_FAILOVER_MS; runs
#                          RD_ON_KILL (a command, when set) right after the
#                          kill
#   rd_burst DIR MODE N    write k:1..k:N with redis-cli (--pipe, one at a
#                          time, or each followed by WAIT 1 100)
#   rd_acked DIR MODE      how many of them were answered OK / confirmed
#   rd_present DIR N       how many of k:1..k:N the server holds
#   rd_cleanup             stop every server started here
#
# A function whose server does not come up returns 1 with RD_WHY set.

RD_ALL=()			# the DIR of every server started
RD_MASTER_NAME=greylistd	# what the Sentinels call the primary
RD_DOWN_MS=1000			# Sentinel down-after-milliseconds
RD_FAILOVER_TIMEOUT=3000	# Sentinel failover-timeout (ms)

# rd_cannot_run - print why this machine cannot run the harness and
# succeed, or fail when it can
rd_cannot_run() {
	local c
	for c in redis-server redis-cli; do
		command -v $c >/dev/null ||
			{ echo "$c not found (Debian packages redis-server, redis-tools)"; return 0; }
	done
	return 1
}

# rd_free_port - a loopback TCP port nothing listens on, below Linux's
# ephemeral range (the server's bind decides: rd_start tries another when
# it is taken after all)
rd_free_port() {
	local p
	for _ in $(seq 100); do
		p=$((20000 + RANDOM % 12000))
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
	done
	return 1
}

# rd_vars DIR - set RD_DIR, RD_PID, RD_PORT, RD_SOCK and RD_PASS from the
# files of the server in DIR
rd_vars() {
	RD_DIR=$1
	RD_PID=$(cat "$1/pid" 2>/dev/null)
	RD_PORT=$(sed -n 's/^port //p' "$1/redis.conf" | tail -n 1)
	RD_SOCK=$(sed -n 's/^unixsocket //p' "$1/redis.conf" | tail -n 1)
	RD_PASS=$(sed -n 's/^requirepass //p' "$1/redis.conf" | tail -n 1)
}

# rd_cli DIR ARGS... - redis-cli on the server in DIR: its socket when it
# has one, else its port; its password through the environment (not -a,
# which redis-cli warns about)
rd_cli() {
	local d=$1 sock port pass
	shift
	sock=$(sed -n 's/^unixsocket //p' "$d/redis.conf" | tail -n 1)
	port=$(sed -n 's/^port //p' "$d/redis.conf" | tail -n 1)
	pass=$(sed -n 's/^requirepass //p' "$d/redis.conf" | tail -n 1)
	local env=(env -u REDISCLI_AUTH)
	[ -z "$pass" ] || env=(env REDISCLI_AUTH="$pass")
	if [ -n "$sock" ]; then
		"${env[@]}" redis-cli -s "$sock" "$@"
	else
		"${env[@]}" redis-cli -h 127.0.0.1 -p "$port" "$@"
	fi
}

# rd_alive DIR - true while the server of DIR runs (a zombie does not)
rd_alive() {
	local p stat
	p=$(cat "$1/pid" 2>/dev/null)
	[ -n "$p" ] && read -r stat 2>/dev/null < "/proc/$p/stat" || return 1
	case $stat in "$p (redis-server) "[!Z]*) return 0 ;; esac
	return 1
}

# rd_launch DIR - run redis-server on DIR/redis.conf in the background
# (a Sentinel when the file says so); true once it answers PING (5 s)
rd_launch() {
	local d=$1 args=() in=()
	grep -q '^sentinel monitor ' "$d/redis.conf" && args=(--sentinel)
	# ip netns exec execs the server: $! stays its PID.
	[ ! -s "$d/netns" ] || in=(ip netns exec "$(cat "$d/netns")")
	: > "$d/log"
	"${in[@]}" redis-server "$d/redis.conf" "${args[@]}" > "$d/stdout" 2>&1 &
	echo $! > "$d/pid"
	# Out of the job table: bash reaps it all the same, but does not
	# report "Killed" on the test's output when rd_kill ends it.
	disown $!
	for _ in $(seq 50); do
		rd_alive "$d" || return 1
		[ "$(rd_cli "$d" PING 2>/dev/null)" = PONG ] && return 0
		sleep 0.1
	done
	return 1
}

# rd_start DIR [unix|tcp|both] [LINE...] - a private redis-server in DIR
# (created; an old one there is replaced). unix (the default): a socket
# DIR/redis.sock, no TCP; tcp: a free loopback port; both. The LINEs come
# last in redis.conf, so they override the defaults written before them.
rd_start() {
	local d=$1 mode=${2:-unix} port=0 line
	shift; [ $# -gt 0 ] && shift
	case $mode in unix|tcp|both) ;; *) RD_WHY="rd_start: mode $mode"; return 1 ;; esac
	# A socket's path must fit sockaddr_un (108 bytes with its NUL).
	[ "$mode" = tcp ] || [ ${#d} -le 95 ] || { RD_WHY="rd_start: $d is too long for a socket path"; return 1; }
	[ -e "$d/pid" ] && rd_stop "$d"
	rm -rf "$d"; mkdir -p "$d"
	[ -z "${RD_NETNS:-}" ] || echo "$RD_NETNS" > "$d/netns"
	RD_ALL+=("$d")
	for _ in 1 2 3 4 5; do
		[ "$mode" = unix ] || port=$(rd_free_port) || { RD_WHY="no free port"; return 1; }
		{
			echo "# written by tests/redis.sh rd_start"
			echo "daemonize no"
			echo "bind 127.0.0.1"
			echo "port $port"
			[ "$mode" = tcp ] || printf 'unixsocket %s\nunixsocketperm 700\n' "$d/redis.sock"
			printf 'dir %s\nlogfile %s\n' "$d" "$d/log"
			# No persistence unless a LINE asks for it.
			printf 'save ""\nappendonly no\n'
			echo "protected-mode yes"
			for line in "$@"; do echo "$line"; done
		} > "$d/redis.conf"
		rd_launch "$d" && { rd_vars "$d"; return 0; }
		rd_stop "$d"
		# Another process took the port between the look and the bind.
		grep -q 'Address already in use' "$d/log" && [ "$mode" != unix ] && continue
		break
	done
	RD_WHY="redis-server did not answer PING: $(tail -n 3 "$d/log" "$d/stdout" 2>/dev/null | tr '\n' ' ')"
	return 1
}

# rd_gone DIR SIGNAL - send SIGNAL to the server of DIR and wait (5 s at
# most) until it is gone
rd_gone() {
	local p
	p=$(cat "$1/pid" 2>/dev/null)
	[ -n "$p" ] || return 0
	rd_alive "$1" && kill "-$2" "$p" 2>/dev/null
	for _ in $(seq 50); do
		rd_alive "$1" || return 0
		sleep 0.1
	done
	! rd_alive "$1"
}

# rd_stop [DIR] - SIGTERM (Redis shuts down cleanly and removes its
# socket), wait until it is gone
rd_stop() { rd_gone "${1:-$RD_DIR}" TERM; }

# rd_kill [DIR] - SIGKILL (no shutdown: the socket file stays), wait until
# it is gone
rd_kill() { rd_gone "${1:-$RD_DIR}" KILL; }

# rd_restart [DIR] - stop the server if it runs, start it again with the
# same config file (same port and socket); sets the RD_ variables
rd_restart() {
	local d=${1:-$RD_DIR}
	rd_stop "$d"
	if rd_launch "$d"; then rd_vars "$d"; return 0; fi
	RD_WHY="redis-server did not come back: $(tail -n 3 "$d/log" 2>/dev/null | tr '\n' ' ')"
	return 1
}

# rd_cleanup - stop every server this harness started (SIGKILL after a
# SIGTERM that did not end it); quiet, safe to call twice
rd_cleanup() {
	local d
	for d in "${RD_ALL[@]}"; do
		rd_stop "$d" || rd_kill "$d"
	done
	return 0
}

# rd_info DIR FIELD - one field of INFO (replication, server ...)
rd_info() { rd_cli "$1" INFO | tr -d '\r' | sed -n "s/^$2://p"; }

# rd_sentinel_lines PRIMARY-PORT - a Sentinel's lines for rd_start:
# quorum 2, short down-after-milliseconds and failover-timeout
rd_sentinel_lines() {
	printf '%s\n' "sentinel monitor $RD_MASTER_NAME 127.0.0.1 $1 2" \
		"sentinel down-after-milliseconds $RD_MASTER_NAME $RD_DOWN_MS" \
		"sentinel failover-timeout $RD_MASTER_NAME $RD_FAILOVER_TIMEOUT" \
		"sentinel parallel-syncs $RD_MASTER_NAME 1"
}

# rd_sentinel_setup DIR - a primary and a replica (TCP only: Sentinel
# speaks TCP) and three Sentinels, in DIR/primary, DIR/replica and
# DIR/s1..s3; returns once the replica is in sync and every Sentinel knows
# the replica and the two other Sentinels (10 s at most), so that a
# failover can start at once
rd_sentinel_setup() {
	local d=$1 s lines i ok
	mkdir -p "$d"
	RD_PRIMARY=$d/primary RD_REPLICA=$d/replica RD_SENTINELS=()
	rd_start "$RD_PRIMARY" tcp || return 1
	rd_start "$RD_REPLICA" tcp "replicaof 127.0.0.1 $RD_PORT" || return 1
	mapfile -t lines < <(rd_sentinel_lines "$(rd_port "$RD_PRIMARY")")
	for s in s1 s2 s3; do
		rd_start "$d/$s" tcp "${lines[@]}" || return 1
		RD_SENTINELS+=("$d/$s")
	done
	# Sentinels find each other by their hello messages through the
	# primary, every 2 s: ask four times a second.
	for i in $(seq 40); do
		ok=0
		[ "$(rd_info "$RD_REPLICA" master_link_status)" = up ] && ok=1
		for s in "${RD_SENTINELS[@]}"; do
			[ $ok = 1 ] && [ "$(rd_sentinel_field "$s" num-other-sentinels)" = 2 ] &&
				[ "$(rd_sentinel_field "$s" num-slaves)" = 1 ] || ok=0
		done
		[ $ok = 1 ] && return 0
		sleep 0.25
	done
	RD_WHY="the Sentinels did not see each other and the replica within 10 s"
	return 1
}

# rd_port DIR - the TCP port of the server in DIR
rd_port() { sed -n 's/^port //p' "$1/redis.conf" | tail -n 1; }

# rd_sentinel_field SDIR FIELD - a field of SENTINEL MASTER for the primary
rd_sentinel_field() {
	rd_cli "$1" SENTINEL MASTER "$RD_MASTER_NAME" 2>/dev/null | tr -d '\r' |
		awk -v f="$2" 'prev == f { print; exit } { prev = $0 }'
}

# rd_master_addr [SDIR] - "127.0.0.1 PORT" as a Sentinel (the first by
# default) reports the primary (SENTINEL get-master-addr-by-name)
rd_master_addr() {
	rd_cli "${1:-${RD_SENTINELS[0]}}" SENTINEL get-master-addr-by-name "$RD_MASTER_NAME" \
		2>/dev/null | tr -d '\r' | paste -sd ' '
}

# rd_failover [SECS] - SIGKILL the primary, then wait (30 s) until every
# Sentinel reports the replica as the primary and the replica says it is
# one; sets RD_FAILOVER_MS, from the kill to the first Sentinel's report
# (asked every 50 ms)
# shellcheck disable=SC2120 # SECS is optional: every caller takes the 30 s
rd_failover() {
	local want t0 s i end
	want="127.0.0.1 $(rd_port "$RD_REPLICA")"
	end=$(( ${1:-30} * 20 ))
	t0=${EPOCHREALTIME/./}
	RD_FAILOVER_MS=
	rd_kill "$RD_PRIMARY" || { RD_WHY="the primary did not die"; return 1; }
	[ -z "${RD_ON_KILL:-}" ] || eval "$RD_ON_KILL"
	for ((i = 0; i < end; i++)); do
		[ "$(rd_master_addr)" = "$want" ] && break
		sleep 0.05
	done
	[ $i -lt $end ] && RD_FAILOVER_MS=$(( (${EPOCHREALTIME/./} - t0) / 1000 ))
	for ((; i < end; i += 4)); do
		for s in "${RD_SENTINELS[@]}" ""; do
			[ -z "$s" ] && [ "$(rd_info "$RD_REPLICA" role)" = master ] && return 0
			[ -n "$s" ] && [ "$(rd_master_addr "$s")" != "$want" ] && break
		done
		sleep 0.2
	done
	RD_WHY="no failover within ${1:-30} s: the Sentinels say [$(for s in "${RD_SENTINELS[@]}"; do rd_master_addr "$s"; done | paste -sd ,)], the replica's role [$(rd_info "$RD_REPLICA" role)]"
	return 1
}

# rd_burst DIR pipe|each|wait N - write the keys k:1..k:N to the server
# in DIR with redis-cli; its output goes to DIR.burst (rd_acked reads it).
# pipe: redis-cli --pipe, as fast as the server takes them; each: one SET
# at a time, each answered before the next; wait: each SET followed by
# WAIT 1 100. When the server dies on the way, redis-cli's answers stop
# there (and it goes on failing to reconnect for the rest).
rd_burst() {
	local d=$1 mode=$2 n=$3
	case $mode in
	pipe) awk -v n="$n" 'BEGIN { for (i = 1; i <= n; i++) printf "SET k:%d %d\r\n", i, i }' \
		| rd_cli "$d" --pipe > "$d.burst" 2>&1 ;;
	each) awk -v n="$n" 'BEGIN { for (i = 1; i <= n; i++) printf "SET k:%d %d\n", i, i }' \
		| rd_cli "$d" > "$d.burst" 2>&1 ;;
	wait) awk -v n="$n" 'BEGIN { for (i = 1; i <= n; i++) printf "SET k:%d %d\nWAIT 1 100\n", i, i }' \
		| rd_cli "$d" > "$d.burst" 2>&1 ;;
	esac
}

# rd_acked DIR pipe|each|wait - what the burst to DIR was told: sets
# RD_ACKED (the SETs answered OK; answers come in order, so these are
# k:1..k:RD_ACKED) and RD_CONFIRMED (the last k:I that a WAIT after it
# confirmed on a replica, as WAIT counts every write before it; 0 without
# WAIT). --pipe prints its count only when it got every answer: else
# RD_ACKED is "unknown".
rd_acked() {
	local f=$1.burst
	case $2 in
	pipe) RD_ACKED=$(sed -n 's/^errors: \([0-9]*\), replies: \([0-9]*\)$/\2 \1/p' "$f" \
		| awk '{ print $1 - $2 }')
	      RD_ACKED=${RD_ACKED:-unknown} RD_CONFIRMED=0 ;;
	*) read -r RD_ACKED RD_CONFIRMED < <(awk '
		bad { next }
		$0 == "OK" { acked++; next }
		/^[0-9]+$/ { if ($0 >= 1) confirmed = acked; next }
		{ bad = 1 }
		END { print acked + 0, confirmed + 0 }' "$f") ;;
	esac
}

# rd_present DIR N - how many of k:1..k:N the server in DIR holds (one
# script, so the count is of one moment)
rd_present() {
	rd_cli "$1" EVAL "local c = 0
		for i = 1, tonumber(ARGV[1]) do c = c + redis.call('EXISTS', 'k:' .. i) end
		return c" 0 "$2" | tr -d '\r'
}

# --- the group: the harness proves itself ------------------------------------

# rd_from_other PORT - the first word Redis answers to PING from a client
# whose address is 127.0.0.2: loopback for the kernel, but not one of the
# addresses Redis's protected mode lets in (127.0.0.1, ::1, a UNIX socket)
rd_from_other() {
	perl -MIO::Socket::IP -e '
		my $s = IO::Socket::IP->new(PeerHost => "127.0.0.1", PeerPort => $ARGV[0],
			LocalHost => "127.0.0.2", Timeout => 5) or die "connect: $@\n";
		print $s "PING\r\n";
		my $l = <$s>;
		print defined $l ? $l : "(nothing)\n";' "$1" 2>&1 | tr -d '\r' | awk '{ print $1; exit }'
}

# rd_h_basic - start, stop, kill and restart, on a socket and on a port;
# nothing kept unless asked
rd_h_basic() {
	local d=$WORK/redis-unix t=$WORK/redis-tcp a=$WORK/redis-aof p

	if ! rd_start "$d" unix; then fail "redis: a server on a UNIX socket" "$RD_WHY"; return; fi
	expect "redis: a server on DIR/redis.sock answers PING" PONG "$(rd_cli "$d" PING)"
	expect "redis: it has no TCP port" "port 0" "$(rd_cli "$d" CONFIG GET port | paste -sd ' ')"
	expect "redis: its socket is 0700" "srwx------" "$(stat -c %A "$d/redis.sock")"
	expect "redis: no persistence by default (save, appendonly)" "save  appendonly no" \
		"$(rd_cli "$d" CONFIG GET save | paste -sd ' ') $(rd_cli "$d" CONFIG GET appendonly | paste -sd ' ')"
	rd_cli "$d" SET greeting hello >/dev/null
	p=$RD_PID
	if rd_restart "$d"; then
		check "redis: rd_restart starts a new process ($p, then $RD_PID)" test "$p" != "$RD_PID"
		expect "redis: on the same socket" PONG "$(rd_cli "$d" PING)"
		expect "redis: and the key written before is gone (nothing kept)" "" "$(rd_cli "$d" GET greeting)"
	else
		fail "redis: rd_restart on a socket" "$RD_WHY"
	fi
	rd_stop "$d"
	check "redis: rd_stop ends it" bash -c "! kill -0 $RD_PID"
	check "redis: and Redis removes its socket" test ! -e "$d/redis.sock"

	if ! rd_start "$t" tcp; then fail "redis: a server on a loopback port" "$RD_WHY"; return; fi
	expect "redis: a server on 127.0.0.1:$RD_PORT answers PING" PONG \
		"$(redis-cli -h 127.0.0.1 -p "$RD_PORT" PING)"
	p=$RD_PID
	rd_kill "$t"
	check "redis: rd_kill ends it (SIGKILL)" bash -c "! kill -0 $p"
	check "redis: and the port refuses" bash -c "! (exec 3<>/dev/tcp/127.0.0.1/$RD_PORT) 2>/dev/null"
	if rd_restart "$t"; then
		expect "redis: rd_restart brings it back on the same port" PONG \
			"$(redis-cli -h 127.0.0.1 -p "$RD_PORT" PING)"
	else
		fail "redis: rd_restart on a port" "$RD_WHY"
	fi

	# Persistence when a LINE asks for it: survives even SIGKILL.
	if ! rd_start "$a" unix "appendonly yes" "appendfsync always"; then
		fail "redis: a server with appendonly yes" "$RD_WHY"; return
	fi
	rd_cli "$a" SET greeting kept >/dev/null
	rd_kill "$a"
	if rd_restart "$a"; then
		expect "redis: with appendonly yes (asked for) a key survives SIGKILL and restart" kept \
			"$(rd_cli "$a" GET greeting)"
	else
		fail "redis: rd_restart with appendonly" "$RD_WHY"
	fi
}

# rd_h_auth - requirepass and protected-mode, from loopback and from an
# address protected mode does not trust
rd_h_auth() {
	local d=$WORK/redis-pass o=$WORK/redis-open c=$WORK/redis-closed port

	if ! rd_start "$d" tcp "requirepass s3cret"; then fail "redis: a server with a password" "$RD_WHY"; return; fi
	port=$RD_PORT
	expect "redis: with requirepass, no password gets NOAUTH" "NOAUTH Authentication required." \
		"$(env -u REDISCLI_AUTH redis-cli -h 127.0.0.1 -p "$port" PING 2>&1)"
	expect "redis: a wrong one WRONGPASS" WRONGPASS \
		"$(REDISCLI_AUTH=wrong redis-cli -h 127.0.0.1 -p "$port" PING 2>&1 | grep -o -m 1 'WRONGPASS')"
	expect "redis: rd_cli gives it (RD_PASS=$RD_PASS)" PONG "$(rd_cli "$d" PING)"
	expect "redis: with a password, protected mode lets a non-local client ask for it" \
		-NOAUTH "$(rd_from_other "$port")"

	if ! rd_start "$c" tcp; then fail "redis: a server in protected mode" "$RD_WHY"; return; fi
	expect "redis: protected-mode yes (the default) and no password: a non-local client is DENIED" \
		-DENIED "$(rd_from_other "$RD_PORT")"
	expect "redis: a loopback client is served" PONG "$(rd_cli "$c" PING)"
	if ! rd_start "$o" tcp "protected-mode no"; then fail "redis: protected-mode no" "$RD_WHY"; return; fi
	expect "redis: protected-mode no: the same client is served" "+PONG" "$(rd_from_other "$RD_PORT")"
}

# rd_h_oom - maxmemory 2mb with noeviction: SETs of 100 KiB fail with
# OOM, reads go on
rd_h_oom() {
	local d=$WORK/redis-oom i r='' ok=0

	if ! rd_start "$d" unix "maxmemory 2mb" "maxmemory-policy noeviction"; then
		fail "redis: a server with maxmemory 2mb" "$RD_WHY"; return
	fi
	head -c 102400 /dev/zero | tr '\0' x > "$d.value"
	for i in $(seq 100); do
		r=$(rd_cli "$d" -x SET "big:$i" < "$d.value" 2>&1)
		[ "$r" = OK ] || break
		ok=$((ok + 1))
	done
	expect "redis: maxmemory 2mb: a SET fails with OOM (after $ok of 100 KiB)" \
		"OOM command not allowed when used memory > 'maxmemory'." "$r"
	check "redis: the first SETs went through" test "$ok" -ge 1
	expect "redis: reads still work" 102401 "$(rd_cli "$d" GET big:1 | wc -c)"
}

# rd_h_failover - a Sentinel group fails over: the replica is promoted
rd_h_failover() {
	local t0 ms

	t0=${EPOCHREALTIME/./}
	if ! rd_sentinel_setup "$WORK/redis-sentinel"; then fail "redis: a Sentinel group" "$RD_WHY"; return; fi
	ms=$(( (${EPOCHREALTIME/./} - t0) / 1000 ))
	pass "redis: a primary, a replica and 3 Sentinels (quorum 2) see each other (${ms} ms)"
	expect "redis: the Sentinels report the primary" "127.0.0.1 $(rd_port "$RD_PRIMARY")" "$(rd_master_addr)"
	expect "redis: the replica refuses writes" READONLY \
		"$(rd_cli "$RD_REPLICA" SET x 1 2>&1 | grep -o '^READONLY')"
	rd_cli "$RD_PRIMARY" SET before failover >/dev/null
	expect "redis: a write on the primary reaches the replica (WAIT 1 1000)" 1 \
		"$(rd_cli "$RD_PRIMARY" WAIT 1 1000)"
	# The failover comes right after a burst of writes (redis-cli --pipe),
	# and measures what it lost (rd_h_loss: more of it).
	if ! rd_loss_measure pipe after 20000; then
		fail "redis: SIGKILL of the primary: the replica is promoted" "$RD_WHY"; return
	fi
	pass "redis: SIGKILL of the primary: a Sentinel reports the replica after $RD_FAILOVER_MS ms (down-after ${RD_DOWN_MS} ms)"
	pass "redis: write loss, 20000 SETs (pipe), SIGKILL after the burst: $RD_LOSS"
	expect "redis: all three Sentinels agree" 3 \
		"$(for s in "${RD_SENTINELS[@]}"; do rd_master_addr "$s"; done | grep -cx "127.0.0.1 $(rd_port "$RD_REPLICA")")"
	expect "redis: the promoted replica has the key" failover "$(rd_cli "$RD_REPLICA" GET before)"
	expect "redis: and takes writes" OK "$(rd_cli "$RD_REPLICA" SET after failover)"
}

# rd_loss_measure MODE after|during N - on a Sentinel group that is ready,
# a burst of N writes (rd_burst MODE) to the primary and a failover right
# after the burst, or in it once the primary holds a quarter of the keys;
# sets RD_LOSS to what the promoted replica holds
rd_loss_measure() {
	local mode=$1 when=$2 n=$3 b acked all
	if [ "$when" = after ]; then
		rd_burst "$RD_PRIMARY" "$mode" "$n"
		rd_failover || return 1
	else
		rd_burst "$RD_PRIMARY" "$mode" "$n" &
		b=$!
		for _ in $(seq 300); do
			[ "$(rd_cli "$RD_PRIMARY" DBSIZE 2>/dev/null)" -ge $((n / 4)) ] 2>/dev/null && break
			sleep 0.01
		done
		rd_failover || { wait "$b"; return 1; }
		wait "$b"
	fi
	rd_acked "$RD_PRIMARY" "$mode"
	[ "$RD_ACKED" != unknown ] || { RD_WHY="redis-cli --pipe gave no count"; return 1; }
	acked=$(rd_present "$RD_REPLICA" "$RD_ACKED")
	all=$(rd_present "$RD_REPLICA" "$n")
	case $acked:$all in
	*[!0-9:]*|:*|*:) RD_WHY="no count from the replica [$acked] [$all]"; return 1 ;;
	esac
	RD_LOSS="$RD_ACKED acknowledged ($RD_CONFIRMED confirmed by WAIT), $((RD_ACKED - acked)) of them lost, $((all - acked)) unacknowledged kept; failover $RD_FAILOVER_MS ms"
}

# rd_h_loss - how many acknowledged writes a failover loses, without and
# with WAIT 1 100 after each write, right after a burst and in one: printed,
# not judged (they depend on timing); only that each run happened is
# checked. (The first run, --pipe right after the burst, is rd_h_failover's.)
rd_h_loss() {
	local run mode when n
	for run in "wait after 5000" "each during 12000" "wait during 4000"; do
		read -r mode when n <<< "$run"
		if ! rd_sentinel_setup "$WORK/redis-loss-$mode-$when"; then
			fail "redis: write loss, $n SETs ($mode), SIGKILL $when the burst" "$RD_WHY"
		elif rd_loss_measure "$mode" "$when" "$n"; then
			pass "redis: write loss, $n SETs ($mode), SIGKILL $when the burst: $RD_LOSS"
		else
			fail "redis: write loss, $n SETs ($mode), SIGKILL $when the burst" "$RD_WHY"
		fi
		rd_cleanup
	done
}

t_redis_harness() {
	local why old_trap=() d left=''

	if why=$(rd_cannot_run); then skip "redis harness" "$why"; return; fi
	RD_ALL=()
	eval "old_trap=($(trap -p EXIT))"
	# shellcheck disable=SC2064 # the old command is wanted as it is now
	trap "rd_cleanup; ${old_trap[2]:-}" EXIT

	rd_h_basic
	rd_h_auth
	rd_h_oom
	rd_h_failover
	rd_cleanup
	rd_h_loss

	rd_cleanup
	for d in "${RD_ALL[@]}"; do rd_alive "$d" && left="$left $(cat "$d/pid")"; done
	expect "redis: rd_cleanup leaves no server running (${#RD_ALL[@]} started)" "" "$left"
	if [ ${#old_trap[@]} -ge 3 ]; then trap -- "${old_trap[2]}" EXIT; else trap - EXIT; fi
}

# --- the group redis: greylistd on the Redis store (issue 15) ----------------
#
# Every decision and both TTLs on a UNIX socket and on loopback TCP, the key
# shapes (with --privacy too); 8 processes racing on 500 new triplets and
# on their first passes; redis-server SIGKILLed under 4 streaming clients,
# then restarted under them; a stopped (slow) server; OOM; WRONGTYPE; the
# password; greylistctl on Redis, and a GDBM file moved to Redis and back;
# two MX hosts (each a Postfix and a greylistd of its own, in network
# namespaces) sharing a password-protected Redis on their LAN; a Sentinel
# group failing over under greylistd, and the acknowledged writes it loses
# without and with --redis-wait=1. Greylisting time is moved with faketime
# (at), never waited for, but for the MX hosts' --delay=3s. About 60 s on
# 2 busy cores (15 of them the MX hosts, 25 the two Sentinel groups).

RG_TEXT='Greylisted, please try again in'

# rg_gl ARGS... - greylistd with this test's log (no --db: --redis names
# the store)
rg_gl() { "$GREYLISTD" --log-file="$D/log" "$@"; }

# rg_at OFFSET ARGS... - rg_gl with the clock moved by OFFSET
rg_at() { local off=$1; shift; at "$off" "$GREYLISTD" --log-file="$D/log" "$@"; }

# rg_tkey NET SENDER RCPT / rg_ckey NET CLIENT - a record's Redis key
rg_tkey() { printf '{%s}T\n%s\n%s\n%s' "$1" "$1" "$2" "$3"; }
rg_ckey() { printf '{%s}C\n%s' "$1" "$2"; }

# rd_keys DIR - every key of the server in DIR, newlines shown as "|",
# sorted (KEYS in a script: the test's servers are small)
rd_keys() {
	rd_cli "$1" EVAL "local out = {}
		for _, k in ipairs(redis.call('KEYS', '*')) do
			out[#out + 1] = (string.gsub(k, '\n', '|'))
		end
		return out" 0 | LC_ALL=C sort
}

# rd_values DIR - every string value of the server in DIR, one a line
rd_values() {
	rd_cli "$1" EVAL "local out = {}
		for _, k in ipairs(redis.call('KEYS', '*')) do
			if redis.call('TYPE', k).ok == 'string' then
				out[#out + 1] = redis.call('GET', k)
			end
		end
		return out" 0
}

# rg_ttl NAME DIR KEY WANT - the key's TTL is WANT, give or take 2 s
rg_ttl() {
	local got
	got=$(rd_cli "$2" TTL "$3" | tr -d '\r')
	case $got in
	''|*[!0-9-]*) fail "$1" "TTL [$got]" ;;
	*) if [ $((got - $4)) -le 2 ] && [ $(($4 - got)) -le 2 ]; then
		pass "$1 (TTL $got s, want $4 +-2)"
	   else
		fail "$1" "TTL $got s, want $4 +-2"
	   fi ;;
	esac
}

# rg_reqs TAG N [REQ-ARGS...] - N requests, the recipient of the i-th
# TAG-i@example.net, each a message of its own (instance) (written by
# awk: req is too slow for thousands)
rg_reqs() {
	local tag=$1 n=$2; shift 2
	req "recipient=@@R@@" "instance=@@R@@" "$@" | awk -v t="$tag" -v n="$n" '
		{ a[NR] = $0 }
		END { for (i = 1; i <= n; i++) for (j = 1; j <= NR; j++) {
			l = a[j]; sub(/@@R@@/, t "-" i "@example.net", l); print l } }'
}

# rg_feed FILE STOP - the requests of FILE one at a time (each flushed),
# until the file STOP exists; a stream that a test ends when it wants.
# How many it sent goes to STOP.sent.
rg_feed() {
	perl -e 'open(my $f, "<", $ARGV[0]) or die "$ARGV[0]: $!\n";
		$/ = "\n\n"; $| = 1; my $n = 0;
		while (my $r = <$f>) { last if -e $ARGV[1]; print $r; $n++ }
		open(my $o, ">", "$ARGV[1].sent") or die; print $o "$n\n"' "$1" "$2"
}

# rg_pids_of REGEX - the PIDs of the greylistd lines matching REGEX in
# $D/log, one a line, sorted
rg_pids_of() {
	grep -E -- "$1" "$D/log" 2>/dev/null | sed -n 's/.* greylistd\[\([0-9]*\)\]: .*/\1/p' | sort -u
}

# rg_noise - the warnings and errors of $D/log, the first three
rg_noise() { grep -E 'greylistd\[[0-9]+\]: (warning|error):' "$D/log" 2>/dev/null | head -n 3; }

# rg_decisions unix|tcp - every decision, the TTLs, the key shapes, on a
# server reached over a UNIX socket or loopback TCP
rg_decisions() {
	local m=$1 r=$WORK/rd-$1 addr out t c t2 t3 t6 c6 o o2
	if ! rd_start "$r" "$m"; then fail "redis $m: a server" "$RD_WHY"; return; fi
	if [ "$m" = unix ]; then addr=$RD_SOCK; else addr=127.0.0.1:$RD_PORT; fi
	newdir "redis-dec-$m"
	# Not the defaults: the TTLs must follow the options.
	o=(--redis="$addr" --retry-window=3h --max-age=10d --auto-whitelist-clients=2)
	t=$(rg_tkey 192.0.2.0 alice@example.com bob@example.net)
	c=$(rg_ckey 192.0.2.0 192.0.2.10)

	out=$(req | rg_gl "${o[@]}" | actions)
	expect "redis $m ($addr): a new triplet is deferred" "DEFER_IF_PERMIT $RG_TEXT 300 seconds" "$out"
	expect_grep "redis $m: logged reason=new" \
		'action=greylist, reason=new, client_name=mail\.example\.com, client_address=192\.0\.2\.10, sender=alice@example\.com, recipient=bob@example\.net$' "$D/log"
	expect "redis $m: its key is {192.0.2.0}T\\n192.0.2.0\\nalice@example.com\\nbob@example.net" \
		"{192.0.2.0}T|192.0.2.0|alice@example.com|bob@example.net" "$(rd_keys "$r" | grep 'T|')"
	case $(rd_cli "$r" GET "$t") in
	"1 "[0-9]*" "[0-9]*" 0") pass "redis $m: its value is the file's: 1 FIRST LAST 0" ;;
	*) fail "redis $m: its value is the file's: 1 FIRST LAST 0" "[$(rd_cli "$r" GET "$t")]" ;;
	esac
	rg_ttl "redis $m: a pending triplet's TTL is --retry-window=3h + 1 s" "$r" "$t" 10801
	expect "redis $m: no client record before a pass" 0 "$(rd_cli "$r" EXISTS "$c")"

	out=$(req | rg_at +100s "${o[@]}" | actions)
	case $out in
	"DEFER_IF_PERMIT $RG_TEXT "19[0-9]" seconds"|"DEFER_IF_PERMIT $RG_TEXT 200 seconds") pass "redis $m: an early retry is deferred with the time left ($out)" ;;
	*) fail "redis $m: an early retry is deferred with the time left" "[$out]" ;;
	esac
	expect_grep "redis $m: logged reason=early-retry" 'action=greylist, reason=early-retry \([0-9]+s missing\), .*recipient=bob@example\.net$' "$D/log"

	out=$(req | rg_at +301s "${o[@]}" | actions)
	case $out in
	"PREPEND X-Greylist: delayed 3"[0-9][0-9]" seconds by greylistd-"*) pass "redis $m: the retry after the delay passes with X-Greylist" ;;
	*) fail "redis $m: the retry after the delay passes with X-Greylist" "[$out]" ;;
	esac
	expect_grep "redis $m: logged as the first pass, delay=N" 'action=pass, reason=triplet found, delay=3[0-9][0-9], .*recipient=bob@example\.net$' "$D/log"
	rg_ttl "redis $m: a passed triplet's TTL is --max-age=10d + 1 s" "$r" "$t" 864001
	expect "redis $m: the client's key is {192.0.2.0}C\\n192.0.2.10" "{192.0.2.0}C|192.0.2.10" \
		"$(rd_keys "$r" | grep 'C|')"
	case $(rd_cli "$r" GET "$c") in
	"1 1 "[0-9]*) pass "redis $m: the client's value: 1 COUNT=1 LAST" ;;
	*) fail "redis $m: the client's value: 1 COUNT=1 LAST" "[$(rd_cli "$r" GET "$c")]" ;;
	esac
	rg_ttl "redis $m: the client's TTL is --max-age + 1 s" "$r" "$c" 864001

	out=$(req | rg_at +400s "${o[@]}" | actions)
	expect "redis $m: a known triplet: DUNNO" DUNNO "$out"
	expect "redis $m: logged as triplet found (no delay)" 1 \
		"$(grep -c 'action=pass, reason=triplet found, client_name=.*recipient=bob@example\.net$' "$D/log")"

	# --auto-whitelist-clients=2: a second pass an hour later whitelists
	# the client; then a new triplet from it passes at once.
	t2=$(rg_tkey 192.0.2.0 alice@example.com r2@example.net)
	req recipient=r2@example.net | rg_at +3700s "${o[@]}" >/dev/null
	out=$(req recipient=r2@example.net | rg_at +4300s "${o[@]}" | actions | cut -c1-7)
	expect "redis $m: a second triplet passes an hour later" PREPEND "$out"
	expect_grep "redis $m: and the client is whitelisted (2 passes)" 'whitelisted: mail\.example\.com\[192\.0\.2\.10\]' "$D/log"
	case $(rd_cli "$r" GET "$c") in
	"1 2 "[0-9]*) pass "redis $m: the client's count is 2" ;;
	*) fail "redis $m: the client's count is 2" "[$(rd_cli "$r" GET "$c")]" ;;
	esac
	t3=$(rg_tkey 192.0.2.0 alice@example.com r3@example.net)
	out=$(req recipient=r3@example.net | rg_at +4400s "${o[@]}" | actions)
	expect "redis $m: a new triplet of the whitelisted client: DUNNO" DUNNO "$out"
	expect_grep "redis $m: logged reason=client AWL" 'action=pass, reason=client AWL, client_name=mail\.example\.com, client_address=192\.0\.2\.10, .*recipient=r3@example\.net$' "$D/log"
	expect "redis $m: an AWL pass stores no triplet" 0 "$(rd_cli "$r" EXISTS "$t3")"
	expect "redis $m: the second triplet is passed" 1 "$(rd_cli "$r" EXISTS "$t2")"

	# The defaults, and an IPv6 client: its /64 is the tag.
	o2=(--redis="$addr")
	t6=$(rg_tkey 2001:db8:1:: alice@example.com v6@example.net)
	c6=$(rg_ckey 2001:db8:1:: 2001:db8:1::)
	out=$(req client_address=2001:db8:1::5 recipient=v6@example.net | rg_gl "${o2[@]}" | actions)
	expect "redis $m: an IPv6 client's new triplet is deferred" "DEFER_IF_PERMIT $RG_TEXT 300 seconds" "$out"
	expect "redis $m: under {2001:db8:1::}T\\n2001:db8:1::\\n..." 1 "$(rd_cli "$r" EXISTS "$t6")"
	rg_ttl "redis $m: default --retry-window: TTL 2d + 1 s" "$r" "$t6" 172801
	req client_address=2001:db8:1::5 recipient=v6@example.net | rg_at +301s "${o2[@]}" >/dev/null
	rg_ttl "redis $m: default --max-age: a passed triplet's TTL 35d + 1 s" "$r" "$t6" 3024001
	rg_ttl "redis $m: and its client {2001:db8:1::}C\\n2001:db8:1:: 35d + 1 s" "$r" "$c6" 3024001
	expect "redis $m: the store holds the key-kind note and these records only" \
		"M|keys {192.0.2.0}C|192.0.2.10 {192.0.2.0}T|192.0.2.0|alice@example.com|bob@example.net {192.0.2.0}T|192.0.2.0|alice@example.com|r2@example.net {2001:db8:1::}C|2001:db8:1:: {2001:db8:1::}T|2001:db8:1::|alice@example.com|v6@example.net" \
		"$(rd_keys "$r" | paste -sd ' ')"
	expect "redis $m: no warning or error logged" "" "$(rg_noise)"
}

# rg_privacy - --privacy: every key a digest, tagged with its first 16 hex
# digits; nothing of the triplet in any key or value
rg_privacy() {
	local r=$WORK/rd-privacy out k bad
	if ! rd_start "$r" unix; then fail "redis --privacy: a server" "$RD_WHY"; return; fi
	newdir redis-privacy
	out=$(req | rg_gl --redis="$RD_SOCK" --privacy | actions | cut -c1-15)
	expect "redis --privacy: a new triplet is deferred" DEFER_IF_PERMIT "$out"
	out=$(req | rg_at +301s --redis="$RD_SOCK" --privacy | actions | cut -c1-7)
	expect "redis --privacy: its retry passes" PREPEND "$out"
	rd_keys "$r" > "$D/keys"
	expect "redis --privacy: three keys: the note, a triplet, a client" 3 "$(grep -c . "$D/keys")"
	expect "redis --privacy: the T and C keys are {16 hex digits}KIND\\n64 hex digits, the tag the digest's start" 2 \
		"$(grep -cE '^\{([0-9a-f]{16})\}[TC]\|\1[0-9a-f]{48}$' "$D/keys")"
	bad=$( { cat "$D/keys"; rd_values "$r"; } | grep -c -e 192.0.2 -e example -e alice -e bob)
	expect "redis --privacy: no address, sender or recipient in a key or value" 0 "$bad"
	k=$(grep '^{[0-9a-f]*}T|' "$D/keys" | sed 's/|/\n/')
	rg_ttl "redis --privacy: the passed triplet's TTL is max-age + 1 s" "$r" "$k" 3024001
	expect_grep "redis --privacy: greylistctl dump shows the kind hmac-sha256" '^M keys hmac-sha256:[0-9a-f]{64}$' \
		<("$GREYLISTCTL" dump --redis="$RD_SOCK" --privacy 2>&1)
	out=$(req | rg_gl --redis="$RD_SOCK" | actions)
	expect "redis --privacy: a greylistd without --privacy on that store fails open" DUNNO "$out"
	expect_grep "redis --privacy: saying why" 'reason=fail-open \(Redis holds hashed keys but privacy is off: set privacy = yes' "$D/log"
}

# rg_race - 8 processes on the same 500 new triplets, then on their first
# passes: one "new" and one first pass each, nothing lost
rg_race() {
	local r=$WORK/rd-race i pids=() rc=0 n
	if ! rd_start "$r" unix; then fail "redis race: a server" "$RD_WHY"; return; fi
	newdir redis-race
	rg_reqs race 500 > "$D/req"
	for i in 1 2 3 4 5 6 7 8; do
		timeout 120 "$GREYLISTD" --log-file="$D/log" --redis="$RD_SOCK" < "$D/req" > "$D/new.$i" &
		pids+=($!)
	done
	for i in "${pids[@]}"; do wait "$i" || rc=$?; done
	expect "redis race: 8 processes on 500 new triplets: each exits 0 (none hung)" 0 "$rc"
	expect "redis race: 4000 answers, every one a defer" "4000 4000" \
		"$(cat "$D"/new.* | grep -c '^action=') $(cat "$D"/new.* | grep -c "^action=DEFER_IF_PERMIT $RG_TEXT")"
	expect "redis race: exactly 500 reason=new" 500 "$(grep -c 'reason=new,' "$D/log")"
	expect "redis race: one for each triplet" 500 \
		"$(grep 'reason=new,' "$D/log" | sed 's/.*recipient=//' | sort -u | grep -c .)"
	expect "redis race: the others early retries (3500)" 3500 "$(grep -c 'reason=early-retry' "$D/log")"
	expect "redis race: no fail-open" 0 "$(grep -c 'fail-open' "$D/log")"

	pids=() rc=0
	for i in 1 2 3 4 5 6 7 8; do
		timeout 120 env FAKETIME_DONT_FAKE_MONOTONIC=1 faketime -f +301s \
			"$GREYLISTD" --log-file="$D/log" --redis="$RD_SOCK" < "$D/req" > "$D/pass.$i" &
		pids+=($!)
	done
	for i in "${pids[@]}"; do wait "$i" || rc=$?; done
	expect "redis race: 8 processes after the delay: each exits 0" 0 "$rc"
	expect "redis race: exactly 500 first passes (PREPEND X-Greylist), 3500 DUNNO" "500 3500" \
		"$(cat "$D"/pass.* | grep -c '^action=PREPEND X-Greylist: ') $(cat "$D"/pass.* | grep -cx 'action=DUNNO')"
	expect "redis race: 500 passes logged with delay=, one for each triplet" "500 500" \
		"$(grep -c 'reason=triplet found, delay=' "$D/log") $(grep 'reason=triplet found, delay=' "$D/log" | sed 's/.*recipient=//' | sort -u | grep -c .)"
	expect "redis race: still no fail-open, no warning" "0 " "$(grep -c 'fail-open' "$D/log") $(rg_noise)"
	"$GREYLISTCTL" dump --redis="$RD_SOCK" > "$D/dump" 2>&1
	n=$(awk '$1 == "T" && $4 != "-"' "$D/dump" | grep -c .)
	expect "redis race: the dump shows 500 passed triplets and no pending one" "500 0" \
		"$n $(awk '$1 == "T" && $4 == "-"' "$D/dump" | grep -c .)"
	expect_grep "redis race: greylistctl stats agrees (passed=500)" '^passed=500$' <("$GREYLISTCTL" stats --redis="$RD_SOCK" 2>&1)
}

# rg_stream TAG DIR AFTER - a client's requests (new triplets TAG-i), one
# every 2 ms, until DIR/killed exists; then AFTER more at once; then, once
# DIR/restarted exists, one more (TAG-restart). Writes DIR/TAG.before (the
# requests sent before it saw the kill) and DIR/TAG.sent.
rg_stream() {
	req "recipient=@@R@@" > "$2/$1.tmpl"
	perl -e '
		my ($tag, $dir, $after) = @ARGV;
		open(my $f, "<", "$dir/$tag.tmpl") or die; local $/; my $t = <$f>; $| = 1;
		sub one { my $r = $t; $r =~ s/\@\@R\@\@/$_[0]\@example.net/; print $r }
		sub note { open(my $o, ">", "$dir/$tag.$_[0]") or die; print $o "$_[1]\n"; close $o }
		my $i = 0;
		while (!-e "$dir/killed" && $i < 30000) { $i++; one("$tag-$i"); select(undef, undef, undef, 0.002) }
		note("before", $i);
		for (1 .. $after) { $i++; one("$tag-$i") }
		note("sent", $i);
		for (1 .. 600) { last if -e "$dir/restarted"; select(undef, undef, undef, 0.1) }
		one("$tag-restart");' "$@"
}

# rg_until SECS CMD... - until CMD succeeds, every 50 ms; false after SECS
rg_until() {
	local end=$(( $1 * 20 )) i; shift
	for ((i = 0; i < end; i++)); do "$@" && return 0; sleep 0.05; done
	return 1
}
rg_dbsize_ge() { [ "$(rd_cli "$1" DBSIZE 2>/dev/null)" -ge "$2" ] 2>/dev/null; }
rg_files() { local f; for f in "$@"; do [ -e "$f" ] || return 1; done; }
# rg_answered DIR TAG... - each client has answered all it was sent
rg_answered() {
	local d=$1 t; shift
	for t in "$@"; do
		[ -e "$d/$t.sent" ] && [ "$(grep -c '^action=' "$d/ans.$t")" -ge "$(cat "$d/$t.sent")" ] || return 1
	done
}

# rg_kill - redis-server SIGKILLed under 4 clients streaming requests:
# every request answered, those after the kill DUNNO (fail-open), none
# hung, one warning per process; then restarted: the same processes
# greylist again
rg_kill() {
	local r=$WORK/rd-kill c tags=(c1 c2 c3 c4) pids=() b s n bad=0 dunno fo w ok=0 stored=0 before=0
	if ! rd_start "$r" tcp; then fail "redis kill: a server" "$RD_WHY"; return; fi
	newdir redis-kill
	for c in "${tags[@]}"; do
		( rg_stream "$c" "$D" 20 | timeout 120 "$GREYLISTD" --log-file="$D/log" \
			--redis="127.0.0.1:$RD_PORT" > "$D/ans.$c"; echo "$?" > "$D/rc.$c" ) &
		pids+=($!)
	done
	if ! rg_until 30 rg_dbsize_ge "$r" 200; then
		fail "redis kill: 4 clients write 200 triplets" "DBSIZE $(rd_cli "$r" DBSIZE)"
	fi
	rd_kill "$r"
	touch "$D/killed"
	# The requests sent after the kill must be answered before the server
	# comes back, or they would find it.
	rg_until 60 rg_answered "$D" "${tags[@]}" ||
		fail "redis kill: the clients answer the requests sent after the kill" "$(wc -l "$D"/ans.* | tr '\n' ' ')"
	if ! rd_restart "$r"; then fail "redis kill: rd_restart" "$RD_WHY"; fi
	touch "$D/restarted"
	for c in "${pids[@]}"; do wait "$c"; done

	for c in "${tags[@]}"; do
		b=$(cat "$D/$c.before" 2>/dev/null) s=$(cat "$D/$c.sent" 2>/dev/null)
		before=$((before + ${b:-0}))
		[ "$(cat "$D/rc.$c" 2>/dev/null)" = 0 ] || { bad=1; fail "redis kill: client $c exits 0 (timeout: 124)" "rc $(cat "$D/rc.$c" 2>/dev/null)"; }
		n=$(grep -c '^action=' "$D/ans.$c")
		[ "$n" = "$((s + 1))" ] || { bad=1; fail "redis kill: client $c: every request answered" "$n answers to $((s + 1)) requests"; }
		[ "$(grep '^action=' "$D/ans.$c" | sed -n "$((b + 1)),$((s))p" | sort -u)" = "action=DUNNO" ] ||
			{ bad=1; fail "redis kill: client $c: the 20 requests after the kill DUNNO" "$(grep '^action=' "$D/ans.$c" | sed -n "$((b + 1)),$((s))p" | sort | uniq -c | tr '\n' ' ')"; }
		[ "$(grep '^action=' "$D/ans.$c" | head -n 1 | cut -c1-22)" = "action=DEFER_IF_PERMIT" ] ||
			{ bad=1; fail "redis kill: client $c: its first request was greylisted" "$(head -n 1 "$D/ans.$c")"; }
		[ "$(grep '^action=' "$D/ans.$c" | tail -n 1 | cut -c1-22)" = "action=DEFER_IF_PERMIT" ] && ok=$((ok + 1))
		[ "$(rd_cli "$r" EXISTS "$(rg_tkey 192.0.2.0 alice@example.com "$c-restart@example.net")")" = 1 ] && stored=$((stored + 1))
	done
	[ $bad = 1 ] || pass "redis kill: 4 clients, $before requests before the kill and 80 after: every one answered, none hung, the 80 DUNNO"
	expect "redis kill: every answer a defer or DUNNO" "" \
		"$(cat "$D"/ans.* | grep '^action=' | grep -v -e '^action=DUNNO$' -e "^action=DEFER_IF_PERMIT $RG_TEXT" | head -n 2)"
	dunno=$(cat "$D"/ans.* | grep -cx 'action=DUNNO') fo=$(grep -c 'action=pass, reason=fail-open (' "$D/log")
	expect "redis kill: each DUNNO logged as fail-open ($dunno)" "$dunno" "$fo"
	w=$(grep 'warning: redis: ' "$D/log" | sed -n 's/.* greylistd\[\([0-9]*\)\]: .*/\1/p' | sort | uniq -c | awk '{ print $1 }' | paste -sd ' ')
	expect "redis kill: the warning logged once per process, by each of the 4" "1 1 1 1" "$w"
	expect "redis kill: by the processes that failed open" "$(rg_pids_of 'reason=fail-open')" "$(rg_pids_of 'warning: redis: ')"
	expect_grep "redis kill: the warning says what broke" 'warning: redis: Redis(: | at 127\.0\.0\.1:[0-9]+: )(the server closed the connection|Connection reset by peer|Connection refused|Broken pipe)' "$D/log"
	expect "redis kill: restarted, each running process greylists its next new triplet" 4 "$ok"
	expect "redis kill: and stores it in the new server" 4 "$stored"
}

# rg_restart - a server restarted while a long-lived process (--privacy)
# is idle on its connection: its next request is greylisted (the broken
# connection is made again at once), and keyed as a new process keys it
rg_restart() {
	local r=$WORK/rd-restart out pid
	if ! rd_start "$r" unix; then fail "redis restart: a server" "$RD_WHY"; return; fi
	newdir redis-restart
	rg_reqs l 2 > "$D/req"
	awk -v RS= 'NR == 1 { print; print "" }' "$D/req" > "$D/req.1"
	awk -v RS= 'NR == 2 { print; print "" }' "$D/req" > "$D/req.2"
	( cat "$D/req.1"; rg_until 30 test -e "$D/go"; cat "$D/req.2" ) |
		timeout 60 "$GREYLISTD" --log-file="$D/log" --redis="$RD_SOCK" --privacy > "$D/ans" &
	pid=$!
	rg_until 10 grep -q '^action=' "$D/ans"
	rd_restart "$r" || fail "redis restart: rd_restart" "$RD_WHY"
	touch "$D/go"
	wait "$pid"
	expect "redis restart: a running process's first request after a restart is greylisted, not failed open" \
		"DEFER_IF_PERMIT DEFER_IF_PERMIT" "$(actions < "$D/ans" | cut -c1-15 | paste -sd ' ')"
	expect "redis restart: no fail-open" 0 "$(grep -c fail-open "$D/log")"
	expect "redis restart: the restarted store has its key-kind note again" 1 "$(rd_cli "$r" EXISTS "$(printf 'M\nkeys')")"
	out=$(rg_reqs l 2 | awk -v RS= 'NR == 2 { print; print "" }' | rg_gl --redis="$RD_SOCK" --privacy | actions | cut -c1-15)
	expect "redis restart: a new process finds that triplet (the same key: early retry)" DEFER_IF_PERMIT "$out"
	expect_grep "redis restart: logged as early-retry" 'reason=early-retry .*recipient=l-2@example\.net$' "$D/log"
}

# rg_slow - a stopped server (SIGSTOP): answered DUNNO within the
# --lock-timeout, then served again once it runs (SIGCONT)
rg_slow() {
	local r=$WORK/rd-slow out rc t0 ms
	if ! rd_start "$r" unix; then fail "redis slow: a server" "$RD_WHY"; return; fi
	newdir redis-slow
	req recipient=first@example.net | rg_gl --redis="$RD_SOCK" >/dev/null
	kill -STOP "$RD_PID"
	t0=${EPOCHREALTIME/./}
	req > "$D/req"
	timeout 20 "$GREYLISTD" --log-file="$D/log" --redis="$RD_SOCK" --lock-timeout=1 < "$D/req" > "$D/ans"
	rc=$? ms=$(( (${EPOCHREALTIME/./} - t0) / 1000 ))
	out=$(actions < "$D/ans")
	kill -CONT "$RD_PID"
	expect "redis slow: a stopped server: DUNNO within --lock-timeout=1 (timeout 20 s did not fire; ${ms} ms)" "DUNNO 0" "$out $rc"
	expect_grep "redis slow: logged as fail-open" 'action=pass, reason=fail-open \(Redis: .*recipient=bob@example\.net$' "$D/log"
	out=$(req recipient=after@example.net | rg_gl --redis="$RD_SOCK" | actions | cut -c1-15)
	expect "redis slow: running again, it is used again" DEFER_IF_PERMIT "$out"
}

# rg_oom - maxmemory reached (noeviction): a new triplet fails open, a
# known one passes
rg_oom() {
	local r=$WORK/rd-oom out i ok=0 e=
	if ! rd_start "$r" unix "maxmemory 2mb" "maxmemory-policy noeviction"; then fail "redis OOM: a server" "$RD_WHY"; return; fi
	newdir redis-oom
	req recipient=known@example.net | rg_gl --redis="$RD_SOCK" >/dev/null
	req recipient=known@example.net | rg_at +301s --redis="$RD_SOCK" >/dev/null
	# Junk, 100 KiB a script (small commands: a big SET is refused while
	# its own query buffer counts, and small writes would pass after it),
	# until a script is refused; then a 1-byte SET is refused too.
	for i in $(seq 100); do
		e=$(rd_cli "$r" EVAL "for i = 1, 100 do
			redis.call('SET', 'junk:' .. ARGV[1] .. ':' .. i, string.rep('y', 1024))
			end return 'OK'" 0 "$i" 2>&1)
		[ "$e" = OK ] || break
		ok=$((ok + 1))
	done
	e="$e / $(rd_cli "$r" SET probe x 2>&1)"
	case $e in "OOM "*" / OOM "*) pass "redis OOM: junk fills maxmemory 2mb ($ok x 100 KiB): a script and a 1-byte SET are refused" ;;
	*) fail "redis OOM: junk fills maxmemory 2mb" "[$e] after $ok x 100 KiB" ;; esac
	out=$(req recipient=new@example.net | rg_gl --redis="$RD_SOCK" | actions)
	expect "redis OOM: a new triplet fails open" DUNNO "$out"
	expect_grep "redis OOM: logged with the OOM" 'action=pass, reason=fail-open \(Redis answered EVAL: OOM command not allowed .*recipient=new@example\.net$' "$D/log"
	expect_grep "redis OOM: and warned" 'warning: redis: Redis answered EVAL: OOM ' "$D/log"
	out=$(req recipient=known@example.net | rg_at +400s --redis="$RD_SOCK" | actions)
	expect "redis OOM: a known triplet passes" DUNNO "$out"
	expect_grep "redis OOM: as triplet found, not fail-open" 'action=pass, reason=triplet found, client_name=.*recipient=known@example\.net$' "$D/log"
}

# rg_wrongtype - a hash where a triplet's record belongs
rg_wrongtype() {
	local r=$WORK/rd-wrongtype out
	if ! rd_start "$r" unix; then fail "redis WRONGTYPE: a server" "$RD_WHY"; return; fi
	newdir redis-wrongtype
	rd_cli "$r" HSET "$(rg_tkey 192.0.2.0 alice@example.com bob@example.net)" a b >/dev/null
	out=$(req | rg_gl --redis="$RD_SOCK" | actions)
	expect "redis WRONGTYPE: a hash at the triplet's key: DUNNO" DUNNO "$out"
	expect_grep "redis WRONGTYPE: logged clearly" 'action=pass, reason=fail-open \(Redis answered EVAL: WRONGTYPE Operation against a key holding the wrong kind of value' "$D/log"
	expect "redis WRONGTYPE: the hash is left alone" hash "$(rd_cli "$r" TYPE "$(rg_tkey 192.0.2.0 alice@example.com bob@example.net)")"
	out=$(req recipient=other@example.net | rg_gl --redis="$RD_SOCK" | actions | cut -c1-15)
	expect "redis WRONGTYPE: other triplets are greylisted" DEFER_IF_PERMIT "$out"
}

# rg_password - requirepass: a wrong password, none, a missing or empty
# file, the right one
rg_password() {
	local r=$WORK/rd-pass a out rc
	if ! rd_start "$r" tcp "requirepass gl-s3cret"; then fail "redis password: a server" "$RD_WHY"; return; fi
	newdir redis-pass
	a=127.0.0.1:$RD_PORT
	echo wrong > "$D/pw.wrong"; printf 'gl-s3cret\nsecond line\n' > "$D/pw.ok"; : > "$D/pw.empty"
	out=$("$GREYLISTCTL" check --redis="$a" --redis-password-file="$D/pw.wrong" 2>&1); rc=$?
	case $rc:$out in
	1:*WRONGPASS*) pass "redis password: a wrong one: greylistctl check exits 1 naming WRONGPASS" ;;
	*) fail "redis password: a wrong one: greylistctl check exits 1 naming WRONGPASS" "rc $rc [$out]" ;;
	esac
	out=$(req | rg_gl --redis="$a" --redis-password-file="$D/pw.wrong" | actions)
	expect "redis password: greylistd with a wrong one fails open" DUNNO "$out"
	expect_grep "redis password: logging WRONGPASS" 'reason=fail-open \(Redis answered AUTH: WRONGPASS' "$D/log"
	out=$("$GREYLISTCTL" check --redis="$a" 2>&1); rc=$?
	case $rc:$out in
	1:*NOAUTH*) pass "redis password: none: greylistctl check exits 1 naming NOAUTH" ;;
	*) fail "redis password: none: greylistctl check exits 1 naming NOAUTH" "rc $rc [$out]" ;;
	esac
	out=$(req | rg_gl --redis="$a" | actions)
	expect "redis password: greylistd without one fails open" DUNNO "$out"
	expect_grep "redis password: logging NOAUTH" 'reason=fail-open \(Redis answered [A-Z]+: NOAUTH' "$D/log"
	out=$("$GREYLISTCTL" check --redis="$a" --redis-password-file="$D/missing" 2>&1); rc=$?
	case $rc:$out in
	1:*"--redis-password-file=$D/missing: No such file or directory"*) pass "redis password: a missing file: greylistctl check exits 1 naming it" ;;
	*) fail "redis password: a missing file: greylistctl check exits 1 naming it" "rc $rc [$out]" ;;
	esac
	out=$(req | rg_gl --redis="$a" --redis-password-file="$D/missing" | actions)
	expect "redis password: greylistd with a missing file fails open" DUNNO "$out"
	expect_grep "redis password: logging the file and the error" "reason=fail-open \\(--redis-password-file=$D/missing: No such file or directory\\)" "$D/log"
	out=$("$GREYLISTCTL" check --redis="$a" --redis-password-file="$D/pw.empty" 2>&1); rc=$?
	case $rc:$out in
	1:*"no password on its first line"*) pass "redis password: an empty file: exit 1, no password on its first line" ;;
	*) fail "redis password: an empty file: exit 1, no password on its first line" "rc $rc [$out]" ;;
	esac
	out=$("$GREYLISTCTL" check --redis="$a" --redis-password-file="$D/pw.ok" 2>&1); rc=$?
	expect "redis password: the right one (the file's first line): greylistctl check exits 0, silent" "0 " "$rc $out"
	out=$(req | rg_gl --redis="$a" --redis-password-file="$D/pw.ok" | actions | cut -c1-15)
	expect "redis password: greylistd with it greylists" DEFER_IF_PERMIT "$out"
	expect "redis password: and it stored the triplet" 1 "$(rd_cli "$r" EXISTS "$(rg_tkey 192.0.2.0 alice@example.com bob@example.net)")"
}

# rg_ctl_move NAME [--privacy] - a GDBM file to Redis with dump | load, and
# back the same way: the three dumps equal
rg_ctl_move() {
	local name=$1 r=$WORK/rd-move-$1 p=("${@:2}") rc out i
	if ! rd_start "$r" unix; then fail "redis ctl $name: a server" "$RD_WHY"; return; fi
	newdir "redis-move-$name"
	for i in 1 2 3; do req recipient=r$i@example.net | gl "${p[@]}" >/dev/null; done
	req recipient=r1@example.net | at +301s "$GREYLISTD" --db="$D/db" --log-file="$D/log" "${p[@]}" >/dev/null
	req client_address=2001:db8:1::5 | gl "${p[@]}" >/dev/null
	"$GREYLISTCTL" dump --db="$D/db" "${p[@]}" > "$D/dump.file" 2>&1
	out=$("$GREYLISTCTL" dump --db="$D/db" "${p[@]}" | "$GREYLISTCTL" load --redis="$RD_SOCK" "${p[@]}" 2>&1); rc=$?
	expect "redis ctl $name: greylistctl dump --db=F | greylistctl load --redis=...: exit 0" "0 $(grep -cv -e '^#' -e '^M keys ' "$D/dump.file") records loaded, 0 bad lines" "$rc $out"
	"$GREYLISTCTL" dump --redis="$RD_SOCK" "${p[@]}" > "$D/dump.redis" 2>&1
	expect "redis ctl $name: Redis's dump is the file's" "" "$(diff "$D/dump.file" "$D/dump.redis")"
	out=$("$GREYLISTCTL" dump --redis="$RD_SOCK" "${p[@]}" | "$GREYLISTCTL" load --db="$D/db2" "${p[@]}" 2>&1); rc=$?
	expect "redis ctl $name: and back: greylistctl dump --redis | greylistctl load --db=F2: exit 0" 0 "$rc"
	"$GREYLISTCTL" dump --db="$D/db2" "${p[@]}" > "$D/dump.back" 2>&1
	expect "redis ctl $name: the new file's dump is the first's" "" "$(diff "$D/dump.file" "$D/dump.back")"
	expect "redis ctl $name: 4 triplets and a client in Redis" 5 "$(rd_keys "$r" | grep -c '^{')"
	# The moved records are greylistd's own: a pending one is an early
	# retry, the passed one known (with --privacy: the secret moved too).
	out=$( { req recipient=r1@example.net; req recipient=r2@example.net; } | rg_at +100s --redis="$RD_SOCK" "${p[@]}" | actions | cut -c1-15 | paste -sd ' ')
	expect "redis ctl $name: greylistd on Redis knows the moved triplets (known, early retry)" "DUNNO DEFER_IF_PERMIT" "$out"
	expect_grep "redis ctl $name: r2 as early-retry" 'reason=early-retry .*recipient=r2@example\.net$' "$D/log"
}

# rg_ctl - greylistctl on Redis: check, stats, dump, load (TTLs, expired
# records), report, expire, repair; the move from GDBM and back
rg_ctl() {
	local r=$WORK/rd-ctl out rc t first now c
	rg_ctl_move plain
	rg_ctl_move privacy --privacy

	if ! rd_start "$r" unix; then fail "redis ctl: a server" "$RD_WHY"; return; fi
	newdir redis-ctl
	out=$("$GREYLISTCTL" dump --redis="$RD_SOCK" 2>&1); rc=$?
	expect "redis ctl: dump of an empty Redis: exit 1, naming the store" \
		"1 greylistctl: redis:$RD_SOCK: no records of greylistd's there (none has been written yet)" "$rc $out"
	out=$("$GREYLISTCTL" check --redis="$RD_SOCK" 2>&1); rc=$?
	expect "redis ctl: check of an empty Redis: exit 0, silent (the first request fills it)" "0 " "$rc $out"
	# report: a deferral that passed (in Redis; its pass is in another
	# log), one that never did, and a later line that ends the log
	req recipient=a@example.net | rg_at -1000s --redis="$RD_SOCK" >/dev/null
	req recipient=b@example.net | rg_at -1000s --redis="$RD_SOCK" >/dev/null
	req recipient=a@example.net | at -600s "$GREYLISTD" --log-file="$D/log.other" --redis="$RD_SOCK" >/dev/null
	req recipient=c@example.net | rg_gl --redis="$RD_SOCK" >/dev/null
	out=$("$GREYLISTCTL" report --redis="$RD_SOCK" < "$D/log" 2>"$D/report.err"); rc=$?
	expect "redis ctl: report: the triplet never retried, not the one Redis holds as passed" \
		"0 192.0.2.10 mail.example.com alice@example.com b@example.net" "$rc $out"
	expect_grep "redis ctl: report's summary counts the pass Redis knows of" 'passed_later=1 never_retried=1 pending=1' "$D/report.err"
	out=$("$GREYLISTCTL" report --redis="$WORK/no-such.sock" < "$D/log" 2>"$D/report.err"); rc=$?
	expect "redis ctl: report with Redis unreachable: from the log alone" \
		"0 192.0.2.10 mail.example.com alice@example.com a@example.net 192.0.2.10 mail.example.com alice@example.com b@example.net" "$rc $(echo "$out" | paste -sd ' ')"
	expect_grep "redis ctl: and says so" 'could not be read: passes are taken from the log alone' "$D/report.err"

	"$GREYLISTCTL" stats --redis="$RD_SOCK" > "$D/stats" 2>&1; rc=$?
	expect "redis ctl: stats: exit 0, the store and its figures" \
		"0 store=redis:$RD_SOCK keys=plain records=5 triplets=3 pending=2 passed=1 clients=1" \
		"$rc $(grep -E '^(store|keys|records|triplets|pending|passed|clients)=' "$D/stats" | paste -sd ' ')"
	expect_grep "redis ctl: stats: the server's used_memory" '^used_memory=[1-9][0-9]*$' "$D/stats"
	for c in expire repair; do
		out=$("$GREYLISTCTL" "$c" --redis="$RD_SOCK" 2>&1); rc=$?
		case $rc:$out in
		"0:nothing to do"*) pass "redis ctl: $c: nothing to do, exit 0 ($out)" ;;
		*) fail "redis ctl: $c: nothing to do, exit 0" "rc $rc [$out]" ;;
		esac
	done

	# load: each record's TTL from its own times; an expired one is not
	# stored, and deletes the live record it replaces
	now=$(date +%s)
	first=$(date -u -d "@$((now - 3600))" +%Y-%m-%dT%H:%M:%SZ)
	{
		echo "# greylistd dump 2"
		echo "T $first $first - 192.0.2.0 alice@example.com loaded@example.net"
		echo "T 2020-01-01T00:00:00Z 2020-01-01T00:00:00Z - 192.0.2.0 alice@example.com old@example.net"
		echo "T 2020-01-01T00:00:00Z 2020-01-01T00:00:00Z - 192.0.2.0 alice@example.com b@example.net"
	} > "$D/load.in"
	out=$("$GREYLISTCTL" load --redis="$RD_SOCK" < "$D/load.in" 2>&1); rc=$?
	expect "redis ctl: load: exit 0" 0 "$rc"
	t=$(rg_tkey 192.0.2.0 alice@example.com loaded@example.net)
	rg_ttl "redis ctl: load: a pending record first seen an hour ago lives 2d - 1h + 1 s" "$r" "$t" $((172800 - 3600 + 1 - ($(date +%s) - now)))
	expect "redis ctl: load: an expired record is not stored" 0 "$(rd_cli "$r" EXISTS "$(rg_tkey 192.0.2.0 alice@example.com old@example.net)")"
	expect "redis ctl: load: and deletes the live one it replaces" 0 "$(rd_cli "$r" EXISTS "$(rg_tkey 192.0.2.0 alice@example.com b@example.net)")"
}

# --- two MX hosts, one Redis ---------------------------------------------------
#
# tests/multimx.sh's namespaces with this group's own tag, addresses and
# hosts (its globals are swapped in for the test and back after it):
#
#   glrd-PID-lan: bridge br0
#     |- glrd-PID-gl    10.25.0.1   redis-server (requirepass) on 10.25.0.1
#     |- glrd-PID-mx1   10.25.0.11  Postfix, policy inet:127.0.0.1:10023 ->
#     |                             its own greylistd (systemd-socket-activate)
#     `- glrd-PID-mx2   10.25.0.12  the same
#
# Each greylistd has --redis=10.25.0.1:PORT and --redis-password-file.

RG_MM_SAVED=''			# multimx.sh's globals while this test runs
RG_SSA=()			# the PIDs of the two systemd-socket-activate

# rg_mm_swap in|out - this test's values for multimx.sh's globals, or
# theirs back
rg_mm_swap() {
	if [ "$1" = in ]; then
		RG_MM_SAVED=$(declare -p MM_TAG MM_HOSTS MM_ADDR MM_ADDR6 MM_POLICY MM_STATE MM_DELAY 2>/dev/null)
		MM_TAG=glrd-$$ MM_HOSTS="mx1 mx2" MM_DELAY=3
		MM_ADDR=([gl]=10.25.0.1 [mx1]=10.25.0.11 [mx2]=10.25.0.12)
		MM_ADDR6=([gl]=fd25::1 [mx1]=fd25::11 [mx2]=fd25::12)
		MM_POLICY=([mx1]="inet:127.0.0.1:10023, default_action=DUNNO, timeout=10s"
			[mx2]="inet:127.0.0.1:10023, default_action=DUNNO, timeout=10s")
		MM_STATE=()
	elif [ -n "$RG_MM_SAVED" ]; then
		eval "${RG_MM_SAVED//declare -/declare -g -}"
		RG_MM_SAVED=''
	fi
}

# rg_mx_gl HOST - greylistd for HOST in its namespace, on its 127.0.0.1:10023
rg_mx_gl() {
	local h=$1
	ip netns exec "$(mm_ns "$h")" systemd-socket-activate --accept --inetd -l 127.0.0.1:10023 \
		"$GREYLISTD" --log-file="$WORK/redis-mx-$h.log" --delay="${MM_DELAY}s" \
		--redis="${MM_ADDR[gl]}:$RG_MX_PORT" --redis-password-file="$WORK/redis-mx.pw" \
		2> "$WORK/redis-mx-$h.ssa" &
	RG_SSA+=($!)
	mm_wait_grep 'Listening on 127\.0\.0\.1:10023' "$WORK/redis-mx-$h.ssa"
}

# rg_mx_cleanup - stop what the test started (Postfix first: its smtpd
# holds greylistd's connections), delete the namespaces; safe twice
rg_mx_cleanup() {
	local p h left
	[ -n "$RG_MM_SAVED" ] || return 0
	# postfix stop does nothing here (FACTS.md): the master by its PID
	for h in mx1 mx2; do
		[ -n "${MM_STATE[$h]:-}" ] || continue
		mm_use "$h"
		[ -z "$PF_MASTER" ] || kill "$PF_MASTER" 2>/dev/null
	done
	mm_pf_down
	for p in "${RG_SSA[@]}"; do stop "$p"; done
	for h in mx1 mx2; do
		left=$(sed -n 's/^Spawned .* as PID \([0-9]*\)\.$/\1/p' "$WORK/redis-mx-$h.ssa" 2>/dev/null)
		for p in $left; do [ -e "/proc/$p" ] && kill "$p" 2>/dev/null; done
	done
	RG_SSA=()
	[ -z "${RG_MX_DIR:-}" ] || rd_stop "$RG_MX_DIR"
	mm_net_down
	rg_mm_swap out
}

# rg_mx - the first try at MX1 is deferred, the retry at MX2 passes
rg_mx() {
	local why h t pw=gl-lan-s3cret left out
	if why=$(mm_cannot_run); then skip "redis MX: two MX hosts in network namespaces" "$why"; return; fi
	rg_mm_swap in
	RG_MX_DIR=$WORK/rd-mx RG_SSA=()
	if ! mm_net_up; then fail "redis MX: namespaces $MM_TAG-{lan,gl,mx1,mx2}" "ip failed"; rg_mx_cleanup; return; fi
	if ! RD_NETNS=$(mm_ns gl) rd_start "$RG_MX_DIR" both "bind ${MM_ADDR[gl]}" "requirepass $pw"; then
		fail "redis MX: redis-server in $(mm_ns gl) on ${MM_ADDR[gl]}" "$RD_WHY"; rg_mx_cleanup; return
	fi
	RG_MX_PORT=$RD_PORT
	pass "redis MX: redis-server (requirepass) in namespace $(mm_ns gl) on ${MM_ADDR[gl]}:$RG_MX_PORT"
	printf '%s\n' "$pw" > "$WORK/redis-mx.pw"; chmod 600 "$WORK/redis-mx.pw"
	for h in mx1 mx2; do
		if ! rg_mx_gl "$h"; then fail "redis MX: greylistd in $(mm_ns "$h")" "$(head -c 300 "$WORK/redis-mx-$h.ssa")"; rg_mx_cleanup; return; fi
		pf_setup "redis-$h" "${MM_POLICY[$h]}" "$(mm_ns "$h")" || { fail "redis MX: $h's Postfix" "no free port"; rg_mx_cleanup; return; }
		# shellcheck disable=SC2034 # tests/postfix.sh's
		PF_MASTER='' PF_SINK=''
		if ! pf_start; then mm_save "$h"; fail "redis MX: $h's Postfix" "$PF_WHY"; rg_mx_cleanup; return; fi
		mm_save "$h"
	done
	pass "redis MX: MX1 and MX2, each a Postfix and its own greylistd (systemd-socket-activate) in its namespace"
	# The password is needed across the LAN.
	out=$(req | ip netns exec "$(mm_ns mx1)" "$GREYLISTD" --log-file="$WORK/redis-mx-nopw.log" \
		--redis="${MM_ADDR[gl]}:$RG_MX_PORT" | actions)
	expect "redis MX: from MX1 without the password: fail-open (NOAUTH)" "DUNNO 1" \
		"$out $(grep -c 'fail-open (Redis answered [A-Z]*: NOAUTH' "$WORK/redis-mx-nopw.log")"

	# shellcheck disable=SC2034 # tests/postfix.sh's, for mm_two_mx
	PF_FROM=alice@sender.test PF_RCPT=bob@dest.test
	mm_two_mx "redis MX" 198.51.100.10
	t=$(rg_tkey 198.51.100.0 alice@sender.test bob@dest.test)
	expect "redis MX: MX1's greylistd saw it first (reason=new), MX2's never did" "1 0" \
		"$(grep -c 'reason=new, .*client_address=198\.51\.100\.10, sender=alice@sender\.test' "$WORK/redis-mx-mx1.log") $(grep -c 'reason=new, ' "$WORK/redis-mx-mx2.log")"
	expect_grep "redis MX: MX2's passed it, counting from MX1's try" 'action=pass, reason=triplet found, delay=[0-9]+, .*client_address=198\.51\.100\.10, sender=alice@sender\.test' "$WORK/redis-mx-mx2.log"
	case $(rd_cli "$RG_MX_DIR" GET "$t") in
	"1 "[0-9]*" "[0-9]*" "[1-9]*) pass "redis MX: Redis holds the triplet as passed" ;;
	*) fail "redis MX: Redis holds the triplet as passed" "[$(rd_cli "$RG_MX_DIR" GET "$t")]" ;;
	esac
	expect "redis MX: neither greylistd warned" "" \
		"$(grep -hE 'greylistd\[[0-9]+\]: (warning|error):' "$WORK/redis-mx-mx1.log" "$WORK/redis-mx-mx2.log" | head -n 3)"
	rg_mx_cleanup
	left=$(ip netns list 2>/dev/null | grep -c "^glrd-$$-")
	expect "redis MX: no namespace or process left behind" "0 " "$left $(pgrep -f -- "$WORK/redis-mx" | head -n 3)"
}

# --- Sentinel ------------------------------------------------------------------

# rg_sentinel_opts - greylistd's options for the Sentinel group of
# rd_sentinel_setup
rg_sentinel_opts() {
	local s list=
	for s in "${RD_SENTINELS[@]}"; do list=$list${list:+,}127.0.0.1:$(rd_port "$s"); done
	RG_SOPTS=(--redis-sentinel="$list" --redis-master="$RD_MASTER_NAME")
}

# rg_loss WAIT - a process streams new triplets to the primary, which is
# SIGKILLed once it holds 1000 of them; the stream stops at the kill (so
# every write after it fails open). Sets RG_ACKED (answered as stored),
# RG_LOST (of those, missing on the promoted replica) and RG_ANSWERED.
rg_loss() {
	local w=("${@}") pid
	rg_reqs w 20000 > "$D/req.w"
	rm -f "$D/stop"
	rg_feed "$D/req.w" "$D/stop" | timeout 120 "$GREYLISTD" --log-file="$D/log" "${RG_SOPTS[@]}" "${w[@]}" > "$D/ans.w" &
	pid=$!
	rg_until 60 rg_dbsize_ge "$RD_PRIMARY" 1000 || { RD_WHY="the stream did not write 1000 triplets"; touch "$D/stop"; wait "$pid"; return 1; }
	RD_ON_KILL="touch '$D/stop'" rd_failover || { touch "$D/stop"; wait "$pid"; return 1; }
	wait "$pid"
	grep '^action=' "$D/ans.w" | awk '/^action=DEFER_IF_PERMIT/ { print "w-" NR "@example.net" }' | sort > "$D/acked"
	rd_keys "$RD_REPLICA" | sed -n 's/.*|\(w-[0-9]*@example\.net\)$/\1/p' | sort > "$D/present"
	RG_ANSWERED=$(grep -c '^action=' "$D/ans.w")
	RG_SENT=$(cat "$D/stop.sent" 2>/dev/null)
	RG_ACKED=$(grep -c . "$D/acked")
	RG_LOST=$(comm -23 "$D/acked" "$D/present" | grep -c .)
	# a count only when both sides were had
	case $(rd_cli "$RD_REPLICA" DBSIZE 2>&1):$RG_ACKED in
	*[!0-9:]*|:*|*:0) RD_WHY="no count: the promoted replica [$(rd_cli "$RD_REPLICA" DBSIZE 2>&1)], $RG_ACKED acknowledged"; return 1 ;;
	esac
	return 0
}

# rg_sentinel - greylistd asks the Sentinels for the primary, follows a
# failover (new processes and a running one), and what the failover lost
rg_sentinel() {
	local out pid s1 s2 lw t
	newdir redis-sentinel
	if ! rd_sentinel_setup "$WORK/rd-sentinel"; then fail "redis sentinel: a primary, a replica, 3 Sentinels" "$RD_WHY"; return; fi
	rg_sentinel_opts
	out=$(req recipient=s1@example.net | rg_gl "${RG_SOPTS[@]}" | actions)
	expect "redis sentinel: --redis-sentinel=(3) --redis-master=$RD_MASTER_NAME: a new triplet is deferred" \
		"DEFER_IF_PERMIT $RG_TEXT 300 seconds" "$out"
	s1=$(rg_tkey 192.0.2.0 alice@example.com s1@example.net)
	expect "redis sentinel: stored on the primary" 1 "$(rd_cli "$RD_PRIMARY" EXISTS "$s1")"
	expect_grep "redis sentinel: greylistctl stats through the Sentinels" "^store=redis-sentinel:127\\.0\\.0\\.1:[0-9]+,.*/$RD_MASTER_NAME\$" \
		<("$GREYLISTCTL" stats "${RG_SOPTS[@]}" 2>&1)

	# A long-lived process: one request before the failover, one after.
	rg_reqs lived 2 > "$D/req.l"
	( awk -v RS= 'NR == 1 { print; print "" }' "$D/req.l"; rg_until 60 test -e "$D/go"
	  awk -v RS= 'NR == 2 { print; print "" }' "$D/req.l" ) |
		timeout 120 "$GREYLISTD" --log-file="$D/log" "${RG_SOPTS[@]}" > "$D/ans.l" &
	lw=$!
	rg_until 10 grep -q '^action=' "$D/ans.l"

	if ! rg_loss; then fail "redis sentinel: SIGKILL of the primary under a stream of new triplets" "$RD_WHY"; touch "$D/go"; wait "$lw"; return; fi
	pass "redis sentinel: the primary SIGKILLed under a stream of new triplets; the Sentinels report the replica after $RD_FAILOVER_MS ms"
	expect "redis sentinel: every request of the stream answered (it stopped at the kill, after $RG_SENT)" \
		"${RG_SENT:-none}" "$RG_ANSWERED"
	pass "redis sentinel: write loss without --redis-wait: $RG_LOST of $RG_ACKED acknowledged writes (triplets answered as stored) lost"

	touch "$D/go"
	wait "$lw"
	expect "redis sentinel: the running process: deferred before the failover and after it" \
		"DEFER_IF_PERMIT DEFER_IF_PERMIT" "$(actions < "$D/ans.l" | cut -c1-15 | paste -sd ' ')"
	expect "redis sentinel: it stored the second on the promoted replica" 1 \
		"$(rd_cli "$RD_REPLICA" EXISTS "$(rg_tkey 192.0.2.0 alice@example.com lived-2@example.net)")"
	expect "redis sentinel: and did not fail open" 0 "$(grep -c 'fail-open.*recipient=lived-' "$D/log")"
	out=$(req recipient=s2@example.net | rg_gl "${RG_SOPTS[@]}" | actions)
	expect "redis sentinel: a new process after the failover: deferred" "DEFER_IF_PERMIT $RG_TEXT 300 seconds" "$out"
	s2=$(rg_tkey 192.0.2.0 alice@example.com s2@example.net)
	expect "redis sentinel: stored on the promoted replica" 1 "$(rd_cli "$RD_REPLICA" EXISTS "$s2")"
	expect "redis sentinel: the triplet stored before the failover is there" 1 "$(rd_cli "$RD_REPLICA" EXISTS "$s1")"
	rd_cleanup

	# The same with --redis-wait=1: a write is answered once the replica has it.
	newdir redis-sentinel-wait
	if ! rd_sentinel_setup "$WORK/rd-sentinel-wait"; then fail "redis sentinel --redis-wait=1: a Sentinel group" "$RD_WHY"; return; fi
	rg_sentinel_opts
	if ! rg_loss --redis-wait=1; then fail "redis sentinel --redis-wait=1: SIGKILL of the primary under a stream" "$RD_WHY"; return; fi
	if grep -q 'replicas --redis-wait asks for' "$D/log"; then
		pass "redis sentinel: write loss with --redis-wait=1: $RG_LOST of $RG_ACKED acknowledged writes lost (a write did not reach the replica: $(grep -m 1 -o 'a write reached.*' "$D/log"))"
	else
		expect "redis sentinel: --redis-wait=1, no write short of its replica: none of the $RG_ACKED acknowledged writes lost (failover $RD_FAILOVER_MS ms)" 0 "$RG_LOST"
	fi
	# Now the primary has no replica: a write waits out the lock-timeout.
	out=$(req recipient=alone@example.net | timeout 20 "$GREYLISTD" --log-file="$D/log" "${RG_SOPTS[@]}" --redis-wait=1 | actions)
	expect "redis sentinel: --redis-wait=1 with no replica left: still answered, as stored" "DEFER_IF_PERMIT $RG_TEXT 300 seconds" "$out"
	expect_grep "redis sentinel: warning that the write reached 0 of the 1 replicas" 'warning: redis: a write reached 0 of the 1 replicas --redis-wait asks for' "$D/log"
	rd_cleanup
}

t_redis() {
	local why old_trap=() d left='' t0
	t0=${EPOCHREALTIME/./}
	if why=$(rd_cannot_run); then skip "redis" "$why"; return; fi
	command -v faketime >/dev/null || { skip "redis" "faketime not found (Debian package faketime)"; return; }
	RD_ALL=()
	eval "old_trap=($(trap -p EXIT))"
	# shellcheck disable=SC2064 # the old command is wanted as it is now
	trap "rg_mx_cleanup; rd_cleanup; ${old_trap[2]:-}" EXIT

	rg_decisions unix
	rg_decisions tcp
	rg_privacy
	rg_race
	rg_kill
	rg_restart
	rg_slow
	rg_oom
	rg_wrongtype
	rg_password
	rg_ctl
	rd_cleanup
	rg_mx
	rd_cleanup
	rg_sentinel

	rd_cleanup
	for d in "${RD_ALL[@]}"; do rd_alive "$d" && left="$left $(cat "$d/pid")"; done
	expect "redis: no server left running (${#RD_ALL[@]} started; the group took $(( (${EPOCHREALTIME/./} - t0) / 1000000 )) s)" "" "$left"
	if [ ${#old_trap[@]} -ge 3 ]; then trap -- "${old_trap[2]}" EXIT; else trap - EXIT; fi
}
