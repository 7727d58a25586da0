# shellcheck shell=bash
# tests/fresh.sh - the README's two commands on a new Debian 12, as a new
# admin would type them. test.sh sources this file; t_fresh runs only when
# named (./test.sh fresh; .ci/run runs it once), fr_left_out says so in a
# default run. Needs root, debootstrap and git.
#
#   1. debootstrap --variant=minbase bookworm: bash, apt and little else (no
#      make, no gcc). Its package lists are removed, as Debian's container
#      images ship none, so make.sh must run apt-get update itself; the
#      sources are the three suites a Debian 12 install has. A policy-rc.d
#      refuses every service start (the tree has no init, and a Postfix
#      started by its package would listen in the host's network), as
#      Debian's own chroot builders do.
#   2. The committed tree (git archive HEAD: what a clone has) in
#      /root/greylistd, and /etc/resolv.conf.
#   3. In new mount and PID namespaces (so that every mount and process
#      goes when the namespace's first process does, even when this test is
#      killed): /proc, /sys and /dev as on the host, a tmpfs /run, the
#      host's apt cache under an overlay (packages it has are not fetched
#      again, and the host's cache is not written), then pivot_root into
#      the tree. A plain chroot would leave the namespace's root at the
#      host's /, where the systemd live test's `nsenter -a` lands, so that
#      test would talk to the host instead of its own systemd.
#   4. There, as root, with an empty environment but PATH, HOME, TERM and
#      GREYLISTD_FRESH_INNER=1 (the inner suite leaves this group out): the
#      README's first command in the background, until it answers a policy
#      request on ./run/greylistd.sock, then stopped by its process group;
#      then the README's second command, the whole suite.
#
# Measured and printed (plain lines, not counted as tests): the time of
# each step, what apt spent installing, and the megabytes downloaded (debootstrap's: new files in the overlay's
# upper layer over the host's apt cache; apt's: its "Fetched" lines).
# GREYLISTD_FRESH_KEEP=DIR keeps the driver's outputs (/fresh) in DIR.

FR_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FR_MIRROR=http://deb.debian.org/debian
FR_SUITE=bookworm
FR_TIMEOUT_BOOTSTRAP=900	# s; it took 30 s here, 100 s on a loaded machine
FR_TIMEOUT_INNER=2400		# s; the installs and the suite took 6 to 10
				# minutes: a hang still leaves CI (90) its time

# fr_left_out - the line a default run prints for this group
fr_left_out() {
	if [ -n "${GREYLISTD_FRESH_INNER:-}" ]; then
		fr_inside
	else
		skip "fresh: the README's commands on a new Debian" \
			"not in the default run: ./test.sh fresh runs it (root; debootstrap, the installs and the whole suite again: about 11 minutes and 270 MB of downloads); .ci/run runs it once"
	fi
}

# fr_inside - the line of a suite that runs inside this group's Debian
fr_inside() {
	skip "fresh: the README's commands on a new Debian" \
		"left out: this suite runs inside the fresh group's own Debian (GREYLISTD_FRESH_INNER=1)"
}

# fr_mb BYTES - megabytes, one decimal
fr_mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }

# fr_fetched FILE... - bytes that apt's "Fetched N kB/MB/B" lines add up to
fr_fetched() {
	awk '/^Fetched [0-9.,]+ [kMG]?B in / {
		n = $2; gsub(",", "", n)
		u = $3; f = (u == "kB") ? 1e3 : (u == "MB") ? 1e6 : (u == "GB") ? 1e9 : 1
		s += n * f
	} END { printf "%d\n", s }' "$@" 2>/dev/null
}

# fr_apt_seconds HISTORY - the seconds apt-get runs took (Start-Date to
# End-Date of each entry of /var/log/apt/history.log)
fr_apt_seconds() {
	local s=0 a b line
	while IFS= read -r line; do
		case $line in
		Start-Date:*) a=$(date -d "${line#Start-Date: }" +%s) ;;
		End-Date:*) b=$(date -d "${line#End-Date: }" +%s); s=$((s + b - a)) ;;
		esac
	done < "$1"
	echo $s
}

# fr_bootstrap - debootstrap the tree into $D/root, with its package cache
# on an overlay of the host's; $D/bootstrap.log, $D/t.bootstrap
fr_bootstrap() {
	local t0 lower=/var/cache/apt/archives
	[ -d "$lower" ] || { mkdir -p "$D/empty"; lower=$D/empty; }
	mkdir -p "$D/cache" "$D/cache-up" "$D/cache-work"
	cat > "$D/bootstrap.sh" <<-EOF
	set -e
	mount -t overlay overlay -o lowerdir=$lower,upperdir=$D/cache-up,workdir=$D/cache-work $D/cache
	debootstrap --variant=minbase --cache-dir=$D/cache $FR_SUITE $D/root $FR_MIRROR
	EOF
	t0=$EPOCHSECONDS
	timeout $FR_TIMEOUT_BOOTSTRAP unshare --mount --propagation private \
		bash "$D/bootstrap.sh" > "$D/bootstrap.log" 2>&1
	FR_RC=$?
	echo $((EPOCHSECONDS - t0)) > "$D/t.bootstrap"
	du -sb "$D/cache-up" | cut -f1 > "$D/b.bootstrap"
	FR_LOWER=$lower
}

# fr_prepare - make the debootstrapped tree a new admin's machine with a
# clone of the repository in /root/greylistd, and the driver in /fresh
fr_prepare() {
	local r=$D/root
	find "$r/var/lib/apt/lists" -maxdepth 1 -type f -delete
	cat > "$r/etc/apt/sources.list" <<-EOF
	deb $FR_MIRROR $FR_SUITE main
	deb $FR_MIRROR $FR_SUITE-updates main
	deb http://deb.debian.org/debian-security $FR_SUITE-security main
	EOF
	printf '#!/bin/sh\n# the fresh test: no service starts here\nexit 101\n' > "$r/usr/sbin/policy-rc.d"
	chmod 0755 "$r/usr/sbin/policy-rc.d"
	cp /etc/resolv.conf "$r/etc/resolv.conf"
	mkdir -p "$r/root/greylistd" "$r/fresh"
	git -C "$FR_SRC" archive HEAD | tar -C "$r/root/greylistd" -xf - || return 1
	FR_RUN=$(fr_readme_cmd 1) FR_CHECK=$(fr_readme_cmd 2)
	fr_request > "$r/fresh/request"
	fr_driver > "$r/fresh/driver.sh"
	fr_enter > "$D/enter.sh"
}

# fr_readme_cmd N - the README's Nth command of "Two commands" (in the tree
# as committed), without its comment
fr_readme_cmd() {
	sed -n '/^## Two commands/,/^## /p' "$D/root/root/greylistd/README.md" \
		| sed -n 's/^    \(\.\/[^#]*[^ #]\) *#.*/\1/p; s/^    \(\.\/[^#]*[^ #]\) *$/\1/p' \
		| sed -n "${1}p"
}

# fr_request - the policy request sent to the first command's server
fr_request() {
	printf '%s\n' request=smtpd_access_policy protocol_state=RCPT \
		client_address=192.0.2.1 sender=alice@example.org \
		recipient=bob@example.net ''
}

# fr_driver - the script PID 1 of the namespaces runs in the new tree:
# the two commands, with their times in /fresh
fr_driver() {
	cat <<-EOF
	# /fresh/driver.sh - written by tests/fresh.sh
	cd /root/greylistd || exit 1
	t0=\$EPOCHSECONDS
	# the first command, a server: in its own session, so that its process
	# group is its PID and can be stopped as one
	setsid $FR_RUN > /fresh/run.out 2>&1 < /dev/null &
	pid=\$!
	echo \$pid > /fresh/run.pid
	i=0
	while [ ! -S run/greylistd.sock ] && kill -0 \$pid 2>/dev/null && [ \$i -lt 9000 ]; do
		sleep 0.1; i=\$((i + 1))
	done
	echo \$((EPOCHSECONDS - t0)) > /fresh/t.run
	# the README's way to talk to it: socat, which the command installed
	socat -t 10 - UNIX-CONNECT:run/greylistd.sock < /fresh/request > /fresh/run.reply 2>&1
	kill -TERM -- -\$pid 2>/dev/null
	i=0
	while kill -0 -- -\$pid 2>/dev/null && [ \$i -lt 100 ]; do sleep 0.1; i=\$((i + 1)); done
	kill -0 -- -\$pid 2>/dev/null && echo left > /fresh/run.left
	kill -KILL -- -\$pid 2>/dev/null
	wait \$pid
	echo \$? > /fresh/run.rc
	cp /var/log/apt/history.log /fresh/history.run 2>/dev/null
	t0=\$EPOCHSECONDS
	$FR_CHECK > /fresh/check.out 2>&1 < /dev/null
	echo \$? > /fresh/check.rc
	echo \$((EPOCHSECONDS - t0)) > /fresh/t.check
	cp /var/log/apt/history.log /fresh/history.all 2>/dev/null
	EOF
}

# fr_enter - the script that unshare runs: mounts, pivot_root, the driver
fr_enter() {
	cat <<-EOF
	set -e
	R=$D/root
	mount --bind \$R \$R
	mount -t overlay overlay -o lowerdir=$FR_LOWER,upperdir=$D/cache-up,workdir=$D/cache-work \$R/var/cache/apt/archives
	mount -t proc proc \$R/proc
	mount --rbind /sys \$R/sys
	mount --rbind /dev \$R/dev
	mount -t tmpfs -o mode=0755 tmpfs \$R/run
	mkdir -p \$R/.oldroot
	cd \$R
	pivot_root . .oldroot
	cd /
	umount -l /.oldroot
	rmdir /.oldroot
	exec /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
		HOME=/root TERM=dumb GREYLISTD_FRESH_INNER=1 /bin/bash /fresh/driver.sh
	EOF
}

# fr_inner - run the driver in the tree, in new mount and PID namespaces
fr_inner() {
	local t0=$EPOCHSECONDS
	timeout $FR_TIMEOUT_INNER unshare --mount --propagation private --pid --fork \
		--kill-child bash "$D/enter.sh" > "$D/enter.log" 2>&1
	FR_RC=$?
	echo $((EPOCHSECONDS - t0)) > "$D/t.inner"
}

# fr_results - check and report what the driver left in /fresh
fr_results() {
	local f=$D/root/fresh out last inner apt_run apt_all fetched boot
	expect "fresh: README's first command" "./make.sh run" "$FR_RUN"
	out=$(grep '^action=' "$f/run.reply" 2>/dev/null)
	expect "fresh: $FR_RUN came up in $(cat "$f/t.run") s (installs, build) and answered a policy request" \
		"action=DEFER_IF_PERMIT Greylisted, please try again in 60 seconds" "$out"
	[ -n "$out" ] || echo "fresh: $FR_RUN's output: $(tail -n 15 "$f/run.out" 2>/dev/null)"
	check "fresh: stopped by its process group, nothing of it left" test ! -e "$f/run.left"
	expect "fresh: README's second command" "./make.sh check" "$FR_CHECK"
	last=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$f/check.out" 2>/dev/null | tail -n 1)
	expect "fresh: $FR_CHECK exits 0" 0 "$(cat "$f/check.rc" 2>/dev/null)"
	case $last in
	*[0-9]" passed, 0 failed") pass "fresh: $FR_CHECK in $(cat "$f/t.check") s: the whole suite inside: $last" ;;
	*) fail "fresh: $FR_CHECK: the whole suite passes inside" \
		"summary [$last]; $(grep -oE 'FAIL: .*' "$f/check.out" | head -n 20 | tr '\n' ' ')"
	   echo "fresh: the last lines of $FR_CHECK:"
	   tail -n 30 "$f/check.out" 2>/dev/null | sed 's/^/    /' ;;
	esac
	inner=$(grep -c '^SKIP: fresh' "$f/check.out")
	expect "fresh: the inner suite left this group out, and said so once" 1 "$inner"
	grep '^SKIP' "$f/check.out" | grep -v '^SKIP: fresh' | sed 's/^/fresh: inner /'
	apt_run=$(fr_apt_seconds "$f/history.run" 2>/dev/null)
	apt_all=$(fr_apt_seconds "$f/history.all" 2>/dev/null)
	fetched=$(fr_fetched "$f/run.out" "$f/check.out")
	boot=$(cat "$D/b.bootstrap")
	echo "fresh: measured: debootstrap $(cat "$D/t.bootstrap") s; $FR_RUN $(cat "$f/t.run") s to serving (apt ${apt_run:-?} s of it); $FR_CHECK $(cat "$f/t.check") s (apt $((apt_all - apt_run)) s); in all $(cat "$D/t.inner") s in the namespaces"
	echo "fresh: downloaded: debootstrap $(fr_mb "$boot") MB (packages not in the host's apt cache), apt $(fr_mb "$fetched") MB (its Fetched lines: package lists and packages), $(fr_mb $((boot + fetched))) MB in all"
}

t_fresh() {
	local p
	if [ -n "${GREYLISTD_FRESH_INNER:-}" ]; then
		fr_inside
		return
	fi
	if [ "$(id -u)" -ne 0 ]; then
		skip "fresh: the README's commands on a new Debian" "needs root (debootstrap, mount namespaces, pivot_root)"
		return
	fi
	for p in debootstrap unshare pivot_root git timeout; do
		command -v $p >/dev/null || { fail "fresh" "$p is missing (make check installs TEST_DEPS)"; return; }
	done
	if ! git -C "$FR_SRC" rev-parse -q --verify HEAD >/dev/null 2>&1; then
		skip "fresh: the README's commands on a new Debian" "$FR_SRC is not a git checkout: the test copies the committed tree"
		return
	fi
	newdir fresh
	[ -n "$(git -C "$FR_SRC" status --porcelain --untracked-files=no)" ] &&
		echo "fresh: note: uncommitted changes in $FR_SRC are not tested (git archive HEAD)"

	fr_bootstrap
	if [ "$FR_RC" -ne 0 ] || [ ! -x "$D/root/bin/bash" ]; then
		fail "fresh: debootstrap --variant=minbase $FR_SUITE" "exit $FR_RC: $(tail -n 5 "$D/bootstrap.log" | tr '\n' ' ')"
	else
		pass "fresh: debootstrap --variant=minbase $FR_SUITE ($(cat "$D/t.bootstrap") s)"
		check "fresh: the new system has neither make nor gcc" \
			test ! -e "$D/root/usr/bin/make" -a ! -e "$D/root/usr/bin/gcc"
		if ! fr_prepare; then
			fail "fresh: copy the committed tree in" "git archive HEAD failed"
		else
			fr_inner
			expect "fresh: the namespaces ran to the end (exit status; 124 is the ${FR_TIMEOUT_INNER} s timeout)" \
				0 "$FR_RC"
			[ "$FR_RC" -eq 0 ] || echo "fresh: $(tail -n 5 "$D/enter.log")"
			fr_results
		fi
	fi
	check "fresh: no mount of the test is left" bash -c "! grep -qF ' $D' /proc/self/mountinfo"
	if [ -n "${GREYLISTD_FRESH_KEEP:-}" ]; then
		cp -a "$D/root/fresh" "$GREYLISTD_FRESH_KEEP" 2>/dev/null
		echo "fresh: its outputs are kept in $GREYLISTD_FRESH_KEEP (GREYLISTD_FRESH_KEEP)"
	fi
	rm -rf "$D"
	check "fresh: the tree is removed" test ! -e "$D"
}
