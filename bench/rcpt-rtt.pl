#!/usr/bin/perl
# bench/rcpt-rtt.pl - what one RCPT check costs Exim: connect, send the
# request, half-close, read the answer to its end, as ${readsocket} does
# (Exim opens a connection for every readsocket, so every RCPT starts a
# greylistd process). For bench/exim-rcpt.sh.
#
#   perl bench/rcpt-rtt.pl SOCKET N REQUEST-FILE WANT [PAUSE-MS]
#
# SOCKET is a UNIX socket path or HOST:PORT. N connections, one after
# another, PAUSE-MS (default 10) apart so that each finds the machine idle.
# Prints one line per connection: the microseconds from before connect(2)
# to the end of the answer (EOF), or "bad" when the answer is not exactly
# WANT (the answer's bytes up to EOF, with "\n" written as \n) or none came
# within 10 s. The request goes out in one write, as Exim sends it.
use strict;
use warnings;
use IO::Socket::UNIX;
use IO::Socket::IP;
use Socket qw(SOCK_STREAM SHUT_WR);
use Time::HiRes qw(time sleep);

my ($sock, $n, $file, $want, $pause) = @ARGV;
die "usage: rcpt-rtt.pl SOCKET N REQUEST-FILE WANT [PAUSE-MS]\n"
	unless defined $want && $n =~ /^[0-9]+$/;
$pause //= 10;
$want =~ s/\\n/\n/g;
open(my $fh, '<', $file) or die "rcpt-rtt.pl: $file: $!\n";
my $req = do { local $/; <$fh> };
close $fh;

# connect_to - a connection to SOCKET, or undef
sub connect_to {
	return IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $sock)
		if $sock =~ m{^/};
	my ($host, $port) = $sock =~ /^(.*):([0-9]+)$/
		or die "rcpt-rtt.pl: SOCKET is a path or HOST:PORT\n";
	return IO::Socket::IP->new(PeerHost => $host, PeerPort => $port,
		Proto => 'tcp', Timeout => 10);
}

# ask SOCKET - send the request, half-close, read until EOF; true when
# the answer is WANT
sub ask {
	my ($s) = @_;
	my $buf = '';
	return 0 unless (syswrite($s, $req) // -1) == length $req;
	shutdown($s, SHUT_WR);
	for (;;) {
		my $rin = '';
		vec($rin, fileno($s), 1) = 1;
		return 0 unless select($rin, undef, undef, 10) > 0;
		my $got = sysread($s, $buf, 4096, length $buf);
		return 0 unless defined $got;
		last if $got == 0;
	}
	return $buf eq $want;
}

$| = 1;
for (1 .. $n) {
	my $t = time;
	my $c = connect_to();
	my $ok = $c && ask($c);
	my $us = int((time - $t) * 1e6);
	close $c if $c;
	print $ok ? "$us\n" : "bad\n";
	sleep($pause / 1000) if $pause;
}
