#!/usr/bin/perl
# tests/rtt.pl - round trips of policy requests, for tests/multimx.sh.
#
#   perl tests/rtt.pl same|fresh HOST N REQUEST-FILE
#
# same: N requests one after another on one TCP connection to HOST:10023;
# fresh: N connections, one request each (greylistd is started for each).
# Prints one line per request: the microseconds from sending the request
# (same) or from connecting (fresh) to the end of the answer, or "bad" when
# the answer is not "action=DUNNO" (or none came within 10 s). Each request
# goes out in one write, as Postfix sends it: written a line at a time,
# Nagle's algorithm and the server's delayed ACK would add 40 ms to each.
# perl rather than bash: bash's own cost per request is larger than the
# difference to be measured. (swaks, which the tests need anyway, is Perl.)
use strict;
use warnings;
use IO::Socket::IP;
use Time::HiRes qw(time);

my ($mode, $host, $n, $file) = @ARGV;
die "usage: rtt.pl same|fresh HOST N REQUEST-FILE\n"
	unless defined $file && $mode =~ /^(same|fresh)$/ && $n =~ /^[0-9]+$/;
open(my $fh, '<', $file) or die "rtt.pl: $file: $!\n";
my $req = do { local $/; <$fh> };
close $fh;

# connect_to - a connection to HOST:10023, or undef
sub connect_to {
	return IO::Socket::IP->new(PeerHost => $host, PeerPort => 10023,
		Proto => 'tcp', Timeout => 10);
}

# ask SOCKET - send the request, read the answer up to its empty line;
# true when it is DUNNO
sub ask {
	my ($s) = @_;
	my $buf = '';
	return 0 unless (syswrite($s, $req) // -1) == length $req;
	while ($buf !~ /\n\n/) {
		my $rin = '';
		vec($rin, fileno($s), 1) = 1;
		return 0 unless select($rin, undef, undef, 10) > 0;
		return 0 unless sysread($s, $buf, 4096, length $buf);
	}
	return $buf eq "action=DUNNO\n\n";
}

$| = 1;
my $s = $mode eq 'same' ? connect_to() : undef;
die "rtt.pl: cannot connect to $host:10023: $@\n" if $mode eq 'same' && !$s;
for (1 .. $n) {
	my $t = time;
	my $c = $s // connect_to();
	my $ok = $c && ask($c);
	my $us = int((time - $t) * 1e6);
	close $c if $c && !$s;
	print $ok ? "$us\n" : "bad\n";
}
close $s if $s;
