#!/usr/bin/perl
# make-geoip.pl - writes a small GeoIP2-City-shaped MaxMind DB for tests
#
# perl make-geoip.pl [--ipv4-only] OUT.mmdb CIDR=LAT,LON [CIDR=LAT,LON ...]
#
# Each CIDR (IPv4 or IPv6) gets {location => {latitude, longitude}, city => {names => {en}}}.
# The tree is IPv6 with IPv4 stored under ::/96 (as libmaxminddb looks it up) and aliased from
# ::ffff:0:0/96, like MaxMind's own City databases. Reserved networks are kept, since the tests
# run on loopback. --ipv4-only writes an IPv4 tree instead (IPv4 CIDRs only), the shape that
# a reader must not be asked an IPv6 question. Needs Debian's libmaxmind-db-writer-perl.
use strict;
use warnings;

use MaxMind::DB::Writer::Tree;

my $ip_version = 6;
if (@ARGV && $ARGV[0] eq '--ipv4-only') {
	shift @ARGV;
	$ip_version = 4;
}
my $out = shift @ARGV;
die "usage: $0 [--ipv4-only] OUT.mmdb CIDR=LAT,LON [CIDR=LAT,LON ...]\n"
    unless defined $out && @ARGV;

my $num = qr/[-+]?(?:\d+(?:\.\d*)?|\.\d+)/;
my @records;
for my $arg (@ARGV) {
	my ($cidr, $lat, $lon) = $arg =~ /^([^=]+)=\s*($num)\s*,\s*($num)\s*$/
	    or die "$0: expected CIDR=LAT,LON, got '$arg'\n";
	die "$0: coordinates out of range in '$arg'\n"
	    if abs($lat) > 90 || abs($lon) > 180;
	# a bare address is one host
	$cidr .= $cidr =~ /:/ ? '/128' : '/32' unless $cidr =~ m{/};
	die "$0: --ipv4-only takes IPv4 networks, got '$cidr'\n" if $ip_version == 4 && $cidr =~ /:/;
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
	ip_version               => $ip_version,
	record_size              => 28,
	database_type            => 'GeoIP2-City',
	languages                => ['en'],
	description              => {en => 'Meridian test GeoIP2 City database'},
	map_key_type_callback    => sub { $types{$_[0]} },
	alias_ipv6_to_ipv4       => $ip_version == 6 ? 1 : 0,
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
