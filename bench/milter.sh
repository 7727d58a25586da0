# bench/milter.sh - what a milter session costs, against the same session
# through the policy protocol. Sourced by bench/bench.sh ("bench/bench.sh
# milter", "make bench-milter"), after its set-up: it uses its client
# ($C, built with -M for the milter protocol), fill, activate, measure,
# problem and the report's helpers (get, ms, human), and writes the
# section "## Milter" of bench/results.md, leaving the rest of the file
# as the last full run wrote it.
#
# greylistd runs as the milter's unit would run it, one process per
# connection under systemd-socket-activate --accept --inetd, once with
# --milter (system "milter") and once without ("policy"), on one database
# of BENCH_MAIN records (90% known, 10% pending). A milter session is what
# Sendmail and Postfix send per SMTP session: connect, OPTNEG, CONNECT
# (with the {client_name} macros), MAIL, one RCPT, EOB (ABORT after a
# 451, as both MTAs do), QUIT, each packet waiting for its answer
# (bench/client.c -M). The policy session is the policy protocol's
# equivalent: connect, one RCPT request, its answer, close (client -f).
# Rows: known and new triplets, on one client and on four concurrent;
# the policy protocol on a connection kept open (as Postfix keeps it) for
# scale; exec to the first answer (client -x, a socketpair, as spawn(8)
# and inetd start it); and hyperfine's timing of one whole session read
# from a file (exec to exit, stdin a file, the shell's start subtracted).

# shellcheck shell=bash disable=SC2034,SC2153 # SOCK, SYSARGS: read by bench.sh's measure(); T_START, LOAD0: set by bench.sh

MT_DB=$W/milter.db
MT_SOCK=$W/milter.sock
PL_SOCK=$W/policy.sock
SOCK+=([milter]=$MT_SOCK [policy]=$PL_SOCK [kept]=$PL_SOCK)
SYSARGS=([milter]=-M [policy]=-f [kept]="")

known=$((MAIN - MAIN / 10)) pending=$((MAIN / 10))
say "bench: milter: filling $MAIN records ($known known, $pending pending)"
"$W/fill" "$MT_DB" $known $pending "$(date +%s)"
"$GREYLISTCTL" expire "--db=$MT_DB" "--log-file=$W/expire.log" "${GL_OPTS[@]}" >/dev/null 2>&1 || true

activate "$MT_SOCK" "$GREYLISTD" --milter "--db=$MT_DB" "--log-file=$GL_LOG" "${GL_OPTS[@]}"
GL_PID=$!
"$C" -M -s "$MT_SOCK" -W 10 -k 1 >/dev/null || die "greylistd --milter did not answer"
activate "$PL_SOCK" "$GREYLISTD" "--db=$MT_DB" "--log-file=$GL_LOG" "${GL_OPTS[@]}"
AUX_PID=$!
"$C" -s "$PL_SOCK" -W 10 -k 1 >/dev/null || die "greylistd (policy) did not answer"
"$C" -M -s "$MT_SOCK" -m known -k $known -t 0.5 >/dev/null || true	# warm up

K="-k $known -p $pending -t $SECS"
cap=$(( (MAIN / 10 > 1000 ? MAIN / 10 : 1000) / ROUNDS ))
# shellcheck disable=SC2086
measure m-known "$MAIN" "milter policy" -m known $K
# shellcheck disable=SC2086
measure m-new "$MAIN" "milter policy" -m new -n $cap $K
# shellcheck disable=SC2086
measure m-known4 "$MAIN" "milter policy" -m known -c 4 $K
# shellcheck disable=SC2086
measure m-new4 "$MAIN" "milter policy" -m new -c 4 -n $((cap / 4)) $K
# shellcheck disable=SC2086
measure m-kept "$MAIN" kept -m known $K

say "bench: milter: exec to the first answer, 200 starts each"
M_START=$("$C" -M -x 200 -k $known -- "$GREYLISTD" --milter "--db=$MT_DB" \
	"--log-file=$GL_LOG" "${GL_OPTS[@]}" 2>"$W/client.err") \
	|| problem "greylistd --milter's start-up: $M_START $(head -n 3 "$W/client.err")"
P_START=$("$C" -x 200 -k $known -d "$DELAY" -- "$GREYLISTD" "--db=$MT_DB" \
	"--log-file=$GL_LOG" "${GL_OPTS[@]}" 2>"$W/client.err") \
	|| problem "greylistd's start-up: $P_START $(head -n 3 "$W/client.err")"
stop "$GL_PID"; stop "$AUX_PID"; GL_PID='' AUX_PID=''

# One session of known triplet 0 (bench/triplet.h) from a file, for
# hyperfine: exec to exit, the answers to /dev/null.
perl -e 'sub p { print pack("N/a*", join("", @_)) }
	p("O", pack("NNN", 6, 0x1ff, 0x1fffff));
	p("D", "C{client_name}\0mx0.senders.example.com\0{client_resolve}\0OK\0");
	p("C", "mx0.senders.example.com\0", "4", pack("n", 25), "10.0.0.1\0");
	p("M", "<k0.Bounce-1\@list0.example.org>\0"); p("R", "<User0\@example.net>\0");
	p("E"); p("Q")' > "$W/session.milter"
printf 'request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=10.0.0.1\nclient_name=mx0.senders.example.com\nsender=k0.Bounce-1@list0.example.org\nrecipient=User0@example.net\n\n' \
	> "$W/session.policy"
HF=
if command -v hyperfine >/dev/null; then
	say "bench: milter: hyperfine, one session from a file"
	hyperfine --style basic --warmup 20 --runs 300 --export-json "$W/hf.json" \
		"$GREYLISTD --milter --db=$MT_DB --log-file=$W/hf.log < $W/session.milter > /dev/null" \
		"$GREYLISTD --db=$MT_DB --log-file=$W/hf.log < $W/session.policy > /dev/null" \
		>"$W/hf.out" 2>&1 || problem "hyperfine: $(tail -n 3 "$W/hf.out")"
	HF=$(perl -MJSON::PP -e 'local $/; my $j = decode_json(<STDIN>);
		printf "%.0f %.0f %.0f %.0f\n", map { ($_->{mean} * 1e6, $_->{stddev} * 1e6) } @{$j->{results}}' \
		< "$W/hf.json" 2>/dev/null) || HF=
	grep -q 'reason=triplet found' "$W/hf.log" 2>/dev/null ||
		problem "hyperfine: the sessions did not find triplet 0 ($(tail -n 1 "$W/hf.log" 2>/dev/null))"
	[ "$(grep -c 'action=pass, reason=triplet found' "$W/hf.log")" = "$(grep -c 'action=' "$W/hf.log")" ] ||
		problem "hyperfine: a session was not answered as a known triplet"
fi

other=$(grep -vE '^(Listening on|Communication attempt|Connection from|Spawned|Execing) |^Child [0-9]+ died with code 0$' "$SA_LOG" | head -n 3 || true)
[ -z "$other" ] || problem "greylistd wrote to stderr, exited non-zero, or systemd-socket-activate complained: $other"

LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$(awk -v a="$T_START" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
mkdir -p "$RAWDIR"
cp "$RAW" "$RAWDIR/raw-milter.tsv"

mrow() {			# mrow WORKLOAD LABEL
	local m p
	m=$(get "$1" milter "$MAIN" rps) p=$(get "$1" policy "$MAIN" rps)
	printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$2" \
		"$m" "$(ms "$(get "$1" milter "$MAIN" p50_us)")" "$(ms "$(get "$1" milter "$MAIN" p99_us)")" \
		"$p" "$(ms "$(get "$1" policy "$MAIN" p50_us)")" "$(ms "$(get "$1" policy "$MAIN" p99_us)")" \
		"$(ratio "$m" "$p")"
}

{
	echo "## Milter"
	echo
	echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(nproc) cores;"
	echo "greylistd $GL_VER. \`bench/bench.sh milter\` (\`make bench-milter\`), $ROUNDS turns of $SECS s"
	echo "per protocol and workload, alternating; $(human "$MAIN") records; --delay=$DELAY. It took $ELAPSED s;"
	echo "load average before it $LOAD0, after it $LOAD1.${BENCH_NOTE:+ $BENCH_NOTE}"
	echo
	echo "A session is one SMTP session's worth: milter: connect, OPTNEG, CONNECT, MAIL,"
	echo "one RCPT, EOB (after a 451: ABORT), QUIT, one greylistd --milter process;"
	echo "policy: connect, one RCPT request, close, one greylistd process. Both under"
	echo "systemd-socket-activate --accept --inetd on UNIX sockets."
	echo
	echo "| workload | milter sessions/s | p50 | p99 | policy sessions/s | p50 | p99 | milter/policy |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|"
	mrow m-known "known triplet, 1 client"
	mrow m-new "new triplet (a write), 1 client"
	mrow m-known4 "known triplet, 4 clients"
	mrow m-new4 "new triplet, 4 clients"
	echo
	echo "For scale, the policy protocol on one connection kept open, as Postfix keeps"
	echo "it (no process per session): $(get m-kept kept "$MAIN" rps) requests/s, p50 $(ms "$(get m-kept kept "$MAIN" p50_us)"), p99 $(ms "$(get m-kept kept "$MAIN" p99_us)")."
	echo
	echo "| | milter | policy |"
	echo "|---|---|---|"
	echo "| exec to the first answer (OPTNEG's; the policy answer), socketpair, 200 starts | $(ms "$(field p50_us "$M_START")") p50, $(ms "$(field p99_us "$M_START")") p99 | $(ms "$(field p50_us "$P_START")") p50, $(ms "$(field p99_us "$P_START")") p99 |"
	if [ -n "$HF" ]; then
		# shellcheck disable=SC2086 # four numbers
		set -- $HF
		echo "| one known-triplet session read from a file, exec to exit (hyperfine, 300 runs, mean ± σ) | $(ms "$1") ± $(ms "$2") | $(ms "$3") ± $(ms "$4") |"
	fi
	echo
	echo "Commands: \`bench/bench.sh milter\`; the sessions are \`bench/client.c\`'s"
	echo "\`-M -m known|new [-c 4]\` against \`-f -m known|new [-c 4]\`, its start-up"
	echo "\`-M -x 200\` against \`-x 200\`, and"
	echo "\`hyperfine --style basic --warmup 20 --runs 300 'greylistd --milter --db=DB < session.milter'"
	echo "'greylistd --db=DB < session.policy'\`. Every answer is checked (CONTINUE for a"
	echo "known triplet at RCPT and EOB; 451 4.7.1 with exactly --delay seconds for a new"
	echo "one). A milter connection lasts one SMTP session, so Sendmail and Postfix's"
	echo "milter client start a greylistd per session; Postfix's policy client keeps its"
	echo "connection and starts one per smtpd process. Under the hardened units each start"
	echo "costs more (README, systemd hardening and start-up cost)."
	if [ -s "$PROBLEMS" ]; then
		echo
		echo "Problems seen in this run:"
		echo
		sed 's/^/- /' "$PROBLEMS"
	fi
} > "$W/milter.md"

# results.md without its old Milter section (the last), then the new one
{
	if [ -f "$OUT" ]; then
		sed '/^## Milter$/,$d' "$OUT" | sed -e :a -e '/^\n*$/{$d;N;ba' -e '}'
		echo
	fi
	cat "$W/milter.md"
} > "$W/results.new"
mv "$W/results.new" "$OUT"
cat "$W/milter.md"
say "bench: wrote the Milter section of $OUT in $ELAPSED s"
if [ -s "$PROBLEMS" ]; then
	say "bench: problems were seen (listed above): the figures may not mean what they say"
	exit 1
fi
exit 0
