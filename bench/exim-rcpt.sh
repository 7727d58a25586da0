#!/bin/bash
# bench/exim-rcpt.sh - what one RCPT check costs Exim, which opens a
# connection for every ${readsocket}: each RCPT starts a greylistd process.
#
#   bench/exim-rcpt.sh          (as root; GREYLISTD=... names the binary,
#                                default the tree's; writes the section
#                                "Exim: per-RCPT cost" of bench/results.md)
#
# The round trip is timed as Exim makes it, by bench/rcpt-rtt.pl: connect,
# one write, half-close, read to EOF; one connection after another, 10 ms
# apart; the triplet is known (passed), as most RCPTs are. Measured:
#   A. without systemd, on UNIX sockets in a temporary directory, in turns:
#      greylistd --greylistd-protocol and greylistd (the policy request
#      exim4-acl.conf sends) under systemd-socket-activate, and postgrey
#      --exim (one daemon that closes after each answer);
#   B. under a real systemd, booted as PID 1 of private namespaces by the
#      systemd group's harness (tests/systemd.sh, sd_boot): the shipped
#      greylistd-protocol@.service; the same with the settings it had
#      before (PREVIOUS below); without any hardening; without each
#      hardening setting in turn, and without the groups of them in SETS;
#      without FASTEST as well. For each, the CPU time the whole container
#      (PID 1, the instances, journald) spent per connection, and the
#      unit's exposure (systemd-analyze security --offline=yes). Then the
#      shipped, the previous and the bare unit with 4 clients at once
#      (connections/s).
# Timing is reported, never judged: exit 1 only when an answer was wrong.
#
# Knobs: RCPT_N (connections per turn, 30), RCPT_ROUNDS (turns, 3),
# RCPT_OUT (the file whose section is replaced, bench/results.md),
# RCPT_PARTS ("A B"), RCPT_VARIANTS (the units of part B; default all).

set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
N=${RCPT_N:-30}
ROUNDS=${RCPT_ROUNDS:-3}
OUT=${RCPT_OUT:-$HERE/results.md}
PARTS=${RCPT_PARTS:-"A B"}
GREYLISTD=${GREYLISTD:-$ROOT/greylistd}
GREYLISTCTL=${GREYLISTCTL:-$(dirname "$GREYLISTD")/greylistctl}
UNIT=$ROOT/greylistd-protocol@.service
POSTGREY=/usr/sbin/postgrey
T_START=$EPOCHREALTIME
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
export LC_ALL=C

say() { printf '%s\n' "$*" >&2; }
die() { say "exim-rcpt: $*"; exit 2; }

[ "$(id -u)" -eq 0 ] || die "needs root (postgrey's user, systemd in namespaces)"
for c in perl systemd-socket-activate systemd-analyze unshare nsenter; do
	command -v $c >/dev/null || die "$c missing"
done
[ -x "$GREYLISTD" ] && [ -x "$GREYLISTCTL" ] || die "no $GREYLISTD: run make"

WORK=$(mktemp -d /tmp/greylistd-rcpt.XXXXXX)
chmod 711 "$WORK"
W=$WORK
export WORK GREYLISTD GREYLISTCTL
# shellcheck source=../tests/lib.sh
. "$ROOT/tests/lib.sh"
# shellcheck source=../tests/systemd.sh
. "$ROOT/tests/systemd.sh"
PIDS=
cleanup() {
	# shellcheck disable=SC2086 # one PID a word
	[ -z "$PIDS" ] || stop $PIDS
	sd_halt
	rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
WRONG=0

# The requests: Debian's statement's line (a masked client, as
# greylistd-setup-exim4 -netmask=24 writes it), and exim4-acl.conf's.
printf -- '--grey 198.51.100.0/24 alice@sender.test bob@dest.test' > "$W/req.gp"
printf -- '--black 198.51.100.7 alice@sender.test bob@dest.test' > "$W/req.black"
printf '%s\n' request=smtpd_access_policy protocol_state=RCPT protocol_name=ESMTP \
	client_address=198.51.100.7 client_name=unknown client_port=41234 \
	helo_name=mx.client.test sender=alice@sender.test recipient=bob@dest.test \
	instance=exim.4242.1764600000000000 sasl_username= server_address=192.0.2.1 \
	server_port=25 '' > "$W/req.policy"
cp "$ROOT/whitelist" "$W/whitelist"

# stats FILE - "p50 p90 p99 n" in ms of the microseconds in FILE
stats() {
	grep -E '^[0-9]+$' "$1" | sort -n | awk '{ v[NR] = $1 }
		END { if (!NR) { print "- - - 0"; exit }
		      printf "%.2f %.2f %.2f %d\n", v[int((NR + 1) / 2)] / 1000,
		          v[int((NR * 9 + 9) / 10)] / 1000, v[int((NR * 99 + 99) / 100)] / 1000, NR }'
}

# rtt CMD... - run bench/rcpt-rtt.pl with CMD in front of it (nothing, or
# sd_in); appends to $W/lat.$TAG, counts wrong answers
rtt() {
	local out
	out=$("$@" perl "$RTT" "$SOCK" "$N" "$REQ" "$WANT")
	printf '%s\n' "$out" >> "$W/lat.$TAG"
	if grep -q bad <<<"$out"; then
		WRONG=$((WRONG + 1))
		say "exim-rcpt: $TAG: $(grep -c bad <<<"$out") wrong answers"
	fi
}

# --- A: without systemd ----------------------------------------------------

part_a() {
	local i pg r order t
	RTT=$ROOT/bench/rcpt-rtt.pl
	mkdir -p "$W/pg" && chown postgrey "$W/pg" 2>/dev/null ||
		die "no user postgrey (Debian package postgrey)"
	for t in gp policy; do
		set -- --greylistd-protocol
		[ $t = policy ] && set --
		env -u INVOCATION_ID -u LISTEN_FDS systemd-socket-activate --accept --inetd \
			-l "$W/$t.sock" "$GREYLISTD" "$@" --db="$W/a.db" --log-file="$W/a.log" \
			--delay=1s --whitelist="$W/whitelist" 2>> "$W/ssa.log" &
		PIDS="$PIDS $!"
	done
	"$POSTGREY" --unix="$W/pg.sock" --dbdir="$W/pg" --delay=1 --exim \
		--user=postgrey --group=postgrey > "$W/pg.log" 2>&1 &
	PIDS="$PIDS $!"
	for i in $(seq 100); do
		[ -S "$W/gp.sock" ] && [ -S "$W/policy.sock" ] &&
			[ "$(stat -c %a "$W/pg.sock" 2>/dev/null)" = 666 ] && break
		sleep 0.1
	done
	# Each triplet: first seen, then passed once: known from then on.
	for i in 1 2; do
		perl "$RTT" "$W/gp.sock" 1 "$W/req.gp" x 0 > /dev/null
		perl "$RTT" "$W/pg.sock" 1 "$W/req.policy" x 0 > /dev/null
		sleep 1.2
	done
	for ((r = 1; r <= ROUNDS; r++)); do
		order="gp policy postgrey"
		((r % 2)) || order="postgrey policy gp"
		for t in $order; do
			TAG=a-$t REQ=$W/req.policy WANT='action=DUNNO\n\n' SOCK=$W/$t.sock
			case $t in
			gp) REQ=$W/req.gp WANT=false ;;
			postgrey) SOCK=$W/pg.sock ;;
			esac
			rtt
		done
	done
	pg=$(dpkg-query -W -f '${Version}' postgrey 2>/dev/null)
	{
		echo "| server (UNIX socket, no systemd) | request | p50 | p90 | p99 | n |"
		echo "|---|---|---:|---:|---:|---:|"
		for t in gp policy postgrey; do
			set -- $(stats "$W/lat.a-$t")
			case $t in
			gp) printf '| greylistd --greylistd-protocol under systemd-socket-activate | `--grey 198.51.100.0/24 ...` | ' ;;
			policy) printf '| greylistd under systemd-socket-activate | exim4-acl.conf'"'"'s policy request | ' ;;
			postgrey) printf '| postgrey %s --exim | the same policy request | ' "$pg" ;;
			esac
			printf '%s ms | %s ms | %s ms | %s |\n' "$1" "$2" "$3" "$4"
		done
	} > "$W/table.a"
	# shellcheck disable=SC2086
	stop $PIDS; PIDS=
}

# --- B: under a real systemd -------------------------------------------------

# The settings greylistd needs to run as shipped; every other [Service]
# setting of greylistd-protocol@.service is hardening.
ESSENTIAL="ExecStart StandardInput StandardOutput StandardError User Group StateDirectory StateDirectoryMode UMask"

# The settings the units had before bench/exim-rcpt.sh measured them: left
# out since, because the rest covers them (greylistd@.service says why).
PREVIOUS="ProtectKernelTunables=yes ProtectKernelLogs=yes ProtectControlGroups=yes ProtectHostname=yes"

# The fastest set found within an exposure of 1.0: the shipped unit without
# these as well (real protections, each worth a millisecond or less).
FASTEST="ProcSubset PrivateIPC KeyringMode RemoveIPC LockPersonality MemoryDenyWriteExecute DevicePolicy"

# hardening - the hardening settings of the shipped unit, in its order
# (SystemCallErrorNumber goes with SystemCallFilter)
hardening() {
	awk -F= '/^\[/ { s = $0 } s == "[Service]" && /^[A-Za-z]+=/ { print $1 }' "$UNIT" |
		awk '!seen[$0]++' | grep -vxF -f <(tr ' ' '\n' <<<"$ESSENTIAL SystemCallErrorNumber")
}

# Groups of settings removed together, by the kernel feature they pay for:
# what builds a private mount namespace, the other namespaces, and what
# installs a seccomp filter (some are in two groups).
declare -A SETS=(
	[mounts]="ProtectSystem ProtectHome PrivateTmp PrivateDevices PrivateMounts ProtectKernelModules ProtectProc ProcSubset"
	[namespaces]="PrivateUsers PrivateNetwork PrivateIPC"
	[seccomp]="SystemCallFilter SystemCallArchitectures RestrictAddressFamilies RestrictNamespaces RestrictRealtime RestrictSUIDSGID LockPersonality MemoryDenyWriteExecute ProtectClock ProtectKernelModules"
)

# unit_without NAME KEYS... - in $UDIR, NAME.socket and NAME@.service:
# the shipped units listening on /run/glv/NAME.sock, without the settings
# KEYS (SystemCallFilter takes SystemCallErrorNumber with it); a KEY=VALUE
# is added instead
unit_without() {
	local name=$1 k re='^(XX' add=; shift
	for k in "$@"; do
		case $k in
		*=*) add="$add$k"$'\n'; continue ;;
		esac
		re="$re|$k"
		[ "$k" = SystemCallFilter ] && re="$re|SystemCallErrorNumber"
	done
	re="$re)="
	sed -e "s|^ListenStream=.*|ListenStream=/run/glv/$name.sock|" \
		"$ROOT/greylistd-protocol.socket" > "$UDIR/$name.socket"
	{
		grep -vE "$re" "$UNIT" | sed "s|^ExecStart=.*|ExecStart=/usr/sbin/greylistd --greylistd-protocol --delay=1s|"
		printf '%s' "$add"
	} > "$UDIR/$name@.service"
}

# exposure NAME - systemd-analyze security's rating of NAME@.service
exposure() {
	mkdir -p "$W/sec"
	sed "s|^ExecStart=/usr/sbin/greylistd|ExecStart=$GREYLISTD|" "$UDIR/$1@.service" \
		> "$W/sec/$1@.service"
	(cd "$W/sec" && systemd-analyze security --offline=yes "./$1@.service" 2>/dev/null) |
		sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\) .*/\1/p'
}

# variant_units NAME - shipped, previous, bare, fastest, no-GROUP or
# no-SETTING
variant_units() {
	case $1 in
	shipped) unit_without shipped ;;
	# shellcheck disable=SC2086 # lists of settings
	previous) unit_without previous $PREVIOUS ;;
	bare) unit_without bare $(hardening) ;;
	# shellcheck disable=SC2086
	fastest) unit_without fastest $FASTEST ;;
	no-*) if [ -n "${SETS[${1#no-}]:-}" ]; then
		# shellcheck disable=SC2086
		unit_without "$1" ${SETS[${1#no-}]}
	      else
		unit_without "$1" "${1#no-}"
	      fi ;;
	esac
}

# b_units - every variant's units, for sd_boot
b_units() {
	local k g
	UDIR=$D/upper/gltest/units
	cp "$W/whitelist" "$D/upper/etc/greylistd/whitelist"
	cp "$ROOT/bench/rcpt-rtt.pl" "$W/req.gp" "$D/upper/gltest/"
	if [ -n "${RCPT_VARIANTS:-}" ]; then
		VARIANTS=$RCPT_VARIANTS
	else
		VARIANTS="shipped previous bare fastest"
		for g in mounts namespaces seccomp; do VARIANTS="$VARIANTS no-$g"; done
		for k in $(hardening); do VARIANTS="$VARIANTS no-$k"; done
	fi
	for k in $VARIANTS; do variant_units "$k"; done
	SD_WANTS=$(for k in $VARIANTS; do printf '%s.socket ' "$k"; done)
}

# b_measure ROUNDS VARIANTS... - ROUNDS turns of N connections each, in
# turns; $W/lat.NAME and $W/cpu.NAME (the container's CPU microseconds
# per connection, one line per turn)
b_measure() {
	local r v order c0 c1 rounds=$1; shift
	REQ=/gltest/req.gp WANT=false
	for ((r = 1; r <= rounds; r++)); do
		order=$*
		((r % 2)) || order=$(printf '%s\n' "$@" | tac | tr '\n' ' ')
		for v in $order; do
			TAG=$v SOCK=/run/glv/$v.sock
			c0=$(sed -n 's/^usage_usec //p' "$SD_CG/cpu.stat")
			rtt sd_in
			c1=$(sed -n 's/^usage_usec //p' "$SD_CG/cpu.stat")
			echo $(( (c1 - c0) / N )) >> "$W/cpu.$v"
		done
	done
}

# b_row NAME LABEL - one row of part B's table
b_row() {
	local cpu
	cpu=$(awk '{ s += $1 } END { if (NR) printf "%.1f", s / NR / 1000 }' "$W/cpu.$1")
	set -- "$1" "$2" $(stats "$W/lat.$1")
	printf '| %s | %s ms | %s ms | %s ms | %s ms | %s |\n' "$2" "$3" "$4" "$5" "$cpu" "$(exposure "$1")"
}

# b_parallel NAME - 4 clients at once, N connections each: connections/s
b_parallel() {
	local t0 t1 i
	t0=$EPOCHREALTIME
	for i in 1 2 3 4; do
		sd_in perl /gltest/rcpt-rtt.pl "/run/glv/$1.sock" "$N" /gltest/req.gp false 0 \
			> "$W/par.$1.$i" &
	done
	wait
	t1=$EPOCHREALTIME
	if grep -q bad "$W"/par."$1".*; then WRONG=$((WRONG + 1)); say "exim-rcpt: parallel $1: wrong answers"; fi
	awk -v a="$t0" -v b="$t1" -v n=$((4 * N)) 'BEGIN { printf "%.0f", n / (b - a) }'
}

part_b() {
	local v k why
	RTT=/gltest/rcpt-rtt.pl
	why=$(sd_cannot_boot) && die "part B: $why"
	sd_boot rcpt-live b_units || die "part B: systemd did not boot: $SD_WHY"
	SYSTEMD_VERSION=$(sd_in systemctl --version | awk 'NR == 1 { print $2 }')
	for k in 1 2; do
		sd_in perl /gltest/rcpt-rtt.pl /run/glv/shipped.sock 1 /gltest/req.gp x 0 > /dev/null
		sleep 1.2
	done
	# shellcheck disable=SC2086 # one name a word
	b_measure "$ROUNDS" $VARIANTS
	# the four that decide, once more each
	case " $VARIANTS " in *" shipped previous bare fastest "*)
		b_measure "$ROUNDS" shipped previous bare fastest
		PAR_SHIPPED=$(b_parallel shipped)
		PAR_PREVIOUS=$(b_parallel previous)
		PAR_BARE=$(b_parallel bare) ;;
	esac
	{
		echo "| unit | p50 | p90 | p99 | CPU per connection | exposure |"
		echo "|---|---:|---:|---:|---:|---:|"
		for v in $VARIANTS; do
			k=${v#no-}
			case $v in
			shipped) b_row "$v" "**greylistd-protocol@.service as shipped**" ;;
			previous) b_row "$v" "with $PREVIOUS (as shipped before)" ;;
			bare) b_row "$v" "without any hardening" ;;
			fastest) b_row "$v" "without $FASTEST as well" ;;
			*) if [ -n "${SETS[$k]:-}" ]; then b_row "$v" "without the $k group (${SETS[$k]})"
			   else b_row "$v" "without $k"; fi ;;
			esac
		done
	} > "$W/table.b"
	sd_halt
}

# --- the report ----------------------------------------------------------------

for p in $PARTS; do "part_${p,,}"; done
ELAPSED=$(awk -v a="$T_START" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

# cpu NAME - the mean CPU ms per connection of part B's unit NAME
cpu() { awk '{ s += $1 } END { if (NR) printf "%.1f", s / NR / 1000 }' "$W/cpu.$1" 2>/dev/null; }

section() {
	cat <<-EOF
	## Exim: per-RCPT cost

	$(date -u '+%Y-%m-%d %H:%M UTC'); $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1), $(nproc) cores, Linux $(uname -r);
	greylistd $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'). \`bench/exim-rcpt.sh\` (as root): $ROUNDS turns of $N connections
	per server or unit, in turns; $ELAPSED s; load average $LOAD0 before, $LOAD1 after
	(the machine was shared with other work: read the latencies as rough, the CPU
	figures as firmer).

	Exim opens a connection for every \`\${readsocket}\`, so every RCPT starts a greylistd
	process: Debian's statements (greylistd-setup-exim4) make two connections for an RCPT
	that passes (\`--grey\`, then \`--black\`) and one more at DATA (\`--black\`);
	exim4-acl.conf makes one per RCPT. bench/rcpt-rtt.pl times what Exim waits for:
	connect, the request in one write, half-close, the answer read to EOF; a known
	(passed) triplet; one connection after another, 10 ms apart.
	EOF
	if [ -s "$W/table.a" ]; then
		echo
		cat "$W/table.a"
	fi
	[ -s "$W/table.b" ] || return 0
	cat <<-EOF

	Under systemd $SYSTEMD_VERSION, booted as PID 1 of private namespaces (tests/systemd.sh's
	sd_boot), greylistd-protocol.socket on a UNIX socket, the client inside; every unit a copy
	of the shipped one with the settings named added or taken away. CPU per connection is
	all the container spent (PID 1, the instance, journald), from its cgroup's cpu.stat.
	Exposure: \`systemd-analyze security --offline=yes\` (the systemd group holds the shipped
	units at 1.0 at most).

	EOF
	cat "$W/table.b"
	[ -z "${PAR_SHIPPED:-}" ] || cat <<-EOF

	4 clients at once, $N connections each: $PAR_SHIPPED connections/s as shipped,
	$PAR_PREVIOUS as shipped before, $PAR_BARE without any hardening: PID 1 sets the instances
	up one after another, so their CPU cost bounds the RCPTs a second of the whole machine.
	EOF
	[ -n "$(cpu previous)" ] && [ -n "$(cpu shipped)" ] || return 0
	cat <<-EOF

	**Where the time goes.** PID 1 spends it in the child it forks for each instance,
	before exec. In a one-off run of \`perf record -a -g\` on the same machine (2026-12-01, 60
	connections to each unit, the binary copied under another name so that its samples
	could be told from other work's), that child took 33 ms of CPU per connection for the
	unit as shipped before and 1.3 ms without hardening. Of the 33: 10.6 ms reading and
	parsing /proc/self/mountinfo (the kernel's show_mountinfo, libmount, libc), which
	systemd 252 reads again for every path it makes read-only; 4.3 ms compiling the seccomp
	filters (libseccomp) and loading them; 2 ms in mount, umount and unshare themselves.
	Removing one setting at a time (the table) moves the CPU figure by 1 to 3 ms, about the
	spread between turns, but for three: ProtectKernelTunables= (about 8 ms: some 15
	read-only paths), SystemCallFilter= (about 5 ms), and SystemCallArchitectures=, whose
	removal costs 10 to 15 ms more (every filter is then compiled for x86-64, x32 and
	i386). The rest is spread over many settings: see the three groups.

	**Chosen**: the four settings in the second row are left out of both units
	(greylistd@.service, which exim4-acl.conf's requests also start once per RCPT, and
	greylistd-protocol@.service), because the rest already covers them: greylistd@.service
	says how, for each. Here that saved $(awk -v a="$(cpu previous)" -v b="$(cpu shipped)" 'BEGIN { printf "%.1f", a - b }') ms of CPU per connection ($(cpu previous) against
	$(cpu shipped) ms), for an exposure of 0.8 instead of 0.3. The perf child CPU, 4 turns
	of 30 connections each: 31.1 ms as before, 22.8 without ProtectKernelTunables= alone,
	19.8 without the four, 18.6 without the fourth row's seven as well (exposure 0.9), 3.0
	without hardening. Leaving those seven out too would save a millisecond more, within
	the spread, and they are real protections (no writable and executable memory, no
	personality change, no SysV IPC shared with other services, no system files in /proc):
	not taken. Any other setting left out brings the exposure to 1.0 or more, for 1 to 3
	ms, and none of them is covered by the rest: not taken either.
	EOF
}
section > "$W/section"
if [ -f "$OUT" ]; then
	sed '/^## Exim: per-RCPT cost$/,$d' "$OUT" > "$W/out"
	[ -z "$(tail -c 1 "$W/out")" ] || echo >> "$W/out"
	[ -z "$(tail -n 1 "$W/out")" ] || echo >> "$W/out"
	cat "$W/out" "$W/section" > "$OUT"
else
	cp "$W/section" "$OUT"
fi
cat "$W/section"
say "exim-rcpt: wrote the section to $OUT in $ELAPSED s"
[ "$WRONG" -eq 0 ] || exit 1
