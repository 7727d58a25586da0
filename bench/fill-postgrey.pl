#!/usr/bin/perl
# fill-postgrey.pl - write a postgrey database directly, for the bench.
#
#	fill-postgrey.pl DBDIR KNOWN PENDING NOW
#
# creates DBDIR/postgrey.db in a BerkeleyDB environment opened the way
# /usr/sbin/postgrey opens it (same -Home, flags, file name and Btree),
# with KNOWN passed triplets and PENDING triplets first seen 60 s before
# NOW, as postgrey stores them:
#
#	key	lc "<network>/<sender>/<recipient>", the sender's local part
#		with each standalone number turned into '#'
#	value	"FIRST,LAST"  (LAST - FIRST >= --delay: passed)
#
# The triplets are those of triplet.h. The records are written without
# transactions (nothing to recover: the file is flushed and closed), so a
# million take seconds instead of the 20 minutes the socket would.
use strict;
use warnings;
use BerkeleyDB;

@ARGV == 4 or die "usage: fill-postgrey.pl DBDIR KNOWN PENDING NOW\n";
my ($dir, $known, $pending, $now) = @ARGV;

my $env = BerkeleyDB::Env->new(
	-Home      => $dir,
	-Flags     => DB_CREATE|DB_RECOVER|DB_INIT_TXN|DB_INIT_MPOOL|DB_INIT_LOG,
	-Cachesize => 64 * 1024 * 1024,
) or die "fill-postgrey: environment in $dir: $BerkeleyDB::Error\n";
my $db = BerkeleyDB::Btree->new(
	-Filename => 'postgrey.db',
	-Flags    => DB_CREATE,
	-Env      => $env,
) or die "fill-postgrey: $dir/postgrey.db: $BerkeleyDB::Error\n";

# postgrey's do_sender_substitutions, for senders without BATV
sub sender_key {
	my ($addr) = @_;
	my ($user, $domain) = split(/@/, $addr, 2);
	$user =~ s/\+.*//;
	$user =~ s/\b\d+\b/#/g;
	return "$user\@$domain";
}

sub put {
	my ($cls, $i, $value) = @_;
	my $net = sprintf("10.%d.%d.0", ($i >> 16) & 255, ($i >> 8) & 255);
	my $sender = sprintf("%s%d.Bounce-%d\@list%d.example.org", $cls, $i,
			     $i * 7919 % 100000, $i % 1000);
	my $rcpt = sprintf("User%d\@example.net", $i % 50000);
	my $key = lc "$net/" . sender_key($sender) . "/$rcpt";
	$db->db_put($key, $value) == 0
		or die "fill-postgrey: put: $BerkeleyDB::Error\n";
}

# the key must be what triplet.h says
my $probe = lc sender_key("k42.Bounce-31337\@list42.example.org");
$probe eq 'k42.bounce-#@list42.example.org'
	or die "fill-postgrey: normalised $probe\n";

my ($passed_first, $passed_last) = ($now - 86400, $now - 60);
put('k', $_, "$passed_first,$passed_last") for 0 .. $known - 1;
put('p', $_, ($now - 60) . ',' . ($now - 60)) for 0 .. $pending - 1;

$db->db_sync() == 0 or die "fill-postgrey: sync: $BerkeleyDB::Error\n";
$db->db_close() == 0 or die "fill-postgrey: close: $BerkeleyDB::Error\n";
$env->close() if $env->can('close');
undef $env;
