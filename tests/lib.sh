# shellcheck shell=bash
# tests/lib.sh - helpers shared by test.sh and the scripts in tests/.
#
# A test reports through pass/fail/skip; test.sh counts the lines. Every
# test works in its own directory under $WORK and starts and stops only
# the processes it started, by PID.

: "${GREYLISTD:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/greylistd}"
: "${GREYLISTCTL:=$(dirname "$GREYLISTD")/greylistctl}"
: "${WORK:=$(mktemp -d /tmp/greylistd-test.XXXXXX)}"
RESULTS=${RESULTS:-$WORK/results}

pass() { echo "PASS: $1" | tee -a "$RESULTS"; }
fail() { echo "FAIL: $1${2:+ -- $2}" | tee -a "$RESULTS"; }
skip() { echo "SKIP: $1 -- $2" | tee -a "$RESULTS"; }

# check NAME CMD... - pass when the command succeeds
check() {
	local name=$1; shift
	if "$@" >/dev/null 2>&1; then pass "$name"; else fail "$name" "$*"; fi
}

# expect NAME WANT GOT - pass when the strings are equal
expect() {
	if [ "$2" = "$3" ]; then pass "$1"
	else fail "$1" "want [$(printf %q "$2")] got [$(printf %q "$3")]"; fi
}

# expect_grep NAME PATTERN FILE - pass when FILE has a line matching
expect_grep() {
	if grep -qE -- "$2" "$3" 2>/dev/null; then pass "$1"
	else fail "$1" "no line matching /$2/ in $3: $(tail -n 3 "$3" 2>/dev/null)"; fi
}

# newdir NAME - a fresh directory for one test; sets D
newdir() { D=$WORK/$1; rm -rf "$D"; mkdir -p "$D"; }

# copy_tree SRC DEST - the source tree SRC into DEST (made), without what
# building, testing and fuzzing leave in it: .git, the build's objects,
# fuzz/out, bench/out, run/. Works where git is missing or SRC is not a
# checkout (the fresh group's tree is git archive's, and its Debian has
# no git).
copy_tree() {
	mkdir -p "$2" &&
	tar -C "$1" --exclude=./.git --exclude=./run --exclude='./fuzz/out' \
		--exclude='./bench/out' --exclude='*.o' -cf - . | tar -C "$2" -xf -
}

# req [name=value | -name ...] - one Postfix-like request; the arguments
# replace or add attributes, or (-name) leave one out
req() {
	local -A a=(
		[request]=smtpd_access_policy [protocol_state]=RCPT
		[protocol_name]=ESMTP [client_address]=192.0.2.10
		[client_name]=mail.example.com [reverse_client_name]=mail.example.com
		[helo_name]=mail.example.com [sender]=alice@example.com
		[recipient]=bob@example.net [recipient_count]=0
		[queue_id]='' [instance]=1a2b.5f3e4d2c.c3d4e.0 [size]=0
		[etrn_domain]='' [stress]='' [sasl_method]='' [sasl_username]=''
		[sasl_sender]='' [ccert_subject]='' [ccert_issuer]=''
		[ccert_fingerprint]='' [ccert_pubkey_fingerprint]=''
		[encryption_protocol]='' [encryption_cipher]='' [encryption_keysize]=0
		[client_port]=54321 [policy_context]='' [server_address]=192.0.2.1
		[server_port]=25 [compatibility_level]=3.6 [mail_version]=3.7.11
	)
	local kv order="request protocol_state protocol_name client_address client_name reverse_client_name helo_name sender recipient recipient_count queue_id instance size etrn_domain stress sasl_method sasl_username sasl_sender ccert_subject ccert_issuer ccert_fingerprint ccert_pubkey_fingerprint encryption_protocol encryption_cipher encryption_keysize client_port policy_context server_address server_port compatibility_level mail_version"
	local -A drop=()
	for kv in "$@"; do
		case $kv in
		-*) drop[${kv#-}]=1 ;;
		*=*) [ -n "${a[${kv%%=*}]+x}" ] || order="$order ${kv%%=*}"
		     a[${kv%%=*}]=${kv#*=} ;;
		esac
	done
	for k in $order; do
		[ -n "${drop[$k]+x}" ] && continue
		printf '%s=%s\n' "$k" "${a[$k]}"
	done
	printf '\n'
}

# gl ARGS... - the binary with this test's database and log
gl() { "$GREYLISTD" --db="$D/db" --log-file="$D/log" "$@"; }

# at OFFSET CMD... - run CMD with the wall clock moved by OFFSET (+301s)
at() {
	local off=$1; shift
	FAKETIME_DONT_FAKE_MONOTONIC=1 faketime -f "$off" "$@"
}

# actions - the action lines of greylistd's replies on stdin, one per line
actions() { grep '^action=' | sed 's/^action=//'; }

# wait_for FILE [TENTHS] - until FILE exists (a socket, a pid file)
wait_for() {
	local i=0
	while [ ! -e "$1" ] && [ $i -lt "${2:-50}" ]; do sleep 0.1; i=$((i + 1)); done
	[ -e "$1" ]
}

# stop PID... - end processes this test started, and reap them
stop() {
	local p
	for p in "$@"; do kill "$p" 2>/dev/null; done
	for p in "$@"; do wait "$p" 2>/dev/null; done
	return 0
}
