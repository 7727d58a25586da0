# tests/redis.sh - a harness of private Redis servers for tests, and the
# group redis_harness that proves it.
#
# Sourced by test.sh. The functions are for the tests of a Redis store
# (issue 15, part 2); t_redis_harness checks them. Every server is a
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
#                          sets RD_DIR RD_PID RD_PORT RD_SOCK RD_PASS
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
#                          report the replica; sets RD_FAILOVER_MS
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
	local d=$1 args=()
	grep -q '^sentinel monitor ' "$d/redis.conf" && args=(--sentinel)
	: > "$d/log"
	redis-server "$d/redis.conf" "${args[@]}" > "$d/stdout" 2>&1 &
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
rd_failover() {
	local want t0 s i end
	want="127.0.0.1 $(rd_port "$RD_REPLICA")"
	end=$(( ${1:-30} * 20 ))
	t0=${EPOCHREALTIME/./}
	RD_FAILOVER_MS=
	rd_kill "$RD_PRIMARY" || { RD_WHY="the primary did not die"; return 1; }
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
	local d=$WORK/redis-oom i r= ok=0

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
