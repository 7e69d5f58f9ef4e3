/* locate.h - where a client is: trusted header, CIDR table, GeoIP database, or the default */
#ifndef MERIDIAN_ROUTE_LOCATE_H
#define MERIDIAN_ROUTE_LOCATE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "conf/conf.h"
#include "core/str.h"

struct geo {
	double lat, lon;              /* degrees */
};

enum locate_source {
	LOCATE_NONE,                  /* unknown: no default configured */
	LOCATE_HEADER,                /* client_location.header, sent by a trusted proxy */
	LOCATE_NETWORK,               /* client_location.networks (longest prefix wins) */
	LOCATE_GEOIP,                 /* client_location.geoip_db */
	LOCATE_DEFAULT,               /* client_location.default */
};

const char *locate_source_name(enum locate_source s);

/* The parsed form of a conf_client_location: CIDRs, the open GeoIP database. Immutable once
 * built; lookups are thread-safe. */
struct locator;

/* Builds a locator. Returns NULL with a message in err when a CIDR does not parse or the
 * GeoIP database cannot be opened or read. */
struct locator *locator_new(const struct conf_client_location *cl, char *err, size_t errlen);
void locator_free(struct locator *l);

/* Locates a client connected from peer. location_header is the value of client_location.header
 * (NULL if absent) and forwarded_for that of X-Forwarded-For (NULL if absent); both are believed
 * only when peer is in trusted_proxies. Through trusted proxies the client address is the
 * right-most X-Forwarded-For entry that is not itself a trusted proxy. Order: header,
 * networks, GeoIP, default. */
enum locate_source locator_find(const struct locator *l, const struct sockaddr *peer,
				const struct iov *location_header, const struct iov *forwarded_for,
				struct geo *out);

/* Parses "lat,lon" (decimal degrees, optional spaces; lat in [-90,90], lon in [-180,180]). */
bool geo_parse(const char *s, size_t len, struct geo *out);
/* Great-circle distance in km (haversine, mean Earth radius 6371 km). */
double geo_distance_km(struct geo a, struct geo b);

#endif
