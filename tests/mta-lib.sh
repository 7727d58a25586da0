# shellcheck shell=bash
# tests/mta-lib.sh - helpers for the tests that run real MTAs which cannot
# be installed beside Postfix (Exim, Sendmail: tests/exim.sh,
# tests/sendmail.sh).
#
# Their Debian packages conflict with postfix, so they are downloaded from
# Debian's archive (apt-get download) and unpacked, never installed, into
# a cache that outlives the test run ($MTA_CACHE). They run inside a
# private network, mount and UTS namespace that the test makes: only
# loopback exists there, so nothing they do can reach another host, and
# files of their own (hosts, resolv.conf, passwd, group) are bind-mounted
# over /etc's inside it only. The namespace is held by one sleeping
# process; when the test stops it, the namespace and its mounts are gone.

MTA_CACHE=${MTA_CACHE:-/var/cache/greylistd-tests}

# deb_root NAME PKG... - print the directory into which the Debian
# packages PKG are unpacked ($MTA_CACHE/NAME), downloading and unpacking
# them the first time (under a lock: other runs may do the same). On
# failure print why and return 1.
deb_root() {
	local name=$1 root=$MTA_CACHE/$1; shift
	mkdir -p "$MTA_CACHE" || { echo "cannot create $MTA_CACHE"; return 1; }
	(
		flock 9 || exit 1
		[ -e "$root/.debs" ] && exit 0
		deb_unpack "$root" "$@"
	) 9> "$MTA_CACHE/.$name.lock" || return 1
	echo "$root"
}

# deb_unpack ROOT PKG... - download PKG into a scratch directory (running
# apt-get update once if the first try fails: a fresh machine may have no
# package lists) and unpack them into ROOT; ROOT/.debs names the files
deb_unpack() {
	local root=$1 tmp f; shift
	tmp=$(mktemp -d "$root.tmp.XXXXXX") || { echo "cannot create a directory beside $root"; return 1; }
	chmod 755 "$tmp"	# apt downloads as _apt where it can
	if ! (cd "$tmp" && apt-get download "$@") > "$tmp/log" 2>&1 &&
	   ! { apt-get update -q && (cd "$tmp" && apt-get download "$@"); } >> "$tmp/log" 2>&1; then
		echo "apt-get download $* failed: $(grep -E '^E:' "$tmp/log" | head -n 2 | tr '\n' ' ')"
		rm -rf "$tmp"
		return 1
	fi
	mkdir "$tmp/root"
	for f in "$tmp"/*.deb; do
		dpkg -x "$f" "$tmp/root" || { echo "dpkg -x $f failed"; rm -rf "$tmp"; return 1; }
	done
	(cd "$tmp" && ls -- *.deb) > "$tmp/root/.debs"
	rm -rf "$root" && mv "$tmp/root" "$root" && rm -rf "$tmp"
}

# ns_start DIR NAME - start the namespace holder (NS_PID): a new network
# namespace with loopback up, host name NAME, and each of DIR/hosts,
# DIR/resolv.conf, DIR/passwd and DIR/group that exists bind-mounted over
# the file of that name in /etc (inside the namespace only)
ns_start() {
	local dir=$1 name=$2 f
	unshare --net --mount --uts --propagation private sleep infinity &
	NS_PID=$!
	# unshare execs sleep once the namespaces are made and private
	for _ in $(seq 50); do
		[ "$(cat /proc/$NS_PID/comm 2>/dev/null)" = sleep ] && break
		sleep 0.1
	done
	[ "$(cat /proc/$NS_PID/comm 2>/dev/null)" = sleep ] || return 1
	ns_run ip link set lo up && ns_run hostname "$name" || return 1
	for f in hosts resolv.conf passwd group; do
		[ -e "$dir/$f" ] || continue
		ns_run mount --bind "$dir/$f" "/etc/$f" || return 1
	done
}

# ns_run CMD... - run CMD inside the namespace (the working directory is
# the namespace's /: give absolute paths)
ns_run() { nsenter -F -t "$NS_PID" --net --mount --uts -- "$@"; }

# ns_spawn CMD... - start CMD in the background inside the namespace; its
# PID (the program's own, not a subshell's) is added to NS_SPAWNED
ns_spawn() {
	nsenter -F -t "$NS_PID" --net --mount --uts -- "$@" &
	NS_SPAWNED="${NS_SPAWNED:-} $!"
}

# ns_processes - PIDs of the processes in the namespace, the holder too
ns_processes() {
	local me p
	[ -n "${NS_PID:-}" ] || return 0
	me=$(readlink "/proc/$NS_PID/ns/net" 2>/dev/null) || return 0
	for p in /proc/[0-9]*; do
		[ "$(readlink "$p/ns/net" 2>/dev/null)" = "$me" ] && echo "${p#/proc/}"
	done | sort -n | tr '\n' ' ' | sed 's/ $//'
}

# ns_stop - stop what ns_spawn started, wait (5 s at most) until nothing
# but the holder is left in the namespace (a child of a stopped program
# may still be finishing), then end the holder, and with it the namespace
# and its mounts. Quiet, safe to call twice; EXIT traps call it.
ns_stop() {
	local spawned=${NS_SPAWNED:-}
	# shellcheck disable=SC2086 # one PID a word
	[ -n "${spawned// /}" ] && stop $spawned
	NS_SPAWNED=
	[ -n "${NS_PID:-}" ] || return 0
	for _ in $(seq 50); do
		[ "$(ns_processes)" = "$NS_PID" ] && break
		sleep 0.1
	done
	stop "$NS_PID"
	NS_PID=
}

# ns_user_file DIR USER UID - copies of /etc/passwd and /etc/group in DIR
# with USER (uid and gid UID) added, for a program whose user is compiled
# in; ns_start then mounts them in the namespace only
ns_user_file() {
	local dir=$1 user=$2 uid=$3
	cp /etc/passwd "$dir/passwd" && cp /etc/group "$dir/group" || return 1
	echo "$user:x:$uid:$uid:$user (greylistd tests):/nonexistent:/usr/sbin/nologin" >> "$dir/passwd"
	echo "$user:x:$uid:" >> "$dir/group"
}

# free_id - a number that is neither a uid in /etc/passwd nor a gid in
# /etc/group (counting down from 64999)
free_id() {
	local i
	for ((i = 64999; i > 60000; i--)); do
		getent passwd "$i" >/dev/null || getent group "$i" >/dev/null || { echo "$i"; return 0; }
	done
	return 1
}

# elapsed_ms START-NS - milliseconds since START-NS (date +%s%N)
elapsed_ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
