#!/usr/bin/env bash
# fuzz/run.sh - build greylistd's libFuzzer targets and run them.
#
#   fuzz/run.sh [SECONDS] [TARGET...]   fuzz each target for SECONDS (15),
#                                       one after the other
#   fuzz/run.sh --replay [TARGET...]    run every file of fuzz/regressions/
#                                       TARGET/ and fuzz/corpus/TARGET/ once
#
# Targets: request, milter, gp (Debian greylistd's protocol), whitelist,
# report, dump, config (all by default); each is fuzz/fuzz_TARGET.c. The shared modules (config.c log.c
# triplet.c rule.c whitelist.c db.c redis.c) are compiled once with the fuzzer's flags into
# $FUZZ_OUT/obj/ and linked into every target; a target includes at most
# the one .c file whose static functions it tests (target_include below),
# and the other files it needs are linked as objects, a file with a main()
# compiled with -Dmain=NAME_main. See each target's header.
#
# Everything built or found goes under $FUZZ_OUT (fuzz/out, git-ignored):
#   fuzz_TARGET          the binaries (ASan, UBSan, libFuzzer), rebuilt when
#                        a source is newer (any *.c or *.h of the tree,
#                        fuzz/fuzz_TARGET.c, fuzz/fuzz.h, this script) or
#                        the flags changed
#   obj/                 the objects of the tree's files
#   corpus/TARGET/       the inputs the fuzzer found worth keeping; the seeds
#                        in fuzz/corpus/TARGET/ are read too, never written
#   crashes/TARGET/      a crashing, hanging (-timeout=10) or memory-hungry
#                        (-rss_limit_mb=512) input, as libFuzzer wrote it
#   logs/TARGET.log      libFuzzer's output of the last run
# A crash found is kept there: minimise it (fuzz_TARGET -minimize_crash=1
# -max_total_time=60 FILE), add it to fuzz/regressions/TARGET/ and it is
# replayed by every run of the suite from then on.
#
# Environment: FUZZ_CC (clang), FUZZ_OUT, FUZZ_CFLAGS (more flags),
# FUZZ_SRC (the source tree to build, e.g. a patched copy; the one above
# fuzz/ by default). FUZZ_SRC replaces GREYLISTD_SRC, which named one
# greylistd.c to include when that file was the whole program.
#
# Output: one line per target,
#   fuzz: TARGET: ok, 123456 runs in 15 s, cov: 394, exec/s: 8230
#   fuzz: TARGET: CRASH (deadly signal) input: fuzz/out/crashes/...
#   fuzz: TARGET: replay: ok, 9 files   |   replay: FAIL FILE (why)
#   fuzz: TARGET: build warnings: ...    (a build that is not clean)
# Exit status: 0 when nothing crashed; 1 when a target crashed or a
# replayed file failed; 2 when clang or the fuzzer runtime is missing or
# a target does not build (never a silent skip).
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC=$(cd "${FUZZ_SRC:-$HERE/..}" 2>/dev/null && pwd) \
	|| { echo "fuzz: FUZZ_SRC=${FUZZ_SRC:-}: no such directory" >&2; exit 2; }
OUT=${FUZZ_OUT:-$HERE/out}
CC=${FUZZ_CC:-clang}
ALL_TARGETS="request milter gp whitelist report dump config"
# Objects get the sanitizers and the fuzzer's coverage, not its main();
# the targets are linked with -fsanitize=fuzzer, which brings it.
COMMON="-g -O1 -fno-omit-frame-pointer -fno-sanitize-recover=undefined
	-Wall -Wextra ${FUZZ_CFLAGS:-}"
OBJFLAGS="-fsanitize=fuzzer-no-link,address,undefined $COMMON"
CFLAGS="-fsanitize=fuzzer,address,undefined $COMMON"
LIMITS="-timeout=10 -rss_limit_mb=512"
# ASan keeps 256 MB of freed memory by default and returns little to the
# system: with regcomp's many small allocations the whitelist target grows
# past 512 MB in seconds though no input uses more than 40 MB. These are
# appended to the caller's options (the later setting wins), never dropped:
# the suite's sanitizer pass sets ASAN_OPTIONS, and an earlier
# ${ASAN_OPTIONS:-...} here lost the quarantine limit there and reported
# the quarantine as an out-of-memory crash.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=16:allocator_release_to_os_interval_ms=500"

# max_len - the longest input libFuzzer makes for a target: room for an
# over-long line (MAX_LINE is 8448) where the target reads lines
max_len() {
	case $1 in
	request|report|milter|gp) echo 20000 ;;
	dump) echo 40000 ;;
	*) echo 8192 ;;
	esac
}

die() { echo "fuzz: $*" >&2; exit 2; }

# toolchain - clang and the libFuzzer runtime, or fail loudly
toolchain() {
	command -v "$CC" >/dev/null 2>&1 \
		|| die "$CC not found: install clang (Debian: apt-get install clang libclang-rt-14-dev)"
	mkdir -p "$OUT" || die "cannot create $OUT"
	printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n)\n{ (void)d; (void)n; return 0; }\n' > "$OUT/probe.c"
	# shellcheck disable=SC2086
	$CC $CFLAGS -o "$OUT/probe" "$OUT/probe.c" > "$OUT/probe.log" 2>&1 \
		|| die "$CC cannot build a libFuzzer target (missing runtime? Debian: apt-get install libclang-rt-14-dev): $(head -n 3 "$OUT/probe.log")"
	rm -f "$OUT/probe" "$OUT/probe.c" "$OUT/probe.log"
}

# target_include TARGET - the tree's .c file the target includes (its
# static functions are what it tests), or nothing
target_include() {
	case $1 in
	request|milter|gp) echo greylistd ;;
	whitelist) echo whitelist ;;
	report) echo report ;;
	dump) echo greylistctl ;;
	config) echo config ;;
	esac
}

# target_objects TARGET - the tree's files linked into it as objects
target_objects() {
	local inc m
	inc=$(target_include "$1")
	for m in config log triplet rule whitelist db redis; do
		[ "$m" = "$inc" ] || echo "$m"
	done
	# greylistctl's own modules (the Makefile's CTL_OBJS): report uses
	# say(), print_escaped(), snap_take() of greylistctl.c, whose main()
	# reaches the others
	case $1 in
	report|dump)
		for m in greylistctl stats report html explain postgrey; do
			[ "$m" = "$inc" ] || echo "$m"
		done ;;
	esac
}

# target_libs TARGET - the libraries it links
target_libs() {
	case $1 in
	report|dump) echo "-lgdbm -lpcre2-8 -lsystemd" ;;
	*) echo "-lgdbm -lpcre2-8" ;;
	esac
}

# newer_than FILE PATH... - FILE is missing, or a PATH is newer
newer_than() {
	local f=$1 p
	shift
	[ -e "$f" ] || return 0
	for p in "$@"; do
		[ "$p" -nt "$f" ] && return 0
	done
	return 1
}

# warnings LOG WHAT - say so when the log of the build that made the
# object or binary there holds a warning (on every run, not only the one
# that built it)
warnings() {
	if grep -q 'warning:' "$1"; then
		echo "fuzz: $2: build warnings: $(grep -m 3 'warning:' "$1" | tr '\n' ' ')"
	fi
}

# object NAME - $OUT/obj/NAME.o from the tree's NAME.c, when missing or
# older than it, a header or this script (once per run: the targets
# share it); a file with a main() gets it renamed to NAME_main
declare -A OBJECT_DONE

object() {
	local m=$1 o=$OUT/obj/$1.o def=()
	[ -n "${OBJECT_DONE[$m]:-}" ] && return 0
	OBJECT_DONE[$m]=1
	case $m in
	greylistd|greylistctl) def=("-Dmain=${m}_main") ;;
	esac
	if newer_than "$o" "$SRC/$m.c" "$SRC"/*.h "$HERE/run.sh" \
		"$OUT/obj/flags"; then
		# shellcheck disable=SC2086
		$CC $OBJFLAGS "${def[@]}" -I"$SRC" -c -o "$o.tmp.$$" \
			"$SRC/$m.c" > "$OUT/logs/build-$m.o.log" 2>&1 \
			|| die "$m.c does not build: $(grep -m 3 -E 'error|warning' "$OUT/logs/build-$m.o.log")"
		mv -f "$o.tmp.$$" "$o" || die "cannot install $o"
	fi
	warnings "$OUT/logs/build-$m.o.log" "$m.c"
}

# build_flags - $OUT/obj/flags holds the compiler and flags the objects
# were built with; changed flags rebuild everything
build_flags() {
	local now="$CC $CFLAGS $OBJFLAGS $SRC"
	mkdir -p "$OUT/obj" || die "cannot create $OUT/obj"
	[ "$(cat "$OUT/obj/flags" 2>/dev/null)" = "$now" ] \
		|| echo "$now" > "$OUT/obj/flags"
}

# build TARGET - $OUT/fuzz_TARGET, when missing or older than a source
build() {
	local t=$1 bin=$OUT/fuzz_$1 m objs=()
	[ -f "$HERE/fuzz_$t.c" ] || die "no target $t (no $HERE/fuzz_$t.c)"
	for m in $(target_objects "$t"); do
		object "$m"
		objs+=("$OUT/obj/$m.o")
	done
	if newer_than "$bin" "$HERE/fuzz_$t.c" "$HERE"/*.h "$SRC"/*.c \
		"$SRC"/*.h "$HERE/run.sh" "$OUT/obj/flags" "${objs[@]}"; then
		# Built beside and renamed, so that a concurrent run never
		# sees half. -iquote: #include "greylistd.c" is the tree's.
		# shellcheck disable=SC2086,SC2046 # the flags and libraries split on purpose
		$CC $CFLAGS -iquote "$SRC" -o "$bin.tmp.$$" "$HERE/fuzz_$t.c" \
			"${objs[@]}" $(target_libs "$t") \
			> "$OUT/logs/build-$t.log" 2>&1 \
			|| die "$t does not build: $(grep -m 3 -E 'error|warning' "$OUT/logs/build-$t.log")"
		mv -f "$bin.tmp.$$" "$bin" || die "cannot install $bin"
	fi
	warnings "$OUT/logs/build-$t.log" "$t"
}

# final_stat NAME LOG - a libFuzzer final statistic (-print_final_stats=1)
final_stat() { sed -n "s/^stat::$1: *//p" "$2" | tail -n 1; }

# fuzz TARGET SECONDS - one run; 0 when it found nothing
fuzz() {
	local t=$1 secs=$2 log=$OUT/logs/$1.log rc cov eps runs art why
	mkdir -p "$OUT/corpus/$t" "$OUT/crashes/$t"
	# shellcheck disable=SC2086
	"$OUT/fuzz_$t" -max_total_time="$secs" -max_len="$(max_len "$t")" \
		$LIMITS -print_final_stats=1 -dict="$HERE/dict/$t.dict" \
		-artifact_prefix="$OUT/crashes/$t/" \
		"$OUT/corpus/$t" "$HERE/corpus/$t" > "$log" 2>&1
	rc=$?
	runs=$(final_stat number_of_executed_units "$log")
	eps=$(final_stat average_exec_per_sec "$log")
	cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
	if [ "$rc" -eq 0 ]; then
		echo "fuzz: $t: ok, ${runs:-?} runs in $secs s, cov: ${cov:-?}, exec/s: ${eps:-?}"
		return 0
	fi
	art=$(sed -n 's/.*Test unit written to //p' "$log" | tail -n 1)
	why=$(grep -m 1 -oE 'INVARIANT FAILED.*|SUMMARY: .*|ERROR: libFuzzer: [a-z -]*' "$log")
	echo "fuzz: $t: CRASH (${why:-exit $rc}) after ${runs:-?} runs, input: ${art:-none written}, log: $log"
	[ -n "$art" ] && echo "fuzz: $t: reproduce: $OUT/fuzz_$t $art"
	return 1
}

# replay TARGET - every regression and seed once, each in its own process
replay() {
	local t=$1 f n=0 bad=0 log=$OUT/logs/replay-$1.log why
	: > "$log"
	for f in "$HERE/regressions/$t"/* "$HERE/corpus/$t"/*; do
		[ -f "$f" ] || continue
		n=$((n + 1))
		# shellcheck disable=SC2086
		if ! "$OUT/fuzz_$t" $LIMITS "$f" > "$log.one" 2>&1; then
			why=$(grep -m 1 -oE 'INVARIANT FAILED.*|SUMMARY: .*|ERROR: libFuzzer: [a-z -]*' "$log.one")
			echo "fuzz: $t: replay: FAIL ${f#"$HERE"/} (${why:-crashed})"
			bad=$((bad + 1))
		fi
		cat "$log.one" >> "$log"
	done
	rm -f "$log.one"
	if [ "$bad" -eq 0 ]; then
		echo "fuzz: $t: replay: ok, $n files"
		return 0
	fi
	echo "fuzz: $t: replay: $bad of $n files failed, log: $log"
	return 1
}

mode=fuzz secs=15
if [ "${1:-}" = --replay ]; then
	mode=replay
	shift
elif [ -n "${1:-}" ] && [ "${1#*[!0-9]}" = "$1" ]; then
	secs=$1
	shift
fi
targets=${*:-$ALL_TARGETS}
toolchain
mkdir -p "$OUT/logs"
build_flags
for t in $targets; do
	build "$t"
done
status=0
for t in $targets; do
	case $mode in
	fuzz) fuzz "$t" "$secs" || status=1 ;;
	replay) replay "$t" || status=1 ;;
	esac
done
exit $status
