# shellcheck shell=bash
# tests/milter.sh - end to end: greylistd --milter behind the two milter
# clients there are, Postfix's (smtpd_milters) and Sendmail's
# (INPUT_MAIL_FILTER), each the real program.
#
# Sourced by test.sh, which runs t_milter as the group "milter". It uses
# the harnesses of tests/postfix.sh (a private Postfix instance, swaks with
# XCLIENT choosing the client address) and tests/sendmail.sh (a real
# Sendmail 8.17 unpacked from Debian's packages, run in a network, mount
# and UTS namespace of the test's own; swaks --local-interface chooses the
# client address):
#
#   swaks --XCLIENT--> smtpd 127.0.0.1:PORT --smtpd_milters--> unix:SOCKET
#                        |                   (or inet:127.0.0.1:MPORT)
#                        +--> qmgr --> smtp --> smtp-sink -d (files)
#   swaks --> sendmail -bD (queueonly: qf files) --milter F=T--> unix:SOCKET
#
#   SOCKET: systemd-socket-activate --accept [--inetd] --> mt-greylistd.sh
#           --> greylistd --milter, one process per milter connection
#
# Time is the test's, not the wall clock's: mt-greylistd.sh starts each
# greylistd with libfaketime preloaded (FAKETIME=+Ns, read from the
# instance's file "clock" at every connection), so "an early retry" and
# "after the delay" are offsets of +100 s and +400 s against the default
# --delay of 300 s, with no waiting and no race with the machine's load.
# greylistd reads its configuration file (the instance's greylistd.conf) at
# every connection too, which is how a check changes --greylist-text.
# While the instance's file "record" exists, the wrapper also keeps what
# the MTA sends (tee, so greylistd reads a pipe and writes the socket):
# the packet streams of a passing and of a two-recipient session from each
# MTA, compared with tests/milter-captures/greylistd-*.bin command by
# command (MILTER_CAPTURE_SAVE=1 saves them there instead: fuzz seeds).
#
# The checks read what the MTA answered (swaks's transcript), what it
# delivered (smtp-sink's files) or queued (Sendmail's qf files), and what
# greylistd logged. Every process is stopped by its PID; the namespace goes
# with its holder.
#
# Needs root, what the postfix and sendmail groups need, faketime's library
# (Debian package libfaketime) and systemd-socket-activate. About 20 s on
# an idle 2-core machine, 40 s under a load of 6.

MT_FAKETIME=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
MT_RCPT=bob@dest.test		# the recipient that gets greylisted
MT_TEXT='Greylisted, please try again in'

# mt_cannot_run - print why this machine cannot run the group and succeed,
# or fail when it can
mt_cannot_run() {
	[ -r "$MT_FAKETIME" ] || { echo "no $MT_FAKETIME (Debian package libfaketime)"; return 0; }
	command -v systemd-socket-activate >/dev/null || { echo "no systemd-socket-activate (Debian package systemd)"; return 0; }
	return 1
}

# mt_start DIR LISTEN [FORM] - greylistd --milter under
# systemd-socket-activate --accept on LISTEN (a UNIX socket path, or
# 127.0.0.1:PORT), database, log and configuration in DIR, its clock at
# DIR/clock (+0s to begin with). FORM "inetd" passes the connection as
# stdin/stdout, otherwise it is fd 3 with LISTEN_FDS=1. A UNIX socket is
# made 0666 (systemd-socket-activate makes it 0644) so that Postfix's
# smtpd, user postfix, can connect. Sets MT_PID (the activator's).
mt_start() {
	local dir=$1 listen=$2 form=${3:-}
	mkdir -p "$dir/cap" && chmod 755 "$dir"
	[ -e "$dir/clock" ] || echo +0s > "$dir/clock"
	[ -e "$dir/greylistd.conf" ] || : > "$dir/greylistd.conf"
	# systemd-socket-activate passes no environment: absolute paths only,
	# and a sanitizer build's options (CI's) written in
	cat > "$dir/mt-greylistd.sh" <<-EOF
	#!/bin/sh
	read -r off < "$dir/clock"
	gl() {
		exec /usr/bin/env LD_PRELOAD=$MT_FAKETIME FAKETIME="\$off" \\
			FAKETIME_DONT_FAKE_MONOTONIC=1 ${ASAN_OPTIONS:+ASAN_OPTIONS=$ASAN_OPTIONS} \\
			"$GREYLISTD" --milter \\
			--config="$dir/greylistd.conf" --db="$dir/greylistd.db" \\
			--log-file="$dir/greylistd.log"
	}
	[ -e "$dir/record" ] || gl
	/usr/bin/tee "$dir/cap/conn-\$(/bin/date +%s%N).bin" | gl
	EOF
	chmod 755 "$dir/mt-greylistd.sh"
	: > "$dir/activate.err"
	systemd-socket-activate --accept ${form:+--inetd} -l "$listen" \
		"$dir/mt-greylistd.sh" 2> "$dir/activate.err" &
	MT_PID=$!
	for _ in $(seq 50); do
		grep -q '^Listening on' "$dir/activate.err" && break
		sleep 0.1
	done
	grep -q '^Listening on' "$dir/activate.err" || return 1
	case $listen in /*) chmod 666 "$listen" ;; esac
}

# mt_clock DIR OFFSET - the clock greylistd's next connections see
mt_clock() { echo "$2" > "$1/clock"; }

# mt_record DIR on|off - keep what the MTA sends on the next connections
mt_record() { if [ "$2" = on ]; then : > "$1/record"; else rm -f "$1/record"; fi; }

# mt_children DIR - the greylistd processes that did not exit 0, as
# systemd-socket-activate saw them ("Child N died with code C")
mt_children() { grep -E '^Child [0-9]+ died with code [1-9]' "$1/activate.err" | head -n 3; }

# mt_replies FILE - the reply to each RCPT TO in a swaks transcript, one
# "ADDRESS REPLY" a line
mt_replies() {
	sed -n '/^ *-> RCPT TO:/{s/^ *-> RCPT TO:<\([^>]*\)>.*/\1/;h;n;s/^<[-*~]* *//;H;x;s/\n/ /;p;}' "$1"
}

# mt_headers FILE - the header lines of a message file (up to the empty
# line), names only, in order
mt_headers() { sed -n '/^$/q;s/^\([A-Za-z][-A-Za-z0-9]*\):.*/\1/p' "$1"; }

# mt_log_qid DIR REGEX - the queue ID that starts greylistd's log line
# matching REGEX (nothing when the line has none)
mt_log_qid() {
	sed -n "s/^[^ ]* greylistd\[[0-9]*\]: \([0-9A-Za-z]*\): \(.*$2.*\)/\1/p" "$1/greylistd.log" | head -n 1
}

# mt_packets ADDR SENDER RCPT [EXTRA] - on stdout, the packets of a short
# milter session as an MTA sends them: OPTNEG (version 6, every action and
# stage offered), CONNECT from ADDR (IPv4), MAIL, RCPT, and QUIT; EXTRA
# (a Perl expression of packets, p(CMD, DATA...)) comes before QUIT
mt_packets() {
	perl -e 'sub p { print pack("N/a*", join("", @_)) }
		my ($addr, $from, $rcpt, $extra) = @ARGV;
		p("O", pack("NNN", 6, 0x1ff, 0x1fffff));
		p("D", "C", "{client_name}\0", "mx.example.org\0", "{client_resolve}\0", "OK\0");
		p("C", "mx.example.org\0", "4", pack("n", 25), "$addr\0");
		p("M", "<$from>\0");
		p("R", "<$rcpt>\0");
		eval $extra if defined $extra;
		p("Q");' "$@"
}

# mt_answers FILE - the commands of greylistd's answers in FILE, as one
# word ("Occy": OPTNEG, continue, continue, reply code)
mt_answers() { mc_commands "$1"; }

# mt_violation NAME WHY PERL-PACKETS - greylistd --milter, reading the
# packets PERL-PACKETS (p(CMD, DATA...) calls) after a good OPTNEG, exits
# 76 with one warning naming WHY, and answers only the OPTNEG
mt_violation() {
	local name=$1 why=$2 rc
	newdir "milter-viol"
	perl -e 'sub p { print pack("N/a*", join("", @_)) }
		p("O", pack("NNN", 6, 0x1ff, 0x1fffff)); eval $ARGV[0]; die $@ if $@' "$3" > "$D/in"
	"$GREYLISTD" --milter --db="$D/db" --log-file="$D/log" < "$D/in" > "$D/out"; rc=$?
	expect "milter protocol, $name: exit 76, only OPTNEG answered, one warning" \
		"76 O 1" "$rc $(mt_answers "$D/out") $(grep -c 'warning: protocol violation' "$D/log")"
	expect_grep "milter protocol, $name: the warning says why" "warning: protocol violation: $why; closing the connection" "$D/log"
}

# mt_protocol - greylistd --milter on a pipe: a session, and violations
mt_protocol() {
	local out
	newdir milter-proto
	mt_packets 192.0.2.10 alice@example.org bob@example.net \
		'p("E"); p("A"); p("M", "<alice\@example.org>\0"); p("R", "<postmaster\@example.net>\0")' > "$D/in"
	"$GREYLISTD" --milter --db="$D/db" --log-file="$D/log" < "$D/in" > "$D/out"
	expect "milter protocol: OPTNEG, CONNECT c, MAIL c, new RCPT y, EOB c, then MAIL c and a whitelisted RCPT c; exit 0" \
		"0 Occyccc" "$? $(mt_answers "$D/out")"
	out=$(mc_dump "$D/out" | sed -n '1s/^ *\([0-9]*\) O .*/\1/p;4p')
	expect "milter protocol: OPTNEG answer (64 bytes: version, actions, stages, 3 macro lists) and the reply code" \
		"64|   55 y 451 4.7.1 Greylisted, please try again in 300 seconds|" "$(echo "$out" | paste -sd '|')"
	out=$(od -An -tx1 -j 5 -N 12 "$D/out" | tr -d ' \n')
	expect "milter protocol: version 6, SMFIF_ADDHDRS, stages 0x372 switched off" 000000060000000100000372 "$out"
	expect_grep "milter protocol: the decision is logged with the verified {client_name}" \
		'action=greylist, reason=new, client_name=mx\.example\.org, client_address=192\.0\.2\.10, sender=alice@example\.org, recipient=bob@example\.net$' "$D/log"
	for out in "--greylist-action=450|450 4.7.1 Greylisted, please try again in 300 seconds" \
		"--greylist-action=421 4.3.2|421 4.3.2 Greylisted, please try again in 300 seconds" \
		"--greylist-text=4.2.0 wait %s s|451 4.2.0 wait 300 s"; do
		newdir milter-code
		mt_packets 192.0.2.10 alice@example.org bob@example.net |
			"$GREYLISTD" --milter --db="$D/db" --log-file="$D/log" "${out%%|*}" > "$D/out"
		expect "milter protocol: $out (the reply code's enhanced status is added once)" "${out#*|}" \
			"$(mc_dump "$D/out" | sed -n '4s/^ *[0-9]* y \(.*\)|$/\1/p')"
	done
	mt_violation "a packet length of 0" "milter packet length out of range \\(1 to 65532\\)" 'print pack("N", 0)'
	mt_violation "a packet length over 64 KiB" "milter packet length out of range \\(1 to 65532\\)" 'print pack("N", 70000), "M"'
	mt_violation "an unknown command" "unknown milter command" 'p("Z")'
	mt_violation "a string without its NUL" "milter MAIL without its address, or too long" 'p("M", "<a\@b>")'
	mt_violation "a packet cut short" "connection closed inside a milter packet" 'print pack("N", 20), "M<a"'
}

# --- Postfix's milter client ---------------------------------------------------

# pfm_setup - the postfix group's private instance, its recipient
# restrictions without the policy service, its smtpd_milters greylistd on
# a UNIX socket in the queue directory, named as the README says (a
# relative path, which Postfix takes from its queue directory, chrooted or
# not), and two more smtpd listeners: greylistd on inet:127.0.0.1
# (PFM_INET), and the same UNIX socket with milter_default_action=tempfail
# (PFM_TEMPFAIL); main.cf has accept.
pfm_setup() {
	pf_setup postfix-milter || return 1
	PFM_DIR=$PF_DIR/milter PFM_IDIR=$PF_DIR/milter-inet
	PFM_SOCK=$PF_DIR/spool/greylistd/milter.sock
	mkdir -p "$PF_DIR/spool/greylistd"
	PFM_MPORT=$(pf_free_port) && PFM_INET=$(pf_free_port) &&
		PFM_TEMPFAIL=$(pf_free_port) || return 1
	PFM_MAIN=$PF_SMTP_PORT
	postconf -c "$PF_DIR"/etc -e \
		"smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination" \
		"smtpd_milters = unix:greylistd/milter.sock" "milter_default_action = accept" \
		"milter_protocol = 6"
	cat >> "$PF_DIR"/etc/master.cf <<-EOF
	127.0.0.1:$PFM_INET inet n - n - - smtpd
	  -o smtpd_milters=inet:127.0.0.1:$PFM_MPORT
	127.0.0.1:$PFM_TEMPFAIL inet n - n - - smtpd
	  -o milter_default_action=tempfail
	EOF
}

# pfm_send TAG ADDR RCPTS PORT [SWAKS-ARGS...] - pf_smtp to the smtpd on
# PORT; PF_REPLY is the first RCPT's reply, or MAIL's when that failed
pfm_send() {
	local tag=$1 addr=$2 rcpts=$3 port=$4; shift 4
	PF_SMTP_PORT=$port pf_smtp "$tag" "$addr" "$rcpts" "$@"
	[ -n "$PF_REPLY" ] ||
		PF_REPLY=$(sed -n '/^ *-> MAIL FROM:/{n;s/^<[-*~]* *//;p;q;}' "$PF_DIR/$tag.smtp")
}

# pfm_expect NAME TAG WANT-GLOB [OR-GLOB] - PF_REPLY matches a glob
pfm_expect() {
	# shellcheck disable=SC2254 # $3 and $4 are globs
	case $PF_REPLY in
	$3|${4:-$3}) pass "$1 ($PF_REPLY)" ;;
	*) fail "$1" "want [$3] got [$PF_REPLY]: $(grep -m 3 '^<[-*~]* *[45]' "$PF_DIR/$2.smtp" | tr '\n' ' ')" ;;
	esac
}

# pfm_delivered NAME TAG HEADERS - the message TAG reached smtp-sink with
# HEADERS X-Greylist headers (0 or 1); with one, it is just above
# Postfix's own Received: (index 0 of the headers a milter sees; smtp-sink
# adds lines of its own above both), and says "delayed N seconds"
# with N from 400 to 410 (the test's clock moved by 400 s). Sets PFM_FILE.
pfm_delivered() {
	local name=$1 tag=$2 want=$3 n first
	PFM_FILE=$(pf_dump "$tag")
	if [ -z "$PFM_FILE" ]; then
		fail "$name: delivered" "no file in $PF_DIR/sink with Subject: greylistd $tag"
		return
	fi
	expect "$name: delivered, with $want X-Greylist header(s)" "$want" \
		"$(grep -c '^X-Greylist:' "$PFM_FILE")"
	[ "$want" = 1 ] || return 0
	n=$(sed -n 's/^X-Greylist: delayed \([0-9]*\) seconds by greylistd-[0-9.]* at [^;]*; .* [0-9][0-9][0-9][0-9] .*/\1/p' "$PFM_FILE")
	check "$name: X-Greylist: delayed ${n:-?} seconds by greylistd-... (400 to 410)" \
		test "${n:-0}" -ge 400 -a "${n:-0}" -le 410
	# smtp-sink writes its own X-Client-Addr ... X-Rcpt-Args and Received:
	# lines above the message; Postfix's Received: says "(Postfix)"
	first=$(grep -A 2 '^X-Greylist:' "$PFM_FILE" | sed -n '2s/^\([A-Za-z-]*\): .*/\1/p;3s/.*by [^ ]* (\(Postfix\)).*/\1/p' | paste -sd ' ')
	expect "$name: just above Postfix's own Received:" "Received Postfix" "$first"
}

# pfm_unix - the checks against greylistd on the UNIX socket
pfm_unix() {
	local r qid

	pfm_send new 198.51.100.20 "$MT_RCPT" "$PFM_MAIN"
	pfm_expect "Postfix, milter: a new triplet gets 451 4.7.1 at RCPT" new \
		"451 4.7.1 $MT_TEXT 300 seconds"
	expect_grep "and Postfix logs it as a milter reject" \
		"NOQUEUE: milter-reject: RCPT from $PF_NAME\\[198\\.51\\.100\\.20\\]: 451 4\\.7\\.1 $MT_TEXT 300 seconds" "$PF_DIR"/maillog
	pfm_send v6-new IPV6:2001:db8:5::20 "$MT_RCPT" "$PFM_MAIN" --quit-after RCPT
	pfm_expect "Postfix, milter: an IPv6 client's new triplet gets 451" v6-new "451 4.7.1 $MT_TEXT 300 seconds"
	pfm_send null-new 198.51.100.20 "$MT_RCPT" "$PFM_MAIN" --from '<>' --quit-after RCPT
	pfm_expect "Postfix, milter: the null sender's new triplet gets 451" null-new "451 4.7.1 $MT_TEXT 300 seconds"

	mt_clock "$PFM_DIR" +100s
	pfm_send early 198.51.100.20 "$MT_RCPT" "$PFM_MAIN" --quit-after RCPT
	pfm_expect "Postfix, milter: an early retry (+100 s) gets 451 with the time left" early \
		"451 4.7.1 $MT_TEXT 19[0-9] seconds" "451 4.7.1 $MT_TEXT 200 seconds"
	pfm_send pm 203.0.113.30 postmaster@dest.test "$PFM_MAIN" --quit-after RCPT
	pfm_expect "Postfix, milter: postmaster@ from an unknown client passes" pm "250 2.1.5 Ok"

	mt_clock "$PFM_DIR" +400s
	mt_record "$PFM_DIR" on
	pfm_send pass 198.51.100.20 "$MT_RCPT" "$PFM_MAIN"
	mt_record "$PFM_DIR" off
	pfm_expect "Postfix, milter: the retry after the delay (+400 s) is accepted" pass "250 2.1.5 Ok"
	pfm_delivered "Postfix, milter: the passed message" pass 1
	pfm_send next 198.51.100.20 "$MT_RCPT" "$PFM_MAIN"
	pfm_expect "Postfix, milter: the triplet's next message is accepted" next "250 2.1.5 Ok"
	pfm_delivered "Postfix, milter: the next message" next 0
	pfm_send neighbour 198.51.100.254 "$MT_RCPT" "$PFM_MAIN" --quit-after RCPT
	pfm_expect "Postfix, milter: a neighbour in the same /24 passes" neighbour "250 2.1.5 Ok"

	# one known recipient, one new: the second RCPT carries the queue ID
	# (Postfix opens the queue file at the first accepted recipient)
	mt_record "$PFM_DIR" on
	pfm_send two 198.51.100.20 "$MT_RCPT,dave@dest.test" "$PFM_MAIN"
	mt_record "$PFM_DIR" off
	r=$(mt_replies "$PF_DIR/two.smtp" | paste -sd '|')
	expect "Postfix, milter: two recipients, one new: only the new one gets 451" \
		"$MT_RCPT 250 2.1.5 Ok|dave@dest.test 451 4.7.1 $MT_TEXT 300 seconds" "$r"
	pfm_delivered "Postfix, milter: and the message for the known one" two 0
	qid=$(sed -n 's/^<- *250 2\.0\.0 Ok: queued as \([0-9A-Z]*\).*/\1/p' "$PF_DIR/two.smtp")
	expect "greylistd log: the new recipient's line starts with Postfix's queue ID ($qid)" \
		"${qid:-none}" "$(mt_log_qid "$PFM_DIR" 'action=greylist, reason=new, .*recipient=dave@dest\.test')"

	pfm_send v6-pass IPV6:2001:db8:5::20 "$MT_RCPT" "$PFM_MAIN"
	pfm_expect "Postfix, milter: the IPv6 client's retry is accepted" v6-pass "250 2.1.5 Ok"
	pfm_delivered "Postfix, milter: the IPv6 client's message" v6-pass 1
	pfm_send null-pass 198.51.100.20 "$MT_RCPT" "$PFM_MAIN" --from '<>'
	pfm_expect "Postfix, milter: the null sender's retry is accepted" null-pass "250 2.1.5 Ok"
	pfm_delivered "Postfix, milter: the null sender's message" null-pass 1
}

# pfm_unix_log - what greylistd logged behind Postfix's milter client
pfm_unix_log() {
	local L=$PFM_DIR/greylistd.log name=${PF_NAME//./\\.}
	local who="client_name=$name, client_address=198\\.51\\.100\\.20, sender=$PF_FROM, recipient=$MT_RCPT"

	expect_grep "greylistd log (milter): reason=new, with {client_name} from Postfix" "action=greylist, reason=new, $who\$" "$L"
	expect_grep "greylistd log (milter): early-retry" "action=greylist, reason=early-retry \\((19[0-9]|200)s missing\\), $who\$" "$L"
	expect_grep "greylistd log (milter): the first pass with its delay" "action=pass, reason=triplet found, delay=40[0-9], $who\$" "$L"
	expect_grep "greylistd log (milter): IPv6, the /64's address as CONNECT gave it" \
		"action=greylist, reason=new, client_name=$name, client_address=2001:db8:5::20, sender=$PF_FROM, recipient=$MT_RCPT\$" "$L"
	expect_grep "greylistd log (milter): the null sender (no sender=)" \
		"action=greylist, reason=new, client_name=$name, client_address=198\\.51\\.100\\.20, recipient=$MT_RCPT\$" "$L"
	expect_grep "greylistd log (milter): postmaster@ as recipient whitelist" \
		"action=pass, reason=recipient whitelist, .*recipient=postmaster@dest\\.test\$" "$L"
	expect "greylistd log (milter): no warning or error" "" \
		"$(grep -E 'greylistd\[[0-9]+\]: (warning|error):' "$L" | head -n 3)"
	expect "every greylistd --milter process exited 0" "" "$(mt_children "$PFM_DIR")"
}

# pfm_inet - greylistd on inet:127.0.0.1 (passed as fd 3, LISTEN_FDS=1),
# with a "%" in its text: Postfix shows it as one "%"
pfm_inet() {
	echo 'greylist-text = Greylisted (100%% sure), please try again in %s seconds' \
		> "$PFM_IDIR/greylistd.conf"
	pfm_send inet-new 198.51.100.40 "$MT_RCPT" "$PFM_INET" --quit-after RCPT
	pfm_expect "Postfix, milter on inet:127.0.0.1: a new triplet gets 451, the text's % as one %" inet-new \
		"451 4.7.1 Greylisted (100% sure), please try again in 300 seconds"
	mt_clock "$PFM_IDIR" +400s
	pfm_send inet-pass 198.51.100.40 "$MT_RCPT" "$PFM_INET"
	pfm_expect "Postfix, milter on inet:127.0.0.1: the retry after the delay is accepted" inet-pass "250 2.1.5 Ok"
	pfm_delivered "Postfix, milter on inet:127.0.0.1: the passed message" inet-pass 1
	expect "every greylistd --milter process (fd 3 form) exited 0" "" "$(mt_children "$PFM_IDIR")"
}

# pfm_gone - greylistd stopped: milter_default_action decides
pfm_gone() {
	stop "$MT_PID"
	pfm_send gone-accept 198.51.100.60 "$MT_RCPT" "$PFM_MAIN"
	pfm_expect "Postfix, milter gone, milter_default_action=accept: mail passes" gone-accept "250 2.1.5 Ok"
	pfm_delivered "Postfix, milter gone: the message" gone-accept 0
	pfm_send gone-tempfail 198.51.100.60 "$MT_RCPT" "$PFM_TEMPFAIL" --quit-after RCPT
	pfm_expect "Postfix, milter gone, milter_default_action=tempfail: 451 at MAIL" gone-tempfail \
		"451 4.7.1 Service unavailable - try again later"
}

t_milter_postfix() {
	local why ipid
	if why=$(pf_cannot_run); then skip "milter: Postfix" "$why"; return; fi
	# shellcheck disable=SC2034 # tests/postfix.sh's
	PF_MASTER='' PF_SINK=''
	MT_PID='' ipid=''
	if ! pfm_setup; then fail "milter: Postfix: free loopback ports" "none found"; return; fi
	if ! mt_start "$PFM_IDIR" "127.0.0.1:$PFM_MPORT"; then
		fail "milter: greylistd --milter listens on 127.0.0.1:$PFM_MPORT" "$(head -c 300 "$PFM_IDIR/activate.err")"
	fi
	ipid=$MT_PID
	if ! mt_start "$PFM_DIR" "$PFM_SOCK" inetd; then
		fail "milter: greylistd --milter listens on $PFM_SOCK" "$(head -c 300 "$PFM_DIR/activate.err")"
		stop "$MT_PID" "$ipid"; return
	fi
	if ! pf_start; then
		fail "milter: a private Postfix runs" "$PF_WHY"
	else
		pfm_unix
		pfm_inet
		pfm_gone
	fi
	pf_stop
	stop "$MT_PID" "$ipid"
	pfm_unix_log
	mc_check "what Postfix sends greylistd --milter" greylistd-postfix "$PFM_DIR/cap"
	expect "milter, Postfix: no process left (Postfix, smtp-sink, greylistd)" "" "$(pf_processes)"
}

# --- Sendmail's milter client ------------------------------------------------

# smm_expect NAME TAG WANT-GLOB [OR-GLOB] - SM_REPLY matches a glob
smm_expect() {
	# shellcheck disable=SC2153,SC2254 # sm_send sets SM_REPLY; $3 and $4 are globs
	case $SM_REPLY in
	$3|${4:-$3}) pass "$1 ($SM_REPLY)" ;;
	*) fail "$1" "want [$3] got [$SM_REPLY]: $(grep -m 3 '^<[-*~]* *[45]' "$SM_DIR/$2.smtp" | tr '\n' ' ')" ;;
	esac
}

# smm_queued NAME TAG HEADERS - the message TAG was queued (SM_QUEUED)
# with HEADERS X-Greylist headers in its qf file (0 or 1); with one, it
# says "delayed N seconds" (400 to 410) and comes just before Sendmail's
# own Received: (index 0)
smm_queued() {
	local name=$1 tag=$2 want=$3 f n next
	f=$(sm_queue_file "$SM_QUEUED")
	if [ -z "$SM_QUEUED" ] || [ -z "$f" ]; then
		fail "$name: queued" "no queue id or qf file: $(tail -n 3 "$SM_DIR/$tag.smtp" | tr '\n' ' ')"
		return
	fi
	# header lines in a qf file: "H??Name: value", ?? holding flags
	sed -n 's/^H\(?[^?]*?\)\{0,1\}//p' "$f" > "$SM_DIR/$tag.headers"
	expect "$name: queued as $SM_QUEUED, with $want X-Greylist header(s) in qf$SM_QUEUED" "$want" \
		"$(grep -ac '^X-Greylist:' "$SM_DIR/$tag.headers")"
	[ "$want" = 1 ] || return 0
	n=$(sed -n 's/^X-Greylist: delayed \([0-9]*\) seconds by greylistd-[0-9.]* at [^;]*; .* [0-9][0-9][0-9][0-9] .*/\1/p' "$SM_DIR/$tag.headers")
	check "$name: X-Greylist: delayed ${n:-?} seconds by greylistd-... (400 to 410)" \
		test "${n:-0}" -ge 400 -a "${n:-0}" -le 410
	next=$(grep -a -A 1 '^X-Greylist:' "$SM_DIR/$tag.headers" | sed -n '2s/^\([A-Za-z-]*\):.*/\1/p')
	expect "$name: just above Sendmail's own Received:" Received "$next"
}

# smm_checks - greylisting through Sendmail (F=T), then greylistd gone
smm_checks() {
	local qid
	sm_send new 127.0.0.7 "$MT_RCPT"
	smm_expect "Sendmail, milter: a new triplet gets 451 4.7.1 at RCPT" new "451 4.7.1 $MT_TEXT 300 seconds"
	mt_clock "$SMM_GL" +100s
	sm_send early 127.0.0.7 "$MT_RCPT" --quit-after RCPT
	smm_expect "Sendmail, milter: an early retry (+100 s) gets 451 with the time left" early \
		"451 4.7.1 $MT_TEXT 19[0-9] seconds" "451 4.7.1 $MT_TEXT 200 seconds"
	mt_clock "$SMM_GL" +400s
	mt_record "$SMM_GL" on
	sm_send pass 127.0.0.7 "$MT_RCPT"
	mt_record "$SMM_GL" off
	smm_expect "Sendmail, milter: the retry after the delay (+400 s) is accepted" pass "250 2.1.5 <$MT_RCPT>... Recipient ok"
	smm_queued "Sendmail, milter: the passed message" pass 1
	qid=$SM_QUEUED
	expect "greylistd log: the first pass's line starts with Sendmail's queue ID ($qid)" "${qid:-none}" \
		"$(mt_log_qid "$SMM_GL" 'action=pass, reason=triplet found, delay=')"
	mt_record "$SMM_GL" on
	sm_send two 127.0.0.7 "$MT_RCPT,dave@dest.test"
	mt_record "$SMM_GL" off
	expect "Sendmail, milter: two recipients, one new: only the new one gets 451" \
		"$MT_RCPT 250 2.1.5 <$MT_RCPT>... Recipient ok|dave@dest.test 451 4.7.1 $MT_TEXT 300 seconds" \
		"$(mt_replies "$SM_DIR/two.smtp" | paste -sd '|')"
	smm_queued "Sendmail, milter: and the message for the known one" two 0
	sm_send neighbour 127.0.0.8 "$MT_RCPT"
	smm_expect "Sendmail, milter: another address in the same /24 passes" neighbour "250 2.1.5 <$MT_RCPT>... Recipient ok"
	smm_queued "Sendmail, milter: the neighbour's message" neighbour 0
	sm_send other 127.0.1.7 "$MT_RCPT" --quit-after RCPT
	smm_expect "Sendmail, milter: an address in the next /24 is a new triplet" other "451 4.7.1 $MT_TEXT 300 seconds"

	echo 'greylist-text = Greylisted (100%% sure), please try again in %s seconds' \
		> "$SMM_GL/greylistd.conf"
	sm_send percent 127.0.2.7 "$MT_RCPT" --quit-after RCPT
	smm_expect "Sendmail, milter: a % in --greylist-text reaches the client as one %, with 451 (not 550)" percent \
		"451 4.7.1 Greylisted (100% sure), please try again in 300 seconds"

	stop "$MT_PID"
	sm_send gone-t 127.0.0.7 "$MT_RCPT"
	smm_expect "Sendmail, milter F=T, greylistd gone: 451 4.3.2 at MAIL" gone-t "451 4.3.2 Please try again later"
	expect "every greylistd --milter process exited 0" "" "$(mt_children "$SMM_GL")"
	expect "greylistd log (Sendmail): no warning or error" "" \
		"$(grep -E 'greylistd\[[0-9]+\]: (warning|error):' "$SMM_GL/greylistd.log" | head -n 3)"
	expect_grep "greylistd log (Sendmail): the deferral, with Sendmail's queue ID" \
		'^[^ ]* greylistd\[[0-9]+\]: [0-9A-Za-z]+: action=greylist, reason=new, client_name=unknown, client_address=127\.0\.0\.7, sender=alice@sender\.test, recipient=bob@dest\.test$' "$SMM_GL/greylistd.log"
}

t_milter_sendmail() {
	local why
	if why=$(sm_cannot_run); then skip "milter: Sendmail" "$why"; return; fi
	if ! SM_ROOT=$(deb_root sendmail sendmail-bin sendmail-base sendmail-cf); then
		skip "milter: Sendmail" "no Sendmail from Debian's archive: $SM_ROOT"; return
	fi
	SMM_GL=$WORK/sendmail-milter-gl MT_PID=''
	if ! mt_start "$SMM_GL" "$SMM_GL/milter.sock" inetd; then
		fail "milter: greylistd --milter listens on $SMM_GL/milter.sock" "$(head -c 300 "$SMM_GL/activate.err")"
		stop "$MT_PID"; return
	fi
	if ! sm_setup "$WORK/sendmail-milter" T "$SMM_GL/milter.sock"; then
		fail "milter: Sendmail's configuration" "$SM_WHY"
	elif ! sm_start; then
		fail "milter: Sendmail runs" "$SM_WHY"
	else
		smm_checks
	fi
	sm_stop
	stop "$MT_PID"
	mc_check "what Sendmail sends greylistd --milter" greylistd-sendmail "$SMM_GL/cap"

	# without F=, a milter that cannot be reached is skipped
	if sm_setup "$WORK/sendmail-milter-nof" "" "$SMM_GL/milter.sock" && sm_start; then
		sm_send gone 127.0.0.7 "$MT_RCPT"
		smm_expect "Sendmail, milter without F=, greylistd gone: mail is accepted" gone "250 2.1.5 <$MT_RCPT>... Recipient ok"
		smm_queued "Sendmail, milter without F=, greylistd gone: the message" gone 0
	else
		fail "milter: Sendmail without F= runs" "$SM_WHY"
	fi
	sm_stop
	# F=R: refused for good (so never for greylisting)
	if sm_setup "$WORK/sendmail-milter-r" R "$SMM_GL/milter.sock" && sm_start; then
		sm_send gone-r 127.0.0.7 "$MT_RCPT"
		expect "Sendmail, milter F=R, greylistd gone: the connection is refused for good (554 greeting)" \
			"554 mx.sendmail.test ESMTP not accepting messages" \
			"$(sed -n 's/^<\*\* *//p' "$SM_DIR/gone-r.smtp" | head -n 1)"
	else
		fail "milter: Sendmail with F=R runs" "$SM_WHY"
	fi
	sm_stop
	expect "milter, Sendmail: no process left (Sendmail, its namespace, greylistd)" "" \
		"$(pgrep -f -- "$WORK/sendmail-milter" | paste -sd ' ')"
}

t_milter() {
	local old_trap=() why
	if why=$(mt_cannot_run); then skip "milter" "$why"; return; fi
	[ "$(id -u)" -eq 0 ] || { skip "milter" "needs root"; return; }
	# shellcheck disable=SC2034 # tests/mta-lib.sh's and tests/sendmail.sh's
	PF_DIR='' NS_PID='' NS_SPAWNED='' SM_PID=''
	eval "old_trap=($(trap -p EXIT))"
	# shellcheck disable=SC2064 # the old command is wanted as it is now
	trap "sm_stop; [ -z \"\${PF_DIR:-}\" ] || pf_stop; ${old_trap[2]:-}" EXIT
	mt_protocol
	t_milter_postfix
	t_milter_sendmail
	if [ ${#old_trap[@]} -ge 3 ]; then trap -- "${old_trap[2]}" EXIT; else trap - EXIT; fi
}
