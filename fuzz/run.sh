#!/usr/bin/env bash
# fuzz/run.sh - build greylistd's libFuzzer targets and run them.
#
#   fuzz/run.sh [SECONDS] [TARGET...]   fuzz each target for SECONDS (15),
#                                       one after the other
#   fuzz/run.sh --replay [TARGET...]    run every file of fuzz/regressions/
#                                       TARGET/ and fuzz/corpus/TARGET/ once
#
# Targets: request, whitelist, report, dump (all by default); each is
# fuzz/fuzz_TARGET.c, which includes greylistd.c whole (see its header).
#
# Everything built or found goes under $FUZZ_OUT (fuzz/out, git-ignored):
#   fuzz_TARGET          the binaries (ASan, UBSan, libFuzzer), rebuilt when
#                        a source is newer
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
# GREYLISTD_SRC (another greylistd.c to include, e.g. a patched copy).
#
# Output: one line per target,
#   fuzz: TARGET: ok, 123456 runs in 15 s, cov: 394, exec/s: 8230
#   fuzz: TARGET: CRASH (deadly signal) input: fuzz/out/crashes/...
#   fuzz: TARGET: replay: ok, 9 files   |   replay: FAIL FILE (why)
# Exit status: 0 when nothing crashed; 1 when a target crashed or a
# replayed file failed; 2 when clang or the fuzzer runtime is missing or
# a target does not build (never a silent skip).
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${FUZZ_OUT:-$HERE/out}
CC=${FUZZ_CC:-clang}
ALL_TARGETS="request whitelist report dump"
CFLAGS="-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
	-fno-sanitize-recover=undefined -Wall -Wextra ${FUZZ_CFLAGS:-}"
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
	request|report) echo 20000 ;;
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

# build TARGET - $OUT/fuzz_TARGET, when missing or older than a source
build() {
	local t=$1 bin=$OUT/fuzz_$1 src=${GREYLISTD_SRC:-$HERE/../greylistd.c}
	local def=()
	[ -f "$HERE/fuzz_$t.c" ] || die "no target $t (no $HERE/fuzz_$t.c)"
	if [ -x "$bin" ] && [ "$bin" -nt "$HERE/fuzz_$t.c" ] \
		&& [ "$bin" -nt "$HERE/fuzz.h" ] && [ "$bin" -nt "$src" ] \
		&& [ "$bin" -nt "$0" ]; then
		return 0
	fi
	[ -n "${GREYLISTD_SRC:-}" ] && def=("-DGREYLISTD_SRC=\"$GREYLISTD_SRC\"")
	# Built beside and renamed, so that a concurrent run never sees half.
	# shellcheck disable=SC2086
	$CC $CFLAGS "${def[@]}" -o "$bin.tmp.$$" "$HERE/fuzz_$t.c" -lgdbm \
		> "$OUT/logs/build-$t.log" 2>&1 \
		|| die "$t does not build: $(grep -m 3 -E 'error|warning' "$OUT/logs/build-$t.log")"
	if grep -q 'warning:' "$OUT/logs/build-$t.log"; then
		echo "fuzz: $t: build warnings: $(grep -m 3 'warning:' "$OUT/logs/build-$t.log")"
	fi
	mv -f "$bin.tmp.$$" "$bin" || die "cannot install $bin"
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
