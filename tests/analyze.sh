#!/bin/sh
# tests/analyze.sh - static analysis of greylistd's sources: gcc
# -fanalyzer, cppcheck and clang-tidy; and shellcheck over the project's
# shell scripts.
#
#   tests/analyze.sh [FILE...]   (FILE defaults to every .c file of the
#                                 program: greylistd.c, greylistctl.c and
#                                 the modules greylist.h lists; shellcheck
#                                 checks every script either way)
#
# Every finding is printed as FILE:LINE:COL: severity: text [check]. The
# script exits 0 only when all four analysers ran and reported nothing;
# 1 when any reported a finding; 2 when an analyser is missing (a missing
# tool is a failure, never a silent pass; test.sh's analyze group reports
# a missing shellcheck as a SKIP, the C analysers' as a FAIL). The last
# line is "analyze: N passed, N failed", one count per analyser.
#
# Choices, so that a reviewer can judge them:
#
# gcc -fanalyzer runs with exactly the flags `make` builds with: the
#   Makefile's WARN and HARDEN flags, -D_FORTIFY_SOURCE=3 and the CFLAGS
#   in the environment (-O2 -g by default), read from the Makefile itself
#   so the two cannot drift. The analyser thus sees the code that ships.
#   -fdiagnostics-plain-output prints each step of a reported path as its
#   own FILE:LINE: note, without carets or colour, for CI logs.
#   On this file gcc 12's analyser exhausts its default budget (its
#   -Wanalyzer-too-complex says "analysis bailed out early"): a planted
#   double free in check_config() or decide() goes unreported, while
#   cppcheck and clang-tidy both report it. The script says so in a note
#   rather than failing: a larger budget
#   (--param=analyzer-bb-explosion-factor=20, -fanalyzer-call-summaries)
#   covers more but takes longer and, in gcc 12, reports a dozen false
#   "use of uninitialized value" findings.
#
# cppcheck is given the same system headers and predefined macros the
#   compiler uses (gcc -dM -E; gcc's own include directory,
#   /usr/include/<multiarch>, /usr/include) rather than none. Without
#   them it does not know INET6_ADDRSTRLEN, PATH_MAX, PIPE_BUF, GDBM's
#   datum or the GDBM_* codes, so it cannot size half the buffers it is
#   meant to check (--check-config reports all 26 #includes missing).
#   -D_GNU_SOURCE, which the file defines itself, makes cppcheck check
#   the one configuration the compiler builds instead of guessing at the
#   system headers' #ifdef combinations (12 of them, 8 times slower).
#   The predefined macros are taken without optimisation and without
#   _FORTIFY_SOURCE: at -O2 glibc's headers replace snprintf, memcpy and
#   friends by inline __builtin___*_chk wrappers that cppcheck's
#   posix/gnu library models do not recognise.
#   --library=posix,gnu describes glibc's POSIX and GNU functions
#   (return values, NULL arguments, resources). --platform=unix64 is the
#   LP64 target CI builds for. Findings inside system headers are not
#   ours to fix and are suppressed (*:/usr/*).
#   variableScope is suppressed: greylistd.c declares a function's
#   locals at its top, in the Postfix/qmail style STYLE.md holds up;
#   narrowing a scope changes no behaviour here, and reads of
#   uninitialised locals (the risk the check is about) are already found
#   by -Wall, -fanalyzer and the Clang analyzer.
#
# clang-tidy reads its checks from .clang-tidy at the top of the
#   repository (each group and each disabled check has its reason there).
#   It compiles with the Makefile's WARN flags, so clang's own warnings
#   for the same flags show too (clang-diagnostic-*), plus four that
#   clang's -Wall -Wextra leave off and that stay quiet on sound code
#   (-Wconditional-uninitialized, -Wloop-analysis, -Wunreachable-code,
#   -Wimplicit-fallthrough). It is not given _FORTIFY_SOURCE: clang-tidy
#   does not optimise, and without -O glibc ignores the macro (and warns).
#
# For shellcheck, -S warning -x over every shell script of the tree: each
#   tracked *.sh file and each tracked file whose #! line runs sh or bash
#   (git ls-files, so that a new script is checked without being named
#   here; in a tree that is not a git checkout, such as the fresh group's
#   git archive, the same files found under the tree). -S warning: errors
#   and warnings, not the info and style notes (SC2086 on every $var
#   split on purpose). -x follows the files a script sources, from the
#   top of the tree, where their paths and source= directives start, so
#   that functions and variables defined in one file are known in the
#   other. --norc: no ~/.shellcheckrc changes the verdict; what is
#   disabled is disabled in the scripts, on the line, with the reason
#   (# shellcheck disable=SCxxxx # reason). The scripts are checked one
#   per process, as many at once as there are CPUs: test.sh, which
#   sources the others, takes most of the time.
#
# Takes 5 to 20 seconds on 2 cores for the C analysers, growing with the
# file (10 s at 3,000 lines, most of it clang-tidy and gcc), and about
# SC_SECONDS more for shellcheck. Needs the Debian packages gcc, make,
# cppcheck, clang-tidy and shellcheck, and the build dependencies
# (libgdbm-dev, libsystemd-dev) for the headers.

set -u

SRC=
for f in "$@"; do
	case $f in /*) SRC="$SRC $f" ;; *) SRC="$SRC $(pwd)/$f" ;; esac
done
cd "$(dirname "$0")/.." || exit 2
[ -n "$SRC" ] || SRC=$(for f in greylistd.c greylistctl.c stats.c report.c html.c explain.c postgrey.c config.c log.c triplet.c rule.c whitelist.c db.c redis.c; do echo "$(pwd)/$f"; done)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/greylistd-analyze.XXXXXX") || exit 2
trap 'rm -rf "$TMP"' EXIT
trap 'exit 2' HUP INT TERM

passed=0
failed=0
missing=0

say() { printf 'analyze: %s\n' "$*"; }

# have TOOL PACKAGE - 0 when TOOL is installed; else say so, once
have() {
	if command -v "$1" >/dev/null 2>&1; then
		return 0
	fi
	say "$1: NOT INSTALLED (Debian package $2)"
	missing=$((missing + 1))
	return 1
}

# absent NAME - an analyser that could not run counts as failed
absent() {
	say "$1: not run - FAIL"
	failed=$((failed + 1))
}

# verdict NAME RC OUTPUT_FILE SECONDS - print a tool's findings, count it
verdict() {
	n=$(grep -cE '^[^ :]+:[0-9]+(:[0-9]+)?: (warning|error|style|performance|portability|information)' "$3")
	if [ "$2" -eq 0 ] && [ "$n" -eq 0 ] && ! grep -qE ': (warning|error):' "$3"; then
		say "$1: clean (${4}s)"
		passed=$((passed + 1))
	else
		cat "$3"
		say "$1: $n finding(s), exit status $2 (${4}s) - FAIL"
		failed=$((failed + 1))
	fi
}

# now - seconds since the epoch, for the timings
now() { date +%s; }

# shell_scripts - the tree's shell scripts, one a line: every *.sh file and
# every file whose first line is a #! of sh or bash (bash, dash, env bash)
shell_scripts() {
	{
		if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
			git ls-files -z
		else
			find . -name .git -prune -o -type f -print0 | sed -z 's|^\./||'
		fi
	} | xargs -0 awk 'FILENAME ~ /\.sh$/ || /^#! *([^ ]*\/)?(env +)?(ba|da)?sh( |$)/ { print FILENAME }
		{ nextfile }' 2>/dev/null | LC_ALL=C sort -u
}

# makevar VAR... - the values of Makefile variables, as `make` expands them
makevar() {
	{
		printf 'analyze-print:\n\t@echo'
		# shellcheck disable=SC2016 # $(VAR) is make syntax, for make
		for v in "$@"; do printf ' $(%s)' "$v"; done
		printf '\n'
	} | make --no-print-directory -s -f Makefile -f - SANITIZE= analyze-print
}

for f in $SRC; do
	if [ ! -f "$f" ]; then
		say "$f: no such file"
		exit 2
	fi
done
have_gcc=0 have_make=0 have_cppcheck=0 have_tidy=0
have gcc gcc && have_gcc=1
have make make && have_make=1
have cppcheck cppcheck && have_cppcheck=1
have clang-tidy clang-tidy && have_tidy=1
if [ $have_gcc = 1 ] && ! gcc -fanalyzer -E -x c /dev/null >/dev/null 2>&1; then
	say "gcc $(gcc -dumpfullversion) has no -fanalyzer (need gcc 10 or later)"
	missing=$((missing + 1))
	have_gcc=0
fi

# gcc -fanalyzer
if [ $have_gcc = 1 ] && [ $have_make = 1 ]; then
	flags=$(makevar ALL_CPPFLAGS ALL_CFLAGS) || exit 2
	say "gcc -fanalyzer: gcc $(gcc -dumpfullversion) $flags"
	t0=$(now)
	rc=0
	: >"$TMP/gcc.all"
	for f in $SRC; do
		# shellcheck disable=SC2086 # $flags is a list of words
		gcc $flags -fanalyzer -fdiagnostics-plain-output \
			-Wanalyzer-too-complex -Wno-error=analyzer-too-complex \
			-c -o /dev/null "$f" >>"$TMP/gcc.all" 2>&1 || rc=$?
	done
	# drop the budget notices with the context lines ("In function ...",
	# "inlined from ...") and notes that belong to them
	awk '/^([^ ]+:[0-9]+:[0-9]+|cc1): (warning|error):/ {
		skip = /Wanalyzer-too-complex/
		if (!skip) printf "%s", ctx
		ctx = ""
		if (!skip) print
		next
	     }
	     /^[^ ]+:[0-9]+:[0-9]+: note:/ { ctx = ""; if (!skip) print; next }
	     { ctx = ctx $0 "\n" }' "$TMP/gcc.all" >"$TMP/gcc.out"
	verdict "gcc -fanalyzer" "$rc" "$TMP/gcc.out" $(($(now) - t0))
	if grep -q 'analysis bailed out early' "$TMP/gcc.all"; then
		say "gcc -fanalyzer: note: it ran out of budget and bailed out" \
			"early: some paths went unexplored (not counted as a" \
			"failure; see the comment at the top of this script)"
	fi
else
	absent "gcc -fanalyzer"
fi

# cppcheck
if [ $have_cppcheck = 1 ] && [ $have_gcc = 1 ]; then
	say "cppcheck: $(cppcheck --version)"
	gcc -std=c11 -dM -E - </dev/null >"$TMP/predef.h"
	multiarch=$(gcc -print-multiarch)
	t0=$(now)
	cppcheck -q --std=c11 --language=c --platform=unix64 \
		--library=posix --library=gnu \
		--enable=warning,style,performance,portability \
		--inline-suppr --error-exitcode=1 \
		--include="$TMP/predef.h" -D_GNU_SOURCE \
		-I"$(gcc -print-file-name=include)" \
		-I"/usr/include/$multiarch" -I/usr/include \
		--suppress='*:/usr/*' --suppress=variableScope \
		--template='{file}:{line}:{column}: {severity}: {message} [{id}]' \
		--template-location='{file}:{line}:{column}: note: {info}' \
		$SRC >"$TMP/cppcheck.out" 2>&1
	rc=$?
	verdict cppcheck "$rc" "$TMP/cppcheck.out" $(($(now) - t0))
else
	absent cppcheck
fi

# clang-tidy
if [ $have_tidy = 1 ] && [ $have_make = 1 ]; then
	warn=$(makevar WARN) || exit 2
	say "clang-tidy: $(clang-tidy --version | sed -n 's/.*LLVM version /LLVM /p')"
	t0=$(now)
	# one file per run: clang-tidy 14 given several files in one run
	# carries the Clang analyzer's va_list state from one to the next, and
	# reports every later va_start/vsnprintf as uninitialized
	rc=0
	: >"$TMP/clang-tidy.out"
	for f in $SRC; do
		# shellcheck disable=SC2086 # $warn is a list of words
		clang-tidy --quiet --config-file=.clang-tidy "$f" -- \
			$warn -Wno-unknown-warning-option \
			-Wconditional-uninitialized -Wloop-analysis \
			-Wunreachable-code -Wimplicit-fallthrough \
			>>"$TMP/clang-tidy.out" 2>&1 || rc=$?
	done
	# "N warnings generated." and its like are counts, not findings
	grep -vE '^[0-9]+ (warning|error)s? (generated|treated as errors?)\.?$' \
		"$TMP/clang-tidy.out" >"$TMP/clang-tidy.txt"
	verdict clang-tidy "$rc" "$TMP/clang-tidy.txt" $(($(now) - t0))
else
	absent clang-tidy
fi

# the shell scripts: shellcheck (asked for here: its lines come last)
if have shellcheck shellcheck; then
	shell_scripts >"$TMP/scripts"
	say "shellcheck: $(shellcheck --version | sed -n 's/^version: //p'), $(wc -l <"$TMP/scripts") scripts$(git rev-parse --is-inside-work-tree >/dev/null 2>&1 || echo " (not a git checkout: the scripts found under the tree)")"
	t0=$(now)
	mkdir "$TMP/sc"
	# one process a script, CPUs at once, each into a file of its own
	# numbered as listed, so that the findings come out in the list's
	# order; started by how many files each sources, most first (test.sh,
	# which sources the others, is the longest to check)
	n=0
	while IFS= read -r f; do
		n=$((n + 1))
		printf '%d %05d %s\n' "$(grep -cE '^[[:space:]]*(\.|source)[[:space:]]' "$f")" "$n" "$f"
	done <"$TMP/scripts" | sort -k1,1nr -k2,2n \
		| awk '{ n = $2; sub(/^[0-9]+ [0-9]+ /, ""); printf "%s%c%s%c", $0, 0, n, 0 }' \
		| xargs -0 -n 2 -P "$(nproc 2>/dev/null || echo 1)" sh -c \
			'shellcheck -S warning -x --norc -f gcc "$1" >"$0/$2" 2>&1; echo $? >"$0/$2.rc"' "$TMP/sc"
	rc=0
	: >"$TMP/shellcheck.out"
	for f in "$TMP"/sc/*.rc; do
		[ -e "$f" ] || continue
		cat "${f%.rc}" >>"$TMP/shellcheck.out"
		[ "$(cat "$f")" -eq 0 ] || rc=$(cat "$f")
	done
	[ -s "$TMP/scripts" ] || { echo "no shell script found" >>"$TMP/shellcheck.out"; rc=2; }
	verdict shellcheck "$rc" "$TMP/shellcheck.out" $(($(now) - t0))
else
	say "shellcheck: not run"
fi

say "$passed passed, $failed failed"
if [ "$missing" -ne 0 ]; then
	exit 2
fi
[ "$failed" -eq 0 ]
