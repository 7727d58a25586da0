# shellcheck shell=bash
# tests/config.sh - one configuration for every process, and the options
# an admin will type. Sourced by test.sh (groups config, loglines).

t_config() {
	local out rc

	newdir config
	cat > "$D/conf" <<-EOF
	# a comment, then settings greylistd and greylistctl both read
	db = $D/db
	log-file = $D/log	# the log
	delay = 1m
	max-age = 60d
	greylist-text = wait %s s
	auto-whitelist-clients = 2
	whitelist-clients = $D/wl.clients
	whitelist-clients = $D/wl.clients.local
	EOF
	echo 198.51.100.0/24 > "$D/wl.clients"
	out=$(req | "$GREYLISTD" --config="$D/conf" | actions)
	expect "greylistd reads its settings from the file" "DEFER_IF_PERMIT wait 60 s" "$out"
	out=$(req client_address=198.51.100.7 | "$GREYLISTD" --config="$D/conf" | actions)
	expect "a list of files on several lines; a missing *.local one is skipped, as postgrey does" "DUNNO" "$out"
	check "and is not reported" bash -c "! grep -q 'wl.clients.local' '$D/log'"
	out=$(req sender=other@example.org | "$GREYLISTD" --config="$D/conf" --delay=2m --greylist-text='again in %s' | actions)
	expect "the command line wins over the file (a new triplet waits 2 minutes)" "DEFER_IF_PERMIT again in 120" "$out"
	out=$(req client_address=198.51.100.7 | "$GREYLISTD" --config="$D/conf" --whitelist-clients=/dev/null | actions | cut -c1-15)
	expect "a list of files on the command line replaces the file's" "DEFER_IF_PERMIT" "$out"
	expect "greylistctl sees the same database and threshold" "$D/db 0" \
		"$("$GREYLISTCTL" stats --config="$D/conf" | sed -n 's/^file=//p; s/^auto_whitelisted=//p' | tr '\n' ' ' | sed 's/ $//')"

	# expire with the server's max-age: the 45-day-old triplet stays
	printf 'T %d %d %d 10.0.0.0 a@b c@d\n' $(( $(date +%s) - 45 * 86400 )) $(( $(date +%s) - 45 * 86400 )) $(( $(date +%s) - 45 * 86400 )) \
		| "$GREYLISTCTL" load --config="$D/conf" > /dev/null
	"$GREYLISTCTL" expire --config="$D/conf" > "$D/expire.out"
	expect "greylistctl expire keeps what the file's max-age (60d) still needs" "0 deleted" "$(sed 's/.* seen, //' "$D/expire.out")"

	# the default file is optional; a named one is not
	out=$(req | "$GREYLISTD" --db="$D/db2" --log-file="$D/log2" | actions | cut -c1-15)
	expect "a missing default configuration file is no error" "DEFER_IF_PERMIT" "$out"
	"$GREYLISTCTL" check --config="$D/missing.conf" > /dev/null 2> "$D/err"; rc=$?
	expect "a missing named one is (exit 64)" 64 "$rc"
	expect_grep "naming it" "$D/missing.conf: No such file or directory" "$D/err"

	# a bad line: FILE:LINE, from check; the server refuses on every connection
	printf 'delay = 5m\nfrobnicate = yes\ndelay = soon\nprivacy = maybe\nunix = /tmp/s\njust a line\n' > "$D/bad.conf"
	"$GREYLISTCTL" check --config="$D/bad.conf" > /dev/null 2> "$D/err"; rc=$?
	expect "check of a bad file: exit 64" 64 "$rc"
	expect "each bad line named FILE:LINE" \
		"$D/bad.conf:2: unknown option frobnicate|$D/bad.conf:3: delay=soon: not a duration from 1s to 604800s (suffix s, m, h or d)|$D/bad.conf:4: privacy = maybe: use yes or no|$D/bad.conf:5: unix is postgrey's; greylistd opens no socket: greylistd.socket (ListenStream=, SocketMode=, Backlog=), spawn(8) or inetd hands it each connection|$D/bad.conf:6: expected \"name = value\"" \
		"$(sed 's/^greylistctl: //' "$D/err" | tr '\n' '|' | sed 's/|$//')"
	: > "$D/log3"
	for i in 1 2; do
		out=$(req | "$GREYLISTD" --config="$D/bad.conf" --log-file="$D/log3" 2>/dev/null; echo "rc=$?")
		expect "a server with a bad configuration sends no reply and exits 64 (connection $i)" "rc=64" "$out"
	done
	expect "and logs why on every connection" 2 "$(grep -c "error: $D/bad.conf:2: unknown option frobnicate" "$D/log3")"
}

# bad_word NAME ARGS WANT - greylistd refuses ARGS (exit 64) and says WANT
bad_word() {
	local name=$1 args=$2 want=$3 err rc
	err=$(req | "$GREYLISTD" --db="$D/db" $args 2>&1 >/dev/null); rc=$?
	expect "$name: exit 64" 64 "$rc"
	case $err in *"$want"*) pass "$name: says $want" ;;
	*) fail "$name: says $want" "$err" ;; esac
}

t_options2() {
	local o out

	newdir options2
	for o in inet unix dbdir user group pidfile daemonize verbose syslog-facility syslogfacility; do
		bad_word "postgrey's --$o" "--$o=x" "--$o is postgrey's; "
	done
	bad_word "postgrey's -d" "-d" "-d is postgrey's; greylistd is no daemon"
	bad_word "an operator command given to greylistd" "stats" "stats is an operator command: run greylistctl stats"
	bad_word "--version --bogus is an error" "--version --bogus" "unknown option --bogus"
	bad_word "--hostname must be a host name" "--hostname=bad_host!" "--hostname=bad_host!: not a host name"
	out=$(req | "$GREYLISTD" --db="$D/db" '--greylist-action=451 5.7.1' 2>&1 >/dev/null; echo "rc=$?")
	expect "--greylist-action with an enhanced status of class 5 is refused" \
		"greylistd: --greylist-action=451 5.7.1: use DEFER_IF_PERMIT, DEFER, DEFER_IF_REJECT, a 4NN code or \"4NN 4.N.N\"|rc=64" \
		"$(echo "$out" | tr '\n' '|' | sed 's/|$//')"
	"$GREYLISTD" -h | grep -q -- '--retry-window'
	check "-h is --help" test $? -eq 0
	"$GREYLISTD" --help | grep -q 'DEFER_IF_REJECT'
	check "--help names DEFER_IF_REJECT" test $? -eq 0
	"$GREYLISTCTL" --db="$D/none" --whitelist=whitelist check > /dev/null
	expect "greylistctl: the command word may come after options" 0 $?

	out=$(req | gl --greylist-action='451 4.7.1' | actions)
	expect "--greylist-action='451 4.7.1' is passed through, as postgrey does" \
		"451 4.7.1 Greylisted, please try again in 300 seconds" "$out"
	req | gl >/dev/null
	out=$(req | at +5h "$GREYLISTD" --db="$D/db" --log-file="$D/log" --retry-window=6H | actions | cut -c1-7)
	expect "--retry-window=6H (postgrey's spelling) accepts a retry after 5 hours" "PREPEND" "$out"
	bad_word "--hostname with a trailing dot" "--hostname=mx-1.example.org." "not a host name"
	bad_word "two protocols at once" "--milter --exim" "three protocols: choose one"
}

t_crlf() {
	local out rc
	newdir crlf
	out=$(req | sed 's/$/\r/' | gl | actions)
	expect "a request typed through telnet (CRLF) is answered" \
		"DEFER_IF_PERMIT Greylisted, please try again in 300 seconds" "$out"
	printf 'request=smtpd_access_policy\r\nsender=a\rb@x\r\nrecipient=c@d\r\nclient_address=192.0.2.1\r\n\r\n' | gl > "$D/out"; rc=$?
	expect "a CR anywhere else is a protocol violation (exit 76)" 76 "$rc"
	expect_grep "logged as such" 'protocol violation: CR not followed by LF in request' "$D/log"
	printf 'hello\n' | gl > /dev/null; rc=$?
	expect "a first line that is not name=value: exit 76" 76 "$rc"
	expect_grep "logged as that, not as a connection closed inside a request" 'protocol violation: line is not name=value; closing' "$D/log"
}

t_wlreload() {
	local out
	newdir wlreload
	printf 'client 192.0.2.1\n' > "$D/wl"
	# one connection, the clock running 120 times fast: the first request
	# loads the list, the edit follows, the request after two real seconds
	# (four minutes of the connection's time) sees it
	coproc WL { exec env FAKETIME_DONT_FAKE_MONOTONIC=1 faketime -f '+0 x120' \
		"$GREYLISTD" --db="$D/db" --log-file="$D/log" --whitelist="$D/wl"; }
	req client_address=203.0.113.5 >&"${WL[1]}"
	IFS= read -r out <&"${WL[0]}"; read -r _ <&"${WL[0]}"
	expect "before the edit: a client not on the list is greylisted" "action=DEFER_IF_PERMIT" "${out%% *}"
	printf 'client 192.0.2.1\nclient 203.0.113.0/24\n' > "$D/wl.new"
	mv "$D/wl.new" "$D/wl"
	sleep 2
	req client_address=203.0.113.5 sender=other@x.example >&"${WL[1]}"
	IFS= read -r out <&"${WL[0]}"; read -r _ <&"${WL[0]}"
	expect "an edit reaches an open connection within a minute" "action=DUNNO" "$out"
	# shellcheck disable=SC1083,SC2093 # bash closes the fd in WL[1]; shellcheck 0.9 reads {WL[1]} as a word
	exec {WL[1]}>&-
	wait "$WL_PID" 2>/dev/null
	expect_grep "logged as a client whitelist pass" 'reason=client whitelist, .*client_address=203\.0\.113\.5' "$D/log"
}

# --- every log line has one of the documented shapes --------------------------

# The shapes greylistd.c's header promises (LOG FORMAT): a decision line,
# or one that starts with "whitelisted: ", "info: ", "warning: " or "error: ".
LOGLINE_RE='^[^ ]+ greylistd\[[0-9]+\]: (([0-9A-Za-z]+: )?action=(greylist|pass), reason=|whitelisted: |info: |warning: |error: )'

t_loglines() {
	local f n=0 bad
	newdir loglines
	# the files every group of this run wrote (this group alone: a few of
	# its own, from serving, maintenance, repair and expiry)
	req | gl >/dev/null
	printf 'client /[/\n' > "$D/wl"
	req | gl --whitelist="$D/wl" >/dev/null
	printf 'x' | gl >/dev/null
	"$GREYLISTCTL" expire --db="$D/db" --log-file="$D/log" >/dev/null
	: > "$D/bad"
	# (-print0: some groups' directories have spaces in their names)
	while IFS= read -r -d '' f; do
		grep -qE '^[^ ]+ greylistd\[[0-9]+\]: ' "$f" || continue
		n=$((n + $(grep -cE '^[^ ]+ greylistd\[[0-9]+\]: ' "$f")))
		grep -E '^[^ ]+ greylistd\[[0-9]+\]: ' "$f" | grep -vE "$LOGLINE_RE" >> "$D/bad"
	done < <(find "$WORK" -path "$WORK/fuzz" -prune -o -name '*log*' -type f -newer "$RESULTS" -print0 2>/dev/null)
	bad=$(sort -u "$D/bad" | head -n 5)
	expect "every log line of this run ($n lines) is a decision, or starts with whitelisted:, info:, warning: or error:" "" "$bad"
}
