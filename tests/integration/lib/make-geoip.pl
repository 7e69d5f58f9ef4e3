#!/usr/bin/perl
# make-geoip.pl - writes a small GeoIP2-City-shaped MaxMind DB for tests
#
# perl make-geoip.pl OUT.mmdb CIDR=LAT,LON [CIDR=LAT,LON ...]
#
# Each CIDR (IPv4 or IPv6) gets {location => {latitude, longitude}, city => {names => {en}}}.
# The tree is IPv6 with IPv4 stored under ::/96 (as libmaxminddb looks it up) and aliased from
# ::ffff:0:0/96, like MaxMind's own City databases. Reserved networks are kept, since the tests
# run on loopback. Needs Debian's libmaxmind-db-writer-perl.
use strict;
use warnings;

use MaxMind::DB::Writer::Tree;

my $out = shift @ARGV;
die "usage: $0 OUT.mmdb CIDR=LAT,LON [CIDR=LAT,LON ...]\n" unless defined $out && @ARGV;

my $num = qr/[-+]?(?:\d+(?:\.\d*)?|\.\d+)/;
my @records;
for my $arg (@ARGV) {
	my ($cidr, $lat, $lon) = $arg =~ /^([^=]+)=\s*($num)\s*,\s*($num)\s*$/
	    or die "$0: expected CIDR=LAT,LON, got '$arg'\n";
	die "$0: coordinates out of range in '$arg'\n"
	    if abs($lat) > 90 || abs($lon) > 180;
	# a bare address is one host
	$cidr .= $cidr =~ /:/ ? '/128' : '/32' unless $cidr =~ m{/};
	push @records, [$cidr, $lat + 0, $lon + 0];
}

my %types = (
	location  => 'map',
	latitude  => 'double',
	longitude => 'double',
	city      => 'map',
	names     => 'map',
	en        => 'utf8_string',
);

my $tree = MaxMind::DB::Writer::Tree->new(
	ip_version               => 6,
	record_size              => 28,
	database_type            => 'GeoIP2-City',
	languages                => ['en'],
	description              => {en => 'Meridian test GeoIP2 City database'},
	map_key_type_callback    => sub { $types{$_[0]} },
	alias_ipv6_to_ipv4       => 1,
	remove_reserved_networks => 0,
);

# Later inserts overwrite earlier ones where they overlap, so wider networks go first and a
# more specific one given on the command line wins whatever its position.
my $prefix = sub {
	my ($ip, $bits) = split m{/}, $_[0], 2;
	return $ip =~ /:/ ? $bits : $bits + 96;
};
for my $r (sort { $prefix->($a->[0]) <=> $prefix->($b->[0]) } @records) {
	my ($cidr, $lat, $lon) = @$r;
	$tree->insert_network($cidr, {
		location => {latitude => $lat, longitude => $lon},
		city     => {names => {en => "test city $lat,$lon"}},
	});
}

open my $fh, '>:raw', $out or die "$0: cannot write '$out': $!\n";
$tree->write_tree($fh);
close $fh or die "$0: cannot write '$out': $!\n";
