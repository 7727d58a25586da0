# shellcheck shell=bash
# tests/stress.sh - many concurrent connections, and slow clients, against
# greylistd as it runs in production: one process per connection under
# `systemd-socket-activate --accept --inetd`, on a UNIX socket, all of them
# sharing one GDBM file. Sourced by test.sh (group stress); defines
# t_stress. tests/stress-client.c, built here, drives the connections and
# time-stamps every request; the checks below judge what it recorded
# against a model of greylisting, exactly, not statistically.
#
# Knobs (environment):
#   STRESS_SECS       60   how long the 64 connections run: the minute the
#                          issue asks for (t_stress then takes about 75 s).
#                          A triplet stays 15 s in the pool, so a minute is
#                          four whole generations of it (a run here: 56,800
#                          requests, 1,481 triplets, 1,388 of them passed).
#   STRESS_CONNS      64   concurrent connections
#   STRESS_POOL       300  triplets in the sliding pool at any moment
#   STRESS_TURNOVER   20   triplets entering (and leaving) the pool a second:
#                          one a tick of 50 ms
#   STRESS_RACERS     16   connections that race at every tick: at once,
#                          each asks for the triplet entering the pool (16
#                          processes see it first together) and for the one
#                          that entered 2.5 s before (16 find it due for its
#                          first pass together); between its races each asks
#                          for a random triplet of the pool. A connection
#                          races every 64/16 = 4 ticks: 15 requests a second,
#                          hundreds a minute, about 950 req/s in all.
#   STRESS_SLOW_SECS  12   how long the steady client runs beside the slow
#                          ones (at least 6: they start 1 s in and take 3 s)
#
# The model (greylistd --delay=2s; the clocks: a request's "now" is time(2),
# the coarse real-time clock, read after the request arrived and before its
# answer left, so it lies in [floor(sent), floor(received)] with the times
# stress-client records):
#   - every answer is "action=..." and an empty line, nothing more; each is
#     logged once, with the reason that the answer says;
#   - T0 of a triplet: when its first defer was received. A request for it
#     sent in the second floor(T0) + delay or later must pass: the record's
#     FIRST is at most floor(T0) and can only move earlier. A defer there is
#     a lost update.
#   - a pass can only be received in the second floor(first send) + delay or
#     later; so the first request of a triplet is deferred (as long as no
#     answer takes longer than delay - 1 s, which the totals show);
#   - exactly one first pass (PREPEND, "delay=N" in the log) per triplet
#     that passed; exactly one "reason=new" per triplet;
#   - `greylistctl dump --raw` afterwards has one record per triplet sent, no more:
#     floor(first send) <= FIRST <= floor(T0); PASSED set exactly for the
#     triplets that got a pass, within [floor(sent), floor(received)] of
#     the PREPEND answer, PASSED - FIRST >= delay, LAST = PASSED (or FIRST
#     while pending).

STRESS_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

: "${STRESS_SECS:=60}"
: "${STRESS_CONNS:=64}"
: "${STRESS_POOL:=300}"
: "${STRESS_TURNOVER:=20}"
: "${STRESS_RACERS:=16}"
: "${STRESS_SLOW_SECS:=12}"
STRESS_DELAY=2

# stress_serve ARGS... - greylistd under socket activation on $D/sock, with
# $D/db and $D/log; sets SSA to the activator's PID
stress_serve() {
	systemd-socket-activate --accept --inetd -l "$D/sock" \
		"$GREYLISTD" --db="$D/db" --log-file="$D/log" "$@" \
		> "$D/activator.out" 2>&1 &
	SSA=$!
	wait_for "$D/sock"
}

# stress_children PID - the PIDs of the processes PID started
stress_children() { cat "/proc/$1/task/$1/children" 2>/dev/null; }

# stress_drain PID TENTHS - wait until PID has no children left; false if
# some are still there after TENTHS tenths of a second
stress_drain() {
	local i=0
	while [ -n "$(stress_children "$1")" ] && [ $i -lt "$2" ]; do
		sleep 0.1; i=$((i + 1))
	done
	[ -z "$(stress_children "$1")" ]
}

# stress_stop - end the activator, and any greylistd it started that is
# still there (a failure already reported)
stress_stop() {
	local k
	for k in $(stress_children $SSA); do kill "$k" 2>/dev/null; done
	stop $SSA
}

# stress_model ANSWERS LOG DUMP NETPREFIX - judge the recorded answers, the
# log and the dump against the model above. Prints "ok NAME|DETAIL",
# "bad NAME|DETAIL" and "stat NAME VALUE" lines.
stress_model() {
	awk -v delay="$STRESS_DELAY" -v netpre="$4" '
	function key(idx,   s) {
		s = (idx % 2) ? "bounce-#" : "alice"
		return netpre "." int(idx / 256) % 256 "." idx % 256 ".0 " \
			s "@s" idx % 13 ".example rcpt@r" idx ".example"
	}
	function sec(us) { return base + int(us / 1000000) }
	function note(name, what) {
		nbad[name]++
		if (nbad[name] <= 3) ex[name] = ex[name] (ex[name] == "" ? "" : "; ") what
	}
	part == 1 && /^# base / { base = $3; next }
	part == 1 {
		q = "C" $1 "S" $2
		idx[q] = $3; sent[q] = $4; recv[q] = $5; lat[q] = $6
		kind[q] = $7; num[q] = $8; nq++
		if (!($3 in smin) || $4 < smin[$3]) { smin[$3] = $4; firstq[$3] = q }
		if (!($3 in rmin) || $5 < rmin[$3]) { rmin[$3] = $5; firstr[$3] = q }
		if ($7 == "D" && (!($3 in t0) || $5 < t0[$3])) t0[$3] = $5
		if ($7 == "P") { npre[$3]++; preq[$3] = q }
		if ($7 == "P" || $7 == "U") passed[$3] = 1
		if ($6 > maxlat) { maxlat = $6; maxq = q }
		next
	}
	part == 2 && /fail-open/ { failopen++; if (failopen <= 3) fo = fo $0 " " }
	part == 2 && /error: / { note("no error in the log", $0) }
	part == 2 && match($0, /: C[0-9]+S[0-9]+: action=/) {
		q = substr($0, RSTART + 2, RLENGTH - 11)
		if (!(q in kind)) next	# not one of these answers
		nlog[q]++
		if ($0 ~ /action=greylist, reason=new,/) { r = "new"; n = delay }
		else if (match($0, /reason=early-retry \([0-9]+s/)) {
			r = "early"; n = substr($0, RSTART + 20, RLENGTH - 21) + 0
		} else if (match($0, /reason=triplet found, delay=[0-9]+,/)) {
			r = "first"; n = substr($0, RSTART + 28, RLENGTH - 29) + 0
		} else if ($0 ~ /reason=triplet found, client_name/) { r = "pass"; n = 0 }
		else { r = "other"; n = -1 }
		reason[q] = r
		want = r == "new" || r == "early" ? "D" : r == "first" ? "P" : r == "pass" ? "U" : "?"
		if (kind[q] != want || (want != "U" && num[q] != n))
			note("each answer says what its log line says",
			     q " answered " kind[q] " " num[q] " but logged " r " " n)
		if (r == "new") nnew[idx[q]]++
		if (r == "first") nfirst[idx[q]]++
		if ((r == "new" || r == "first") && lat[q] > maxwlat) maxwlat = lat[q]
		next
	}
	part == 3 && /^T / && index($5, netpre ".") == 1 {
		k = $5 " " $6 " " $7
		if (k in rec) note("one record per triplet", "twice: " k)
		rec[k] = $2 " " $3 " " $4; nrec++
		next
	}
	END {
		for (q in kind) {
			i = idx[q]
			if (kind[q] == "X" || kind[q] == "T") note("every answer well formed and in time", q " " kind[q])
			if (nlog[q] != 1) note("each answer is logged once", q " logged " nlog[q] + 0 " times")
			if ((i in t0) && sec(sent[q]) >= sec(t0[i]) + delay && kind[q] != "P" && kind[q] != "U")
				note("a retry sent after the delay passes (no lost update)",
				     q " triplet " i ": sent " (sent[q] - t0[i]) / 1e6 " s after its first defer, answered " kind[q] " " num[q] " (" reason[q] ")")
			if ((kind[q] == "P" || kind[q] == "U") && sec(recv[q]) < sec(smin[i]) + delay)
				note("no pass before the delay",
				     q " triplet " i ": passed " (recv[q] - smin[i]) / 1e6 " s after its first request")
		}
		for (i in smin) {
			ntrip++
			if (kind[firstq[i]] != "D")
				note("the first request of each triplet is deferred", "triplet " i ": " firstq[i] " got " kind[firstq[i]] " after " lat[firstq[i]] / 1e3 " ms")
			if (kind[firstr[i]] != "D")
				note("the first answer of each triplet is a defer", "triplet " i ": " firstr[i] " got " kind[firstr[i]])
			if (nnew[i] != 1) note("one reason=new per triplet", "triplet " i ": " nnew[i] + 0)
			if ((i in passed) != (npre[i] == 1) || nfirst[i] + 0 != npre[i] + 0)
				note("one first pass (PREPEND, delay=N) per triplet that passed", "triplet " i ": " npre[i] + 0 " PREPEND, " nfirst[i] + 0 " logged, passed " ((i in passed) ? "yes" : "no"))
			if (i in passed) ntpass++
			k = key(i)
			if (!(k in rec)) { note("every triplet sent is in the dump", "triplet " i ": no record " k); continue }
			split(rec[k], f, " ")
			if (f[1] < sec(smin[i]) || ((i in t0) && f[1] > sec(t0[i])))
				note("FIRST lies between the first request and the first defer",
				     "triplet " i ": FIRST " f[1] ", first sent " sec(smin[i]) ", first defer " sec(t0[i]))
			if (!(i in passed) && (f[3] != 0 || f[2] != f[1]))
				note("a pending triplet has PASSED 0 and LAST = FIRST", "triplet " i ": " rec[k])
			if ((i in passed) && npre[i] == 1) {
				q = preq[i]
				if (f[3] < sec(sent[q]) || f[3] > sec(recv[q]) || f[3] - f[1] < delay || f[2] != f[3])
					note("PASSED is the time of the first pass",
					     "triplet " i ": " rec[k] "; PREPEND " q " sent " sec(sent[q]) " received " sec(recv[q]))
			} else if ((i in passed) && f[3] == 0)
				note("PASSED is the time of the first pass", "triplet " i ": passed, but " rec[k])
		}
		if (nrec != ntrip) note("the dump has no other records", nrec + 0 " records for " ntrip + 0 " triplets")
		if (failopen) note("no fail-open", failopen " lines: " fo)
		split("every answer well formed and in time|each answer is logged once|each answer says what its log line says|a retry sent after the delay passes (no lost update)|no pass before the delay|the first request of each triplet is deferred|the first answer of each triplet is a defer|one reason=new per triplet|one first pass (PREPEND, delay=N) per triplet that passed|every triplet sent is in the dump|FIRST lies between the first request and the first defer|a pending triplet has PASSED 0 and LAST = FIRST|PASSED is the time of the first pass|the dump has no other records|no fail-open|no error in the log", names, "|")
		for (j = 1; j in names; j++)
			print (nbad[names[j]] ? "bad " : "ok ") names[j] "|" \
			      (nbad[names[j]] ? nbad[names[j]] " cases: " ex[names[j]] : "")
		print "stat triplets " ntrip + 0
		print "stat passed " ntpass + 0
		print "stat answers " nq + 0
		print "stat maxlat_ms " int(maxlat / 1000) "." sprintf("%03d", maxlat % 1000)
		print "stat maxlat_req " maxq
		print "stat maxwlat_ms " int(maxwlat / 1000) "." sprintf("%03d", maxwlat % 1000)
	}' part=1 "$1" part=2 "$2" part=3 "$3"
}

# stress_report PREFIX MODELOUT - turn stress_model's lines into pass/fail
stress_report() {
	local line name detail
	while IFS= read -r line; do
		case $line in
		ok\ *) name=${line#ok }; pass "$1: ${name%%|*}" ;;
		bad\ *) name=${line#bad }; detail=${name#*|}; name=${name%%|*}
			fail "$1: $name" "$detail" ;;
		esac
	done < "$2"
}

# stress_stat NAME MODELOUT - one figure from stress_model
stress_stat() { sed -n "s/^stat $1 //p" "$2"; }

t_stress() {
	local client="$WORK/stress-client" sum rc secs rps n
	if ! command -v systemd-socket-activate >/dev/null; then
		skip "stress" "systemd-socket-activate missing"; return
	fi
	if ! cc -O2 -Wall -pthread -o "$client" "$STRESS_HERE/stress-client.c" \
		2> "$WORK/stress-client.err"; then
		fail "stress: the client builds" "$(head -n 5 "$WORK/stress-client.err")"
		return
	fi

	# --- 64 connections, a shared sliding pool of triplets -------------------
	newdir stress
	if ! stress_serve --delay=${STRESS_DELAY}s; then
		fail "stress: socket appears"; stop $SSA; return
	fi
	"$client" load -s "$D/sock" -o "$D/answers" -c "$STRESS_CONNS" \
		-t "$STRESS_SECS" -w "$STRESS_POOL" -r "$STRESS_TURNOVER" \
		-R "$STRESS_RACERS" -d "$STRESS_DELAY" -n 10 \
		> "$D/load.sum" 2> "$D/load.err"
	rc=$?
	sum=$(cat "$D/load.sum")
	check "stress: every connection served to its end, no answer later than 10 s (no deadlock): $sum" \
		test "$rc" -eq 0
	[ -s "$D/load.err" ] && fail "stress: the client saw nothing wrong" "$(head -n 5 "$D/load.err")"
	check "stress: every greylistd process ends after its client's EOF" stress_drain $SSA 100
	stress_stop
	"$GREYLISTCTL" dump --raw --db="$D/db" > "$D/dump"
	stress_model "$D/answers" "$D/log" "$D/dump" 10 > "$D/model"
	stress_report "stress" "$D/model"
	expect "stress: no warning in the log" "" "$(grep 'warning:' "$D/log" | head -n 3)"
	secs=$(echo "$sum" | sed -n 's/.* secs=\([0-9.]*\).*/\1/p')
	rps=$(echo "$sum" | sed -n 's/.* rps=\([0-9]*\).*/\1/p')
	n=$(stress_stat answers "$D/model")
	check "stress: totals: $STRESS_CONNS connections, $n requests in $secs s ($rps req/s), $(stress_stat triplets "$D/model") triplets ($(stress_stat passed "$D/model") passed), longest answer $(stress_stat maxlat_ms "$D/model") ms (writers $(stress_stat maxwlat_ms "$D/model") ms), $(echo "$sum" | sed -n 's/.*\(p99_ms=[0-9.]*\).*/\1/p')" \
		test "${n:-0}" -ge $((STRESS_CONNS * STRESS_SECS))

	# --- slow clients beside a steady one -------------------------------------
	newdir stress-slow
	if ! stress_serve --delay=${STRESS_DELAY}s --timeout=3s; then
		fail "stress slow: socket appears"; stop $SSA; return
	fi
	local steady watch i kid pids=()
	"$client" steady -s "$D/sock" -o "$D/answers" -t "$STRESS_SLOW_SECS" \
		-p 20 -d "$STRESS_DELAY" -n 172 > "$D/steady.sum" 2> "$D/steady.err" &
	steady=$!
	for i in $(seq 50); do
		kid=$(stress_children $SSA)
		[ -n "$kid" ] && break
		sleep 0.1
	done
	"$client" watch -P $SSA -f "$D/db" -o "$D/watch" -t $((STRESS_SLOW_SECS - 1)) \
		-x "${kid:-0}" &
	watch=$!
	sleep 1
	for i in dribble partial noread; do
		"$client" $i -s "$D/sock" -t 10 > "$D/$i.out" 2> "$D/$i.err" &
		pids+=($!)
	done
	wait "${pids[@]}"
	wait $steady; rc=$?
	wait $watch
	stress_drain $SSA 50
	stress_stop
	for i in dribble partial noread; do
		# ms: from connect to the end; for noread this includes the
		# moments it takes to fill the socket buffers, so it bounds the
		# time greylistd waited on the client from above
		local out ms
		out=$(cat "$D/$i.out")
		ms=$(echo "$out" | sed -n 's/.* ms=\([0-9]*\).*/\1/p')
		# 3 s and 2 s for a loaded machine to run the processes
		check "stress slow: $i: closed by greylistd at --timeout=3s, within 5 s ($out)" \
			test "${ms:-99999}" -le 5000 -a "${out#*end=limit}" = "$out"
	done
	expect "stress slow: the unfinished requests are logged as such" 2 \
		"$(grep -c 'request not completed before the timeout' "$D/log")"
	expect "stress slow: the client that never reads is logged" 1 \
		"$(grep -c 'client does not read its answers' "$D/log")"
	expect "stress slow: and nothing else is warned about" "" \
		"$(grep 'warning:' "$D/log" | grep -v -e 'request not completed before the timeout' -e 'client does not read its answers' | head -n 3)"
	# the watch: one line per slow client's greylistd
	check "stress slow: three greylistd processes served the slow clients ($(wc -l < "$D/watch"))" \
		test "$(wc -l < "$D/watch")" -eq 3
	check "stress slow: each of them ended within 5 s ($(awk '{printf "pid %s lived %d ms; ", $1, $3 - $2}' "$D/watch"))" \
		test -z "$(awk -v end=$(((STRESS_SLOW_SECS - 1) * 1000 - 100)) '$3 >= end || $3 - $2 > 5000' "$D/watch")"
	# /proc/locks every 10 ms: a lock seen more than 1 s after such a
	# process began is held while it waits on its client (the one that
	# never reads answers its first requests within some 50 ms)
	check "stress slow: none held a database lock while waiting on its client ($(awk '{printf "pid %s: %d samples with a lock, %d after 1 s; ", $1, $4, $6}' "$D/watch")longest run $(awk 'BEGIN {m = 0} $5 > m {m = $5} END {print m}' "$D/watch") ms)" \
		test -z "$(awk '$6 > 0' "$D/watch")"
	sum=$(cat "$D/steady.sum")
	check "stress slow: the steady client was answered throughout: $sum" test "$rc" -eq 0
	[ -s "$D/steady.err" ] && fail "stress slow: the steady client saw nothing wrong" "$(head -n 5 "$D/steady.err")"
	"$GREYLISTCTL" dump --raw --db="$D/db" > "$D/dump"
	stress_model "$D/answers" "$D/log" "$D/dump" 172 > "$D/model"
	stress_report "stress slow: steady client" "$D/model"
	n=$(stress_stat maxlat_ms "$D/model")
	check "stress slow: the steady client's longest wait ${n} ms (writers $(stress_stat maxwlat_ms "$D/model") ms) is under 1 s" \
		test "${n%.*}" -lt 1000
}
