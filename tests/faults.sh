# tests/faults.sh - greylistd under faults, with the real binary and real
# files: a damaged database (header destroyed, a bucket overwritten, the
# file cut short), writers SIGKILLed in a loop under 8 concurrent clients
# and, deterministically, before each write of a store that splits a
# bucket, a process stopped (SIGSTOP) while it holds the lock, a read-only
# and a full file system, a missing and an unwritable directory. Sourced
# by test.sh (group faults).
#
# Each fault is checked for the same three things:
# - every request gets a well-formed answer (one action line and an empty
#   line) within the lock budget (--lock-timeout=1s; FLT_LIMIT_MS allows
#   for starting the process), DUNNO where greylistd cannot decide;
# - greylistd's log says what is wrong, in the exact words it uses;
# - once the fault is cleared, greylisting resumes (a new triplet is
#   deferred, a known passed one passes) and every record committed before
#   the fault is still in the database, byte for byte in `greylistd dump`
#   (except what was in the part of the file the fault destroyed).
#
# The mounts (a read-only and a full tmpfs) are made in a mount namespace
# of their own (unshare), under $D, and vanish with it. Faults at an exact
# point of a real greylistd (stopped holding the lock, killed before a
# given write) come from a small LD_PRELOAD library built with cc.

FLT_LIMIT_MS=1500

# flt_new NAME - a fresh directory for one fault; the database is $DB and
# greylistd runs as root ($RUNAS is empty)
flt_new() {
	newdir "faults-$1"
	DB=$D/db
	RUNAS=
	: > "$D/answers"
	: > "$D/log"
}

# flt_re TEXT - TEXT as a regular expression that matches only itself
flt_re() { printf '%s' "$1" | sed 's/[][\.*^$+?(){}|]/\\&/g'; }

# flt_us - microseconds since the epoch
flt_us() { local t=$EPOCHREALTIME; echo "${t/[.,]/}"; }

# flt_seed N - load N passed triplets (sI@seed.example from 10.x.y.0, last
# seen a minute ago, so that a pass writes nothing), one pending triplet
# (deferred a minute ago) and today's expiry note into $DB
flt_seed() {
	local now
	now=$(date +%s)
	awk -v now="$now" -v n="$1" 'BEGIN {
		for (i = 1; i <= n; i++)
			printf "T %d %d %d 10.%d.%d.0 s%d@seed.example r@seed.example\n",
				now - 900, now - 60, now - 600,
				int(i / 256) % 256, i % 256, i
		printf "T %d %d 0 192.0.2.0 pending@seed.example r@seed.example\n",
			now - 60, now - 60
		printf "M expire %d\n", now
	}' | $RUNAS "$GREYLISTCTL" load --db="$DB" >/dev/null
}

# flt_known I - the request attributes of seeded triplet I
flt_known() {
	echo "client_address=10.$(($1 / 256 % 256)).$(($1 % 256)).9 sender=s$1@seed.example recipient=r@seed.example"
}
# (a fresh file has no expiry note: its first request runs the expiry)
FLT_EXPIRY="expiry of .*: [0-9]+ records seen, 0 deleted, [0-9]+ ms$"
FLT_PENDING="client_address=192.0.2.77 sender=pending@seed.example recipient=r@seed.example"

# flt_dump FILE - the database's T and C records, sorted (the M notes are
# greylistd's own bookkeeping)
flt_dump() {
	"$GREYLISTCTL" dump --db="$DB" | grep -v '^[#M]' | LC_ALL=C sort > "$1"
}

# flt_replies T0 - read greylistd's replies on stdin and print one line
# per reply: the milliseconds since T0 (for the first) or since the reply
# before, and the action; BAD:... for anything that is not one action
# line followed by an empty line
flt_replies() {
	local prev=$1 line blank now
	while :; do
		if ! IFS= read -r line; then
			[ -z "$line" ] || echo "0 BAD:$(printf %q "$line")"
			break
		fi
		if [[ $line == action=?* ]] && IFS= read -r blank && [ -z "$blank" ]; then
			now=$(flt_us)
			echo "$(((now - prev) / 1000)) ${line#action=}"
			prev=$now
		else
			echo "0 BAD:$(printf %q "$line")"
		fi
	done
}

# flt_ask ARGS... - one request (req ARGS) on a connection of its own to
# greylistd with $DB, $D/log and a 1 s lock budget, run through $RUNAS
# (and with the clock moved by $FLT_AT, e.g. +301s, when it is set).
# The action is left in ANS (NONE without a reply); "MS ACTION" is added
# to $D/answers; the lines it logged (the maintenance after the answer
# included: greylistd waits for it) are in $D/asklog.
flt_ask() {
	local t0 out n0 run=($RUNAS)
	[ -z "${FLT_AT:-}" ] || run+=(env FAKETIME_DONT_FAKE_MONOTONIC=1 faketime -f "$FLT_AT")
	n0=$(stat -c %s "$D/log")
	t0=$(flt_us)
	out=$(req "$@" | "${run[@]}" "$GREYLISTD" --db="$DB" --log-file="$D/log" \
		--lock-timeout=1s | flt_replies "$t0")
	[ -n "$out" ] || out="- NONE"
	echo "$out" >> "$D/answers"
	ANS=${out#* }
	tail -c +$((n0 + 1)) "$D/log" > "$D/asklog"
}

# flt_answers NAME N - $D/answers holds N replies, each well formed and
# within the lock budget; then it is emptied for the next step
flt_answers() {
	local name=$1 n=$2 good max
	good=$(grep -cvE '^(- NONE|[0-9]+ BAD:.*)$' "$D/answers")
	max=$(cut -d' ' -f1 "$D/answers" | grep -E '^[0-9]+$' | sort -n | tail -n 1)
	expect "$name: $n requests, $n well-formed answers" "$n $n" \
		"$(wc -l < "$D/answers") $good"
	check "$name: each within the 1 s lock budget (slowest ${max:-none} ms)" \
		test "${max:-99999}" -le "$FLT_LIMIT_MS"
	: > "$D/answers"
}

# flt_log NAME PATTERN... - the last request logged exactly these lines
# (extended regular expressions), in this order
flt_log() {
	local name=$1 i=0 p
	local -a lines
	shift
	mapfile -t lines < "$D/asklog"
	if [ "${#lines[@]}" -ne $# ]; then
		fail "$name" "want $# log lines, got ${#lines[@]}: $(cat "$D/asklog")"
		return
	fi
	for p in "$@"; do
		if ! [[ ${lines[i]} =~ $p ]]; then
			fail "$name" "log line $((i + 1)) [${lines[i]}] does not match /$p/"
			return
		fi
		i=$((i + 1))
	done
	pass "$name"
}

# flt_failopen WHY - the log line of a request answered DUNNO for WHY
flt_failopen() {
	echo "greylistd\[[0-9]+\]: action=pass, reason=fail-open \($1\), client_name="
}

# flt_resumes NAME [KNOWN-INDEX] - after the fault: a new triplet is
# deferred and logged as new, a seeded passed triplet passes and is logged
# as found; the answers are well formed and quick. Without KNOWN-INDEX
# (the file was destroyed, nothing is known), the new triplet's retry
# after the delay passes instead.
flt_resumes() {
	local name=$1 k=${2:-} n=2
	flt_ask sender="after@$name.example"
	expect "$name, cleared: a new triplet is deferred" \
		"DEFER_IF_PERMIT Greylisted, please try again in 300 seconds" "$ANS"
	flt_log "$name, cleared: logged as new" \
		"action=greylist, reason=new, .*sender=after@$name\.example,"
	if [ -n "$k" ]; then
		flt_ask $(flt_known "$k")
		expect "$name, cleared: a known passed triplet passes" "DUNNO" "$ANS"
		flt_log "$name, cleared: logged as found" \
			"action=pass, reason=triplet found, .*sender=s$k@seed\.example,"
	else
		FLT_AT=+301s flt_ask sender="after@$name.example"
		expect "$name, cleared: its retry after the delay passes" "PREPEND X-Greylist" "${ANS%%:*}"
		flt_log "$name, cleared: logged as a pass with its delay" \
			"action=pass, reason=triplet found, delay=30[0-9], .*sender=after@$name\.example,"
	fi
	flt_answers "$name, cleared" $n
}

# flt_kept NAME BEFORE - every record of the dump BEFORE is in the
# database now, unchanged
flt_kept() {
	local missing
	flt_dump "$D/after"
	missing=$(LC_ALL=C comm -23 "$2" "$D/after" | wc -l)
	expect "$1: all $(wc -l < "$2") records committed before the fault are kept" \
		0 "$missing"
}

# flt_preload - build $WORK/faults-preload.so (once), an LD_PRELOAD
# library that puts a fault at an exact point of a real greylistd:
# - GL_STOP_ON=ex|sh: once flock() has taken that lock, the process
#   stops itself (SIGSTOP), once;
# - GL_INO=INODE GL_SIGNAL_AT=K GL_SIGNAL=SIG: just before the K-th
#   write(2) to the file with that inode, the process raises SIG;
#   GL_COUNT=FILE: the number of such writes so far is kept in FILE.
flt_preload() {
	[ -e "$WORK/faults-preload.so" ] && return 0
	cat > "$WORK/faults-preload.c" <<-'EOF'
	#define _GNU_SOURCE
	#include <dlfcn.h>
	#include <signal.h>
	#include <stdio.h>
	#include <stdlib.h>
	#include <string.h>
	#include <sys/file.h>
	#include <sys/stat.h>
	#include <unistd.h>

	int flock(int fd, int op)
	{
		static int (*real)(int, int);
		const char *want = getenv("GL_STOP_ON");
		int rc;

		if (!real)
			*(void **)&real = dlsym(RTLD_NEXT, "flock");
		rc = real(fd, op);
		if (rc == 0 && want
		    && (op & (strcmp(want, "ex") == 0 ? LOCK_EX : LOCK_SH))) {
			unsetenv("GL_STOP_ON");
			raise(SIGSTOP);
		}
		return rc;
	}

	static void before_write(int fd)
	{
		static int n;
		const char *ino = getenv("GL_INO"), *at = getenv("GL_SIGNAL_AT");
		const char *sig = getenv("GL_SIGNAL"), *count = getenv("GL_COUNT");
		struct stat st;
		FILE *f;

		if (!ino || fstat(fd, &st) != 0
		    || st.st_ino != strtoull(ino, NULL, 10))
			return;
		if (++n == (at ? atoi(at) : 0))
			raise(sig ? atoi(sig) : SIGKILL);
		if (count && (f = fopen(count, "w"))) {
			fprintf(f, "%d\n", n);
			fclose(f);
		}
	}

	ssize_t write(int fd, const void *buf, size_t len)
	{
		static ssize_t (*real)(int, const void *, size_t);

		if (!real)
			*(void **)&real = dlsym(RTLD_NEXT, "write");
		before_write(fd);
		return real(fd, buf, len);
	}

	ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
	{
		static ssize_t (*real)(int, const void *, size_t, off_t);

		if (!real)
			*(void **)&real = dlsym(RTLD_NEXT, "pwrite");
		before_write(fd);
		return real(fd, buf, len, off);
	}
	EOF
	cc -shared -fPIC -o "$WORK/faults-preload.so" "$WORK/faults-preload.c" \
		-ldl 2> "$WORK/faults-preload.err"
}

# --- a damaged file ---------------------------------------------------------

# The header destroyed: GDBM cannot open the file at all. The request
# fails open, and the maintenance it starts (greylistctl maintain --repair)
# moves the file aside, unchanged; the next request starts a fresh one:
# its records are lost (the file itself was destroyed), and the log says so.
fault_header() {
	local aside
	flt_new header
	flt_seed 50
	yes garbage | head -c 4096 | dd of="$DB" conv=notrunc status=none
	cp "$DB" "$D/damaged"
	flt_ask $(flt_known 1)
	expect "header destroyed: the request fails open" DUNNO "$ANS"
	flt_log "header destroyed: the fault, the move, the fresh file's first expiry, are logged" \
		"$(flt_failopen "database damaged, repair scheduled").*sender=s1@seed\.example," \
		"error: database $(flt_re "$DB") is damaged \(Bad magic number\): moved to $(flt_re "$DB")\.damaged-[0-9TZ-]+-[0-9]+, starting a fresh one$" \
		"$FLT_EXPIRY"
	aside=$(ls "$DB".damaged-* 2>/dev/null)
	check "header destroyed: the damaged file is kept unchanged for the admin" \
		cmp -s "$D/damaged" "$aside"
	flt_ask $(flt_known 2)
	expect "header destroyed: a known triplet is new in the fresh file" \
		"DEFER_IF_PERMIT Greylisted, please try again in 300 seconds" "$ANS"
	flt_log "header destroyed: it is moved once, later requests just work" \
		"action=greylist, reason=new, .*sender=s2@seed\.example,"
	flt_answers "header destroyed" 2
	flt_resumes header

	# cut inside the header: the same
	flt_new header-cut
	flt_seed 50
	truncate -s 100 "$DB"
	flt_ask $(flt_known 1)
	flt_log "file cut inside the header: fails open, then moved aside" \
		"$(flt_failopen "database damaged, repair scheduled").*sender=s1@seed\.example," \
		"error: database $(flt_re "$DB") is damaged \(Malformed database file header\): moved to .*, starting a fresh one$" \
		"$FLT_EXPIRY"
	flt_answers "file cut inside the header" 1
	flt_resumes header-cut
}

# flt_buckets DB - one line per bucket: its address, then for each record
# in it "KIND:END" (KIND the first byte of the key, END the offset just
# past its key and value)
flt_buckets() {
	local db=$1
	printf 'dir\n' | gdbmtool -r "$db" \
		| awk '$1 ~ /^[0-9]+:$/ && $3 != last { sub(":", "", $1); print "bucket " $1; last = $3 }' \
		| gdbmtool -r "$db" \
		| awk '/^address/ { if (line) print line; line = $3 }
			$1 ~ /^[0-9]+$/ && NF >= 7 && $2 != "ffffffff" { line = line " " $7 ":" $5 + $3 + $4 }
			END { if (line) print line }'
}

# A bucket overwritten: the records in it are lost, all others kept. The
# request that reads the bucket is answered DUNNO and schedules a repair
# (gdbm_recover) after its answer.
fault_bucket() {
	local key addr lost total kept
	flt_new bucket
	flt_seed 2000
	flt_dump "$D/before"
	total=$(wc -l < "$D/before")
	key='T\n10.0.1.0\ns1@seed.example\nr@seed.example'
	addr=$(printf 'fetch "%s"\nbucket\n' "$key" | gdbmtool -r "$DB" | awk '/^address/ { print $3; exit }')
	# the triplets in the bucket, and the records (notes too) outside it
	lost=$(flt_buckets "$DB" | awk -v a="$addr" '$1 == a { print gsub(/ T:/, "") }')
	kept=$(flt_buckets "$DB" | awk -v a="$addr" '$1 != a { n += NF - 1 } END { print n }')
	head -c 4096 /dev/zero | tr '\0' '\377' \
		| dd of="$DB" bs=4096 seek=$((addr / 4096)) conv=notrunc status=none
	flt_ask $(flt_known 1)
	expect "bucket overwritten: the request reading it gets DUNNO" "DUNNO" "$ANS"
	flt_log "bucket overwritten: the read error, then the repair, are logged" \
		"$(flt_failopen "reading $(flt_re "$DB"): Malformed bucket header").*sender=s1@seed\.example," \
		"warning: database $(flt_re "$DB") recovered: $kept records after, $FLT_LOST lost; the damaged file is kept as $(flt_re "$DB")\\.~[0-9]+~$"
	flt_lost_said "bucket overwritten" "$lost"
	flt_ask $(flt_known 1)
	expect "bucket overwritten: its triplet is new after the repair (it was in the bucket)" \
		"DEFER_IF_PERMIT Greylisted, please try again in 300 seconds" "$ANS"
	flt_answers "bucket overwritten" 2
	flt_dump "$D/after"
	expect "bucket overwritten: records outside the bucket are all kept, unchanged ($lost of $total were in it)" \
		"$((total - lost)) 1" \
		"$(LC_ALL=C comm -12 "$D/before" "$D/after" | wc -l) $(LC_ALL=C comm -13 "$D/before" "$D/after" | wc -l)"
	flt_resumes bucket "$(flt_survivor)"
}

# The repair's count of what was lost: exact when GDBM could count the
# damaged file, else said to be unknown.
FLT_LOST="([0-9]+|an unknown number \\(GDBM could not count the damaged file\\))"

# flt_lost_said NAME LOST - the repair's log line does not understate the
# loss: it says LOST records were lost, or that the number is unknown
flt_lost_said() {
	if grep -qE "recovered: .*( $2 lost|an unknown number .* lost)" "$D/asklog"; then
		pass "$1: the repair's log line says $2 records were lost, or that it cannot count them"
	else
		fail "$1: the repair's log line says $2 records were lost, or that it cannot count them" "$(grep recovered "$D/asklog")"
	fi
}

# flt_survivor - the index of a seeded passed triplet still in $D/after
flt_survivor() {
	sed -n 's/^T [0-9]* [0-9]* [1-9][0-9]* [0-9.]* s\([0-9]*\)@seed\.example .*/\1/p' "$D/after" | head -n 1
}

# The file cut short (three quarters kept). GDBM finds the end missing
# when a request reads a bucket past the cut; the repair keeps every
# record whose bucket and whose key and value lie before the cut. Lost
# are the records of buckets past the cut (the bucket is the only thing
# that finds them) and those whose key or value was past it.
fault_truncated() {
	local size cut intact kept i
	flt_new truncated
	flt_seed 2000
	flt_dump "$D/before"
	size=$(stat -c %s "$DB")
	cut=$((size * 3 / 4 + 123))
	# the records wholly before the cut: triplets, and all (notes too)
	read -r intact kept < <(flt_buckets "$DB" | awk -v cut="$cut" '{
		for (i = 2; i <= NF; i++)
			if ($1 + 4096 <= cut && substr($i, 3) + 0 <= cut) {
				all++
				if ($i ~ /^T:/) t++
			}
	} END { print t + 0, all + 0 }')
	truncate -s "$cut" "$DB"
	for i in $(seq 20); do
		flt_ask $(flt_known "$i")
		grep -q 'fail-open' "$D/asklog" && break
		expect "file cut short: an intact record is found (s$i)" "DUNNO" "$ANS"
	done
	expect "file cut short: the request reading past the cut gets DUNNO" "DUNNO" "$ANS"
	flt_log "file cut short: the read error, then the repair, are logged" \
		"$(flt_failopen "reading $(flt_re "$DB"): Unexpected end of file").*sender=s$i@seed\.example," \
		"warning: database $(flt_re "$DB") recovered: $kept records after, $FLT_LOST lost; the damaged file is kept as $(flt_re "$DB")\\.~[0-9]+~$"
	flt_lost_said "file cut short" "$(($(wc -l < "$D/before") - intact))"
	flt_answers "file cut short" "$i"
	flt_dump "$D/after"
	expect "file cut short: every record wholly before the cut is kept, unchanged ($intact of $(wc -l < "$D/before"))" \
		"$intact 0" \
		"$(LC_ALL=C comm -12 "$D/before" "$D/after" | wc -l) $(LC_ALL=C comm -13 "$D/before" "$D/after" | wc -l)"
	flt_resumes truncated "$(flt_survivor)"
}

# --- writers SIGKILLed ------------------------------------------------------

# flt_kill_client C - until $D/stop appears: one greylistd after another,
# each sent nine requests at once (three times: a new triplet, the previous
# process's one again, a seeded passed one); the requests are kept in
# $D/kC.N.req, one line of attributes each, the replies in $D/kC.N.out.
# One process in two is SIGKILLed after 0 to 9 ms; it is this client's
# child, not yet waited for, so its PID cannot have been reused.
flt_kill_client() {
	local c=$1 n=0 j a t0 gl rd
	mkfifo "$D/k$c.fifo"
	while [ ! -e "$D/stop" ]; do
		n=$((n + 1))
		for j in a b c; do
			echo "client_address=198.51.100.$c sender=k${c}x$n$j@kill.example"
			echo "client_address=198.51.100.$c sender=k${c}x$((n - 1))$j@kill.example"
			flt_known $((RANDOM % 100 + 1))
		done > "$D/k$c.$n.req"
		while read -r a; do req $a; done < "$D/k$c.$n.req" > "$D/k$c.$n.in"
		t0=$(flt_us)
		flt_replies "$t0" < "$D/k$c.fifo" > "$D/k$c.$n.out" &
		rd=$!
		"$GREYLISTD" --db="$DB" --log-file="$D/log" --lock-timeout=1s \
			< "$D/k$c.$n.in" > "$D/k$c.fifo" 2>/dev/null &
		gl=$!
		if [ $((RANDOM % 2)) -eq 0 ]; then
			sleep "0.00$((RANDOM % 10))"
			# not before it is greylistd: the FIFO must have been
			# opened, or the reader would wait for a writer for ever
			while [ -e "/proc/$gl/exe" ]; do
				if [[ /proc/$gl/exe -ef $GREYLISTD ]]; then
					kill -KILL "$gl"
					break
				fi
			done
		fi
		wait "$gl" "$rd"
	done
}

fault_kill() {
	local c pids=() victims=() kills=0 start now pat f n bad=0 max=0 cut=0
	local deferred=0 missing=0 known_bad=0 ms act args i reqs
	flt_new kill
	: > "$D/deferred"
	flt_seed 100
	flt_dump "$D/before"
	pat="^$(flt_re "$GREYLISTD") --db=$(flt_re "$DB") "
	for c in 1 2 3 4 5 6 7 8; do
		flt_kill_client $c 2>/dev/null & pids+=($!)
	done
	# Meanwhile, for 4 s and until it has killed 40 and 100 connections
	# were made (60 s at most: a loaded machine makes them slowly), a
	# killer loop SIGKILLs any greylistd of this test (their maintenance
	# children too), found by its command line.
	start=$(flt_us)
	while now=$(flt_us); [ $((now - start)) -lt 4000000 ] \
		|| { [ $((now - start)) -lt 60000000 ] \
		     && { [ "$kills" -lt 40 ] || [ "$(compgen -G "$D/k*.out" | wc -l)" -lt 100 ]; }; }; do
		mapfile -t victims < <(pgrep -f -- "$pat")
		if [ "${#victims[@]}" -gt 0 ] \
		   && kill -KILL "${victims[RANDOM % ${#victims[@]}]}" 2>/dev/null; then
			kills=$((kills + 1))
		fi
		sleep "0.0$((RANDOM % 5))"
	done
	touch "$D/stop"
	wait "${pids[@]}"
	for i in $(seq 100); do		# maintenance children still at work
		pgrep -f -- "$pat" >/dev/null || break
		sleep 0.1
	done
	check "SIGKILL: no greylistd of the test left running" bash -c "! pgrep -f -- '$pat'"

	# A process answers its requests in order, so reply K is for request
	# K; a killed one answered a prefix of them.
	for f in "$D"/k*.out; do
		n=0
		mapfile -t reqs < "${f%.out}.req"
		while read -r ms act; do
			args=${reqs[n]}
			n=$((n + 1))
			[ "$ms" -gt "$max" ] && max=$ms
			case $act in
			BAD:*) bad=$((bad + 1)) ;;
			DEFER_IF_PERMIT*)
				deferred=$((deferred + 1))
				echo "${args##*sender=}" >> "$D/deferred" ;;
			esac
			case $args in
			*@seed.example*) [ "$act" = DUNNO ] || known_bad=$((known_bad + 1)) ;;
			esac
		done < "$f"
		[ "$n" -lt 9 ] && cut=$((cut + 1))
	done
	n=$(compgen -G "$D/k*.out" | wc -l)
	check "SIGKILL: $n connections in $(((now - start) / 1000)) ms, $cut cut short by SIGKILL (at least 100 and 30), $kills more kills by the loop, $deferred deferrals" \
		test "$n" -ge 100 -a "$cut" -ge 30
	expect "SIGKILL: every answer received is well formed" 0 "$bad"
	check "SIGKILL: each within the 1 s lock budget (slowest $max ms)" test "$max" -le "$FLT_LIMIT_MS"
	expect "SIGKILL: every seeded passed triplet was answered DUNNO" 0 "$known_bad"

	# One request after the storm, to find damage a killed writer left
	# (and repair it before the checks).
	flt_ask $(flt_known 1)
	expect "SIGKILL: a request after the storm gets DUNNO" DUNNO "$ANS"
	flt_answers "SIGKILL, after" 1
	expect "SIGKILL: nothing but the database is left next to it (no file moved aside, no temporary file)" \
		"" "$(compgen -G "$DB?*")"
	if grep -qE 'fail-open \((reading|writing|database damaged)' "$D/log"; then
		expect_grep "SIGKILL: damage seen is repaired and logged" \
			'warning: database .* recovered: ' "$D/log"
	fi
	expect "SIGKILL: every fail-open line names a known fault" "" \
		"$(grep 'fail-open' "$D/log" | grep -vE 'fail-open \((lock not had within 1s|reading .*|writing .*|closing .*|database damaged, repair scheduled)\)' | head -n 3)"

	flt_dump "$D/after"
	missing=$(sort -u "$D/deferred" | grep -cvxFf <(awk '{ print $6 }' "$D/after"))
	expect "SIGKILL: every triplet a client saw deferred is in the database ($(sort -u "$D/deferred" | wc -l) triplets)" \
		0 "$missing"
	flt_kept SIGKILL "$D/before"
	flt_resumes kill 7
}

# A writer killed at each step of a store that splits a bucket. With 163
# passed triplets, the pending one, the expiry and key-kind notes, the
# file's one bucket is full (166 entries), so one more new triplet splits it: GDBM
# writes the key and value, the two new buckets, the directory, the
# header, then extends the file. On a fresh copy each time, the writer is killed (SIGKILL) or
# terminated (SIGTERM, as systemd stops a service) just before each of
# these writes in turn; then a request for a seeded triplet comes (which
# repairs the file if it must) and the records are compared. Each SIGNAL
# check lists "write:records lost" for every write.
fault_split() {
	local sig k w want got ino
	flt_new split
	if ! flt_preload; then
		fail "bucket split: build the LD_PRELOAD helper" "$(cat "$WORK/faults-preload.err")"
		return
	fi
	flt_seed 163
	flt_dump "$D/before"
	cp "$DB" "$D/base"
	req sender=split@new.example > "$D/split.in"
	GL_INO=$(stat -c %i "$DB") GL_COUNT=$D/count LD_PRELOAD=$WORK/faults-preload.so \
		"$GREYLISTD" --db="$DB" --log-file="$D/log" < "$D/split.in" >/dev/null
	w=$(cat "$D/count")
	check "bucket split: the store splits the full bucket ($w writes)" test "$w" -ge 6
	for sig in KILL TERM; do
		want='' got=
		for k in $(seq "$w"); do
			rm -f "$DB"
			cp "$D/base" "$DB"
			ino=$(stat -c %i "$DB")
			( GL_INO=$ino GL_SIGNAL_AT=$k GL_SIGNAL=$(kill -l $sig) \
			  LD_PRELOAD=$WORK/faults-preload.so "$GREYLISTD" --db="$DB" \
			  --log-file="$D/log" < "$D/split.in" > /dev/null; true ) 2>/dev/null
			flt_ask $(flt_known 1)
			flt_dump "$D/after"
			want="$want $k:0"
			got="$got $k:$(LC_ALL=C comm -23 "$D/before" "$D/after" | wc -l)"
		done
		expect "bucket split, SIG$sig before each write: no record committed before is lost" \
			"$want" "$got"
	done
	flt_answers "bucket split, the request after each kill" $((2 * w))
	flt_resumes split 1
}

# --- a process stopped while it holds the lock ------------------------------

# flt_stop_holder MODE ARGS... - start greylistd for one request (req
# ARGS) that stops while it holds the MODE (ex, sh) lock; HOLDER is its
# PID, its reply goes to $D/holder.out. 0 once it is stopped.
flt_stop_holder() {
	local mode=$1 i
	shift
	req "$@" > "$D/holder.in"
	GL_STOP_ON=$mode LD_PRELOAD=$WORK/faults-preload.so "$GREYLISTD" --db="$DB" \
		--log-file="$D/log" --lock-timeout=1s < "$D/holder.in" > "$D/holder.out" &
	HOLDER=$!
	for i in $(seq 50); do
		[ "$(awk '{ print $3 }' "/proc/$HOLDER/stat" 2>/dev/null)" = T ] && return 0
		sleep 0.1
	done
	return 1
}

# flt_unhold - end the holder (stopped or not) and reap it
flt_unhold() {
	kill -KILL "$HOLDER" 2>/dev/null
	wait "$HOLDER" 2>/dev/null
}

fault_stop() {
	local lock t0 out rc
	flt_new stop
	flt_seed 20
	flt_dump "$D/before"
	if ! flt_preload; then
		fail "SIGSTOP: build the LD_PRELOAD helper" "$(cat "$WORK/faults-preload.err")"
		return
	fi
	lock="lock not had within 1s"

	# a writer stopped with the exclusive lock: nobody can read or write
	if ! flt_stop_holder ex sender=stopped@stop.example; then
		fail "SIGSTOP: a writer stops while it holds the lock"; flt_unhold; return
	fi
	check "SIGSTOP: the stopped writer holds the exclusive lock" \
		bash -c "! flock -n -s '$DB' true"
	flt_ask $(flt_known 1)
	expect "SIGSTOP (writer): a known passed triplet gets DUNNO" DUNNO "$ANS"
	flt_log "SIGSTOP (writer): logged as lock not had" "$(flt_failopen "$lock").*sender=s1@seed\.example,"
	flt_ask sender=new@stop.example
	expect "SIGSTOP (writer): a new triplet gets DUNNO" DUNNO "$ANS"
	flt_log "SIGSTOP (writer): logged as lock not had" "$(flt_failopen "$lock").*sender=new@stop\.example,"
	t0=$(flt_us)
	out=$({ req $FLT_PENDING; req sender=new2@stop.example; } | "$GREYLISTD" --db="$DB" \
		--log-file="$D/log" --lock-timeout=1s | flt_replies "$t0")
	echo "$out" >> "$D/answers"
	expect "SIGSTOP (writer): on one connection, each request gets DUNNO in turn" \
		"DUNNO DUNNO" "$(echo "$out" | cut -d' ' -f2 | tr '\n' ' ' | sed 's/ $//')"
	flt_answers "SIGSTOP (writer)" 4
	kill -CONT "$HOLDER"
	wait "$HOLDER"; rc=$?
	expect "SIGSTOP (writer): continued, it answers its own request (new) and exits 0" \
		"0 action=DEFER_IF_PERMIT Greylisted, please try again in 300 seconds" \
		"$rc $(head -n 1 "$D/holder.out")"
	flt_resumes stop 1
	flt_kept "SIGSTOP (writer), cleared" "$D/before"
	flt_ask sender=stopped@stop.example
	flt_log "SIGSTOP (writer): its triplet was stored (an early retry now)" \
		"action=greylist, reason=early-retry \([0-9]+s missing\), .*sender=stopped@stop\.example,"
	flt_answers "SIGSTOP (writer), continued" 1

	# a writer stopped with the lock, then killed: the lock goes with it
	flt_dump "$D/before2"
	if ! flt_stop_holder ex sender=killed@stop.example; then
		fail "SIGSTOP: a writer stops while it holds the lock"; flt_unhold; return
	fi
	flt_ask $(flt_known 2)
	flt_log "SIGSTOP then SIGKILL: logged as lock not had" "$(flt_failopen "$lock").*sender=s2@seed\.example,"
	flt_unhold
	flt_answers "SIGSTOP then SIGKILL" 1
	flt_resumes stop-kill 2
	flt_kept "SIGSTOP then SIGKILL, cleared" "$D/before2"

	# a reader stopped with the shared lock: readers go on, writers wait
	if ! flt_stop_holder sh $(flt_known 3); then
		fail "SIGSTOP: a reader stops while it holds the lock"; flt_unhold; return
	fi
	flt_ask $(flt_known 4)
	expect "SIGSTOP (reader): a known passed triplet still passes" DUNNO "$ANS"
	flt_log "SIGSTOP (reader): logged as found" "action=pass, reason=triplet found, .*sender=s4@seed\.example,"
	flt_ask sender=new3@stop.example
	expect "SIGSTOP (reader): a new triplet gets DUNNO" DUNNO "$ANS"
	flt_log "SIGSTOP (reader): logged as lock not had" "$(flt_failopen "$lock").*sender=new3@stop\.example,"
	flt_answers "SIGSTOP (reader)" 2
	kill -CONT "$HOLDER"
	wait "$HOLDER"
	expect "SIGSTOP (reader): continued, it answers its own request" "action=DUNNO" \
		"$(head -n 1 "$D/holder.out")"
	flt_resumes stop-reader 5
}

# --- read-only and full file systems ----------------------------------------

# flt_in_namespace FUNCTION - run FUNCTION in a mount namespace of its
# own, with this file's helpers; its mounts never show outside it
flt_in_namespace() {
	{
		declare -f pass fail skip check expect expect_grep req newdir stop
		declare -f $(compgen -A function flt_) $(compgen -A function fault_)
		declare -p GREYLISTD WORK RESULTS FLT_LIMIT_MS FLT_PENDING FLT_EXPIRY
	} > "$WORK/faults-ns.sh"
	unshare --mount --propagation private bash -c "set -u; . '$WORK/faults-ns.sh'; $1"
}

# flt_mount NAME OPTIONS - a tmpfs on $D/mnt, for the database
flt_mount() {
	flt_new "$1"
	mkdir "$D/mnt"
	DB=$D/mnt/db
	mount -t tmpfs -o "$2" greylistd-faults "$D/mnt"
}

fault_readonly() {
	local fs="Read-only file system"
	flt_mount readonly size=8m || { fail "read-only: mount a tmpfs"; return; }
	flt_seed 20
	flt_dump "$D/before"
	mount -o remount,ro "$D/mnt"
	flt_ask $(flt_known 1)
	expect "read-only: a known passed triplet passes (a reader writes nothing)" DUNNO "$ANS"
	flt_log "read-only: logged as found" "action=pass, reason=triplet found, .*sender=s1@seed\.example,"
	flt_ask $FLT_PENDING
	case $ANS in
	"DEFER_IF_PERMIT Greylisted, please try again in "*) pass "read-only: a pending triplet is still deferred" ;;
	*) fail "read-only: a pending triplet is still deferred" "$ANS" ;;
	esac
	flt_ask sender=new@readonly.example
	expect "read-only: a new triplet gets DUNNO" DUNNO "$ANS"
	flt_log "read-only: the log says the file system is read-only" \
		"$(flt_failopen "cannot open $(flt_re "$DB"): $fs").*sender=new@readonly\.example,"
	flt_answers "read-only" 3
	mount -o remount,rw "$D/mnt"
	flt_resumes readonly 1
	flt_kept "read-only, cleared" "$D/before"
	umount "$D/mnt"
}

# The disk fills up while the database keeps space reserved past its end:
# writers use the reserve, and when it runs low and cannot be renewed they
# are refused before they write anything. Triplets with long senders use
# the reserve up quickly.
fault_full() {
	local n=2000 long i out deferred dunno refused
	flt_mount full size=4m || { fail "full disk: mount a tmpfs"; return; }
	flt_seed 20
	flt_dump "$D/before"
	dd if=/dev/zero of="$D/mnt/fill" bs=64k status=none 2>/dev/null
	expect "full disk: the file system is full" 0 "$(df --output=avail "$D/mnt" | tail -n 1 | tr -d ' ')"
	long=$(head -c 200 /dev/zero | tr '\0' l)
	{
		for i in $(seq $n); do req sender="$long$i@full.example"; done
		req $(flt_known 1)
		req $FLT_PENDING
	} > "$D/in"
	"$GREYLISTD" --db="$DB" --log-file="$D/log" --lock-timeout=1s < "$D/in" \
		| flt_replies "$(flt_us)" > "$D/answers"
	deferred=$(head -n $n "$D/answers" | grep -c ' DEFER_IF_PERMIT Greylisted, please try again in 300 seconds$')
	dunno=$(head -n $n "$D/answers" | grep -c ' DUNNO$')
	refused=$(grep -cE "$(flt_failopen "no space for $(flt_re "$DB"): No space left on device")" "$D/log")
	expect "full disk: new triplets are deferred while the reserve lasts, then get DUNNO ($deferred, $dunno)" \
		"$n yes" "$((deferred + dunno)) $([ "$deferred" -gt 0 ] && [ "$dunno" -gt 0 ] && echo yes)"
	expect "full disk: once refused, refused until space is freed" "" \
		"$(head -n $n "$D/answers" | sed -n '/ DUNNO$/,$p' | grep -v ' DUNNO$' | head -n 1)"
	expect "full disk: each DUNNO logged as no space for the file" "$dunno" "$refused"
	expect "full disk: no write ever failed (no other fault logged)" "" \
		"$(grep -E 'fail-open|warning|error' "$D/log" | grep -v 'no space for' | head -n 3)"
	expect "full disk: a known passed triplet still passes; a pending one is still deferred" \
		"DUNNO DEFER_IF_PERMIT" "$(tail -n 2 "$D/answers" | cut -d' ' -f2 | tr '\n' ' ' | sed 's/ $//')"
	flt_answers "full disk" $((n + 2))
	rm "$D/mnt/fill"
	flt_resumes full 1
	flt_kept "full disk, cleared" "$D/before"
	expect "full disk: every triplet deferred during the fault is in the database" "$deferred" \
		"$(grep -cE ' l+[0-9]+@full\.example ' "$D/after")"
	umount "$D/mnt"
}

# A reorganization needs room for a copy of the live records. With none,
# it is not tried; when the copy runs out of room anyway (the estimate is
# made to fail here: a peak of a billion records says the copy is tiny),
# the old file is kept whole and the partial copy (under greylistctl's
# own name) is removed.
fault_reorganize_full() {
	local now ans
	flt_mount reorganize-full size=4m || { fail "reorganize, full disk: mount a tmpfs"; return; }
	now=$(date +%s)
	awk -v now="$now" 'BEGIN {
		for (i = 0; i < 12000; i++) {
			t = i % 10 == 0 ? now - 3600 : now - 50 * 86400
			printf "T %d %d %d 10.%d.%d.0 s%d@seed.example r@seed.example\n",
				t, t + 100, t + 100, int(i / 65536) % 256, int(i / 256) % 256, i
		}
	}' | "$GREYLISTCTL" load --db="$DB" > /dev/null
	"$GREYLISTCTL" expire --db="$DB" --log-file="$D/log" > "$D/out"
	expect "reorganize, full disk: with room, 10,800 of 12,000 expire and the file is reorganized" \
		"12002 records seen, 10800 deleted|reorganized" \
		"$(sed 's/^reorganized: .*/reorganized/' "$D/out" | tr '\n' '|' | sed 's/|$//')"
	flt_dump "$D/before"
	dd if=/dev/zero of="$D/mnt/fill" bs=1k status=none \
		count=$(( $(df --output=avail -k "$D/mnt" | tail -n 1) - 100 ))
	# a peak of 2,500: the copy would take about half the file, more
	# than the 100 KiB left
	: > "$D/log"
	echo "M peak 2500" | "$GREYLISTCTL" load --db="$DB" > /dev/null
	"$GREYLISTCTL" expire --db="$DB" --log-file="$D/log" > /dev/null
	expect "reorganize, full disk: without room it is not tried (exit 0)" 0 "$?"
	expect_grep "reorganize, full disk: and a warning says so" \
		"warning: not reorganizing $(flt_re "$DB"): no room for a copy of it$" "$D/log"
	: > "$D/log"
	echo "M peak 1000000000" | "$GREYLISTCTL" load --db="$DB" > /dev/null
	"$GREYLISTCTL" expire --db="$DB" --log-file="$D/log" > "$D/out"
	expect "reorganize, full disk: greylistd expire says it failed (exit 1)" 1 "$?"
	expect_grep "reorganize, full disk: one warning says why" \
		"warning: reorganizing $(flt_re "$DB") failed \(No space left on device\); the file is kept as it was$" "$D/log"
	check "reorganize, full disk: nothing is left beside the file" \
		bash -c "[ \$(ls '$D/mnt' | grep -c '^db\.') = 0 ]"
	flt_kept "reorganize, full disk" "$D/before"
	flt_ask client_address=10.0.0.9 sender=s10@seed.example recipient=r@seed.example
	expect "reorganize, full disk: a known triplet still passes" DUNNO "$ANS"
	rm "$D/mnt/fill"
	umount "$D/mnt"
}

# --- a missing or unwritable directory --------------------------------------

fault_dir_missing() {
	local why
	flt_new dir-missing
	mkdir "$D/data"
	DB=$D/data/db
	flt_seed 20
	flt_dump "$D/before"
	mv "$D/data" "$D/data.away"
	why="cannot open $(flt_re "$DB"): No such file or directory"
	flt_ask $(flt_known 1)
	expect "directory missing: a known triplet gets DUNNO" DUNNO "$ANS"
	flt_log "directory missing: the log says the file cannot be opened, and why" \
		"$(flt_failopen "$why").*sender=s1@seed\.example,"
	flt_ask sender=new@dir-missing.example
	expect "directory missing: a new triplet gets DUNNO" DUNNO "$ANS"
	flt_log "directory missing: the log says so for a new triplet too" \
		"$(flt_failopen "$why").*sender=new@dir-missing\.example,"
	flt_answers "directory missing" 2
	check "directory missing: greylistd did not make it" test ! -e "$D/data"
	mv "$D/data.away" "$D/data"
	flt_resumes dir-missing 1
	flt_kept "directory missing, cleared" "$D/before"
}

# greylistd runs as nobody here: root may write anywhere.
fault_dir_unwritable() {
	local mode why
	flt_new dir-unwritable
	mode=$(stat -c %a "$WORK")
	chmod o+x "$WORK"
	# A copy nobody can reach: the tree may be where nobody cannot (a
	# clone in /root). setpriv still execs with root's rights, but
	# faketime, which execs greylistd after it, has only nobody's.
	# greylistctl beside it: greylistd starts the maintenance from its own
	# directory.
	local tree=$GREYLISTD GREYLISTD=$WORK/nobody-bin/greylistd
	mkdir -p "$WORK/nobody-bin"
	cp "$tree" "$GREYLISTD"
	cp "$GREYLISTCTL" "$WORK/nobody-bin/greylistctl"
	mkdir "$D/data"
	chown nobody "$D/log"
	DB=$D/data/db
	RUNAS="setpriv --reuid=nobody --regid=nogroup --clear-groups"

	# no database yet, and no right to create it
	why="cannot open $(flt_re "$DB"): Permission denied"
	flt_ask sender=new@dir-unwritable.example
	expect "directory unwritable, no file: DUNNO" DUNNO "$ANS"
	flt_log "directory unwritable, no file: the log says the file cannot be created, and why" \
		"$(flt_failopen "$why").*sender=new@dir-unwritable\.example,"
	flt_answers "directory unwritable, no file" 1

	# the directory given to greylistd's user: greylisting starts
	chown nobody "$D/data"
	flt_seed 20
	flt_dump "$D/before"
	flt_resumes dir-unwritable 1

	# the file exists and is greylistd's: no need to write the directory
	chown root "$D/data"
	flt_ask sender=new2@dir-unwritable.example
	expect "directory unwritable, file writable: greylisting goes on" \
		"DEFER_IF_PERMIT Greylisted, please try again in 300 seconds" "$ANS"
	flt_log "directory unwritable, file writable: nothing is wrong" \
		"action=greylist, reason=new, .*sender=new2@dir-unwritable\.example,"
	flt_answers "directory unwritable, file writable" 1
	flt_kept "directory unwritable, file writable" "$D/before"

	# ... until the file is damaged: it cannot be moved aside
	yes garbage | head -c 4096 | dd of="$DB" conv=notrunc status=none
	flt_ask $(flt_known 1)
	expect "directory unwritable, file damaged: DUNNO" DUNNO "$ANS"
	flt_log "directory unwritable, file damaged: the fault, then why the maintenance cannot move it aside" \
		"$(flt_failopen "database damaged, repair scheduled").*sender=s1@seed\.example," \
		"error: database $(flt_re "$DB") is damaged \(Bad magic number\) and cannot be moved aside: Permission denied$"
	flt_answers "directory unwritable, file damaged" 1
	# cleared: the directory is greylistd's again; the damaged file is
	# moved aside and a fresh one started (its records went with it)
	chown nobody "$D/data"
	flt_ask $(flt_known 1)
	flt_log "directory writable again: the damaged file is moved aside" \
		"$(flt_failopen "database damaged, repair scheduled").*sender=s1@seed\.example," \
		"error: database $(flt_re "$DB") is damaged \(Bad magic number\): moved to .*, starting a fresh one$" \
		"$FLT_EXPIRY"
	flt_answers "directory writable again" 1
	flt_resumes dir-unwritable-damaged
	chmod "$mode" "$WORK"
	rm -f "$GREYLISTD"
}

t_faults() {
	fault_header
	fault_bucket
	fault_truncated
	fault_kill
	fault_split
	fault_stop
	if ! unshare --mount --propagation private true 2>/dev/null; then
		skip "read-only and full file systems" "no mount namespace (unshare --mount) here"
	else
		flt_in_namespace fault_readonly
		flt_in_namespace fault_full
		flt_in_namespace fault_reorganize_full
	fi
	fault_dir_missing
	if [ "$(id -u)" -ne 0 ] || ! id nobody >/dev/null 2>&1; then
		skip "unwritable directory" "needs root, to run greylistd as nobody"
	else
		fault_dir_unwritable
	fi
}
