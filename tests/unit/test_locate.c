/* test_locate.c - client location: coordinates, distances, CIDR tables, trusted proxies, GeoIP */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <math.h>
#include <pthread.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "route/locate.h"

/* A peer address from its text form; IPv6 text (including ::ffff:a.b.c.d) gives AF_INET6. */
static struct sockaddr_storage peer(const char *ip)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(40000);
		assert_int_equal(inet_pton(AF_INET6, ip, &in6->sin6_addr), 1);
	} else {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		in->sin_family = AF_INET;
		in->sin_port = htons(40000);
		assert_int_equal(inet_pton(AF_INET, ip, &in->sin_addr), 1);
	}
	return ss;
}

/* locator_find from peer ip with an optional location header and X-Forwarded-For */
static enum locate_source find(const struct locator *l, const char *ip, const char *hdr,
			       const char *xff, struct geo *g)
{
	struct sockaddr_storage ss = peer(ip);
	struct iov h = iov_of(hdr), x = iov_of(xff);

	*g = (struct geo){-999, -999};
	return locator_find(l, (const struct sockaddr *)&ss, hdr ? &h : NULL, xff ? &x : NULL, g);
}

#define assert_geo(g, la, lo)                                                                  \
	do {                                                                                   \
		assert_true(fabs((g).lat - (la)) < 1e-9);                                      \
		assert_true(fabs((g).lon - (lo)) < 1e-9);                                      \
	} while (0)

/* expects source src at (la, lo) */
#define assert_found(l, ip, hdr, xff, src, la, lo)                                             \
	do {                                                                                   \
		struct geo g_;                                                                 \
		enum locate_source s_ = find(l, ip, hdr, xff, &g_);                            \
		if (s_ != (src))                                                               \
			fail_msg("%s (header %s, xff %s): source %s, expected %s", ip,         \
				 hdr ? hdr : "-", xff ? xff : "-", locate_source_name(s_),     \
				 locate_source_name(src));                                     \
		if (s_ != LOCATE_NONE)                                                         \
			assert_geo(g_, la, lo);                                                \
	} while (0)

static void test_geo_parse(void **state)
{
	static const struct {
		const char *s;
		double lat, lon;
	} good[] = {
		{"53.3,-6.3", 53.3, -6.3},
		{" 53.3 , -6.3 ", 53.3, -6.3},
		{"\t39.0438,\t-77.4874", 39.0438, -77.4874},
		{"-90,180", -90, 180},
		{"90,-180", 90, -180},
		{"0,0", 0, 0},
		{"+1.5,2.", 1.5, 2},
		{".5,-.25", 0.5, -0.25},
		{"0053.30,-006.30", 53.3, -6.3},
		{"1.123456789012345678901234,2", 1.123456789012345678901234, 2},
	};
	static const char *const bad[] = {
		"", " ", ",", "53.3", "53.3,", ",1", "53.3 -6.3", "53.3;-6.3", "91,0", "-91,0",
		"0,181", "0,-180.0001", "90.00001,0", "1e1,2", "1,2e0", "nan,0", "0,inf", "0x1,2",
		"1,2,3", "abc", "1,2x", "--1,2", "+-1,2", "1..2,3", "1.2.3,4", "-,1", ".,1",
		"12345678901234567890,0", "1,\x80", "1 ,2 3",
	};
	struct geo g;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		g = (struct geo){-999, -999};
		if (!geo_parse(good[i].s, strlen(good[i].s), &g))
			fail_msg("refused '%s'", good[i].s);
		if (fabs(g.lat - good[i].lat) > 1e-12 || fabs(g.lon - good[i].lon) > 1e-12)
			fail_msg("'%s' gave %.15g,%.15g", good[i].s, g.lat, g.lon);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (geo_parse(bad[i], strlen(bad[i]), &g))
			fail_msg("accepted '%s' as %g,%g", bad[i], g.lat, g.lon);

	/* the length bounds the parse: a header value is a slice, not a C string */
	assert_true(geo_parse("10,20,garbage", 5, &g));
	assert_geo(g, 10, 20);
	assert_true(geo_parse("10,205", 5, &g));
	assert_geo(g, 10, 20);
	assert_false(geo_parse("10,20\0", 6, &g));
	assert_false(geo_parse("10,20", 3, &g));
	assert_false(geo_parse(NULL, 0, &g));
}

static void test_distance(void **state)
{
	struct geo ashburn = {39.0438, -77.4874}, dublin = {53.3498, -6.2603};
	struct geo london = {51.5074, -0.1278}, paris = {48.8566, 2.3522};
	const double half = M_PI * 6371.0; /* half the circumference */
	double d = geo_distance_km(ashburn, dublin);

	if (fabs(d - 5470) > 54.7)
		fail_msg("Ashburn to Dublin: %.1f km", d);
	assert_true(fabs(d - geo_distance_km(dublin, ashburn)) < 1e-9);
	assert_true(fabs(geo_distance_km(london, paris) - 343.5) < 1.0);
	assert_true(geo_distance_km(dublin, dublin) == 0);
	assert_true(geo_distance_km((struct geo){0, 0}, (struct geo){0, 0}) == 0);
	/* antipodes, including the points where rounding can push haversine past 1 */
	assert_true(fabs(geo_distance_km((struct geo){0, 0}, (struct geo){0, 180}) - half) < 1e-6);
	assert_true(fabs(geo_distance_km((struct geo){90, 0}, (struct geo){-90, 0}) - half) < 1e-6);
	d = geo_distance_km((struct geo){53.3, -6.3}, (struct geo){-53.3, 173.7});
	assert_false(isnan(d));
	assert_true(fabs(d - half) < 1e-3); /* asin near 1 amplifies rounding: a metre */
	/* across the antimeridian it is the short way round: 2 degrees of longitude at the equator */
	d = geo_distance_km((struct geo){0, 179}, (struct geo){0, -179});
	assert_true(fabs(d - 2 * M_PI * 6371.0 / 180) < 1e-6);
	/* the poles: every longitude is the same place */
	assert_true(geo_distance_km((struct geo){90, 0}, (struct geo){90, 123}) < 1e-6);
}

static void test_source_names(void **state)
{
	assert_string_equal(locate_source_name(LOCATE_HEADER), "header");
	assert_string_equal(locate_source_name(LOCATE_NETWORK), "network");
	assert_string_equal(locate_source_name(LOCATE_GEOIP), "geoip");
	assert_string_equal(locate_source_name(LOCATE_DEFAULT), "default");
	assert_string_equal(locate_source_name(LOCATE_NONE), "none");
	assert_string_equal(locate_source_name((enum locate_source)99), "none");
}

static void test_networks_longest_prefix(void **state)
{
	/* deliberately not in prefix order: the /24 must win over the /16 and the /8 */
	struct conf_network nets[] = {
		{"10.20.0.0/16", 2, 2},
		{"10.0.0.0/8", 1, 1},
		{"10.20.30.0/24", 3, 3},
		{"10.99.1.2/16", 4, 4},          /* host bits set: 10.99.0.0/16 */
		{"192.0.2.7", 5, 5},             /* bare address: /32 */
		{"172.16.0.0/12", 6, 6},
		{"172.16.0.0/12", 7, 7},         /* a duplicate: the first listed wins */
	};
	struct conf_client_location cl = {.networks = nets, .nnetworks = ARRAY_SIZE(nets)};
	char err[256];
	struct locator *l = locator_new(&cl, err, sizeof(err));

	assert_non_null(l);
	assert_found(l, "10.20.30.5", NULL, NULL, LOCATE_NETWORK, 3, 3);
	assert_found(l, "10.20.30.255", NULL, NULL, LOCATE_NETWORK, 3, 3);
	assert_found(l, "10.20.31.0", NULL, NULL, LOCATE_NETWORK, 2, 2);
	assert_found(l, "10.20.255.255", NULL, NULL, LOCATE_NETWORK, 2, 2);
	assert_found(l, "10.21.0.0", NULL, NULL, LOCATE_NETWORK, 1, 1);
	assert_found(l, "10.255.255.255", NULL, NULL, LOCATE_NETWORK, 1, 1);
	assert_found(l, "10.99.200.1", NULL, NULL, LOCATE_NETWORK, 4, 4);
	assert_found(l, "192.0.2.7", NULL, NULL, LOCATE_NETWORK, 5, 5);
	assert_found(l, "192.0.2.8", NULL, NULL, LOCATE_NONE, 0, 0);
	assert_found(l, "172.31.255.1", NULL, NULL, LOCATE_NETWORK, 6, 6);
	assert_found(l, "172.32.0.1", NULL, NULL, LOCATE_NONE, 0, 0);
	assert_found(l, "11.0.0.1", NULL, NULL, LOCATE_NONE, 0, 0);
	assert_found(l, "9.255.255.255", NULL, NULL, LOCATE_NONE, 0, 0);
	/* an IPv4-mapped IPv6 peer (a dual-stack listener) matches the IPv4 CIDRs */
	assert_found(l, "::ffff:10.20.30.5", NULL, NULL, LOCATE_NETWORK, 3, 3);
	assert_found(l, "::ffff:10.1.2.3", NULL, NULL, LOCATE_NETWORK, 1, 1);
	/* but an IPv6 address with the same low bits does not */
	assert_found(l, "::10.20.30.5", NULL, NULL, LOCATE_NONE, 0, 0);
	assert_found(l, "2001:db8::a14:1e05", NULL, NULL, LOCATE_NONE, 0, 0);
	locator_free(l);
}

static void test_networks_ipv6(void **state)
{
	struct conf_network nets[] = {
		{"2001:db8::/32", 1, 1},
		{"2001:db8:1::/48", 2, 2},
		{"2001:db8:1:2:3:4:5:6/127", 3, 3}, /* the low half of the mask */
		{"2001:db8::7", 4, 4},               /* bare: /128 */
		{"::ffff:203.0.113.0/120", 5, 5},    /* IPv4 written as mapped IPv6 */
		{"0.0.0.0/0", 6, 6},                 /* all of IPv4, none of IPv6 */
	};
	struct conf_client_location cl = {.networks = nets, .nnetworks = ARRAY_SIZE(nets)};
	char err[256];
	struct locator *l = locator_new(&cl, err, sizeof(err));

	assert_non_null(l);
	assert_found(l, "2001:db8:1::5", NULL, NULL, LOCATE_NETWORK, 2, 2);
	assert_found(l, "2001:db8:1:ffff:ffff:ffff:ffff:ffff", NULL, NULL, LOCATE_NETWORK, 2, 2);
	assert_found(l, "2001:db8:2::1", NULL, NULL, LOCATE_NETWORK, 1, 1);
	assert_found(l, "2001:db8:1:2:3:4:5:7", NULL, NULL, LOCATE_NETWORK, 3, 3);
	assert_found(l, "2001:db8:1:2:3:4:5:8", NULL, NULL, LOCATE_NETWORK, 2, 2);
	assert_found(l, "2001:db8::7", NULL, NULL, LOCATE_NETWORK, 4, 4);
	assert_found(l, "2001:db8::8", NULL, NULL, LOCATE_NETWORK, 1, 1);
	assert_found(l, "2001:db9::1", NULL, NULL, LOCATE_NONE, 0, 0);
	assert_found(l, "::1", NULL, NULL, LOCATE_NONE, 0, 0);
	assert_found(l, "203.0.113.9", NULL, NULL, LOCATE_NETWORK, 5, 5);
	assert_found(l, "::ffff:203.0.113.9", NULL, NULL, LOCATE_NETWORK, 5, 5);
	assert_found(l, "198.51.100.1", NULL, NULL, LOCATE_NETWORK, 6, 6);
	assert_found(l, "::ffff:198.51.100.1", NULL, NULL, LOCATE_NETWORK, 6, 6);
	locator_free(l);

	/* ::/0 is every address, IPv4 included */
	struct conf_network all[] = {{"::/0", 8, 8}};
	cl = (struct conf_client_location){.networks = all, .nnetworks = 1};
	l = locator_new(&cl, err, sizeof(err));
	assert_non_null(l);
	assert_found(l, "2001:db8::1", NULL, NULL, LOCATE_NETWORK, 8, 8);
	assert_found(l, "192.0.2.1", NULL, NULL, LOCATE_NETWORK, 8, 8);
	locator_free(l);
}

static void test_bad_config(void **state)
{
	static const char *const bad[] = {
		"10.0.0.0/33", "2001:db8::/129", "nonsense", "10.0.0.0/", "10.0.0.0/x", "/8",
		"10.0.0/8", "10.0.0.0/-1", "2001:db8::/3x", "",
	};
	char err[256];

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		char *tp[] = {(char *)bad[i], NULL};
		struct conf_client_location cl = {.trusted_proxies = tp, .ntrusted_proxies = 1};
		err[0] = '\0';
		if (locator_new(&cl, err, sizeof(err)))
			fail_msg("trusted proxy '%s' accepted", bad[i]);
		assert_non_null(strstr(err, "trusted_proxies"));
		assert_non_null(strstr(err, bad[i]));

		struct conf_network n = {(char *)bad[i], 1, 1};
		cl = (struct conf_client_location){.networks = &n, .nnetworks = 1};
		err[0] = '\0';
		if (locator_new(&cl, err, sizeof(err)))
			fail_msg("network '%s' accepted", bad[i]);
		assert_non_null(strstr(err, "networks[0]"));
	}

	struct conf_client_location cl = {.geoip_db = "/nonexistent/GeoLite2-City.mmdb"};
	assert_null(locator_new(&cl, err, sizeof(err)));
	assert_string_equal(err, "cannot open GeoIP database '/nonexistent/GeoLite2-City.mmdb': "
				 "No such file or directory");

	/* a file that is not a MaxMind database */
	char path[] = "/tmp/meridian-test-locate-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "not a database\n", 15), 15);
	close(fd);
	cl.geoip_db = path;
	err[0] = '\0';
	assert_null(locator_new(&cl, err, sizeof(err)));
	assert_non_null(strstr(err, "cannot open GeoIP database '"));
	assert_non_null(strstr(err, path));
	unlink(path);
}

static void test_default_and_none(void **state)
{
	struct conf_client_location none = {0};
	struct conf_client_location def = {.has_default = true, .default_lat = 39, .default_lon = -77.5};
	struct sockaddr_un un = {.sun_family = AF_UNIX};
	char err[256];
	struct locator *l = locator_new(&none, err, sizeof(err));
	struct geo g;

	/* nothing configured: every client is unknown, headers included */
	assert_non_null(l);
	assert_found(l, "192.0.2.1", NULL, NULL, LOCATE_NONE, 0, 0);
	assert_found(l, "127.0.0.1", "10,20", "192.0.2.1", LOCATE_NONE, 0, 0);
	assert_int_equal(locator_find(l, NULL, NULL, NULL, &g), LOCATE_NONE);
	assert_int_equal(locator_find(NULL, NULL, NULL, NULL, &g), LOCATE_NONE);
	locator_free(l);
	locator_free(NULL);

	l = locator_new(&def, err, sizeof(err));
	assert_non_null(l);
	assert_found(l, "192.0.2.1", NULL, NULL, LOCATE_DEFAULT, 39, -77.5);
	assert_found(l, "2001:db8::1", "10,20", NULL, LOCATE_DEFAULT, 39, -77.5);
	/* a peer that is not IP (a Unix socket) or none at all still gets the default */
	assert_int_equal(locator_find(l, (struct sockaddr *)&un, NULL, NULL, &g), LOCATE_DEFAULT);
	assert_geo(g, 39, -77.5);
	assert_int_equal(locator_find(l, NULL, NULL, NULL, &g), LOCATE_DEFAULT);
	locator_free(l);
}

static void test_header(void **state)
{
	char *tp[] = {"127.0.0.0/8", "::1", "fd00::/8", NULL};
	struct conf_network nets[] = {{"192.0.2.0/24", 5, 5}};
	struct conf_client_location cl = {
		.header = "x-client-location",
		.trusted_proxies = tp, .ntrusted_proxies = 3,
		.networks = nets, .nnetworks = 1,
		.has_default = true, .default_lat = 39, .default_lon = -77.5,
	};
	char err[256];
	struct locator *l = locator_new(&cl, err, sizeof(err));

	assert_non_null(l);
	/* from a trusted proxy the header wins over everything */
	assert_found(l, "127.0.0.1", "53.3,-6.3", NULL, LOCATE_HEADER, 53.3, -6.3);
	assert_found(l, "127.255.0.9", " 53.3 , -6.3", "192.0.2.1", LOCATE_HEADER, 53.3, -6.3);
	assert_found(l, "::1", "1,2", NULL, LOCATE_HEADER, 1, 2);
	assert_found(l, "fdab::1", "1,2", NULL, LOCATE_HEADER, 1, 2);
	assert_found(l, "::ffff:127.0.0.1", "1,2", NULL, LOCATE_HEADER, 1, 2);
	/* from anyone else it is ignored */
	assert_found(l, "192.0.2.9", "53.3,-6.3", NULL, LOCATE_NETWORK, 5, 5);
	assert_found(l, "198.51.100.1", "53.3,-6.3", NULL, LOCATE_DEFAULT, 39, -77.5);
	assert_found(l, "::2", "53.3,-6.3", NULL, LOCATE_DEFAULT, 39, -77.5);
	assert_found(l, "128.0.0.1", "53.3,-6.3", NULL, LOCATE_DEFAULT, 39, -77.5);
	/* a trusted proxy's header that does not parse falls through to the client's address */
	assert_found(l, "127.0.0.1", "53.3", "192.0.2.1", LOCATE_NETWORK, 5, 5);
	assert_found(l, "127.0.0.1", "95,0", NULL, LOCATE_DEFAULT, 39, -77.5);
	assert_found(l, "127.0.0.1", "", NULL, LOCATE_DEFAULT, 39, -77.5);
	locator_free(l);

	/* no header configured: a header value the caller passes is not believed */
	cl.header = NULL;
	l = locator_new(&cl, err, sizeof(err));
	assert_non_null(l);
	assert_found(l, "127.0.0.1", "53.3,-6.3", NULL, LOCATE_DEFAULT, 39, -77.5);
	locator_free(l);

	/* a header but no trusted proxies: never believed */
	cl.header = "x-client-location";
	cl.ntrusted_proxies = 0;
	tp[0] = NULL;
	l = locator_new(&cl, err, sizeof(err));
	assert_non_null(l);
	assert_found(l, "127.0.0.1", "53.3,-6.3", NULL, LOCATE_DEFAULT, 39, -77.5);
	locator_free(l);
}

static void test_forwarded_for(void **state)
{
	char *tp[] = {"127.0.0.0/8", "10.0.0.0/8", "2001:db8:ffff::/48", NULL};
	struct conf_network nets[] = {
		{"198.51.100.0/24", 1, 1}, /* what a client would like to be */
		{"203.0.113.0/24", 2, 2},  /* where the client is */
		{"127.0.0.0/8", 3, 3},     /* the local proxy itself */
		{"10.0.0.0/8", 4, 4},      /* the inner proxies */
		{"2001:db8::/32", 5, 5},
	};
	struct conf_client_location cl = {
		.trusted_proxies = tp, .ntrusted_proxies = 3,
		.networks = nets, .nnetworks = ARRAY_SIZE(nets),
		.has_default = true, .default_lat = 39, .default_lon = -77.5,
	};
	char err[256];
	struct locator *l = locator_new(&cl, err, sizeof(err));

	assert_non_null(l);
	/* spoofing: an untrusted peer's X-Forwarded-For is ignored, its own address counts */
	assert_found(l, "192.0.2.1", NULL, "203.0.113.5", LOCATE_DEFAULT, 39, -77.5);
	assert_found(l, "198.51.100.9", NULL, "203.0.113.5", LOCATE_NETWORK, 1, 1);
	assert_found(l, "2001:db8::9", NULL, "198.51.100.9", LOCATE_NETWORK, 5, 5);

	/* through a trusted proxy the entry it appended is the client */
	assert_found(l, "127.0.0.1", NULL, "203.0.113.5", LOCATE_NETWORK, 2, 2);
	assert_found(l, "::ffff:127.0.0.1", NULL, "203.0.113.5", LOCATE_NETWORK, 2, 2);
	/* what the client wrote itself, left of that, is not believed */
	assert_found(l, "127.0.0.1", NULL, "198.51.100.1, 203.0.113.5", LOCATE_NETWORK, 2, 2);
	assert_found(l, "127.0.0.1", NULL, "198.51.100.1,203.0.113.5", LOCATE_NETWORK, 2, 2);
	/* a chain of trusted proxies is walked through to the first untrusted entry */
	assert_found(l, "127.0.0.1", NULL, "198.51.100.1, 203.0.113.5, 10.1.1.1, 10.2.2.2",
		     LOCATE_NETWORK, 2, 2);
	assert_found(l, "127.0.0.1", NULL, "198.51.100.1, 2001:db8::5, 2001:db8:ffff::1",
		     LOCATE_NETWORK, 5, 5);
	/* every entry trusted: the left-most, the hop closest to the client */
	assert_found(l, "127.0.0.1", NULL, "10.1.1.1, 127.0.0.2", LOCATE_NETWORK, 4, 4);
	/* no or an empty X-Forwarded-For: the peer itself */
	assert_found(l, "127.0.0.1", NULL, NULL, LOCATE_NETWORK, 3, 3);
	assert_found(l, "127.0.0.1", NULL, "", LOCATE_NETWORK, 3, 3);
	assert_found(l, "127.0.0.1", NULL, " , ,", LOCATE_NETWORK, 3, 3);

	/* spaces, tabs and empty entries */
	assert_found(l, "127.0.0.1", NULL, "  203.0.113.5  ,\t10.1.1.1 ", LOCATE_NETWORK, 2, 2);
	assert_found(l, "127.0.0.1", NULL, "198.51.100.1,203.0.113.5,, ,10.1.1.1,",
		     LOCATE_NETWORK, 2, 2);
	/* the forms with ports and brackets some proxies write */
	assert_found(l, "127.0.0.1", NULL, "203.0.113.5:4711", LOCATE_NETWORK, 2, 2);
	assert_found(l, "127.0.0.1", NULL, "[2001:db8::5]:443", LOCATE_NETWORK, 5, 5);
	assert_found(l, "127.0.0.1", NULL, "[2001:db8::5]", LOCATE_NETWORK, 5, 5);
	assert_found(l, "127.0.0.1", NULL, "2001:db8::5", LOCATE_NETWORK, 5, 5);
	assert_found(l, "127.0.0.1", NULL, "::ffff:203.0.113.5", LOCATE_NETWORK, 2, 2);

	/* garbage left of the client is never looked at */
	assert_found(l, "127.0.0.1", NULL, "garbage, \"x\", 203.0.113.5", LOCATE_NETWORK, 2, 2);
	/* garbage where a proxy's entry should be ends the walk at the last trusted hop */
	static const char *const garbage[] = {
		"198.51.100.1, unknown", "198.51.100.1, 203.0.113.5 x", "198.51.100.1, [2001:db8::5",
		"198.51.100.1, [2001:db8::5]x", "198.51.100.1, [2001:db8::5]:", "198.51.100.1, 1.2.3.4:x",
		"198.51.100.1, 1.2.3.4:", "198.51.100.1, 1.2.3.4:65536", "198.51.100.1, :::",
		"198.51.100.1, 203.0.113.256",
		"198.51.100.1, []", "198.51.100.1, 2001:db8::5%eth0", "198.51.100.1, 203.0.113.5/24",
		"198.51.100.1, 1111111111111111111111111111111111111111111111111111111111111111111",
		"198.51.100.1, \xff\xfe",
	};
	for (size_t i = 0; i < ARRAY_SIZE(garbage); i++)
		assert_found(l, "127.0.0.1", NULL, garbage[i], LOCATE_NETWORK, 3, 3);
	assert_found(l, "127.0.0.1", NULL, "198.51.100.1, junk, 10.1.1.1", LOCATE_NETWORK, 4, 4);

	/* a long header of trusted hops is walked to its start, nothing more */
	struct buf long_xff = BUF_INIT;
	buf_puts(&long_xff, "203.0.113.77");
	for (int i = 0; i < 1000; i++)
		buf_appendf(&long_xff, ", 10.%d.%d.1", i / 256, i % 256);
	assert_found(l, "127.0.0.1", NULL, long_xff.data, LOCATE_NETWORK, 2, 2);
	buf_release(&long_xff);
	locator_free(l);
}

/* Runs the integration tests' make-geoip.pl; its exit status. */
static int geoip_write(const char *path, const char *opts, const char *records)
{
	char cmd[1024];
	const char *slash = strrchr(__FILE__, '/');

	/* the script is found beside this file, so the test runs from any directory */
	snprintf(cmd, sizeof(cmd), "perl %.*s../integration/lib/make-geoip.pl %s %s %s",
		 slash ? (int)(slash + 1 - __FILE__) : 0, __FILE__, opts, path, records);
	return system(cmd);
}

/* Writes a GeoIP2-City-shaped database into a new temporary directory; false (and the test
 * is skipped) when perl or MaxMind::DB::Writer is missing. */
static bool make_geoip(char *dir, char *path, size_t n, const char *records)
{
	if (system("perl -MMaxMind::DB::Writer::Tree -e 1 >/dev/null 2>&1") != 0)
		return false;
	assert_non_null(mkdtemp(dir));
	snprintf(path, n, "%s/city.mmdb", dir);
	assert_int_equal(geoip_write(path, "", records), 0);
	return true;
}

static void test_geoip(void **state)
{
	char dir[] = "/tmp/meridian-test-geoip-XXXXXX", path[256], err[256];
	char *tp[] = {"127.0.0.1", NULL};
	struct conf_network nets[] = {{"127.0.1.0/28", 7, 7}};

	if (!make_geoip(dir, path, sizeof(path),
			"127.0.1.0/24=53.3,-6.3 127.0.1.77=1.5,2.5 2001:db8::/32=10.5,20.25 "
			"127.0.3.0/24=-33.8688,151.2093")) {
		print_message("SKIPPED: GeoIP test needs perl and MaxMind::DB::Writer "
			      "(apt-get install libmaxmind-db-writer-perl)\n");
		skip();
	}
	struct conf_client_location cl = {
		.trusted_proxies = tp, .ntrusted_proxies = 1,
		.geoip_db = path,
		.has_default = true, .default_lat = 39, .default_lon = -77.5,
	};
	struct locator *l = locator_new(&cl, err, sizeof(err));
	if (!l)
		fail_msg("%s", err);
	assert_found(l, "127.0.1.5", NULL, NULL, LOCATE_GEOIP, 53.3, -6.3);
	assert_found(l, "127.0.1.77", NULL, NULL, LOCATE_GEOIP, 1.5, 2.5);
	assert_found(l, "127.0.1.78", NULL, NULL, LOCATE_GEOIP, 53.3, -6.3);
	assert_found(l, "127.0.3.200", NULL, NULL, LOCATE_GEOIP, -33.8688, 151.2093);
	assert_found(l, "::ffff:127.0.1.9", NULL, NULL, LOCATE_GEOIP, 53.3, -6.3);
	assert_found(l, "2001:db8::1", NULL, NULL, LOCATE_GEOIP, 10.5, 20.25);
	/* not in the database: the default */
	assert_found(l, "127.0.2.1", NULL, NULL, LOCATE_DEFAULT, 39, -77.5);
	assert_found(l, "2001:db9::1", NULL, NULL, LOCATE_DEFAULT, 39, -77.5);
	/* through a trusted proxy GeoIP looks up the forwarded client */
	assert_found(l, "127.0.0.1", NULL, "127.0.1.77", LOCATE_GEOIP, 1.5, 2.5);
	assert_found(l, "127.0.0.1", NULL, "2001:db8::9", LOCATE_GEOIP, 10.5, 20.25);
	/* an untrusted peer's X-Forwarded-For is not looked up */
	assert_found(l, "127.0.3.1", NULL, "127.0.1.77", LOCATE_GEOIP, -33.8688, 151.2093);
	locator_free(l);

	/* networks come before GeoIP */
	cl.networks = nets;
	cl.nnetworks = 1;
	l = locator_new(&cl, err, sizeof(err));
	assert_non_null(l);
	assert_found(l, "127.0.1.5", NULL, NULL, LOCATE_NETWORK, 7, 7);
	assert_found(l, "127.0.1.77", NULL, NULL, LOCATE_GEOIP, 1.5, 2.5);
	locator_free(l);
	unlink(path);

	/* An IPv4-only database refuses IPv6 questions: a v4-mapped peer is asked as IPv4, and a
	 * real IPv6 peer simply is not found there. */
	assert_int_equal(geoip_write(path, "--ipv4-only", "127.0.1.0/24=53.3,-6.3"), 0);
	cl.networks = NULL;
	cl.nnetworks = 0;
	l = locator_new(&cl, err, sizeof(err));
	if (!l)
		fail_msg("%s", err);
	assert_found(l, "127.0.1.5", NULL, NULL, LOCATE_GEOIP, 53.3, -6.3);
	assert_found(l, "::ffff:127.0.1.5", NULL, NULL, LOCATE_GEOIP, 53.3, -6.3);
	assert_found(l, "127.0.0.1", NULL, "::ffff:127.0.1.5", LOCATE_GEOIP, 53.3, -6.3);
	assert_found(l, "2001:db8::1", NULL, NULL, LOCATE_DEFAULT, 39, -77.5);
	locator_free(l);

	unlink(path);
	rmdir(dir);
}

/* The locator is shared by every worker thread: the same answers from all of them at once. */
struct worker {
	const struct locator *l;
	int errors;
};

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	struct geo g;

	for (int i = 0; i < 20000; i++) {
		if (find(w->l, "127.0.0.1", NULL, "198.51.100.1, 203.0.113.5", &g) != LOCATE_NETWORK ||
		    g.lat != 2)
			w->errors++;
		if (find(w->l, "127.0.0.1", "1,2", NULL, &g) != LOCATE_HEADER || g.lon != 2)
			w->errors++;
		if (find(w->l, "192.0.2.1", NULL, NULL, &g) != LOCATE_DEFAULT)
			w->errors++;
	}
	return NULL;
}

static void test_threads(void **state)
{
	char *tp[] = {"127.0.0.0/8", NULL};
	struct conf_network nets[] = {{"203.0.113.0/24", 2, 2}};
	struct conf_client_location cl = {
		.header = "x-client-location",
		.trusted_proxies = tp, .ntrusted_proxies = 1,
		.networks = nets, .nnetworks = 1,
		.has_default = true, .default_lat = 39, .default_lon = -77.5,
	};
	char err[256];
	struct locator *l = locator_new(&cl, err, sizeof(err));
	struct worker w[4];
	pthread_t t[4];

	assert_non_null(l);
	for (int i = 0; i < 4; i++) {
		w[i] = (struct worker){l, 0};
		assert_int_equal(pthread_create(&t[i], NULL, worker_run, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].errors, 0);
	}
	locator_free(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_geo_parse),
		cmocka_unit_test(test_distance),
		cmocka_unit_test(test_source_names),
		cmocka_unit_test(test_networks_longest_prefix),
		cmocka_unit_test(test_networks_ipv6),
		cmocka_unit_test(test_bad_config),
		cmocka_unit_test(test_default_and_none),
		cmocka_unit_test(test_header),
		cmocka_unit_test(test_forwarded_for),
		cmocka_unit_test(test_geoip),
		cmocka_unit_test(test_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
