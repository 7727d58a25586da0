#!/bin/bash
# bench/maintain-cost.sh - what starting the maintenance costs a request
#
#   bench/maintain-cost.sh [GREYLISTD [N]]     (default: ./greylistd, 300)
#
# A serving greylistd that finds the day's expiry due starts "greylistctl
# maintain" in a child after its answer has gone (greylistd.c, maintain()).
# This measures what that costs: N connections, each two requests for a
# known triplet, against a database whose expiry is due (the first
# request's answer is followed by the fork) and one whose expiry is not;
# the file is copied afresh before each connection in both cases, so that
# both pay the same. Printed: the p50 and p90 of each request's round trip,
# from the write of the request to the read of the answer's end. The
# second request's shows the fork; the first's, the start of the process.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GL=$(realpath "${1:-$HERE/../greylistd}")
N=${2:-300}
CTL=$(dirname "$GL")/greylistctl
W=$(mktemp -d "${TMPDIR:-/tmp}/greylistd-maint.XXXXXX")
trap 'rm -rf "$W"' EXIT
cd "$W"
: > conf; : > wl
now=$(date +%s)
for k in due notdue; do
	e=$now
	[ $k = due ] && e=$((now - 3 * 86400))
	printf 'T %d %d %d 192.0.2.0 alice@example.com bob@example.net\nM expire %d\n' \
		$((now - 7200)) $((now - 600)) $((now - 600)) $e \
		| "$CTL" load --config=conf --db=$k.tpl > /dev/null
done
printf 'request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.10\nclient_name=mail.example.com\nsender=alice@example.com\nrecipient=bob@example.net\n\n' > req
for k in due notdue due notdue; do
	printf '%-7s %s\n' "$k:" "$(perl - "$GL" "$W" "$k" "$N" <<'PERL'
use strict; use Socket; use Time::HiRes qw(time);
my ($bin, $w, $k, $n) = @ARGV;
my $req = do { open my $f, "<", "$w/req" or die; local $/; <$f> };
my (@a, @b);
sub answer { my $s = shift; while (defined(my $l = <$s>)) { return if $l eq "\n" } die "no answer\n" }
for (1 .. $n) {
	system("cp", "$w/$k.tpl", "$w/$k.db") == 0 or die;
	socketpair(my $p, my $c, AF_UNIX, SOCK_STREAM, 0) or die;
	my $pid = fork() // die;
	if (!$pid) {
		close $p; open STDIN, "<&", $c; open STDOUT, ">&", $c;
		exec $bin, "--config=$w/conf", "--db=$w/$k.db", "--log-file=$w/log",
			"--whitelist=$w/wl";
		die "exec: $!\n";
	}
	close $c; select((select($p), $| = 1)[0]);
	my $t0 = time; print $p $req; answer($p);
	my $t1 = time; print $p $req; answer($p);
	my $t2 = time;
	push @a, ($t1 - $t0) * 1e6; push @b, ($t2 - $t1) * 1e6;
	shutdown($p, 1); 1 while <$p>; close $p; waitpid($pid, 0);
}
@a = sort { $a <=> $b } @a; @b = sort { $a <=> $b } @b;
printf "first request p50 %.0f us p90 %.0f us; second p50 %.0f us p90 %.0f us\n",
	$a[$n / 2], $a[int($n * 0.9)], $b[$n / 2], $b[int($n * 0.9)];
PERL
)"
done
grep -q 'expiry of ' log || { echo "maintain-cost: no maintenance ran" >&2; exit 1; }
echo "maintenance runs: $(grep -c 'expiry of ' log) (one per due connection)"
