# shellcheck shell=bash
# tests/deps.sh - the package step and the build's portability. test.sh
# sources this file and calls t_deps; it uses the helpers of tests/lib.sh.
#
# ./make.sh --need, ./make.sh TARGET and the Makefile's deps-* targets run
# in a copy of the tree with stand-in dpkg-query, apt-get and sudo first
# on PATH: nothing is installed. The stand-ins write each call (argv, uid,
# the DEBIAN_FRONTEND they saw, whether sudo ran them) to $D/calls, take
# the packages to report as missing from $D/missing, and keep the package
# lists in $D/lists (make.sh is pointed there with APT_LISTS). Checked as
# root and as the user nobody (setpriv), with and without sudo. Also: the
# README's package lists against the Makefile's, and make CC=clang.

DP_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# dp_standins - write the stand-ins into $D/bin (with sudo) and $D/bin-nosudo
dp_standins() {
	mkdir -p "$D/bin" "$D/bin-nosudo"
	# dpkg-query -W -f=FORMAT [--] PKG...: ${Package} and ${Status} as dpkg
	# has them; a line "PKG" in $D/missing is a package dpkg never had
	# (an error, exit 1, as the real one), "PKG STATUS" one in that state
	cat > "$D/bin/dpkg-query" <<-'EOF'
	#!/bin/bash
	echo "dpkg-query uid=$(id -u) args=$*" >> @D@/calls
	fmt='${Package}\n' rc=0
	while [ $# -gt 0 ]; do
		case $1 in
		-W|--show) ;;
		-f) fmt=$2; shift ;;
		-f=*|--showformat=*) fmt=${1#*=} ;;
		-f*) fmt=${1#-f} ;;
		--) shift; break ;;
		-*) echo "dpkg-query stand-in: unknown option $1" >&2; exit 2 ;;
		*) break ;;
		esac
		shift
	done
	for p in "$@"; do
		st="install ok installed"
		line=$(grep -E "^$p( |\$)" @D@/missing)
		if [ "$line" = "$p" ]; then
			echo "dpkg-query: no packages found matching $p" >&2; rc=1; continue
		fi
		[ -n "$line" ] && st=${line#"$p "}
		out=${fmt//'${Package}'/$p}
		printf '%b' "${out//'${Status}'/$st}"
	done
	exit $rc
	EOF
	# apt-get update | install -y -q ... PKG...: update writes a package
	# list into $D/lists (and fails, as when one source is unreachable,
	# while $D/update-fails exists); install fails while $D/failures counts
	# above 0, else takes the packages off $D/missing
	cat > "$D/bin/apt-get" <<-'EOF'
	#!/bin/bash
	echo "apt-get uid=$(id -u) frontend=${DEBIAN_FRONTEND:--} sudo=${SUDO_UID:--} args=$*" >> @D@/calls
	case " $* " in
	*" update "*)
		: > @D@/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages
		[ ! -e @D@/update-fails ] || { echo "E: Some index files failed to download (stand-in)" >&2; exit 100; }
		exit 0 ;;
	*" install "*)
		n=$(cat @D@/failures)
		if [ "$n" -gt 0 ]; then
			echo $((n - 1)) > @D@/failures
			echo "E: Failed to fetch (stand-in)" >&2; exit 100
		fi
		for p in "$@"; do
			case $p in -*|install) continue ;; esac
			sed -i "/^$p\( \|\$\)/d" @D@/missing
		done
		exit 0 ;;
	esac
	exit 100
	EOF
	# sudo [-E] [VAR=value...] CMD...: runs CMD as the caller (a stand-in
	# cannot change user) with the environment reset as sudo's env_reset
	# does, but for PATH (kept, to find the stand-ins) and SUDO_UID
	cat > "$D/bin/sudo" <<-'EOF'
	#!/bin/bash
	echo "sudo uid=$(id -u) args=$*" >> @D@/calls
	keep=0
	while [ $# -gt 0 ]; do
		case $1 in
		-E|--preserve-env) keep=1 ;;
		--) shift; break ;;
		-*) ;;
		*) break ;;
		esac
		shift
	done
	set=()
	while [ $# -gt 0 ] && [[ $1 == [A-Za-z_]*=* ]]; do set+=("$1"); shift; done
	[ $keep = 1 ] && exec env SUDO_UID="$(id -u)" "${set[@]}" "$@"
	exec env -i PATH="$PATH" SUDO_UID="$(id -u)" "${set[@]}" "$@"
	EOF
	sed -i "s|@D@|$D|g" "$D/bin/"*
	chmod 0755 "$D/bin/"*
	cp -p "$D/bin/dpkg-query" "$D/bin/apt-get" "$D/bin-nosudo/"
	# every command of PATH but sudo, for a user who has none
	mkdir -p "$D/farm"
	local d
	for d in ${PATH//:/ }; do
		[ -d "$d" ] && find "$d/" -mindepth 1 -maxdepth 1 ! -name sudo \
			-exec ln -s -t "$D/farm" {} + 2>/dev/null
	done
}

# dp_setup NAME - a test directory with the tree, the stand-ins, package
# lists, no package missing and no failing install
dp_setup() {
	newdir "$1"
	chmod 0777 "$D"		# the stand-ins edit their state here as nobody too
	mkdir -p "$D/src" "$D/lists"
	copy_tree "$DP_SRC" "$D/src"
	dp_standins
	: > "$D/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages"
	: > "$D/calls"; : > "$D/missing"; echo 0 > "$D/failures"
	chmod 0777 "$D/lists"
	chmod 0666 "$D/calls" "$D/missing" "$D/failures"
}

# dp_run AS PATH-DIRS CMD... - run CMD in $D/src as root or as a user
# (nobody, when we are root), with PATH-DIRS first on PATH; output in $D/out
dp_run() {
	local as=$1 dirs=$2; shift 2
	local path=$dirs:$PATH
	[ "$dirs" = "$D/bin-nosudo" ] && path=$dirs:$D/farm
	(
		cd "$D/src" || exit 99
		unset MAKEFLAGS MFLAGS MAKELEVEL
		export PATH=$path APT_LISTS=$D/lists
		if [ "$as" = user ] && [ "$(id -u)" -eq 0 ]; then
			exec setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups "$@"
		fi
		exec "$@"
	) > "$D/out" 2>&1
}

# dp_calls WHAT - the recorded calls of WHAT (apt-get, sudo), one a line
dp_calls() { grep "^$1 " "$D/calls" | sed 's/^[^ ]* //'; }

# dp_can AS - whether this run can act as AS (root needs root; a user is
# nobody when we are root, else ourselves)
dp_can() {
	case $1 in
	root) [ "$(id -u)" -eq 0 ] ;;
	user) [ "$(id -u)" -ne 0 ] || getent passwd nobody >/dev/null ;;
	esac
}

t_deps_root() {
	local uid=0 inst="install -y -q --no-install-recommends"

	dp_setup deps-root-none
	dp_run root "$D/bin" make deps-test
	expect "root, nothing missing: make deps-test succeeds" 0 $?
	check "root, nothing missing: dpkg-query was asked" grep -q '^dpkg-query ' "$D/calls"
	expect "root, nothing missing: neither apt-get nor sudo runs" "" \
		"$(grep -E '^(apt-get|sudo) ' "$D/calls")"

	dp_setup deps-root
	printf 'libgdbm-dev\nlibsystemd-dev\nsocat deinstall ok config-files\n' > "$D/missing"
	dp_run root "$D/bin" make deps-run
	expect "root: make deps-run succeeds" 0 $?
	expect "root: apt-get directly, uid 0, noninteractive, the missing packages of each list (a removed one too)" \
		"uid=$uid frontend=noninteractive sudo=- args=$inst libgdbm-dev libsystemd-dev
uid=$uid frontend=noninteractive sudo=- args=$inst socat" "$(dp_calls apt-get)"
	expect "root: sudo is never called" "" "$(dp_calls sudo)"
	expect_grep "root: make.sh says what it installs" '^make.sh: installing Debian packages: libgdbm-dev libsystemd-dev$' "$D/out"

	dp_setup deps-root-test
	printf 'valgrind\nclang\n' > "$D/missing"
	dp_run root "$D/bin" make deps-test
	expect "root: make deps-test installs the missing ones of TEST_DEPS" \
		"uid=$uid frontend=noninteractive sudo=- args=$inst valgrind clang" "$(dp_calls apt-get)"

	dp_setup deps-root-nolists
	rm -f "$D/lists/"*
	echo gcc > "$D/missing"
	dp_run root "$D/bin" make deps-build
	expect "root, no package lists: make deps-build succeeds" 0 $?
	expect "root, no package lists: apt-get update, then install" \
		"uid=$uid frontend=noninteractive sudo=- args=update -q
uid=$uid frontend=noninteractive sudo=- args=$inst gcc" "$(dp_calls apt-get)"

	dp_setup deps-root-retry
	echo libgdbm-dev > "$D/missing"; echo 1 > "$D/failures"
	dp_run root "$D/bin" make deps-build
	expect "root, an install fails once: make deps-build succeeds" 0 $?
	expect "root, an install fails once: install, update, install" \
		"args=$inst libgdbm-dev
args=update -q
args=$inst libgdbm-dev" "$(dp_calls apt-get | sed 's/.* args=/args=/')"

	dp_setup deps-root-update-fails
	echo libgdbm-dev > "$D/missing"; echo 1 > "$D/failures"; : > "$D/update-fails"
	dp_run root "$D/bin" make deps-build
	expect "root, the update fails too (one source unreachable): the install is tried again, and works" 0 $?
	expect "root, the update fails too: install, update, install" \
		"args=$inst libgdbm-dev
args=update -q
args=$inst libgdbm-dev" "$(dp_calls apt-get | sed 's/.* args=/args=/')"

	dp_setup deps-root-fail
	echo libgdbm-dev > "$D/missing"; echo 9 > "$D/failures"
	dp_run root "$D/bin" make deps-build
	check "root, the install keeps failing: make deps-build fails" test $? -ne 0
	expect "root, the install keeps failing: one update, two tries" \
		"args=$inst libgdbm-dev
args=update -q
args=$inst libgdbm-dev" "$(dp_calls apt-get | sed 's/.* args=/args=/')"
	expect_grep "root, the install keeps failing: it says so, naming the packages" \
		'^make.sh: could not install: libgdbm-dev$' "$D/out"

	dp_setup deps-root-make
	echo make > "$D/missing"
	dp_run root "$D/bin" ./make.sh -s print-deps
	expect "root: ./make.sh TARGET installs make first" \
		"uid=$uid frontend=noninteractive sudo=- args=$inst make" "$(dp_calls apt-get)"
	expect_grep "root: then runs make TARGET" '^BUILD_DEPS = ' "$D/out"
	: > "$D/calls"
	dp_run root "$D/bin" ./make.sh -s print-deps
	expect "root: with make installed, ./make.sh TARGET installs nothing" "" "$(dp_calls apt-get)"
	expect_grep "root: and runs make TARGET" '^BUILD_DEPS = ' "$D/out"
}

t_deps_user() {
	local uid inst="install -y -q --no-install-recommends"
	uid=$(id -u nobody)
	[ "$(id -u)" -ne 0 ] && uid=$(id -u)

	dp_setup deps-user
	printf 'libgdbm-dev\nsystemd\n' > "$D/missing"
	dp_run user "$D/bin" make deps-run
	expect "user with sudo: make deps-run succeeds" 0 $?
	expect "user with sudo: sudo DEBIAN_FRONTEND=noninteractive apt-get, by the user, for each list" \
		"uid=$uid args=DEBIAN_FRONTEND=noninteractive apt-get $inst libgdbm-dev
uid=$uid args=DEBIAN_FRONTEND=noninteractive apt-get $inst systemd" "$(dp_calls sudo)"
	expect "user with sudo: apt-get runs only through sudo, and sees noninteractive there" \
		"frontend=noninteractive sudo=$uid
frontend=noninteractive sudo=$uid" "$(dp_calls apt-get | sed 's/^uid=[0-9]* //; s/ args=.*//')"

	dp_setup deps-user-nolists
	rm -f "$D/lists/"*
	echo libsystemd-dev > "$D/missing"
	dp_run user "$D/bin" make deps-build
	expect "user with sudo, no package lists: sudo apt-get update, then install" \
		"uid=$uid args=DEBIAN_FRONTEND=noninteractive apt-get update -q
uid=$uid args=DEBIAN_FRONTEND=noninteractive apt-get $inst libsystemd-dev" "$(dp_calls sudo)"

	dp_setup deps-user-nosudo
	printf 'libgdbm-dev\nlibsystemd-dev\n' > "$D/missing"
	dp_run user "$D/bin-nosudo" make deps-test
	check "user without sudo: make deps-test fails" test $? -ne 0
	expect_grep "user without sudo: the message names the missing packages" \
		'^make.sh: missing Debian packages: libgdbm-dev libsystemd-dev$' "$D/out"
	expect_grep "user without sudo: and the command to run as root" \
		"^    apt-get $inst libgdbm-dev libsystemd-dev\$" "$D/out"
	expect "user without sudo: neither apt-get nor sudo is called" "" \
		"$(grep -E '^(apt-get|sudo) ' "$D/calls")"
	check "user without sudo: (dpkg-query was asked)" grep -q '^dpkg-query ' "$D/calls"
	rm -f "$D/lists/"*
	dp_run user "$D/bin-nosudo" ./make.sh --need libgdbm-dev
	check "user without sudo: ./make.sh --need fails too" test $? -ne 0
	expect_grep "user without sudo, no package lists: the command starts with apt-get update" \
		"^    apt-get update -q && apt-get $inst libgdbm-dev\$" "$D/out"
}

# dp_readme_list CMD - the packages the README lists for CMD, sorted
dp_readme_list() {
	awk -v item="- \`$1\`:" '
		index($0, item) == 1 { on = 1; print substr($0, length(item) + 1); next }
		on && /^  [^ ]/ { print; next }
		{ on = 0 }' "$DP_SRC/README.md" | sed 's/\.$//' | tr ',' ' ' | tr -s ' \t' '\n' | grep -v '^$' | sort -u
}

# dp_make_list VAR... - the packages of the Makefile's lists VAR..., sorted
dp_make_list() {
	local v
	for v in "$@"; do
		sed -n "s/^$v = //p" "$D/deps"
	done | tr -s ' ' '\n' | grep -v '^$' | sort -u
}

t_deps_readme() {
	local want got
	newdir deps-readme
	env -u MAKEFLAGS -u MAKELEVEL make -s -C "$DP_SRC" print-deps > "$D/deps" 2>&1
	expect "make -s print-deps prints the five lists" \
		"BUILD_DEPS TEST_DEPS RUN_DEPS FUZZ_DEPS BENCH_DEPS" "$(cut -d' ' -f1 "$D/deps" | tr '\n' ' ' | sed 's/ $//')"
	# ./make.sh installs make, then the targets' lists (deps-run, deps-test)
	want=$( { echo make; dp_make_list BUILD_DEPS RUN_DEPS; } | sort -u | tr '\n' ' ')
	got=$(dp_readme_list "./make.sh run" | tr '\n' ' ')
	expect "README: what ./make.sh run installs is the Makefile's list" "$want" "$got"
	want=$( { echo make; dp_make_list BUILD_DEPS TEST_DEPS; } | sort -u | tr '\n' ' ')
	got=$(dp_readme_list "./make.sh check" | tr '\n' ' ')
	expect "README: what ./make.sh check installs is the Makefile's list" "$want" "$got"
	expect_grep "README: the two commands are ./make.sh run and ./make.sh check" \
		'^    \./make\.sh run ' <(sed -n '/^## Two commands/,/^## /p' "$DP_SRC/README.md")
	expect_grep "README: and ./make.sh check" \
		'^    \./make\.sh check ' <(sed -n '/^## Two commands/,/^## /p' "$DP_SRC/README.md")
}

t_deps_clang() {
	local out
	if ! command -v clang >/dev/null; then
		fail "make CC=clang" "clang is missing (Debian package clang)"; return
	fi
	newdir deps-clang
	copy_tree "$DP_SRC" "$D/src" && rm -f "$D/src/greylistd"
	env -u MAKEFLAGS -u MAKELEVEL make -n -B -C "$D/src" greylistd > "$D/gcc.n" 2>&1
	expect_grep "make with GCC keeps -Wformat-overflow=2 and -Wformat-truncation=2" \
		' -Wformat-overflow=2 -Wformat-truncation=2 ' "$D/gcc.n"
	env -u MAKEFLAGS -u MAKELEVEL make -B -C "$D/src" CC=clang CFLAGS="-O2 -g -Werror" \
		greylistd > "$D/clang.out" 2>&1
	expect "make CC=clang CFLAGS=\"-O2 -g -Werror\" builds" 0 $?
	check "clang: no warning at all" bash -c "! grep -q 'warning:' '$D/clang.out'"
	check "clang: without the two GCC-only flags" bash -c "! grep -q -e -Wformat-overflow -e -Wformat-truncation '$D/clang.out'"
	check "clang: and with every other warning flag" grep -q -- ' -Wconversion -Wsign-conversion ' "$D/clang.out"
	expect_grep "the binary is clang's" 'clang version' <(readelf -p .comment "$D/src/greylistd" 2>&1)
	out=$(req | "$D/src/greylistd" --db="$D/db" --log-file="$D/log" | actions | cut -c1-15)
	expect "clang's binary greylists a new triplet" "DEFER_IF_PERMIT" "$out"
}

t_deps() {
	if dp_can root; then
		t_deps_root
	else
		skip "deps: as root" "needs root (the root path of make.sh is apt-get without sudo)"
	fi
	if dp_can user; then
		chmod go+x "$WORK"		# mktemp made it 0700; nobody runs the stand-ins
		t_deps_user
	else
		skip "deps: as an ordinary user" "no user nobody to switch to"
	fi
	t_deps_readme
	t_deps_clang
}
