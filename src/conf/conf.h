/* conf.h - the configuration snapshot: YAML file to an immutable, refcounted, validated tree */
#ifndef MERIDIAN_CONF_CONF_H
#define MERIDIAN_CONF_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/buf.h"

/*
 * A struct conf is built by conf_load() and never changed afterwards. Workers take a reference
 * for each request (conf_ref/conf_unref); SIGHUP builds a new snapshot and swaps it in, and the
 * old one is freed when its last reference goes. All strings and arrays are owned by the
 * snapshot. Durations are in milliseconds, sizes in bytes.
 */

enum conf_api { CONF_API_OPENAI = 1u << 0, CONF_API_ANTHROPIC = 1u << 1 };
enum conf_auth_mode { CONF_AUTH_INJECT, CONF_AUTH_PASSTHROUGH };
enum conf_backend { CONF_BACKEND_MEMORY, CONF_BACKEND_REDIS };
enum conf_http_version { CONF_HTTP_AUTO, CONF_HTTP_1_1, CONF_HTTP_2 };

/* routing.retry_on: the failure classes, plus HTTP statuses in retry_statuses */
enum conf_retry_on { CONF_RETRY_CONNECT = 1u << 0, CONF_RETRY_TIMEOUT = 1u << 1 };

struct conf_listen {
	char *address;         /* "host:port" */
	char *region;          /* NULL: global endpoint; else every request is pinned here */
	bool share;            /* may join a port another process listens on (SO_REUSEPORT) */
};

struct conf_region {
	char *name;
	double lat, lon;
};

struct conf_provider;
struct route_dep;

/* A request's candidates are tracked in a bit set, so a provider has at most this many. */
#define CONF_MAX_DEPLOYMENTS 32

struct conf_deployment {
	struct conf_provider *provider; /* back pointer, borrowed */
	char *region;          /* a name from regions */
	const struct conf_region *reg; /* that region, resolved */
	char *url;             /* base URL without trailing '/', e.g. "https://us-east-1.api.x.ai" */
	char **models;         /* NULL-terminated; empty when models_discover */
	size_t nmodels;
	bool models_discover;  /* models: ["*"] */
	unsigned max_inflight; /* 0: unlimited */
	struct route_dep *state; /* live health and load, set by route_attach(); NULL before */
};

struct conf_provider {
	char *name;
	char **aliases;        /* NULL-terminated */
	size_t naliases;
	bool is_default;       /* plain /v1/... goes here; exactly one provider has it (or the only one) */
	unsigned api;          /* enum conf_api bits; default openai|anthropic */
	enum conf_auth_mode auth_mode;
	char *key_env;         /* inject: environment variable holding the provider key */
	char *key_file;        /* inject: or a file holding it (trailing newline stripped) */
	char *key;             /* inject: the resolved secret; never printed or logged */
	char *ca_file;         /* PEM bundle to verify the upstream with; NULL: system default */
	enum conf_http_version http_version;
	struct conf_deployment *deployments;
	size_t ndeployments;
};

struct conf_limits {
	uint64_t requests_per_minute; /* 0: unlimited */
	uint64_t tokens_per_minute;
	uint64_t max_concurrent;
};

struct conf_account {
	char *id;
	char **keys;           /* "sha256:<64 hex>" strings, NULL-terminated */
	size_t nkeys;
	struct conf_limits limits;
	char **regions;        /* NULL-terminated; nregions == 0: anywhere */
	size_t nregions;
};

/* A model's fallback chain: steps "model" (same provider) or "provider/model". */
struct conf_fallback {
	char *model;
	char **steps;          /* NULL-terminated */
	size_t nsteps;
};

struct conf_gateway {
	char *id;              /* "account/gateway" */
	uint64_t cache_ttl_ms;
	bool log_bodies;
	unsigned max_attempts; /* 0: routing.max_attempts */
	struct conf_fallback *fallbacks;
	size_t nfallbacks;
};

struct conf_network {
	char *cidr;
	double lat, lon;
};

struct conf_client_location {
	char *header;          /* NULL: none */
	char **trusted_proxies; /* CIDRs, NULL-terminated */
	size_t ntrusted_proxies;
	struct conf_network *networks;
	size_t nnetworks;
	char *geoip_db;
	bool has_default;
	double default_lat, default_lon;
};

struct conf_routing {
	unsigned max_attempts;          /* default 3 */
	unsigned retry_on;              /* enum conf_retry_on bits; default connect|timeout */
	int *retry_statuses;            /* default 429,500,502,503,504 */
	size_t nretry_statuses;
	uint64_t connect_timeout_ms;    /* default 5 s */
	uint64_t first_byte_timeout_ms; /* default 60 s */
	uint64_t idle_timeout_ms;       /* default 120 s: between two reads once bytes flow */
	uint64_t total_timeout_ms;      /* default 600 s */
	uint64_t probe_interval_ms;     /* default 5 s */
	double ms_per_1000km;           /* default 10 */
	unsigned circuit_failures;      /* consecutive failures that open a circuit, default 3 */
	uint64_t overload_cooldown_ms;  /* a 429/503/529 without Retry-After, default 5 s */
};

/* server: the front end (not in DESIGN.md's example; all optional) */
struct conf_server {
	unsigned workers;               /* 0: one per core */
	uint64_t shutdown_grace_ms;     /* default 30 s */
	unsigned max_connections;       /* per worker, default 10000 */
	uint64_t max_body;              /* default 32 MiB */
	uint64_t max_url;               /* default 8 KiB */
	uint64_t max_header_line;       /* default 16 KiB */
	uint64_t max_header_bytes;      /* default 32 KiB */
	unsigned max_headers;           /* default 100 */
	uint64_t header_timeout_ms;     /* default 10 s */
	uint64_t body_timeout_ms;       /* default 60 s */
	uint64_t keepalive_timeout_ms;  /* default 75 s */
	uint64_t send_timeout_ms;       /* default 60 s */
	uint64_t stream_buffer;         /* per-stream high-water mark, default 256 KiB */
	uint64_t busy_poll_ms;          /* 0: off (default); else a worker polls without sleeping
					 * while requests are in flight and this long after */
};

struct conf_price {
	char *model;
	double input_per_mtok, output_per_mtok;
};

struct conf {
	int refcount;                   /* atomic; use conf_ref/conf_unref */
	char *path;                     /* the file it was loaded from */

	struct conf_listen *listens;
	size_t nlistens;
	char *admin_address;            /* NULL: no admin listener */
	char *admin_token_env;
	char *global_host;              /* hosts.global; NULL: regional Host names not recognised */

	struct conf_region *regions;
	size_t nregions;
	struct conf_provider *providers;
	size_t nproviders;
	struct conf_account *accounts;
	size_t naccounts;
	struct conf_gateway *gateways;
	size_t ngateways;
	struct conf_client_location client_location;
	struct conf_routing routing;
	struct conf_server server;

	enum conf_backend cache_backend;
	uint64_t cache_max_bytes;       /* default 256 MiB */
	enum conf_backend ratelimit_backend;
	bool ratelimit_deny_on_redis_error; /* on_redis_error: deny */
	bool ratelimit_lease;               /* lease: redis nodes take budget ahead of need */
	char *redis_url;
	char *logs_store;               /* default "sqlite:meridian.db" */
	bool logs_bodies;
	uint64_t logs_retention_ms;     /* default 30 d */
	unsigned logs_queue;            /* the log writer's queue, in records: default 65536 */
	struct conf_price *prices;
	size_t nprices;

	/* What route_attach() derives from the snapshot (location tables, GeoIP database); freed
	 * with it. */
	void *route;
	void (*route_free)(void *route);
};

/* Loads and validates path. On success returns a new reference (refcount 1). On failure returns
 * NULL and writes one message to err: "FILE:LINE:COL: key 'a.b.c': what is wrong". */
struct conf *conf_load(const char *path, char *err, size_t errlen);
/* Same, from a string; name is used in messages in place of the file name. */
struct conf *conf_load_string(const char *yaml, size_t len, const char *name, char *err,
			      size_t errlen);
struct conf *conf_ref(struct conf *c);
/* Frees the snapshot when the last reference goes. Accepts NULL. */
void conf_unref(struct conf *c);

/* Lookups; borrowed results valid while the snapshot is referenced. NULL if absent. */
const struct conf_region *conf_region(const struct conf *c, const char *name);
/* By name or alias, case-sensitive. */
const struct conf_provider *conf_provider(const struct conf *c, const char *name, size_t len);
const struct conf_provider *conf_default_provider(const struct conf *c);

/* Writes what was understood, human-readable, as `meridian check` prints it: listeners, regions,
 * providers with their deployments and models, accounts (key hashes shortened, never secrets),
 * routing, limits. */
void conf_describe(const struct conf *c, struct buf *out);

/* Parses "30s", "250ms", "5m", "2h", "1d" (a bare number is seconds). -1 if invalid. */
int64_t conf_parse_duration_ms(const char *s);
/* Parses "256MiB", "8KiB", "1GiB", or a bare number of bytes. -1 if invalid. */
int64_t conf_parse_size(const char *s);

/* Parses a listen address "IPv4:port" or "[IPv6]:port" (numeric, port 0..65535) into ss.
 * Returns 0, or -EINVAL. */
int conf_parse_address(const char *s, struct sockaddr_storage *ss);

/* `meridian check [-c FILE]`: loads, prints conf_describe, exits 0; or prints the error, 1. */
int conf_check_main(int argc, char **argv);

#endif
