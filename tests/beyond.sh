# tests/beyond.sh - what no other greylister does: learning before
# enforcing (group learn), explaining a decision (explain), deferring a
# whole message at DATA (deferdata) and importing postgrey's database
# (pgimport). Sourced by test.sh.

# --- learning before enforcing -------------------------------------------------

t_learn() {
	local out

	newdir learn
	out=$( { req; req recipient=carol@example.net; req recipient=postmaster@example.net; } \
		| gl --learn | actions | tr '\n' ' ')
	expect "--learn: new triplets are answered DUNNO" "DUNNO DUNNO DUNNO " "$out"
	expect_grep "and logged with what enforcing would have done" \
		'action=pass, reason=learning \(would greylist: new\), client_name=mail.example.com, client_address=192.0.2.10, sender=alice@example.com, recipient=bob@example.net$' "$D/log"
	expect_grep "a whitelisted recipient is logged as always" \
		'action=pass, reason=recipient whitelist, .*recipient=postmaster@example.net$' "$D/log"
	expect "the triplets are recorded as passed (PASSED set)" 2 \
		"$("$GREYLISTCTL" dump --db="$D/db" --raw | awk '$1 == "T" && $4 > 0' | wc -l)"
	out=$(req | at +7d "$GREYLISTD" --db="$D/db" --log-file="$D/log" | actions)
	expect "a week later, enforcing: a triplet seen while learning passes at once, without a header" "DUNNO" "$out"
	expect_grep "as triplet found" 'action=pass, reason=triplet found, client_name=mail.example.com, client_address=192.0.2.10, sender=alice@example.com, recipient=bob@example.net$' "$D/log"
	out=$(req recipient=dave@example.net | at +7d "$GREYLISTD" --db="$D/db" --log-file="$D/log" | actions | cut -c1-15)
	expect "a triplet not seen while learning is greylisted" "DEFER_IF_PERMIT" "$out"
	out=$(req recipient=carol@example.net | at +36d "$GREYLISTD" --db="$D/db" --log-file="$D/log" | actions | cut -c1-15)
	expect "a learned triplet idle longer than max-age starts over" "DEFER_IF_PERMIT" "$out"

	newdir learn-early
	req | gl >/dev/null
	out=$(req | at +100s "$GREYLISTD" --db="$D/db" --log-file="$D/log" --learn | actions)
	expect "a pending triplet's early retry, learning: DUNNO" "DUNNO" "$out"
	expect_grep "logged as the early retry it would have been" \
		'action=pass, reason=learning \(would greylist: early-retry \((199|200)s missing\)\), ' "$D/log"
	out=$(req | at +200s "$GREYLISTD" --db="$D/db" --log-file="$D/log" | actions)
	expect "and recorded as passed: enforcing passes it before the delay is over" "DUNNO" "$out"

	newdir learn-awl
	for i in 1 2 3 4 5 6; do
		req recipient=r$i@example.net | at "+$((i * 3700))s" "$GREYLISTD" --db="$D/db" --log-file="$D/log" --learn >/dev/null
	done
	expect "learning counts no client towards the auto-whitelist (no C record after six triplets, hours apart)" 0 \
		"$("$GREYLISTCTL" dump --db="$D/db" | grep -c '^C ')"
	out=$(req recipient=new@example.net | at +8h "$GREYLISTD" --db="$D/db" --log-file="$D/log" | actions | cut -c1-15)
	expect "so the client's new triplet is greylisted once enforcing" "DEFER_IF_PERMIT" "$out"

	newdir learn-conf
	printf 'learn = yes\n' > "$D/conf"
	out=$(req | gl --config="$D/conf" | actions)
	expect "learn = yes in the configuration file" "DUNNO" "$out"
	out=$(printf -- '--grey 192.0.2.10 alice@example.com bob2@example.net\n' | gl --config="$D/conf" --greylistd-protocol)
	expect "Debian greylistd's protocol, learning: false (do not defer)" "false" "$out"
	expect_grep "and logged as learning" 'reason=learning \(would greylist: new\), client_address=192.0.2.10, sender=alice@example.com, recipient=bob2@example.net' "$D/log"

	newdir learn-report
	{ req; req recipient=carol@example.net; req; req recipient=postmaster@example.net; } | gl --learn >/dev/null
	"$GREYLISTCTL" report --db="$D/db" "$D/log" > "$D/out" 2> "$D/err"
	expect "report on a learning log: exit 0" 0 $?
	expect "it lists the triplets enforcing would have deferred, in postgreyreport's columns" \
		"192.0.2.10 mail.example.com alice@example.com bob@example.net|192.0.2.10 mail.example.com alice@example.com carol@example.net" \
		"$(paste -sd'|' "$D/out")"
	expect_grep "its summary counts them as would_delay" '^# deferred=0 passed_later=0 never_retried=0 pending=0 median_delay=0s would_delay=2$' "$D/err"
	"$GREYLISTCTL" report --db="$D/db" --show_tries "$D/log" > "$D/out" 2>/dev/null
	expect "--show_tries counts the learning lines" "1 1" "$(cut -d' ' -f1 "$D/out" | tr '\n' ' ' | sed 's/ $//')"
}
