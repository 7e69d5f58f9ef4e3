/* locate.c - where a client is: trusted header, CIDR table, GeoIP database, or the default */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <maxminddb.h>

#include "core/alloc.h"
#include "route/locate.h"

/*
 * Every address is held as 128 bits in two host-order halves; IPv4 as its IPv4-mapped IPv6 form
 * (::ffff:a.b.c.d), so IPv4 CIDRs, IPv4 peers and IPv4-mapped IPv6 peers all meet in one space
 * and a match is two ANDs and two compares.
 */
struct addr {
	uint64_t hi, lo;
};

struct cidr {
	struct addr net;              /* host bits already cleared */
	struct addr mask;
	unsigned bits;                /* 0..128, in the 128-bit space */
};

struct network {
	struct cidr cidr;
	struct geo at;
};

struct locator {
	bool has_header;              /* client_location.header is configured */
	struct cidr *trusted;
	size_t ntrusted;
	struct network *networks;     /* sorted by prefix length, longest first */
	size_t nnetworks;
	bool has_geoip;
	MMDB_s mmdb;
	bool has_default;
	struct geo def;
};

const char *locate_source_name(enum locate_source s)
{
	switch (s) {
	case LOCATE_HEADER:
		return "header";
	case LOCATE_NETWORK:
		return "network";
	case LOCATE_GEOIP:
		return "geoip";
	case LOCATE_DEFAULT:
		return "default";
	case LOCATE_NONE:
		break;
	}
	return "none";
}

static uint64_t load_be64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static struct addr addr_from_v4(const unsigned char b[4])
{
	return (struct addr){0, 0xffff00000000ull | (uint64_t)b[0] << 24 | (uint64_t)b[1] << 16 |
				    (uint64_t)b[2] << 8 | b[3]};
}

static struct addr addr_from_v6(const unsigned char b[16])
{
	return (struct addr){load_be64(b), load_be64(b + 8)};
}

static bool addr_is_v4(struct addr a)
{
	return a.hi == 0 && a.lo >> 32 == 0xffff;
}

static bool cidr_match(const struct cidr *c, struct addr a)
{
	return (a.hi & c->mask.hi) == c->net.hi && (a.lo & c->mask.lo) == c->net.lo;
}

/* Parses a bare IPv4 or IPv6 address of n bytes (no brackets, no port, no zone). */
static bool addr_parse(const char *s, size_t n, struct addr *out)
{
	char tmp[INET6_ADDRSTRLEN + 1];
	unsigned char bin[16];

	if (n == 0 || n >= sizeof(tmp))
		return false;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	if (memchr(tmp, ':', n)) {
		if (inet_pton(AF_INET6, tmp, bin) != 1)
			return false;
		*out = addr_from_v6(bin);
	} else {
		if (inet_pton(AF_INET, tmp, bin) != 1)
			return false;
		*out = addr_from_v4(bin);
	}
	return true;
}

/* "10.0.0.0/8", "fd00::/8", or a bare address (/32, /128). Host bits set in the address are
 * cleared rather than refused: the config loader accepts them, and 10.1.2.3/8 can only mean
 * 10.0.0.0/8. */
static bool cidr_parse(const char *s, struct cidr *out)
{
	const char *slash = strchr(s, '/');
	size_t alen = slash ? (size_t)(slash - s) : strlen(s);
	struct addr a;
	int64_t bits;
	bool v6;

	if (!addr_parse(s, alen, &a))
		return false;
	v6 = memchr(s, ':', alen) != NULL;
	if (slash) {
		bits = str_to_i64(slash + 1, strlen(slash + 1));
		if (bits < 0 || bits > (v6 ? 128 : 32))
			return false;
	} else {
		bits = v6 ? 128 : 32;
	}
	if (!v6)
		bits += 96;
	out->bits = (unsigned)bits;
	out->mask.hi = bits == 0 ? 0 : bits >= 64 ? UINT64_MAX : UINT64_MAX << (64 - bits);
	out->mask.lo = bits <= 64 ? 0 : bits == 128 ? UINT64_MAX : UINT64_MAX << (128 - bits);
	out->net.hi = a.hi & out->mask.hi;
	out->net.lo = a.lo & out->mask.lo;
	return true;
}

/* The peer's address; false for anything that is not IPv4 or IPv6 (a Unix socket). */
static bool addr_of_sockaddr(const struct sockaddr *sa, struct addr *out)
{
	if (!sa)
		return false;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		*out = addr_from_v4((const unsigned char *)&in->sin_addr);
		return true;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		*out = addr_from_v6(in6->sin6_addr.s6_addr);
		return true;
	}
	return false;
}

static bool is_trusted(const struct locator *l, struct addr a)
{
	for (size_t i = 0; i < l->ntrusted; i++)
		if (cidr_match(&l->trusted[i], a))
			return true;
	return false;
}

static bool is_ows(char ch)
{
	return ch == ' ' || ch == '\t';
}

static bool port_valid(const char *s, size_t n)
{
	int64_t port = str_to_i64(s, n);
	return port >= 0 && port <= 65535;
}

/*
 * One X-Forwarded-For entry, already trimmed: "1.2.3.4", "2001:db8::1", and the forms some
 * proxies write with a port, "1.2.3.4:5678", "[2001:db8::1]" and "[2001:db8::1]:443".
 */
static bool xff_entry_parse(const char *s, size_t n, struct addr *out)
{
	const char *colon;

	if (n && s[0] == '[') {
		const char *close = memchr(s, ']', n);
		if (!close)
			return false;
		size_t rest = n - (size_t)(close + 1 - s);
		if (rest && (close[1] != ':' || !port_valid(close + 2, rest - 1)))
			return false;
		return addr_parse(s + 1, (size_t)(close - s - 1), out);
	}
	colon = memchr(s, ':', n);
	if (colon && !memchr(colon + 1, ':', n - (size_t)(colon + 1 - s))) {
		/* exactly one colon: IPv4 with a port (an IPv6 address has at least two) */
		if (!port_valid(colon + 1, n - (size_t)(colon + 1 - s)))
			return false;
		n = (size_t)(colon - s);
	}
	return addr_parse(s, n, out);
}

/*
 * The client address behind a trusted peer: walking X-Forwarded-For from the right, each
 * trusted proxy vouches for the entry to its left; the first entry that is not a trusted proxy
 * is the client. Everything left of it was written by the client and is not believed. An entry
 * that does not parse ends the walk (nobody trusted vouches for what lies beyond it), and the
 * client is then the last trusted hop, as nginx's realip module does. Empty entries ("a,,b")
 * are skipped.
 */
static struct addr xff_client(const struct locator *l, struct addr peer, const struct iov *xff)
{
	struct addr cur = peer, a;
	const char *p, *end, *start;

	if (!xff || !xff->base)
		return peer;
	end = xff->base + xff->len;
	while (end > xff->base) {
		p = end;
		while (p > xff->base && p[-1] != ',')
			p--;
		start = p;
		const char *e = end;
		while (start < e && is_ows(*start))
			start++;
		while (e > start && is_ows(e[-1]))
			e--;
		end = p > xff->base ? p - 1 : xff->base;
		if (start == e)
			continue;
		if (!xff_entry_parse(start, (size_t)(e - start), &a))
			return cur;
		cur = a;
		if (!is_trusted(l, a))
			return a;
	}
	return cur;
}

static bool geo_valid(double lat, double lon)
{
	return isfinite(lat) && isfinite(lon) && lat >= -90 && lat <= 90 && lon >= -180 &&
	       lon <= 180;
}

static bool mmdb_number(MMDB_entry_s *entry, const char *key, double *out)
{
	MMDB_entry_data_s d;

	if (MMDB_get_value(entry, &d, "location", key, NULL) != MMDB_SUCCESS || !d.has_data)
		return false;
	if (d.type == MMDB_DATA_TYPE_DOUBLE)
		*out = d.double_value;
	else if (d.type == MMDB_DATA_TYPE_FLOAT)
		*out = d.float_value;
	else
		return false;
	return true;
}

static bool geoip_find(const struct locator *l, struct addr a, struct geo *out)
{
	struct sockaddr_storage ss;
	MMDB_lookup_result_s r;
	int mmdb_err = MMDB_SUCCESS;
	double lat, lon;

	memset(&ss, 0, sizeof(ss));
	/* IPv4 as AF_INET: libmaxminddb then looks it up under ::/96 where City databases keep
	 * IPv4, whether or not the database aliases ::ffff:0:0/96 there. */
	if (addr_is_v4(a)) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		in->sin_family = AF_INET;
		in->sin_addr.s_addr = htonl((uint32_t)a.lo);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		in6->sin6_family = AF_INET6;
		for (int i = 0; i < 8; i++) {
			in6->sin6_addr.s6_addr[i] = (unsigned char)(a.hi >> (56 - 8 * i));
			in6->sin6_addr.s6_addr[8 + i] = (unsigned char)(a.lo >> (56 - 8 * i));
		}
	}
	/* MMDB_lookup_sockaddr only reads the database; the MMDB_s is shared by all threads. */
	r = MMDB_lookup_sockaddr(&l->mmdb, (const struct sockaddr *)&ss, &mmdb_err);
	if (mmdb_err != MMDB_SUCCESS || !r.found_entry)
		return false;
	if (!mmdb_number(&r.entry, "latitude", &lat) || !mmdb_number(&r.entry, "longitude", &lon))
		return false;
	if (!geo_valid(lat, lon))
		return false;
	*out = (struct geo){lat, lon};
	return true;
}

enum locate_source locator_find(const struct locator *l, const struct sockaddr *peer,
				const struct iov *location_header, const struct iov *forwarded_for,
				struct geo *out)
{
	struct addr client;
	bool have_addr;

	if (!l)
		return LOCATE_NONE;
	have_addr = addr_of_sockaddr(peer, &client);
	if (have_addr && l->ntrusted && is_trusted(l, client)) {
		if (l->has_header && location_header && location_header->base &&
		    geo_parse(location_header->base, location_header->len, out))
			return LOCATE_HEADER;
		client = xff_client(l, client, forwarded_for);
	}
	if (have_addr) {
		for (size_t i = 0; i < l->nnetworks; i++) {
			if (cidr_match(&l->networks[i].cidr, client)) {
				*out = l->networks[i].at;
				return LOCATE_NETWORK;
			}
		}
		if (l->has_geoip && geoip_find(l, client, out))
			return LOCATE_GEOIP;
	}
	if (l->has_default) {
		*out = l->def;
		return LOCATE_DEFAULT;
	}
	return LOCATE_NONE;
}

struct locator *locator_new(const struct conf_client_location *cl, char *err, size_t errlen)
{
	struct locator *l = xcalloc(1, sizeof(*l));
	int rc;

	l->has_header = cl->header != NULL;
	l->trusted = xcalloc(cl->ntrusted_proxies ? cl->ntrusted_proxies : 1, sizeof(*l->trusted));
	for (size_t i = 0; i < cl->ntrusted_proxies; i++) {
		if (!cidr_parse(cl->trusted_proxies[i], &l->trusted[i])) {
			snprintf(err, errlen, "client_location.trusted_proxies: not an address or CIDR: '%.60s'",
				 cl->trusted_proxies[i]);
			goto fail;
		}
		l->ntrusted++;
	}

	l->networks = xcalloc(cl->nnetworks ? cl->nnetworks : 1, sizeof(*l->networks));
	for (size_t i = 0; i < cl->nnetworks; i++) {
		struct network n = {.at = {cl->networks[i].lat, cl->networks[i].lon}};
		size_t j;

		if (!cidr_parse(cl->networks[i].cidr, &n.cidr)) {
			snprintf(err, errlen, "client_location.networks[%zu]: not a CIDR: '%.60s'", i,
				 cl->networks[i].cidr);
			goto fail;
		}
		/* insertion keeps it sorted longest prefix first, equal prefixes in config order,
		 * so the first match of a linear scan is the longest */
		for (j = l->nnetworks; j > 0 && l->networks[j - 1].cidr.bits < n.cidr.bits; j--)
			l->networks[j] = l->networks[j - 1];
		l->networks[j] = n;
		l->nnetworks++;
	}

	if (cl->geoip_db) {
		errno = 0;
		rc = MMDB_open(cl->geoip_db, MMDB_MODE_MMAP, &l->mmdb);
		if (rc != MMDB_SUCCESS) {
			if ((rc == MMDB_FILE_OPEN_ERROR || rc == MMDB_IO_ERROR) && errno)
				snprintf(err, errlen, "cannot open GeoIP database '%s': %s", cl->geoip_db,
					 strerror(errno));
			else
				snprintf(err, errlen, "cannot open GeoIP database '%s': %s", cl->geoip_db,
					 MMDB_strerror(rc));
			goto fail;
		}
		l->has_geoip = true;
	}

	l->has_default = cl->has_default;
	l->def = (struct geo){cl->default_lat, cl->default_lon};
	return l;
fail:
	locator_free(l);
	return NULL;
}

void locator_free(struct locator *l)
{
	if (!l)
		return;
	if (l->has_geoip)
		MMDB_close(&l->mmdb);
	xfree(l->trusted);
	xfree(l->networks);
	xfree(l);
}

/*
 * One decimal number: optional sign, digits, optional fraction. No exponent, no "inf"/"nan",
 * no hex, and independent of the C locale, which strtod is not.
 */
static bool parse_decimal(const char **pp, const char *end, double *out)
{
	const char *p = *pp;
	bool neg = false;
	double v = 0, scale = 1;
	size_t digits = 0;

	if (p < end && (*p == '+' || *p == '-'))
		neg = *p++ == '-';
	for (; p < end && *p >= '0' && *p <= '9'; p++, digits++) {
		if (v > 1e6) /* no coordinate has this many integer digits */
			return false;
		v = v * 10 + (*p - '0');
	}
	if (p < end && *p == '.') {
		p++;
		for (; p < end && *p >= '0' && *p <= '9'; p++, digits++) {
			/* digits beyond double precision change nothing */
			if (scale < 1e17) {
				scale *= 10;
				v += (*p - '0') / scale;
			}
		}
	}
	if (!digits)
		return false;
	*out = neg ? -v : v;
	*pp = p;
	return true;
}

bool geo_parse(const char *s, size_t len, struct geo *out)
{
	const char *p = s, *end = s + len;
	double lat, lon;

	if (!s)
		return false;
	while (p < end && is_ows(*p))
		p++;
	if (!parse_decimal(&p, end, &lat))
		return false;
	while (p < end && is_ows(*p))
		p++;
	if (p == end || *p++ != ',')
		return false;
	while (p < end && is_ows(*p))
		p++;
	if (!parse_decimal(&p, end, &lon))
		return false;
	while (p < end && is_ows(*p))
		p++;
	if (p != end || !geo_valid(lat, lon))
		return false;
	*out = (struct geo){lat, lon};
	return true;
}

double geo_distance_km(struct geo a, struct geo b)
{
	const double rad = M_PI / 180.0;
	double dlat = (b.lat - a.lat) * rad, dlon = (b.lon - a.lon) * rad;
	double s1 = sin(dlat / 2), s2 = sin(dlon / 2);
	double h = s1 * s1 + cos(a.lat * rad) * cos(b.lat * rad) * s2 * s2;

	/* rounding can push h a hair past 1 for antipodes */
	if (h > 1)
		h = 1;
	return 2 * 6371.0 * asin(sqrt(h));
}
