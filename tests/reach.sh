#!/usr/bin/env bash
# tests/reach.sh - how much code a request can reach, and how long each
# function is: the figures the README's design section quotes.
#
#   tests/reach.sh [ROOT...]     functions reachable from the ROOTs
#                                (default: what serves a request)
#   STOP="NAME..." tests/reach.sh   the same, not going into NAME (the
#                                admin's files: STOP=wl_load)
#
# Every source is compiled with gcc -fcallgraph-info, which writes each
# translation unit's call graph; the graphs are joined by function name
# (static functions are FILE:NAME) and walked from the roots. A function
# is counted from the line its name is defined on to the "}" that closes
# it. Calls through a pointer are not followed by gcc; greylistd's own are
# to libsystemd and libnettle only (log.c, triplet.c), and tables of
# functions, where a file has one, are listed as roots by the caller.
#
# Output: one line per reachable function, "LINES FILE:NAME", then
#   reach: N functions, L lines
# and, for every source file, "file FILE LINES" and "longest FILE:NAME N".
set -u
cd "$(dirname "$0")/.." || exit 2
TMP=$(mktemp -d "${TMPDIR:-/tmp}/greylistd-reach.XXXXXX") || exit 2
trap 'rm -rf "$TMP"' EXIT

SOURCES="greylistd.c config.c log.c triplet.c rule.c whitelist.c db.c redis.c"
for f in $SOURCES; do
	gcc -std=c11 -O0 -DSYSCONFDIR='"/etc"' -DLOCALSTATEDIR='"/var/lib"' \
		-fcallgraph-info -c "$f" -o "$TMP/${f%.c}.o" -dumpdir "$TMP/" \
		2> "$TMP/${f%.c}.err" || { cat "$TMP/${f%.c}.err" >&2; exit 2; }
done
roots=${*:-read_request answer}

# nodes: NAME FILE LINE (defined functions only); edges: FROM TO
cat "$TMP"/*.ci | awk -v pwd="$PWD/" '
	function name(t) { sub(pwd, "", t); return t }
	/^node:/ && !/shape : ellipse/ {
		match($0, /title: "[^"]*"/); t = name(substr($0, RSTART + 8, RLENGTH - 9))
		match($0, /\\n[^"]*:[0-9]+:[0-9]+"/); l = substr($0, RSTART + 2, RLENGTH - 3)
		sub(pwd, "", l); split(l, p, ":")
		print "node", t, p[1], p[2]
	}
	/^edge:/ {
		match($0, /sourcename: "[^"]*"/); s = name(substr($0, RSTART + 13, RLENGTH - 14))
		match($0, /targetname: "[^"]*"/); d = name(substr($0, RSTART + 13, RLENGTH - 14))
		print "edge", s, d
	}' > "$TMP/graph"

# the length of each defined function
while read -r _ fn file line; do
	end=$(awk -v s="$line" 'NR >= s && /^}/ { print NR; exit }' "$file")
	echo "$fn $file $line $((end - line + 1))"
done < <(grep '^node ' "$TMP/graph") > "$TMP/lengths"

# a static function is FILE:NAME, an external one NAME: a root may be either
resolve() { awk -v r="$1" '$1 == r || $1 ~ (":" r "$") { print $1 }' "$TMP/lengths"; }
: > "$TMP/seen"
queue=()
for r in $roots; do
	for x in $(resolve "$r"); do queue+=("$x"); done
done
while [ ${#queue[@]} -gt 0 ]; do
	f=${queue[0]}
	queue=("${queue[@]:1}")
	grep -qxF "$f" "$TMP/seen" && continue
	case " ${STOP:-} " in *" ${f##*:} "*) continue ;; esac
	grep -q "^$f " "$TMP/lengths" || continue	# a library's
	echo "$f" >> "$TMP/seen"
	while read -r _ _ to; do queue+=("$to"); done < <(awk -v f="$f" '$1 == "edge" && $2 == f' "$TMP/graph")
done
total=0 n=0
while read -r f; do
	len=$(awk -v f="$f" '$1 == f { print $4 }' "$TMP/lengths")
	printf '%4d %s\n' "$len" "$f"
	total=$((total + len)); n=$((n + 1))
done < <(sort "$TMP/seen")
echo "reach: $n functions, $total lines"
for f in $SOURCES greylistctl.c report.c explain.c postgrey.c; do
	echo "file $f $(wc -l < "$f")"
done
sort -k4 -n "$TMP/lengths" | tail -n 1 | awk '{ print "longest", $1, $4 }'
