/* fuzz_locate.c - client location from untrusted header values: no crash, sane coordinates */
#include <arpa/inet.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "route/locate.h"

static struct locator *loc;

static struct locator *build(void)
{
	static char *proxies[] = {"127.0.0.0/8", "::1", "10.0.0.0/8", NULL};
	static struct conf_network nets[] = {
		{.cidr = "192.0.2.0/24", .lat = 53.3, .lon = -6.3},
		{.cidr = "2001:db8::/32", .lat = 37.4, .lon = -122.0},
		{.cidr = "198.51.100.0/25", .lat = 39.0, .lon = -77.5},
	};
	struct conf_client_location cl = {
		.header = "x-client-location", .trusted_proxies = proxies, .ntrusted_proxies = 3,
		.networks = nets, .nnetworks = 3, .has_default = true, .default_lat = 1,
		.default_lon = 2,
	};
	char err[256];
	struct locator *l = locator_new(&cl, err, sizeof(err));
	if (!l)
		abort();
	return l;
}

/* Input: the first byte picks the peer, the rest is "header value\nX-Forwarded-For value". */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sockaddr_in v4 = {.sin_family = AF_INET};
	struct sockaddr_in6 v6 = {.sin6_family = AF_INET6};
	const struct sockaddr *peer;
	struct geo g;

	if (!loc)
		loc = build();
	if (size < 1)
		return 0;
	switch (data[0] % 3) {
	case 0:
		inet_pton(AF_INET, "127.0.0.1", &v4.sin_addr);
		peer = (const struct sockaddr *)&v4;
		break;
	case 1:
		inet_pton(AF_INET6, "::ffff:10.1.2.3", &v6.sin6_addr);
		peer = (const struct sockaddr *)&v6;
		break;
	default:
		inet_pton(AF_INET, "203.0.113.9", &v4.sin_addr);
		peer = (const struct sockaddr *)&v4;
		break;
	}
	const char *p = (const char *)data + 1, *end = (const char *)data + size;
	const char *nl = memchr(p, '\n', (size_t)(end - p));
	struct iov hdr = {p, (size_t)((nl ? nl : end) - p)};
	struct iov xff = nl ? (struct iov){nl + 1, (size_t)(end - nl - 1)} : IOV_NULL;

	enum locate_source s = locator_find(loc, peer, &hdr, nl ? &xff : NULL, &g);
	if (s == LOCATE_NONE || !(g.lat >= -90 && g.lat <= 90 && g.lon >= -180 && g.lon <= 180))
		abort();
	if (geo_parse(hdr.base, hdr.len, &g) &&
	    !(g.lat >= -90 && g.lat <= 90 && g.lon >= -180 && g.lon <= 180))
		abort();
	double d = geo_distance_km(g, (struct geo){0, 0});
	if (!(d >= 0 && d <= 20016))
		abort();
	return 0;
}
