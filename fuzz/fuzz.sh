# shellcheck shell=bash
# fuzz/fuzz.sh - the fuzz targets as a test group (sourced by test.sh).
#
# t_fuzz replays every kept crash (fuzz/regressions/TARGET/) and every
# seed (fuzz/corpus/TARGET/) through its target, then fuzzes each target
# for FUZZ_SECONDS (15) with fuzz/run.sh. The targets: request, milter, gp
# (Debian greylistd's protocol), whitelist, report, dump, config
# (FUZZ_TARGETS). One PASS or FAIL per target and step; warnings in the
# build of a target or a module are a FAIL too. A missing clang or
# libFuzzer runtime is a FAIL, not a skip: the claim that no input crashes
# greylistd rests on this group.

FUZZ_TARGETS="request milter gp whitelist report dump config"

t_fuzz() {
	local run out line t rc warn
	run="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/run.sh"

	newdir fuzz
	# shellcheck disable=SC2086
	"$run" --replay $FUZZ_TARGETS > "$D/replay.out" 2>&1
	rc=$?
	if [ "$rc" -eq 2 ]; then
		fail "fuzz: clang, the libFuzzer runtime and the targets build" \
			"$(head -n 3 "$D/replay.out")"
		return
	fi
	pass "fuzz: clang, the libFuzzer runtime and the targets build"
	warn=$(grep ': build warnings: ' "$D/replay.out" | head -n 3)
	if [ -z "$warn" ]; then
		pass "fuzz: the targets and modules build without warnings"
	else
		fail "fuzz: the targets and modules build without warnings" "$warn"
	fi
	for t in $FUZZ_TARGETS; do
		line=$(grep "^fuzz: $t: replay: \(ok\|[0-9]* of\)" "$D/replay.out")
		case $line in
		*": replay: ok,"*) pass "fuzz $t: regressions and seeds replay cleanly" ;;
		*) fail "fuzz $t: regressions and seeds replay cleanly" \
			"$(grep "^fuzz: $t: replay: FAIL" "$D/replay.out" | head -n 5 | tr '\n' ' ')${line}" ;;
		esac
	done

	# shellcheck disable=SC2086
	"$run" "${FUZZ_SECONDS:-15}" $FUZZ_TARGETS > "$D/fuzz.out" 2>&1
	for t in $FUZZ_TARGETS; do
		out=$(grep "^fuzz: $t: \(ok\|CRASH\)" "$D/fuzz.out")
		case $out in
		*": ok,"*) pass "fuzz $t: ${FUZZ_SECONDS:-15} s of fuzzing find nothing" ;;
		*) fail "fuzz $t: ${FUZZ_SECONDS:-15} s of fuzzing find nothing" \
			"${out:-$(tail -n 3 "$D/fuzz.out")}" ;;
		esac
	done
}
