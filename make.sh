#!/usr/bin/env bash
# make.sh - the front door on a Debian machine that may have nothing but
# bash and apt (a minimal install, or debootstrap --variant=minbase).
#
#   ./make.sh TARGET...       install make when it is missing, then run
#                             make TARGET... here (./make.sh run, ./make.sh
#                             check: the README's two commands)
#   ./make.sh --need PKG...   install those of the Debian packages PKG...
#                             that are missing (the Makefile's deps-*
#                             targets call this with its package lists)
#
# Who installs: root runs apt-get itself; anyone else goes through sudo,
# with DEBIAN_FRONTEND=noninteractive given as sudo's argument (sudo resets
# the environment, so an exported one would not reach apt-get). Without
# either, make.sh names the missing packages and the command to run as
# root, installs nothing, and exits 1.
#
# apt-get runs quietly (-q), answers yes (-y), and leaves Recommends out:
# a package whose recommended one the project needs names it itself in the
# Makefile's lists (gcc's libc6-dev, so far; clang's llvm-14-dev and
# python3, postfix's python3, valgrind's gdb are not needed: the whole
# suite passes without them on a new Debian, tests/fresh.sh). When apt has no package lists (APT_LISTS, default
# /var/lib/apt/lists: a fresh machine where apt-get update never ran),
# apt-get update runs first; when an install fails otherwise (lists too
# old for the archive, say), apt-get update runs once and the install is
# tried again.
#
# Exit status: --need exits 0 when every package is installed in the end,
# 1 when some are missing and could not be installed; otherwise make's
# own (or 1 when make itself could not be installed). ./make.sh --help
# prints this comment.

set -u

APT_LISTS=${APT_LISTS:-/var/lib/apt/lists}

say() { printf 'make.sh: %s\n' "$*" >&2; }

# missing PKG... - print the packages of the list that dpkg does not
# have installed, one a line
missing() {
	local p status
	local -A ok=()
	# dpkg-query prints a line for each package it knows and exits 1 when
	# any is unknown to it: both are expected here
	while read -r p status; do
		case $status in *" installed") ok[$p]=1 ;; esac
	done < <(dpkg-query -W -f='${Package} ${Status}\n' -- "$@" 2>/dev/null)
	for p in "$@"; do
		[ -n "${ok[$p]+x}" ] || echo "$p"
	done
}

# have_lists - whether apt-get update has ever fetched package lists
have_lists() {
	local f
	for f in "$APT_LISTS"/*_Packages*; do
		[ -e "$f" ] && return 0
	done
	return 1
}

# apt ARGS... - apt-get ARGS, non-interactive, as root or through sudo
apt() {
	if [ "$(id -u)" -eq 0 ]; then
		DEBIAN_FRONTEND=noninteractive apt-get "$@"
	else
		sudo DEBIAN_FRONTEND=noninteractive apt-get "$@"
	fi
}

# need PKG... - install the missing ones of PKG...
need() {
	local pkgs updated=0 install
	if ! command -v dpkg-query >/dev/null 2>&1; then
		say "no dpkg-query: not a Debian system? Install these yourself: $*"
		return 1
	fi
	pkgs=$(missing "$@" | tr '\n' ' ')
	pkgs=${pkgs% }
	[ -n "$pkgs" ] || return 0
	install="apt-get install -y -q --no-install-recommends $pkgs"
	if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
		say "missing Debian packages: $pkgs"
		say "you are not root and have no sudo; as root, run:"
		if have_lists; then
			printf "    %s\n" "$install" >&2
		else
			printf "    apt-get update -q && %s\n" "$install" >&2
		fi
		return 1
	fi
	say "installing Debian packages: $pkgs"
	# apt-get update's status is not looked at: it fails when any one
	# source does (a third-party one, say), and the install may work anyway
	if ! have_lists; then
		say "apt has no package lists yet: apt-get update first"
		apt update -q
		updated=1
	fi
	# shellcheck disable=SC2086 # $pkgs is a list of words
	if apt install -y -q --no-install-recommends $pkgs; then
		return 0
	fi
	if [ $updated -eq 0 ]; then
		say "the install failed: apt-get update, then once more"
		apt update -q
		# shellcheck disable=SC2086
		apt install -y -q --no-install-recommends $pkgs && return 0
	fi
	say "could not install: $pkgs"
	say "as root, run: apt-get update -q && $install"
	return 1
}

case ${1:-} in
--need)
	shift
	need "$@"
	;;
--help)
	sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
	;;
*)
	cd "$(dirname "$0")" || exit 2
	need make || exit 1
	exec make "$@"
	;;
esac
