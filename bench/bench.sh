#!/bin/bash
# bench/bench.sh - greylistd against postgrey, on this machine, in one run.
#
#   GREYLISTD=/path/to/greylistd bench/bench.sh     (what `make bench` runs;
#                                  without GREYLISTD it builds its own copy)
#   bench/bench.sh milter          only the milter's cost (bench/milter.sh:
#                                  `make bench-milter`), which it writes as
#                                  the section "## Milter" of results.md
#
# greylistd runs as in production, one process per connection under
# `systemd-socket-activate --accept --inetd`; postgrey (Debian's package)
# runs as its own daemon on a temporary --dbdir. Both listen on UNIX
# sockets and are driven by bench/client.c, which sends what Postfix 3.7
# sends and checks every answer. The two are measured in turns (ABBA),
# so that drift of the machine hits both alike.
#
# Workloads (req/s, p50 and p99 latency, greylistd/postgrey ratio):
#   1 known triplets, one client on one connection
#   2 new triplets (every request a write), one client on one connection
#   3 mixed: 20% new, 20% early retries, 60% known, 4 concurrent clients
#   4 a fresh connection for every request (known triplets), 4 clients
#   5 known and new at 1k, 100k and 1M records (1-4 run at 100k)
# and, at 100k, the Redis store (redis.c) side by side with the GDBM file
# and postgrey, in the same turns: greylistd with --redis over the
# server's UNIX socket and over loopback TCP, known and new triplets with
# one client and with four, a fresh connection per request, and the
# start-up (exec to first answer) against the file's; the records are
# loaded into a private redis-server with greylistctl dump | load.
# and peak resident memory of one greylistd process against postgrey's,
# start-up time (exec to first answer), and the floor of the harness: a
# C program that only answers DUNNO (bench/floor.c) in greylistd's place,
# also linked statically for the fresh-connection workload (no dynamic
# loader: what is left is the fork and exec of the spawner).
#
# The databases are written directly (bench/fill.c, bench/fill-postgrey.pl):
# filling a million records through postgrey's socket would take 20 min.
# Writes bench/results.md (or $BENCH_OUT), keeping the section that
# bench/exim-rcpt.sh writes at its end; raw figures go to bench/out/.
# Timing is reported, never judged: the exit status is 1 only when an
# answer was wrong, a request failed, or a log shows a fault; 2 when the
# bench itself could not run.
#
# Knobs: BENCH_ROUNDS (4), BENCH_SECS (seconds per turn, 2.5), BENCH_SIZES
# ("1000 100000 1000000"), BENCH_MAIN (size for workloads 1-4, 100000),
# BENCH_REDIS (1; 0 leaves the Redis store out, and about 130 s of the
# run with it), BENCH_OUT, BENCH_NOTE (a sentence added to the report's
# header), CC, TMPDIR.

set -euo pipefail
MODE=${1:-all}
case $MODE in all|milter) ;; *) echo "usage: bench/bench.sh [milter]" >&2; exit 2 ;; esac

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
ROUNDS=${BENCH_ROUNDS:-4}
SECS=${BENCH_SECS:-2.5}
SIZES=${BENCH_SIZES:-"1000 100000 1000000"}
MAIN=${BENCH_MAIN:-100000}
REDIS=${BENCH_REDIS:-1}
OUT=${BENCH_OUT:-$HERE/results.md}
RAWDIR=$HERE/out
CC=${CC:-cc}
DELAY=3600			# long enough that pending triplets stay early
TEXT='Greylisted, please try again in %s seconds'
MIX='new:20,early:20,known:60'
POSTGREY=/usr/sbin/postgrey
T_START=$EPOCHREALTIME
export LC_ALL=C

say() { printf '%s\n' "$*" >&2; }
die() { say "bench: $*"; exit 2; }

# --- what the bench needs ----------------------------------------------------

need_pkgs=
command -v "$CC" >/dev/null || need_pkgs+=" gcc libc6-dev"
[ -e /usr/include/gdbm.h ] || need_pkgs+=" libgdbm-dev"
if [ "$MODE" = all ]; then
	[ -x $POSTGREY ] || need_pkgs+=" postgrey"
	perl -MBerkeleyDB -e1 2>/dev/null || need_pkgs+=" libberkeleydb-perl"
fi
command -v systemd-socket-activate >/dev/null || need_pkgs+=" systemd"
[ -x /usr/bin/time ] || need_pkgs+=" time"
command -v ps >/dev/null || need_pkgs+=" procps"
if [ "$REDIS" != 0 ]; then
	command -v redis-server >/dev/null || need_pkgs+=" redis-server"
	command -v redis-cli >/dev/null || need_pkgs+=" redis-tools"
	[ -e /usr/include/hiredis/hiredis.h ] || need_pkgs+=" libhiredis-dev"
fi
if [ -n "$need_pkgs" ]; then
	say "bench: installing Debian packages:$need_pkgs"
	sudo=; [ "$(id -u)" -eq 0 ] || sudo=sudo
	export DEBIAN_FRONTEND=noninteractive
	# shellcheck disable=SC2086
	$sudo -E apt-get install -y -q $need_pkgs \
	|| { $sudo -E apt-get update -q && $sudo -E apt-get install -y -q $need_pkgs; } \
	|| die "could not install:$need_pkgs"
fi
if [ "$MODE" = milter ]; then
	SIZES=				# no postgrey phases: bench/milter.sh's own
	PG_USER=$(id -un) PG_GROUP=$(id -gn)
elif [ "$(id -u)" -eq 0 ]; then		# postgrey drops to its own user
	id postgrey >/dev/null 2>&1 || die "no user postgrey (the package creates it)"
	PG_USER=postgrey PG_GROUP=postgrey
else
	PG_USER=$(id -un) PG_GROUP=$(id -gn)
fi

# --- a private work directory, and cleaning up ---------------------------------

W=$(mktemp -d "${TMPDIR:-/tmp}/greylistd-bench.XXXXXX")
chmod 711 "$W"			# postgrey (another user) reaches its dir
GL_PID='' PG_PID='' AUX_PID='' RU_PID='' RT_PID=''
RD_ALL=()

stop() {			# stop PID: TERM, then wait for it
	[ -n "$1" ] || return 0
	kill -TERM "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}
cleanup() {
	stop "$GL_PID"; stop "$PG_PID"; stop "$AUX_PID"; stop "$RU_PID"; stop "$RT_PID"
	GL_PID='' PG_PID='' AUX_PID='' RU_PID='' RT_PID=''
	[ "$REDIS" = 0 ] || ! declare -F rd_cleanup >/dev/null || rd_cleanup
	rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "bench: work directory $W"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD0%% *}" -v c="$(nproc)" 'BEGIN { exit !(l > c / 4) }'; then
	say "bench: warning: load average $LOAD0 before the run: other work will skew the figures"
fi
$CC -O2 -o "$W/client" "$HERE/client.c" -lpthread
$CC -O2 -o "$W/fill" "$HERE/fill.c" -lgdbm
$CC -O2 -o "$W/floor" "$HERE/floor.c"
# the static floor needs libc.a (libc6-dev); without it that row is left out
$CC -O2 -static -o "$W/floor-static" "$HERE/floor.c" 2>/dev/null \
	|| say "bench: cannot link bench/floor.c statically; its row is left out"
if [ -z "${GREYLISTD:-}" ]; then
	make -C "$ROOT" greylistd greylistctl >&2 || die "make greylistd greylistctl failed"
	GREYLISTD=$ROOT/greylistd
fi
[ -x "$GREYLISTD" ] || die "GREYLISTD=$GREYLISTD is not an executable"
GREYLISTD=$(cd "$(dirname "$GREYLISTD")" && pwd)/$(basename "$GREYLISTD")
GREYLISTCTL=${GREYLISTCTL:-$(dirname "$GREYLISTD")/greylistctl}
[ -x "$GREYLISTCTL" ] || die "GREYLISTCTL=$GREYLISTCTL is not an executable"
# the private redis-server: tests/redis.sh's rd_start and rd_cleanup
# shellcheck source=tests/redis.sh
[ "$REDIS" = 0 ] || . "$ROOT/tests/redis.sh"
C=$W/client

# greylistd as shipped: with the repository's whitelist (postgrey reads
# Debian's /etc/postgrey lists), when this greylistd knows --whitelist
GL_OPTS=("--delay=$DELAY" "--greylist-text=$TEXT")
if [ -f "$ROOT/whitelist" ] \
   && "$GREYLISTCTL" check "--whitelist=$ROOT/whitelist" >/dev/null 2>&1; then
	GL_OPTS+=("--whitelist=$ROOT/whitelist")
fi

PROBLEMS=$W/problems
: >"$PROBLEMS"
problem() { say "bench: PROBLEM: $*"; printf '%s\n' "$*" >>"$PROBLEMS"; }

# --- servers -------------------------------------------------------------------

GL_SOCK=$W/gl.sock GL_LOG=$W/greylistd.log SA_LOG=$W/socket-activate.log
PG_SOCK=$W/pg.sock PG_LOG=$W/postgrey.log FLOOR_SOCK=$W/floor.sock
SFLOOR_SOCK=$W/floor-static.sock
RU_SOCK=$W/redis-unix.sock RT_SOCK=$W/redis-tcp.sock
RU_LOG=$W/greylistd-redis-unix.log RT_LOG=$W/greylistd-redis-tcp.log
: >"$RU_LOG"; : >"$RT_LOG"
PG_STARTS=()
: >"$GL_LOG"; : >"$PG_LOG"; : >"$SA_LOG"

activate() {			# activate SOCK CMD... - one process per connection
	local sock=$1; shift
	rm -f "$sock"
	env -u INVOCATION_ID -u LISTEN_FDS \
		systemd-socket-activate --accept --inetd -l "$sock" "$@" \
		2>>"$SA_LOG" &
}

start_greylistd() {		# start_greylistd DB
	activate "$GL_SOCK" "$GREYLISTD" "--db=$1" "--log-file=$GL_LOG" "${GL_OPTS[@]}"
	GL_PID=$!
	"$C" -s "$GL_SOCK" -W 10 -k 1 >/dev/null || die "greylistd did not answer"
}

start_redis_greylistd() {	# start_redis_greylistd SOCK LOG ADDRESS - its PID in $!
	activate "$1" "$GREYLISTD" "--redis=$3" "--log-file=$2" "${GL_OPTS[@]}"
	"$C" -s "$1" -W 10 -k 1 >/dev/null || die "greylistd --redis=$3 did not answer"
}

start_postgrey() {		# start_postgrey DBDIR - and time exec to answer
	local t0 ans
	rm -f "$PG_SOCK"
	t0=$EPOCHREALTIME
	"$POSTGREY" --unix="$PG_SOCK" --dbdir="$1" --delay=$DELAY \
		--greylist-text="$TEXT" --user="$PG_USER" --group="$PG_GROUP" \
		>>"$PG_LOG" 2>&1 &
	PG_PID=$!
	ans=$("$C" -s "$PG_SOCK" -W 30 -k 1) || die "postgrey did not answer: $(tail -n 3 "$PG_LOG")"
	ans=${ans#answered_ns=}
	PG_STARTS+=("$(( (ans - ${t0/./} * 1000) / 1000 ))")	# us
}

# --- measuring -----------------------------------------------------------------

# the log lines the bench's requests call for: anything else (fail-open,
# a warning, an error) is reported
DECISION=': action=(greylist, reason=(new|early-retry \([0-9]+s missing\))|pass, reason=triplet found), client_name='
RAW=$W/raw.tsv
printf 'workload\tsystem\trecords\tn\tsecs\trps\tp50_us\tp99_us\twrong\terrors\tturn_rps_min\tturn_rps_max\n' >"$RAW"
RUNID=0
declare -A SYSARGS=()		# client arguments of a system (bench/milter.sh)
declare -A SOCK=([greylistd]=$GL_SOCK [postgrey]=$PG_SOCK [floor]=$FLOOR_SOCK [floor-static]=$SFLOOR_SOCK
	[redis-unix]=$RU_SOCK [redis-tcp]=$RT_SOCK)
# greylistd's systems, each with its log: one decision line per answer
declare -A LOGF=([greylistd]=$GL_LOG [redis-unix]=$RU_LOG [redis-tcp]=$RT_LOG)

field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"; }
add() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", a + b }'; }

# measure NAME RECORDS "SYSTEMS" CLIENT-ARGS... - ROUNDS turns per system,
# in ABBA order; one line per system in $RAW
measure() {
	local name=$1 records=$2 systems=$3; shift 3
	local r sys order out rc lines0=0 lines1 n
	local -A tn=() tsecs=() twrong=() terrors=() trps=()
	for sys in $systems; do
		rm -f "$W/lat.$sys"
		tn[$sys]=0 tsecs[$sys]=0 twrong[$sys]=0 terrors[$sys]=0 trps[$sys]=
	done
	for ((r = 1; r <= ROUNDS; r++)); do
		order=$systems
		((r % 2)) || order=$(printf '%s\n' $systems | tac | tr '\n' ' ')
		for sys in $order; do
			RUNID=$((RUNID + 1))
			[ -z "${LOGF[$sys]:-}" ] || lines0=$(wc -l <"${LOGF[$sys]}")
			rc=0
			# shellcheck disable=SC2086 # SYSARGS: words (bench/milter.sh)
			out=$("$C" -s "${SOCK[$sys]}" -r $RUNID -d $DELAY \
				-o "$W/lat.$sys" ${SYSARGS[$sys]:-} "$@" 2>"$W/client.err") || rc=$?
			if [ -z "$out" ]; then
				problem "$name/$sys: the client failed: $(tail -n 3 "$W/client.err")"
				continue
			fi
			n=$(field n "$out")
			tn[$sys]=$((tn[$sys] + n))
			tsecs[$sys]=$(add "${tsecs[$sys]}" "$(field secs "$out")")
			trps[$sys]+=" $(field rps "$out")"
			twrong[$sys]=$((twrong[$sys] + $(field wrong "$out")))
			terrors[$sys]=$((terrors[$sys] + $(field errors "$out")))
			((rc == 0)) || problem "$name/$sys: $(field wrong "$out") wrong answers, $(field errors "$out") failed requests: $(grep -v '^$' "$W/client.err" | head -n 3 | tr '\n' ' ')"
			if [ -n "${LOGF[$sys]:-}" ]; then
				# one decision line per answer, and nothing else
				tail -n +$((lines0 + 1)) "${LOGF[$sys]}" >"$W/turn.log"
				lines1=$(grep -cE "$DECISION" "$W/turn.log" || true)
				((lines1 == n)) || problem "$name/$sys: greylistd logged $lines1 decisions for $n answers"
				grep -vE "$DECISION" "$W/turn.log" | head -n 3 \
				| while IFS= read -r l; do
					problem "$name/$sys: greylistd's log: $l"
				done || true
			fi
		done
	done
	for sys in $systems; do
		local pcts rps
		pcts=$("$C" -R "$W/lat.$sys")
		rps=$(awk -v n="${tn[$sys]}" -v s="${tsecs[$sys]}" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }')
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$sys" \
			"$records" "${tn[$sys]}" "${tsecs[$sys]}" "$rps" \
			"$(field p50_us "$pcts")" "$(field p99_us "$pcts")" \
			"${twrong[$sys]}" "${terrors[$sys]}" \
			"$(printf '%s\n' ${trps[$sys]} | sort -n | sed -n '1p;$p' | paste -sd'\t' -)" >>"$RAW"
		say "bench:   $name at $records: $sys $rps req/s, p50 $(field p50_us "$pcts") us, p99 $(field p99_us "$pcts") us"
	done
}

# --- the phases: one database size each ----------------------------------------

GL_RSS='' PG_RSS='' PG_HWM='' GL_START='' FLOOR_START='' RU_START='' RT_START='' RD_LOAD_MS='' RD_MEM=''
declare -A EXPIRE_MS=()
LARGE=${SIZES##* } SMALL=${SIZES%% *}

for N in $SIZES; do
	known=$((N - N / 10)) pending=$((N / 10))
	now=$(date +%s)
	say "bench: $N records: filling ($known known, $pending pending)"
	db=$W/greylistd-$N.db pgdir=$W/postgrey-$N
	"$W/fill" "$db" $known $pending "$now"
	mkdir "$pgdir"
	perl "$HERE/fill-postgrey.pl" "$pgdir" $known $pending "$now"
	rm -f "$pgdir"/__db.*		# postgrey builds its own environment
	[ "$(id -u)" -ne 0 ] || chown -R "$PG_USER:$PG_GROUP" "$pgdir"

	# greylistd expires records once a day, in a child of the first
	# process to find the last pass a day old: on a fresh file that is
	# the first request. Run today's pass now, as the operator command
	# does, so that the workloads see the steady state (and time it).
	t0=$EPOCHREALTIME
	if "$GREYLISTCTL" expire "--db=$db" "--log-file=$W/expire.log" "${GL_OPTS[@]}" \
		>"$W/expire.out" 2>&1; then
		EXPIRE_MS[$N]=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", (b - a) * 1000 }')
	fi

	start_greylistd "$db"
	start_postgrey "$pgdir"
	SYS="greylistd postgrey"
	if [ "$REDIS" != 0 ] && [ "$N" = "$MAIN" ]; then
		# the same records in a private redis-server (no persistence),
		# reached over its UNIX socket and over loopback TCP
		say "bench: $N records: loading them into Redis"
		rd_start "$W/redis" both || die "redis-server: $RD_WHY"
		t0=$EPOCHREALTIME
		"$GREYLISTCTL" dump "--db=$db" | "$GREYLISTCTL" load "--redis=$RD_SOCK" >"$W/load.out" 2>&1 \
			|| die "greylistctl load --redis: $(tail -n 3 "$W/load.out")"
		RD_LOAD_MS=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", (b - a) * 1000 }')
		RD_ADDR_UNIX=$RD_SOCK RD_ADDR_TCP=127.0.0.1:$RD_PORT RD_DIR_B=$RD_DIR
		start_redis_greylistd "$RU_SOCK" "$RU_LOG" "$RD_ADDR_UNIX"
		RU_PID=$!
		start_redis_greylistd "$RT_SOCK" "$RT_LOG" "$RD_ADDR_TCP"
		RT_PID=$!
		SYS="greylistd redis-unix redis-tcp postgrey"
	fi
	# warm up: page cache, postgrey's first requests
	for sys in $SYS; do
		"$C" -s "${SOCK[$sys]}" -m known -k $known -t 0.5 >/dev/null || true
	done

	K="-k $known -p $pending -t $SECS"
	# new triplets grow the file: at most max(N/10, 1000) per server
	cap=$(( (N / 10 > 1000 ? N / 10 : 1000) / ROUNDS ))
	# shellcheck disable=SC2086
	measure known $N "$SYS" -m known $K
	# shellcheck disable=SC2086
	measure new $N "$SYS" -m new -n $cap $K
	if [ "$N" = "$MAIN" ]; then
		# shellcheck disable=SC2086
		measure mixed $N "greylistd postgrey" -m "$MIX" -c 4 $K
		# shellcheck disable=SC2086
		measure fresh $N "$SYS" -m known -c 4 -f $K
		if [ "$SYS" != "greylistd postgrey" ]; then
			# shellcheck disable=SC2086
			measure known4 $N "$SYS" -m known -c 4 $K
			# shellcheck disable=SC2086
			measure new4 $N "$SYS" -m new -c 4 -n $(( (cap + 3) / 4 )) $K
			say "bench: start-up with Redis: 200 starts over its socket, 200 over TCP"
			RU_START=$("$C" -x 200 -k $known -d $DELAY -- "$GREYLISTD" \
				"--redis=$RD_ADDR_UNIX" "--log-file=$RU_LOG" "${GL_OPTS[@]}" 2>"$W/client.err") \
				|| problem "greylistd --redis (socket): start-up: $RU_START $(head -n 3 "$W/client.err")"
			RT_START=$("$C" -x 200 -k $known -d $DELAY -- "$GREYLISTD" \
				"--redis=$RD_ADDR_TCP" "--log-file=$RT_LOG" "${GL_OPTS[@]}" 2>"$W/client.err") \
				|| problem "greylistd --redis (TCP): start-up: $RT_START $(head -n 3 "$W/client.err")"
			RD_MEM=$(rd_cli "$RD_DIR_B" INFO memory | tr -d '\r' | sed -n 's/^used_memory_human://p')
			stop "$RU_PID"; stop "$RT_PID"; RU_PID='' RT_PID=''
			rd_cleanup
		fi

		say "bench: start-up: greylistd and the floor, 200 starts each"
		GL_START=$("$C" -x 200 -k $known -d $DELAY -- "$GREYLISTD" \
			"--db=$db" "--log-file=$GL_LOG" "${GL_OPTS[@]}" 2>"$W/client.err") \
			|| problem "greylistd's start-up: $GL_START $(head -n 3 "$W/client.err")"
		FLOOR_START=$("$C" -x 200 -k $known -- "$W/floor") || true
		activate "$FLOOR_SOCK" "$W/floor"
		AUX_PID=$!
		"$C" -s "$FLOOR_SOCK" -W 10 -k 1 >/dev/null || die "the floor did not answer"
		# shellcheck disable=SC2086
		measure known $N floor -m known $K
		# shellcheck disable=SC2086
		measure fresh $N floor -m known -c 4 -f $K
		stop "$AUX_PID"; AUX_PID=
		if [ -x "$W/floor-static" ]; then
			activate "$SFLOOR_SOCK" "$W/floor-static"
			AUX_PID=$!
			"$C" -s "$SFLOOR_SOCK" -W 10 -k 1 >/dev/null \
				|| die "the static floor did not answer"
			# shellcheck disable=SC2086
			measure fresh $N floor-static -m known -c 4 -f $K
			stop "$AUX_PID"; AUX_PID=
		fi
	fi
	if [ "$N" = "$LARGE" ]; then
		# memory at the largest size: postgrey's resident size after the
		# workloads; the peak of one greylistd process that served all
		# three kinds of request on one connection (/usr/bin/time)
		PG_RSS=$(ps -o rss= -p "$PG_PID" | tr -d ' ')
		PG_HWM=$(awk '/^VmHWM/ { print $2 }' "/proc/$PG_PID/status")
		activate "$W/mem.sock" /usr/bin/time -a -o "$W/rss" -f '%M' \
			"$GREYLISTD" "--db=$db" "--log-file=$GL_LOG" "${GL_OPTS[@]}"
		AUX_PID=$!
		"$C" -s "$W/mem.sock" -W 10 -k 1 >/dev/null || die "greylistd (memory) did not answer"
		"$C" -s "$W/mem.sock" -m "$MIX" -k $known -p $pending -t 2 \
			-r 999999 -d $DELAY >/dev/null 2>"$W/client.err" \
			|| problem "memory run: $(head -n 3 "$W/client.err")"
		stop "$AUX_PID"; AUX_PID=
		GL_RSS=$(grep -E '^[0-9]+$' "$W/rss" | sort -n | tail -n 1)
		if grep -vqE '^[0-9]+$' "$W/rss"; then
			problem "memory run: $(grep -vE '^[0-9]+$' "$W/rss" | head -n 2)"
		fi
	fi
	stop "$GL_PID"; GL_PID=
	stop "$PG_PID"; PG_PID=
	rm -rf "$db" "$pgdir"
done

# --- the logs --------------------------------------------------------------------

other=$(grep -vE '^(Listening on|Communication attempt|Connection from|Spawned|Execing) |^Child [0-9]+ died with code 0$' "$SA_LOG" | head -n 3 || true)
[ -z "$other" ] || problem "greylistd wrote to stderr, exited non-zero, or systemd-socket-activate complained: $other"
pgerr=$(grep -iE 'warn|error|fatal|died' "$PG_LOG" | head -n 3 || true)
[ -z "$pgerr" ] || problem "postgrey's log: $pgerr"

# --- the report -------------------------------------------------------------------

LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$(awk -v a="$T_START" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
mkdir -p "$RAWDIR"
cp "$RAW" "$RAWDIR/raw.tsv"

get() {				# get WORKLOAD SYSTEM RECORDS COLUMN
	awk -F'\t' -v w="$1" -v s="$2" -v r="$3" -v c="$4" '
		NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
		$1 == w && $2 == s && $3 == r { print $col[c] }' "$RAW"
}
human() {			# 1000 -> 1k, 1000000 -> 1M
	awk -v n="$1" 'BEGIN {
		if (n >= 1e6 && n % 1e6 == 0) printf "%dM", n / 1e6
		else if (n >= 1e3 && n % 1e3 == 0) printf "%dk", n / 1e3
		else printf "%d", n }'
}
ms() {				# microseconds, readably
	[ -n "$1" ] || { printf -- '-'; return; }
	awk -v u="$1" 'BEGIN { if (u >= 1000) printf "%.2f ms", u / 1000; else printf "%.0f us", u }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b > 0) printf "%.1fx", a / b; else printf "-" }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && b != "" && a + 0 >= b + 0) }'; }
met() { if "$@"; then echo met; else echo "**missed**"; fi; }

row() {				# row WORKLOAD RECORDS LABEL
	local g p
	g=$(get "$1" greylistd "$2" rps) p=$(get "$1" postgrey "$2" rps)
	[ -n "$g$p" ] || return 0
	printf '| %s | %s | %s | %s | %s | %s | %s | %s | **%s** |\n' "$3" "$(human "$2")" \
		"$g" "$(ms "$(get "$1" greylistd "$2" p50_us)")" "$(ms "$(get "$1" greylistd "$2" p99_us)")" \
		"$p" "$(ms "$(get "$1" postgrey "$2" p50_us)")" "$(ms "$(get "$1" postgrey "$2" p99_us)")" \
		"$(ratio "$g" "$p")"
}

cell() {			# cell WORKLOAD SYSTEM RECORDS - "N req/s, p50 X, p99 Y"
	local r
	r=$(get "$1" "$2" "$3" rps)
	if [ -z "$r" ]; then printf -- '-'; return; fi
	printf '%s req/s, p50 %s, p99 %s' "$r" "$(ms "$(get "$1" "$2" "$3" p50_us)")" \
		"$(ms "$(get "$1" "$2" "$3" p99_us)")"
}
rrow() {			# rrow WORKLOAD LABEL - a row of the Redis table
	printf '| %s | %s | %s | %s | %s |\n' "$2" "$(cell "$1" greylistd "$MAIN")" \
		"$(cell "$1" redis-unix "$MAIN")" "$(cell "$1" redis-tcp "$MAIN")" "$(cell "$1" postgrey "$MAIN")"
}
startup() {			# startup CLIENT-OUTPUT - "p50 X, p99 Y"
	if [ -z "$1" ]; then printf -- '-'; return; fi
	printf 'p50 %s, p99 %s' "$(ms "$(field p50_us "$1")")" "$(ms "$(field p99_us "$1")")"
}

spread() {			# spread SYSTEM - largest (max-min)/max of a turn, %
	awk -F'\t' -v s="$1" 'NR > 1 && $2 == s && $12 > 0 {
		d = ($12 - $11) / $12 * 100; if (d > m) m = d } END { printf "%.0f", m }' "$RAW"
}

CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
CORES=$(nproc)
FS=$(df -PT "$W" | awk 'NR == 2 { print $2 }')
GL_VER=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo "?")
if [ -n "$(cd "$ROOT" && git status --porcelain -- greylistd.c 2>/dev/null)" ]; then
	GL_VER="$GL_VER with local changes"
fi
PG_VER=$(dpkg-query -W -f='${Version}' postgrey 2>/dev/null || echo "?")
GDBM_VER=$(dpkg-query -W -f='${Version}' libgdbm6 2>/dev/null || echo "?")
BDB_VER=$(perl -MBerkeleyDB -e 'print $BerkeleyDB::db_version' 2>/dev/null || echo "?")
if [ "$MODE" = milter ]; then
	# shellcheck source=bench/milter.sh
	. "$HERE/milter.sh"	# writes its section of results.md, and exits
fi
# bench/milter.sh's section, up to the Exim section kept below
OLD_MILTER=$(sed -n '/^## Milter$/,$p' "$OUT" 2>/dev/null | sed '/^## Exim: per-RCPT cost$/,$d' || true)
PG_START_LIST=$(printf '%s\n' "${PG_STARTS[@]}" | sort -n | while read -r s; do ms "$s"; echo; done | paste -sd, - | sed 's/,/, /g')
g=$(get known greylistd "$MAIN" rps) p=$(get known postgrey "$MAIN" rps)

# bench/exim-rcpt.sh's section ("Exim: per-RCPT cost", at the end) is
# its own run's: kept as it is.
EXIM_SECTION=$(sed -n '/^## Exim: per-RCPT cost$/,$p' "$OUT" 2>/dev/null || true)
{
	echo "# greylistd against postgrey"
	echo
	echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $CPU, $CORES cores, Linux $(uname -r);"
	echo "work directory on $FS. greylistd $GL_VER (GDBM $GDBM_VER), one process per"
	echo "connection under systemd-socket-activate; postgrey $PG_VER (BerkeleyDB $BDB_VER),"
	echo "one daemon. UNIX sockets; both with --delay=$DELAY. $ROUNDS turns of $SECS s per"
	echo "server and workload, alternating. The whole run took $ELAPSED s; load average"
	echo "before it $LOAD0, after it $LOAD1.${BENCH_NOTE:+ $BENCH_NOTE}"
	echo
	echo "| workload | records | greylistd req/s | p50 | p99 | postgrey req/s | p50 | p99 | ratio |"
	echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
	row known "$MAIN" "1 known triplets, 1 client"
	row new "$MAIN" "2 new triplets (writes), 1 client"
	row mixed "$MAIN" "3 mixed: 20% new, 20% early, 60% known; 4 clients"
	row fresh "$MAIN" "4 a fresh connection per request, 4 clients"
	for w in known new; do
		for N in $SIZES; do row $w "$N" "5 $w, 1 client"; done
	done
	echo
	echo "Rows 5 at $(human "$MAIN") records are rows 1 and 2. New triplets grow each"
	echo "database by at most max(records/10, 1000). From one turn to the next, req/s"
	echo "varied by up to $(spread greylistd)% for greylistd and $(spread postgrey)% for postgrey"
	echo "(slowest turn against fastest; bench/out/raw.tsv has each workload's range)."
	echo
	echo "| | greylistd | postgrey |"
	echo "|---|---|---|"
	echo "| resident memory | $GL_RSS KiB: peak of one process ($(human "$LARGE") records; new, early and known requests) | $PG_RSS KiB resident after the workloads ($PG_HWM KiB peak) |"
	if [ -n "${EXPIRE_MS[$LARGE]:-}" ]; then
		echo "| a day's expiry pass over $(human "$LARGE") records (\`greylistctl expire\`, before the workloads) | $(ms "$((EXPIRE_MS[$LARGE] * 1000))") | not measured (its nightly cleanup blocks the daemon) |"
	fi
	echo "| start-up, exec to first answer | $(ms "$(field p50_us "$GL_START")") p50, $(ms "$(field p99_us "$GL_START")") p99 (200 starts) | $PG_START_LIST (starts: ${#PG_STARTS[@]}) |"
	echo
	echo "The floor of the harness on this machine, bench/floor.c (answers DUNNO, touches"
	echo "nothing) in greylistd's place: start-up $(ms "$(field p50_us "$FLOOR_START")") p50; one client"
	echo "on one connection $(get known floor "$MAIN" rps) req/s, p50 $(ms "$(get known floor "$MAIN" p50_us)");"
	echo "a fresh connection per request, 4 clients: $(get fresh floor "$MAIN" rps) req/s,"
	echo "p50 $(ms "$(get fresh floor "$MAIN" p50_us)"), p99 $(ms "$(get fresh floor "$MAIN" p99_us)")."
	if [ -n "$(get fresh floor-static "$MAIN" rps)" ]; then
		echo "The same program linked statically (no dynamic loader, only the spawner's"
		echo "fork and exec left): $(get fresh floor-static "$MAIN" rps) req/s, p50 $(ms "$(get fresh floor-static "$MAIN" p50_us)"), p99 $(ms "$(get fresh floor-static "$MAIN" p99_us)")."
	fi
	echo
	echo "## Budget"
	echo
	echo "| target | | figure |"
	echo "|---|---|---|"
	echo "| known >= 10x postgrey's req/s | $(met ge "$g" "$(awk -v p="$p" 'BEGIN { print p * 10 }')") | $(ratio "$g" "$p") ($g against $p req/s) |"
	g=$(get new greylistd "$MAIN" rps) p=$(get new postgrey "$MAIN" rps)
	echo "| new >= 2x | $(met ge "$g" "$(awk -v p="$p" 'BEGIN { print p * 2 }')") | $(ratio "$g" "$p") ($g against $p) |"
	g=$(get mixed greylistd "$MAIN" rps) p=$(get mixed postgrey "$MAIN" rps)
	echo "| mixed, 4 clients, >= 3x | $(met ge "$g" "$(awk -v p="$p" 'BEGIN { print p * 3 }')") | $(ratio "$g" "$p") ($g against $p) |"
	g=$(get fresh greylistd "$MAIN" rps) p=$(get fresh postgrey "$MAIN" rps)
	echo "| fresh connection per request >= postgrey | $(met ge "$g" "$p") | $(ratio "$g" "$p") ($g against $p) |"
	for w in known new; do
		a=$(get $w greylistd "$SMALL" rps) b=$(get $w greylistd "$LARGE" rps)
		echo "| $w at $(human "$LARGE"): no slower than 1.5x its $(human "$SMALL") figure | $(met ge "$(awk -v b="$b" 'BEGIN { print b * 1.5 }')" "$a") | $b against $a req/s ($(human "$SMALL")/$(human "$LARGE") = $(ratio "$a" "$b")); p50 $(ms "$(get $w greylistd "$LARGE" p50_us)") against $(ms "$(get $w greylistd "$SMALL" p50_us)") |"
	done
	echo "| one greylistd process <= 1/10 of postgrey's RSS | $(met ge "$PG_RSS" "$(awk -v g="$GL_RSS" 'BEGIN { print g * 10 }')") | $GL_RSS against $PG_RSS KiB (1/$(awk -v g="$GL_RSS" -v p="$PG_RSS" 'BEGIN { if (g > 0) printf "%.1f", p / g; else printf "-" }')) |"
	echo
	if [ -n "$(get known redis-unix "$MAIN" rps)" ]; then
		echo "## The Redis store"
		echo
		echo "$(redis-server --version | awk '{ print $1, $2, $3 }' | sed 's/v=//') on this machine (the same $CORES cores), no persistence;"
		echo "one server for both columns: greylistd with \`--redis=\` its UNIX socket, and"
		echo "its loopback TCP port. greylistd one process per connection as above; the"
		echo "$(human "$MAIN") records loaded with \`greylistctl dump --db | greylistctl load --redis\` in"
		echo "$(awk -v m="$RD_LOAD_MS" 'BEGIN { printf "%.1f s", m / 1000 }') ($RD_MEM of used_memory after the workloads). Measured in the same"
		echo "ABBA turns as the GDBM file and postgrey."
		echo
		echo "| workload ($(human "$MAIN") records) | GDBM file | Redis, UNIX socket | Redis, loopback TCP | postgrey |"
		echo "|---|---|---|---|---|"
		rrow known "known triplets, 1 client"
		rrow new "new triplets (writes), 1 client"
		rrow known4 "known triplets, 4 clients"
		rrow new4 "new triplets (writes), 4 clients"
		rrow fresh "a fresh connection per request (known), 4 clients"
		echo "| start-up, exec to first answer (a known triplet; 200 starts) | $(startup "$GL_START") | $(startup "$RU_START") | $(startup "$RT_START") | $PG_START_LIST (daemon, starts: ${#PG_STARTS[@]}) |"
		echo
		echo "A known triplet on Redis is one MGET; a new one an MGET and a compare-and-set"
		echo "script (EVAL). A new process on Redis loads libhiredis, connects, and reads the"
		echo "key-kind note before its first answer; on the file it opens and locks it."
		echo
	fi
	if [ -s "$PROBLEMS" ]; then
		echo "## Problems seen in this run"
		echo
		sed 's/^/- /' "$PROBLEMS"
		echo
	fi
	echo "## How"
	echo
	echo "\`make bench\` runs bench/bench.sh. Requests carry every attribute Postfix 3.7"
	echo "sends (and 3.8's compatibility_level and mail_version), with a VERP-like number"
	echo "in the sender that both servers collapse to '#'. The databases are written"
	echo "directly (bench/fill.c, bench/fill-postgrey.pl): 90% known triplets (passed a"
	echo "day ago), 10% pending ones (first seen 60 s before the run: their requests are"
	echo "early retries). Every answer is checked: known, DUNNO; new, a defer for exactly"
	echo "--delay; early, a defer for less. Latency is one request's round trip as the"
	echo "client sees it, connect(2) included in workload 4. postgrey writes its database"
	echo "on every request, known triplets included; greylistd writes only when a record"
	echo "changes. Both log one line per request to a file (greylistd --log-file,"
	echo "postgrey's stderr). postgrey reads Debian's /etc/postgrey whitelists; greylistd"
	echo "runs with \`${GL_OPTS[*]//$ROOT\//}\`; neither list matches"
	echo "the bench's clients, so each request is tested against every entry. Both keep"
	echo "their default auto-whitelist of clients (5). Start-up: greylistd is started on a"
	echo "socketpair, as spawn(8) and inetd start it; postgrey is timed from exec to its"
	echo "first answer on its socket."
	if [ -n "$OLD_MILTER" ]; then	# bench/milter.sh's, from its last run
		echo
		printf '%s\n' "$OLD_MILTER"
	fi
	[ -z "$EXIM_SECTION" ] || printf '\n%s\n' "$EXIM_SECTION"
} >"$OUT"
[ "$OUT" = "$RAWDIR/results.md" ] || cp "$OUT" "$RAWDIR/results.md"

cat "$OUT"
say "bench: wrote $OUT in $ELAPSED s"
if [ -s "$PROBLEMS" ]; then
	say "bench: problems were seen (listed above): the figures may not mean what they say"
	exit 1
fi
