# shellcheck shell=bash
# tests/design.sh - what a reviewer is promised about the code itself:
# the trust boundary greylistd.c's header states, the size of the file
# and of its functions, what a request can reach. Sourced by test.sh
# (group design).

# The sources of the two programs.
DESIGN_SOURCES="greylistd.c greylistctl.c stats.c report.c html.c explain.c postgrey.c config.c log.c triplet.c rule.c whitelist.c db.c redis.c"

# design_sections - "START END HEADING" for each section of greylistd.c:
# a "/*" line, then " * Heading." (the file's own sections, after the
# header comment)
design_sections() {
	awk 'prev == "/*" && /^ \* [A-Z].*\.$/ && NR > 20 { print NR - 1, substr($0, 4) }
	     { prev = $0 } END { print NR + 1, "END" }' greylistd.c \
		| awk 'NR > 1 { print start, $1 - 1, head } { start = $1; $1 = ""; head = substr($0, 2) }'
}

# function_lengths FILE - "LINES NAME" for every function defined in FILE
# (from its name's line to the "}" that closes it; the before-stop hook's
# rule)
function_lengths() {
	awk '/^[A-Za-z_][A-Za-z0-9_ *]*\(/ { name = $0; sub(/\(.*/, "", name); sub(/.*[ *]/, "", name); start = NR }
	     /^}/ && start { print NR - start, name; start = 0 }' "$1"
}

t_design() {
	local a b want got bad f n out

	newdir design
	# the header's line ranges are the sections'
	design_sections > "$D/sections"
	sed -n 's/^ \*	  lines \([0-9]*\)-\([0-9]*\)	\([A-Z][a-z]*\).*/\1 \2 \3/p' greylistd.c > "$D/claimed"
	sed -n 's/^ \*	Only the admin.s files reach, here: lines \([0-9]*\)-\([0-9]*\) .*/\1 \2 Serving/p' greylistd.c >> "$D/claimed"
	bad=
	while read -r a b want; do
		got=$(awk -v a="$a" -v b="$b" '$1 == a && $2 == b { sub(/[.:]$/, "", $3); print $3 }' "$D/sections")
		[ "$got" = "${want%%:*}" ] || bad="$bad [lines $a-$b: $want, the file has $(grep " ${want%%:*}" "$D/sections" | head -n 1)]"
	done < "$D/claimed"
	expect "greylistd.c's header states the trust boundary's line ranges as they are ($(wc -l < "$D/claimed") ranges)" "" "$bad"
	check "and states six of them (reading, the request, answering, milter, greylistd protocol, serving)" test "$(wc -l < "$D/claimed")" -eq 6

	bad=
	for f in $DESIGN_SOURCES; do
		while read -r n out; do
			[ "$n" -gt 60 ] && bad="$bad $f:$out($n)"
		done < <(function_lengths "$f")
	done
	expect "no function over 60 lines in any source" "" "$bad"
	n=$(wc -l < greylistd.c)
	check "greylistd.c is at most 2,200 lines, and 300 more for each protocol beyond Postfix's ($n lines)" \
		test "$n" -le $((2200 + 300 * $(grep -c '^ \* PROTOCOL ' greylistd.c)))

	tests/reach.sh read_request make_triplet decide format_reply write_all > "$D/core"
	n=$(sed -n 's/^reach: [0-9]* functions, \([0-9]*\) lines$/\1/p' "$D/core")
	check "the core route (read a request, make the triplet, decide, answer) is at most 600 lines (${n:-?})" \
		test "${n:-99999}" -le 600
}
