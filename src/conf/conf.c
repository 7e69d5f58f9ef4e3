/* conf.c - the config schema (directive tables), defaults, validation and snapshot lifetime */
#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/conf.h"
#include "conf/walk.h"
#include "core/alloc.h"
#include "core/str.h"

#define MAX_FILE     (16u << 20) /* a config larger than this is a mistake */
#define MAX_KEY_FILE (64u << 10) /* "larger than 64 KiB" below */

/* T_ENUM stores an int; T_NAMED elements start with their name. */
_Static_assert(sizeof(enum conf_backend) == sizeof(int), "enum size");
_Static_assert(sizeof(enum conf_auth_mode) == sizeof(int), "enum size");
_Static_assert(sizeof(enum conf_http_version) == sizeof(int), "enum size");
_Static_assert(offsetof(struct conf_region, name) == 0, "named element");
_Static_assert(offsetof(struct conf_provider, name) == 0, "named element");
_Static_assert(offsetof(struct conf_account, id) == 0, "named element");
_Static_assert(offsetof(struct conf_gateway, id) == 0, "named element");
_Static_assert(offsetof(struct conf_price, model) == 0, "named element");

/* ---- keys that need more than a type ----------------------------------------------------------- */

static int walk_api(struct walk *w, const struct cnode *n, void *base)
{
	struct conf_provider *p = base;
	const char *s;

	if (n->type != CNODE_SEQ || n->n == 0)
		return conf__fail(w, n, "expected a non-empty list of openai, anthropic");
	p->api = 0;
	for (size_t i = 0; i < n->n; i++) {
		if (conf__get_str(w, n->items[i], &s) < 0)
			return -1;
		if (!strcmp(s, "openai"))
			p->api |= CONF_API_OPENAI;
		else if (!strcmp(s, "anthropic"))
			p->api |= CONF_API_ANTHROPIC;
		else
			return conf__fail(w, n->items[i], "expected openai or anthropic, got '%s'",
					  s);
	}
	conf__origin_add(w, &p->api, n);
	return 0;
}

static int walk_retry_on(struct walk *w, const struct cnode *n, void *base)
{
	struct conf_routing *r = base;
	const char *s;

	if (n->type != CNODE_SEQ && !conf__node_is_null(n))
		return conf__fail(w, n, "expected a list of connect, timeout or HTTP statuses");
	free(r->retry_statuses);
	r->retry_statuses = xcalloc(n->n + 1, sizeof(int));
	r->nretry_statuses = 0;
	r->retry_on = 0;
	for (size_t i = 0; i < n->n; i++) {
		const struct cnode *it = n->items[i];
		unsigned bit = 0;
		int64_t st;
		if (conf__get_str(w, it, &s) < 0)
			return -1;
		if (!strcmp(s, "connect"))
			bit = CONF_RETRY_CONNECT;
		else if (!strcmp(s, "timeout"))
			bit = CONF_RETRY_TIMEOUT;
		if (bit) {
			if (r->retry_on & bit)
				return conf__fail(w, it, "'%s' is listed twice", s);
			r->retry_on |= bit;
			continue;
		}
		st = it->plain ? str_to_i64(s, it->len) : -1;
		if (st < 400 || st > 599)
			return conf__fail(
			    w, it, "expected connect, timeout or an HTTP status 400-599, got '%s'",
			    s);
		for (size_t j = 0; j < r->nretry_statuses; j++)
			if (r->retry_statuses[j] == st)
				return conf__fail(w, it, "'%s' is listed twice", s);
		r->retry_statuses[r->nretry_statuses++] = (int)st;
	}
	conf__origin_add(w, &r->retry_on, n);
	return 0;
}

/* fallbacks: {MODEL: [STEP, ...]}, a step "model" or "provider/model" (checked once providers
 * are known). */
static int walk_fallbacks(struct walk *w, const struct cnode *n, void *base)
{
	struct conf_gateway *g = base;
	const char *s;

	if (n->type != CNODE_MAP)
		return conf__fail(w, n, "expected a map from a model to its list of fallbacks");
	g->fallbacks = xcalloc(n->n / 2 + 1, sizeof(*g->fallbacks));
	for (size_t i = 0; i + 1 < n->n; i += 2) {
		const struct cnode *k = n->items[i], *v = n->items[i + 1];
		struct conf_fallback *f = &g->fallbacks[g->nfallbacks];
		if (conf__get_str(w, k, &s) < 0)
			return -1;
		if (v->type != CNODE_SEQ || v->n == 0)
			return conf__fail(w, v, "expected a non-empty list of models");
		f->model = xstrdup(s);
		f->steps = xcalloc(v->n + 1, sizeof(char *));
		g->nfallbacks++;
		for (size_t j = 0; j < v->n; j++) {
			if (conf__get_str(w, v->items[j], &s) < 0)
				return -1;
			if (!*s)
				return conf__fail(w, v->items[j], "not a model name");
			f->steps[f->nsteps] = xstrdup(s);
			conf__origin_add(w, &f->steps[f->nsteps], v->items[j]);
			f->nsteps++;
		}
	}
	return 0;
}

static int walk_on_redis_error(struct walk *w, const struct cnode *n, void *base)
{
	struct conf *c = base;
	const char *s;

	if (conf__get_str(w, n, &s) < 0)
		return -1;
	if (!strcmp(s, "allow"))
		c->ratelimit_deny_on_redis_error = false;
	else if (!strcmp(s, "deny"))
		c->ratelimit_deny_on_redis_error = true;
	else
		return conf__fail(w, n, "expected allow or deny, got '%s'", s);
	conf__origin_add(w, &c->ratelimit_deny_on_redis_error, n);
	return 0;
}

/* ---- the schema: one table per mapping, offsets into the struct that mapping fills --------------- */

/* the tables are aligned by hand to read as a schema */
/* clang-format off */
#define F(type, field) offsetof(struct type, field)
#define REQ .flags = D_REQ
#define K(key_, type_, st, field, ...) {.key = key_, .type = type_, .off = F(st, field), __VA_ARGS__}
#define STRS(key_, st, field, count, ...) K(key_, T_STRS, st, field, .off2 = F(st, count), __VA_ARGS__)
#define ARRAY(key_, type_, st, field, count, el, table, ...) \
	K(key_, type_, st, field, .off2 = F(st, count), .sub = table, .size = sizeof(struct el), __VA_ARGS__)

static const char *const backends[] = {"memory", "redis", NULL};
static const char *const auth_modes[] = {"inject", "passthrough", NULL};
static const char *const http_versions[] = {"auto", "1.1", "2", NULL};

static const struct dir listen_dirs[] = {               /* struct conf_listen */
	K("address",            T_STR,       conf_listen, address, REQ),
	K("region",             T_STR,       conf_listen, region),
	K("share",              T_BOOL,      conf_listen, share),
	{0},
};

static const struct dir admin_dirs[] = {                /* struct conf */
	K("address",            T_STR,       conf, admin_address, REQ),
	K("token_env",          T_STR,       conf, admin_token_env),
	{0},
};

static const struct dir hosts_dirs[] = {                /* struct conf */
	K("global",             T_STR,       conf, global_host),
	{0},
};

static const struct dir region_dirs[] = {               /* struct conf_region */
	K("location",           T_LOC,       conf_region, lat, REQ, .off2 = F(conf_region, lon)),
	{0},
};

static const struct dir auth_dirs[] = {                 /* struct conf_provider */
	K("mode",               T_ENUM,      conf_provider, auth_mode, REQ, .names = auth_modes),
	K("key_env",            T_STR,       conf_provider, key_env),
	K("key_file",           T_STR,       conf_provider, key_file),
	{0},
};

static const struct dir deployment_dirs[] = {           /* struct conf_deployment */
	K("region",             T_STR,       conf_deployment, region, REQ),
	K("url",                T_STR,       conf_deployment, url, REQ),
	STRS("models", conf_deployment, models, nmodels, REQ),
	K("max_inflight",       T_UINT,      conf_deployment, max_inflight),
	{0},
};

static const struct dir provider_dirs[] = {             /* struct conf_provider */
	STRS("aliases", conf_provider, aliases, naliases),
	K("default",            T_BOOL,      conf_provider, is_default),
	{.key = "api", .type = T_FN, .fn = walk_api},
	{.key = "auth", .type = T_MAP, REQ, .sub = auth_dirs},
	K("ca_file",            T_STR,       conf_provider, ca_file),
	K("http_version",       T_ENUM,      conf_provider, http_version, .names = http_versions),
	ARRAY("deployments", T_LIST, conf_provider, deployments, ndeployments, conf_deployment,
	      deployment_dirs, REQ),
	{0},
};

static const struct dir limits_dirs[] = {               /* struct conf_limits */
	K("requests_per_minute",T_U64,       conf_limits, requests_per_minute),
	K("tokens_per_minute",  T_U64,       conf_limits, tokens_per_minute),
	K("max_concurrent",     T_U64,       conf_limits, max_concurrent),
	{0},
};

static const struct dir account_dirs[] = {              /* struct conf_account */
	STRS("keys", conf_account, keys, nkeys, REQ),
	K("limits",             T_MAP,       conf_account, limits, .sub = limits_dirs),
	STRS("regions", conf_account, regions, nregions),
	{0},
};

static const struct dir gateway_dirs[] = {              /* struct conf_gateway */
	K("cache_ttl",          T_DURATION,  conf_gateway, cache_ttl_ms),
	K("log_bodies",         T_BOOL,      conf_gateway, log_bodies),
	K("max_attempts",       T_UINT,      conf_gateway, max_attempts, .min = 1, .max = 10),
	{.key = "fallbacks", .type = T_FN, .fn = walk_fallbacks},
	{0},
};

static const struct dir network_dirs[] = {              /* struct conf_network */
	K("cidr",               T_STR,       conf_network, cidr, REQ),
	K("location",           T_LOC,       conf_network, lat, REQ, .off2 = F(conf_network, lon)),
	{0},
};

static const struct dir client_location_dirs[] = {      /* struct conf_client_location */
	K("header",             T_STR,       conf_client_location, header),
	STRS("trusted_proxies", conf_client_location, trusted_proxies, ntrusted_proxies),
	ARRAY("networks", T_LIST, conf_client_location, networks, nnetworks, conf_network,
	      network_dirs),
	K("geoip_db",           T_STR,       conf_client_location, geoip_db),
	K("default",            T_LOC,       conf_client_location, default_lat, .off2 = F(conf_client_location, default_lon)),
	{0},
};

static const struct dir timeouts_dirs[] = {             /* struct conf_routing */
	K("connect",            T_DURATION,  conf_routing, connect_timeout_ms, .min = 1),
	K("first_byte",         T_DURATION,  conf_routing, first_byte_timeout_ms, .min = 1),
	K("idle",               T_DURATION,  conf_routing, idle_timeout_ms, .min = 1),
	K("total",              T_DURATION,  conf_routing, total_timeout_ms, .min = 1),
	{0},
};

static const struct dir routing_dirs[] = {              /* struct conf_routing */
	K("max_attempts",       T_UINT,      conf_routing, max_attempts, .min = 1, .max = 10),
	{.key = "retry_on", .type = T_FN, .fn = walk_retry_on},
	{.key = "timeouts", .type = T_MAP, .sub = timeouts_dirs},
	K("probe_interval",     T_DURATION,  conf_routing, probe_interval_ms, .min = 1),
	K("ms_per_1000km",      T_DOUBLE,    conf_routing, ms_per_1000km, .flags = D_NONNEG),
	K("circuit_failures",   T_UINT,      conf_routing, circuit_failures, .min = 1, .max = 1000),
	K("overload_cooldown",  T_DURATION,  conf_routing, overload_cooldown_ms, .min = 1),
	{0},
};

static const struct dir server_dirs[] = {               /* struct conf_server */
	K("workers",            T_UINT,      conf_server, workers, .max = 1024),
	K("shutdown_grace",     T_DURATION,  conf_server, shutdown_grace_ms),
	K("max_connections",    T_UINT,      conf_server, max_connections, .min = 1),
	K("max_body",           T_SIZE,      conf_server, max_body, .min = 1),
	K("max_url",            T_SIZE,      conf_server, max_url, .min = 1),
	K("max_header_line",    T_SIZE,      conf_server, max_header_line, .min = 1),
	K("max_header_bytes",   T_SIZE,      conf_server, max_header_bytes, .min = 1),
	K("max_headers",        T_UINT,      conf_server, max_headers, .min = 1),
	K("header_timeout",     T_DURATION,  conf_server, header_timeout_ms, .min = 1),
	K("body_timeout",       T_DURATION,  conf_server, body_timeout_ms, .min = 1),
	K("keepalive_timeout",  T_DURATION,  conf_server, keepalive_timeout_ms, .min = 1),
	K("send_timeout",       T_DURATION,  conf_server, send_timeout_ms, .min = 1),
	K("stream_buffer",      T_SIZE,      conf_server, stream_buffer, .min = 1),
	K("busy_poll",          T_DURATION,  conf_server, busy_poll_ms),
	{0},
};

static const struct dir cache_dirs[] = {                /* struct conf */
	K("backend",            T_ENUM,      conf, cache_backend, .names = backends),
	K("max_bytes",          T_SIZE,      conf, cache_max_bytes, .min = 1),
	{0},
};

static const struct dir ratelimit_dirs[] = {            /* struct conf */
	K("backend",            T_ENUM,      conf, ratelimit_backend, .names = backends),
	{.key = "on_redis_error", .type = T_FN, .fn = walk_on_redis_error},
	K("lease",              T_BOOL,      conf, ratelimit_lease),
	{0},
};

static const struct dir redis_dirs[] = {                /* struct conf */
	K("url",                T_STR,       conf, redis_url, REQ),
	{0},
};

static const struct dir logs_dirs[] = {                 /* struct conf */
	K("store",              T_STR,       conf, logs_store),
	K("bodies",             T_BOOL,      conf, logs_bodies),
	K("retention",          T_DURATION,  conf, logs_retention_ms),
	K("queue",              T_UINT,      conf, logs_queue, .min = 1, .max = 16u << 20),
	{0},
};

static const struct dir price_dirs[] = {                /* struct conf_price */
	K("input_per_mtok",     T_DOUBLE,    conf_price, input_per_mtok, .flags = D_NONNEG),
	K("output_per_mtok",    T_DOUBLE,    conf_price, output_per_mtok, .flags = D_NONNEG),
	{0},
};

static const struct dir top_dirs[] = {                  /* struct conf */
	ARRAY("listen", T_LIST, conf, listens, nlistens, conf_listen, listen_dirs, REQ),
	{.key = "admin", .type = T_MAP, .sub = admin_dirs},
	{.key = "hosts", .type = T_MAP, .sub = hosts_dirs},
	ARRAY("regions", T_NAMED, conf, regions, nregions, conf_region, region_dirs),
	ARRAY("providers", T_NAMED, conf, providers, nproviders, conf_provider, provider_dirs),
	ARRAY("accounts", T_NAMED, conf, accounts, naccounts, conf_account, account_dirs),
	ARRAY("gateways", T_NAMED, conf, gateways, ngateways, conf_gateway, gateway_dirs),
	K("client_location",    T_MAP,       conf, client_location, .sub = client_location_dirs),
	K("routing",            T_MAP,       conf, routing, .sub = routing_dirs),
	K("server",             T_MAP,       conf, server, .sub = server_dirs),
	{.key = "cache", .type = T_MAP, .sub = cache_dirs},
	{.key = "ratelimit", .type = T_MAP, .sub = ratelimit_dirs},
	{.key = "redis", .type = T_MAP, .sub = redis_dirs},
	{.key = "logs", .type = T_MAP, .sub = logs_dirs},
	ARRAY("prices", T_NAMED, conf, prices, nprices, conf_price, price_dirs),
	{0},
};

/* clang-format on */

static void set_defaults(struct conf *c)
{
	static const int statuses[] = {429, 500, 502, 503, 504, 529};
	struct conf_routing *r = &c->routing;
	struct conf_server *s = &c->server;

	r->max_attempts = 3;
	r->retry_on = CONF_RETRY_CONNECT | CONF_RETRY_TIMEOUT;
	r->retry_statuses = xcalloc(ARRAY_SIZE(statuses) + 1, sizeof(int));
	memcpy(r->retry_statuses, statuses, sizeof(statuses));
	r->nretry_statuses = ARRAY_SIZE(statuses);
	r->connect_timeout_ms = 5000;
	r->first_byte_timeout_ms = 60000;
	r->idle_timeout_ms = 120000;
	r->total_timeout_ms = 600000;
	r->probe_interval_ms = 5000;
	r->ms_per_1000km = 10;
	r->circuit_failures = 3;
	r->overload_cooldown_ms = 5000;

	s->workers = 0;
	s->shutdown_grace_ms = 30000;
	s->max_connections = 10000;
	s->max_body = 32u << 20;
	s->max_url = 8u << 10;
	s->max_header_line = 16u << 10;
	s->max_header_bytes = 32u << 10;
	s->max_headers = 100;
	s->header_timeout_ms = 10000;
	s->body_timeout_ms = 60000;
	s->keepalive_timeout_ms = 75000;
	s->send_timeout_ms = 60000;
	s->stream_buffer = 256u << 10;

	c->cache_backend = CONF_BACKEND_MEMORY;
	c->cache_max_bytes = 256u << 20;
	c->ratelimit_backend = CONF_BACKEND_MEMORY;
	c->ratelimit_lease = true;
	c->logs_store = xstrdup("sqlite:meridian.db");
	c->logs_retention_ms = 30ull * 86400000;
	c->logs_queue = 65536;
}

/* ---- validation ------------------------------------------------------------------------------------- */

/* Names that appear in URL paths (/v1/{account}/{gateway}/{provider}/...) and in "provider/model". */
static bool is_ident(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("._-", *s))
			return false;
	return true;
}

/* A DNS label: regions also name hosts (<region>.<global host>). */
static bool is_dns_label(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
		return false;
	for (; *s; s++)
		if (!(*s >= 'a' && *s <= 'z') && !(*s >= '0' && *s <= '9') && *s != '-')
			return false;
	return true;
}

static bool has_ctl(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

int conf_parse_address(const char *s, struct sockaddr_storage *ss)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *colon, *hs = s;
	size_t hlen;
	int64_t port;

	memset(ss, 0, sizeof(*ss));
	if (*s == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		hs = s + 1;
		hlen = (size_t)(close - hs);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -EINVAL;
		hlen = (size_t)(colon - s);
	}
	if (hlen == 0 || hlen >= sizeof(host))
		return -EINVAL;
	memcpy(host, hs, hlen);
	host[hlen] = '\0';
	port = str_to_i64(colon + 1, strlen(colon + 1));
	if (port < 0 || port > 65535)
		return -EINVAL;
	if (*s == '[') {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
		if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
			return -EINVAL;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)ss;
		if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
			return -EINVAL;
		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
	}
	return 0;
}

static bool is_cidr(const char *s)
{
	char addr[INET6_ADDRSTRLEN + 1];
	unsigned char bin[16];
	const char *slash = strchr(s, '/');
	size_t alen = slash ? (size_t)(slash - s) : strlen(s);
	int af;

	if (alen == 0 || alen >= sizeof(addr))
		return false;
	memcpy(addr, s, alen);
	addr[alen] = '\0';
	af = strchr(addr, ':') ? AF_INET6 : AF_INET;
	if (inet_pton(af, addr, bin) != 1)
		return false;
	if (!slash)
		return true; /* a single address */
	int64_t bits = str_to_i64(slash + 1, strlen(slash + 1));
	return bits >= 0 && bits <= (af == AF_INET6 ? 128 : 32);
}

static int check_address(struct walk *w, const char *const *field)
{
	struct sockaddr_storage ss;
	if (conf_parse_address(*field, &ss) < 0)
		return conf__fail_field(w, field,
					"expected host:port with a numeric IP, like 0.0.0.0:8080 "
					"or [::1]:8080, got '%.60s'",
					*field);
	return 0;
}

static int check_region(struct walk *w, const struct conf *c, char *const *field)
{
	const char *names[64];
	size_t n = c->nregions < ARRAY_SIZE(names) ? c->nregions : ARRAY_SIZE(names);
	const char *s;

	if (conf_region(c, *field))
		return 0;
	for (size_t i = 0; i < n; i++)
		names[i] = c->regions[i].name;
	s = conf__suggest(*field, names, n);
	if (s)
		return conf__fail_field(w, field, "unknown region '%s'; did you mean '%s'?", *field,
					s);
	if (c->nregions == 0)
		return conf__fail_field(w, field, "unknown region '%s': no regions are defined",
					*field);
	return conf__fail_field(w, field, "unknown region '%s'", *field);
}

/* A base URL: http(s), a host, no query or fragment. The trailing '/' goes, since request paths
 * are appended to it. libcurl's parser decides what a URL is, as it is what will fetch it. */
static int check_url(struct walk *w, char **field)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *query = NULL, *frag = NULL;
	int rc = 0;
	size_t n;

	if (!u)
		abort();
	if (has_ctl(*field) || curl_url_set(u, CURLUPART_URL, *field, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !*host)
		rc = conf__fail_field(w, field, "expected an http:// or https:// URL, got '%.60s'",
				      *field);
	else if (strcmp(scheme, "http") && strcmp(scheme, "https"))
		rc = conf__fail_field(w, field, "expected an http:// or https:// URL, not %s://",
				      scheme);
	else if (curl_url_get(u, CURLUPART_QUERY, &query, 0) == CURLUE_OK ||
		 curl_url_get(u, CURLUPART_FRAGMENT, &frag, 0) == CURLUE_OK)
		rc = conf__fail_field(w, field, "a deployment URL takes no query or fragment");
	curl_free(scheme);
	curl_free(host);
	curl_free(query);
	curl_free(frag);
	curl_url_cleanup(u);
	for (n = strlen(*field); rc == 0 && n > 0 && (*field)[n - 1] == '/'; n--)
		(*field)[n - 1] = '\0';
	return rc;
}

/* Reads at most cap - 1 bytes of a regular file into buf, NUL-terminated. 0, or -errno
 * (-EFBIG: too large). Never blocks on a FIFO or a device. */
static int read_small_file(const char *path, char *buf, size_t cap)
{
	struct stat st;
	size_t n = 0;
	ssize_t r = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK), rc = 0;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		rc = -errno;
	else if (!S_ISREG(st.st_mode))
		rc = -EINVAL;
	while (rc == 0 && n < cap && (r = read(fd, buf + n, cap - n)) > 0)
		n += (size_t)r;
	if (rc == 0 && r < 0)
		rc = -errno;
	else if (rc == 0 && n == cap)
		rc = -EFBIG;
	close(fd);
	buf[rc == 0 ? n : 0] = '\0';
	return rc;
}

/* Reads the provider key at load time, so that a missing secret fails `check`, not a request.
 * Messages name the variable or file, never the value. */
static int load_key(struct walk *w, struct conf_provider *p)
{
	char buf[MAX_KEY_FILE + 1];
	const void *field = p->key_env ? (const void *)&p->key_env : (const void *)&p->key_file;
	const char *what = p->key_env ? "environment variable" : "key file";
	const char *name = p->key_env ? p->key_env : p->key_file;
	const char *v = p->key_env ? getenv(p->key_env) : NULL;
	size_t n;
	int rc = 0;

	buf[0] = '\0';
	if (p->key_env && !v)
		return conf__fail_field(w, field, "environment variable '%s' is not set", name);
	if (p->key_env && strlen(v) >= sizeof(buf))
		return conf__fail_field(w, field, "environment variable '%s' is too long", name);
	if (p->key_env)
		memcpy(buf, v, strlen(v) + 1);
	else if ((rc = read_small_file(name, buf, sizeof(buf))) < 0)
		return conf__fail_field(w, field, "cannot read '%s': %s", name,
					rc == -EINVAL  ? "not a regular file"
					: rc == -EFBIG ? "larger than 64 KiB"
						       : strerror(-rc));
	/* files end with a newline; a key never does */
	for (n = strlen(buf); n > 0 && isspace((unsigned char)buf[n - 1]); n--)
		buf[n - 1] = '\0';
	for (size_t i = 0; i < n && rc == 0; i++)
		if ((unsigned char)buf[i] <= ' ' || buf[i] == 0x7f)
			rc = conf__fail_field(
			    w, field, "the key in %s '%s' contains a space or control character",
			    what, name);
	if (rc == 0 && n == 0)
		rc = conf__fail_field(w, field, "%s '%s' is empty", what, name);
	if (rc == 0)
		p->key = xstrdup(buf);
	explicit_bzero(buf, sizeof(buf));
	return rc;
}

static int check_provider(struct walk *w, struct conf *c, struct conf_provider *p)
{
	if (!is_ident(p->name))
		return conf__fail_field(w, &p->name,
					"a provider name takes letters, digits, '.', '_' and '-'");
	for (size_t i = 0; i < p->naliases; i++) {
		const char *a = p->aliases[i];
		if (!is_ident(a))
			return conf__fail_field(w, &p->aliases[i],
						"an alias takes letters, digits, '.', '_' and '-'");
		for (size_t j = 0; j < c->nproviders; j++) {
			const struct conf_provider *q = &c->providers[j];
			if (!strcmp(q->name, a))
				return conf__fail_field(
				    w, &p->aliases[i],
				    "alias '%s' is already the name of provider '%s'", a, q->name);
			for (size_t k = 0; k < q->naliases && (q < p || (q == p && k < i)); k++)
				if (!strcmp(q->aliases[k], a))
					return conf__fail_field(
					    w, &p->aliases[i],
					    "alias '%s' is already used by provider '%s'", a,
					    q->name);
		}
	}
	if (p->api == 0)
		p->api = CONF_API_OPENAI | CONF_API_ANTHROPIC;

	if (p->auth_mode == CONF_AUTH_PASSTHROUGH) {
		if (p->key_env)
			return conf__fail_field(
			    w, &p->key_env,
			    "mode passthrough forwards the client's key; remove key_env");
		if (p->key_file)
			return conf__fail_field(
			    w, &p->key_file,
			    "mode passthrough forwards the client's key; remove key_file");
	} else {
		if (!p->key_env && !p->key_file)
			return conf__fail_field(w, &p->auth_mode,
						"mode inject needs key_env or key_file");
		if (p->key_env && p->key_file)
			return conf__fail_field(w, &p->key_file,
						"give key_env or key_file, not both");
		if (load_key(w, p) < 0)
			return -1;
	}
	if (p->ca_file && access(p->ca_file, R_OK) < 0)
		return conf__fail_field(w, &p->ca_file, "cannot read '%s': %s", p->ca_file,
					strerror(errno));

	if (p->ndeployments == 0)
		return conf__fail_field(w, &p->deployments,
					"a provider needs at least one deployment");
	if (p->ndeployments > CONF_MAX_DEPLOYMENTS)
		return conf__fail_field(w, &p->deployments,
					"a provider has at most %d deployments", CONF_MAX_DEPLOYMENTS);
	for (size_t i = 0; i < p->ndeployments; i++) {
		struct conf_deployment *d = &p->deployments[i];
		d->provider = p;
		if (check_region(w, c, &d->region) < 0 || check_url(w, &d->url) < 0)
			return -1;
		d->reg = conf_region(c, d->region);
		if (d->nmodels == 0)
			return conf__fail_field(
			    w, &d->models, "list at least one model, or \"*\" to discover them");
		for (size_t j = 0; j < d->nmodels; j++) {
			if (!strcmp(d->models[j], "*")) {
				if (d->nmodels > 1)
					return conf__fail_field(w, &d->models[j],
								"\"*\" (discover the models) must "
								"be alone in the list");
				d->models_discover = true;
			} else if (!*d->models[j] || has_ctl(d->models[j])) {
				return conf__fail_field(w, &d->models[j], "not a model name");
			}
		}
		if (d->models_discover) {
			xfree(d->models[0]);
			d->nmodels = 0;
		}
	}
	return 0;
}

static int check_account(struct walk *w, struct conf *c, struct conf_account *a)
{
	if (!is_ident(a->id))
		return conf__fail_field(w, &a->id,
					"an account id takes letters, digits, '.', '_' and '-'");
	if (a->nkeys == 0)
		return conf__fail_field(w, &a->keys, "an account needs at least one key hash");
	for (size_t i = 0; i < a->nkeys; i++) {
		const char *k = a->keys[i];
		bool ok = strlen(k) == 7 + 64 && !strncmp(k, "sha256:", 7);
		for (size_t j = 7; ok && k[j]; j++)
			ok = (k[j] >= '0' && k[j] <= '9') || (k[j] >= 'a' && k[j] <= 'f');
		if (!ok)
			return conf__fail_field(w, &a->keys[i],
						"expected \"sha256:\" and 64 lowercase hex digits "
						"(`meridian key new` prints one)");
	}
	for (size_t i = 0; i < a->nregions; i++)
		if (check_region(w, c, &a->regions[i]) < 0)
			return -1;
	return 0;
}

/* A key hash authenticates one account; sorted, as configs may list many thousands. */
static int check_unique_keys(struct walk *w, const struct conf *c)
{
	size_t n = 0, k = 0, dup, first = 0;
	const char **keys;
	const struct conf_account **owner;
	char ***field;
	int rc = 0;

	for (size_t i = 0; i < c->naccounts; i++)
		n += c->accounts[i].nkeys;
	keys = xcalloc(n + 1, sizeof(*keys));
	owner = xcalloc(n + 1, sizeof(*owner));
	field = xcalloc(n + 1, sizeof(*field));
	for (size_t i = 0; i < c->naccounts; i++) {
		for (size_t j = 0; j < c->accounts[i].nkeys; j++, k++) {
			keys[k] = c->accounts[i].keys[j];
			owner[k] = &c->accounts[i];
			field[k] = &c->accounts[i].keys[j];
		}
	}
	dup = conf__find_dup(keys, n, &first);
	if (dup != SIZE_MAX)
		rc = conf__fail_field(w, field[dup], "this key is already listed for account '%s'",
				      owner[first]->id);
	free(keys);
	free(owner);
	free(field);
	return rc;
}

static int check_gateway(struct walk *w, struct conf *c, struct conf_gateway *g)
{
	const char *slash = strchr(g->id, '/');
	char acct[256];

	if (!slash || slash == g->id || (size_t)(slash - g->id) >= sizeof(acct) ||
	    !is_ident(slash + 1))
		return conf__fail_field(w, &g->id, "expected \"account/gateway\"");
	memcpy(acct, g->id, (size_t)(slash - g->id));
	acct[slash - g->id] = '\0';
	bool known = false;
	for (size_t i = 0; i < c->naccounts; i++)
		known |= !strcmp(c->accounts[i].id, acct);
	if (!known)
		return conf__fail_field(w, &g->id, "unknown account '%s'", acct);
	/* a step naming a provider must name one that exists */
	for (size_t i = 0; i < g->nfallbacks; i++)
		for (size_t j = 0; j < g->fallbacks[i].nsteps; j++) {
			const char *st = g->fallbacks[i].steps[j], *sl = strchr(st, '/');
			if (sl && (sl == st || !sl[1] || !conf_provider(c, st, (size_t)(sl - st))))
				return conf__fail_field(w, &g->fallbacks[i].steps[j],
							"'%s' names no provider; expected \"model\" "
							"or \"provider/model\"", st);
		}
	return 0;
}

static int check_client_location(struct walk *w, struct conf_client_location *cl)
{
	if (cl->header) {
		for (char *p = cl->header; *p; p++) {
			if (!isalnum((unsigned char)*p) && !strchr("!#$%&'*+-.^_`|~", *p))
				return conf__fail_field(w, &cl->header, "not an HTTP header name");
			*p = (char)tolower((unsigned char)*p);
		}
		if (!*cl->header)
			return conf__fail_field(w, &cl->header, "not an HTTP header name");
	}
	for (size_t i = 0; i < cl->ntrusted_proxies; i++)
		if (!is_cidr(cl->trusted_proxies[i]))
			return conf__fail_field(
			    w, &cl->trusted_proxies[i],
			    "expected an address or CIDR like 10.0.0.0/8, got '%.60s'",
			    cl->trusted_proxies[i]);
	for (size_t i = 0; i < cl->nnetworks; i++)
		if (!is_cidr(cl->networks[i].cidr))
			return conf__fail_field(w, &cl->networks[i].cidr,
						"expected a CIDR like 10.20.0.0/16, got '%.60s'",
						cl->networks[i].cidr);
	cl->has_default = conf__origin(w, &cl->default_lat) != NULL;
	return 0;
}

static void list_ensure(char ***l)
{
	if (!*l)
		*l = xcalloc(1, sizeof(char *));
}

static int validate(struct walk *w, struct conf *c)
{
	const struct conf_provider *dflt = NULL;

	if (c->nlistens == 0)
		return conf__fail_field(w, &c->listens, "at least one listen address is required");
	for (size_t i = 0; i < c->nlistens; i++) {
		struct conf_listen *l = &c->listens[i];
		if (check_address(w, (const char *const *)&l->address) < 0)
			return -1;
		for (size_t j = 0; j < i; j++)
			if (!strcmp(c->listens[j].address, l->address))
				return conf__fail_field(
				    w, &l->address, "'%s' is already listen[%zu]", l->address, j);
		if (l->region && check_region(w, c, &l->region) < 0)
			return -1;
	}
	if (c->admin_address && check_address(w, (const char *const *)&c->admin_address) < 0)
		return -1;
	if (c->global_host) {
		bool ok = *c->global_host != '\0';
		for (char *p = c->global_host; *p; p++) {
			ok = ok && (isalnum((unsigned char)*p) || *p == '.' || *p == '-');
			*p = (char)tolower((unsigned char)*p);
		}
		if (!ok)
			return conf__fail_field(w, &c->global_host,
						"expected a host name like api.example.com");
	}
	for (size_t i = 0; i < c->nregions; i++)
		if (!is_dns_label(c->regions[i].name))
			return conf__fail_field(
			    w, &c->regions[i].name,
			    "a region name is a DNS label: lowercase letters, digits and '-'");

	for (size_t i = 0; i < c->nproviders; i++) {
		struct conf_provider *p = &c->providers[i];
		list_ensure(&p->aliases);
		if (check_provider(w, c, p) < 0)
			return -1;
		if (p->is_default && dflt)
			return conf__fail_field(w, &p->is_default,
						"provider '%s' is already the default", dflt->name);
		if (p->is_default)
			dflt = p;
	}
	if (c->nproviders == 1)
		c->providers[0].is_default = true;

	for (size_t i = 0; i < c->naccounts; i++) {
		list_ensure(&c->accounts[i].regions);
		if (check_account(w, c, &c->accounts[i]) < 0)
			return -1;
	}
	if (check_unique_keys(w, c) < 0)
		return -1;
	for (size_t i = 0; i < c->ngateways; i++)
		if (check_gateway(w, c, &c->gateways[i]) < 0)
			return -1;
	list_ensure(&c->client_location.trusted_proxies);
	if (check_client_location(w, &c->client_location) < 0)
		return -1;

	if (c->cache_backend == CONF_BACKEND_REDIS && !c->redis_url)
		return conf__fail_field(w, &c->cache_backend, "backend redis needs redis.url");
	if (c->ratelimit_backend == CONF_BACKEND_REDIS && !c->redis_url)
		return conf__fail_field(w, &c->ratelimit_backend, "backend redis needs redis.url");
	/* URLs may carry a password: they are never echoed in messages */
	if (c->redis_url && strncmp(c->redis_url, "redis://", 8) &&
	    strncmp(c->redis_url, "rediss://", 9) && strncmp(c->redis_url, "unix://", 7))
		return conf__fail_field(w, &c->redis_url,
					"expected a redis://, rediss:// or unix:// URL");
	if (c->redis_url && !strncmp(c->redis_url, "rediss://", 9))
		return conf__fail_field(w, &c->redis_url,
					"rediss:// (TLS) is not supported: this build's hiredis "
					"(0.14) has no TLS; use redis:// over a trusted network or "
					"unix://");
	if (!(strncmp(c->logs_store, "sqlite:", 7) == 0 && c->logs_store[7]) &&
	    strncmp(c->logs_store, "postgres://", 11) &&
	    strncmp(c->logs_store, "postgresql://", 13) && strcmp(c->logs_store, "off"))
		return conf__fail_field(w, &c->logs_store,
					"expected \"sqlite:PATH\", a postgres:// URL or \"off\"");
	return 0;
}

/* ---- lifetime ----------------------------------------------------------------------------------------- */

static void list_free(char **l, size_t n)
{
	for (size_t i = 0; l && i < n; i++)
		free(l[i]);
	free(l);
}

static void conf_free(struct conf *c)
{
	if (c->route_free)
		c->route_free(c->route);
	for (size_t i = 0; i < c->nlistens; i++) {
		free(c->listens[i].address);
		free(c->listens[i].region);
	}
	free(c->listens);
	for (size_t i = 0; i < c->nregions; i++)
		free(c->regions[i].name);
	free(c->regions);
	for (size_t i = 0; i < c->nproviders; i++) {
		struct conf_provider *p = &c->providers[i];
		for (size_t j = 0; j < p->ndeployments; j++) {
			struct conf_deployment *d = &p->deployments[j];
			free(d->region);
			free(d->url);
			list_free(d->models, d->nmodels);
		}
		free(p->deployments);
		free(p->name);
		list_free(p->aliases, p->naliases);
		free(p->key_env);
		free(p->key_file);
		if (p->key)
			explicit_bzero(p->key, strlen(p->key));
		free(p->key);
		free(p->ca_file);
	}
	free(c->providers);
	for (size_t i = 0; i < c->naccounts; i++) {
		free(c->accounts[i].id);
		list_free(c->accounts[i].keys, c->accounts[i].nkeys);
		list_free(c->accounts[i].regions, c->accounts[i].nregions);
	}
	free(c->accounts);
	for (size_t i = 0; i < c->ngateways; i++) {
		struct conf_gateway *g = &c->gateways[i];
		free(g->id);
		for (size_t j = 0; j < g->nfallbacks; j++) {
			free(g->fallbacks[j].model);
			list_free(g->fallbacks[j].steps, g->fallbacks[j].nsteps);
		}
		free(g->fallbacks);
	}
	free(c->gateways);
	free(c->client_location.header);
	list_free(c->client_location.trusted_proxies, c->client_location.ntrusted_proxies);
	for (size_t i = 0; i < c->client_location.nnetworks; i++)
		free(c->client_location.networks[i].cidr);
	free(c->client_location.networks);
	free(c->client_location.geoip_db);
	free(c->routing.retry_statuses);
	for (size_t i = 0; i < c->nprices; i++)
		free(c->prices[i].model);
	free(c->prices);
	free(c->path);
	free(c->admin_address);
	free(c->admin_token_env);
	free(c->global_host);
	free(c->redis_url);
	free(c->logs_store);
	free(c);
}

struct conf *conf_load_string(const char *yaml, size_t len, const char *name, char *err,
			      size_t errlen)
{
	struct walk w = {.name = name, .err = err, .errlen = errlen};
	struct cnode *root = NULL;
	struct conf *c = NULL;

	if (errlen)
		err[0] = '\0';
	root = conf__yaml_parse(&w, yaml, len);
	if (!root)
		goto out;
	w.root = root;
	c = xcalloc(1, sizeof(*c));
	c->refcount = 1;
	c->path = xstrdup(name);
	set_defaults(c);
	if (conf__walk_map(&w, root, top_dirs, c) < 0 || validate(&w, c) < 0) {
		conf_free(c);
		c = NULL;
	}
out:
	conf__node_free(root);
	free(w.origins);
	return c;
}

struct conf *conf_load(const char *path, char *err, size_t errlen)
{
	struct conf *c = NULL;
	struct stat st;
	char *data = NULL;
	size_t n = 0;
	ssize_t r = 0;
	/* O_NONBLOCK: opening a FIFO by mistake must not hang `check` */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0 || fstat(fd, &st) < 0) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > (off_t)MAX_FILE) {
		snprintf(err, errlen, "%s: %s", path,
			 S_ISREG(st.st_mode) ? "larger than 16 MiB, not a config"
					     : "not a regular file");
		goto out;
	}
	data = xmalloc((size_t)st.st_size + 1);
	while (n < (size_t)st.st_size && (r = read(fd, data + n, (size_t)st.st_size - n)) > 0)
		n += (size_t)r;
	if (r < 0) {
		snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
		goto out;
	}
	c = conf_load_string(data, n, path, err, errlen);
out:
	if (fd >= 0)
		close(fd);
	free(data);
	return c;
}

struct conf *conf_ref(struct conf *c)
{
	__atomic_fetch_add(&c->refcount, 1, __ATOMIC_RELAXED);
	return c;
}

void conf_unref(struct conf *c)
{
	/* release so that our reads happen before the free; acquire so the free sees everyone's */
	if (c && __atomic_sub_fetch(&c->refcount, 1, __ATOMIC_ACQ_REL) == 0)
		conf_free(c);
}

/* ---- lookups and units --------------------------------------------------------------------------- */

const struct conf_region *conf_region(const struct conf *c, const char *name)
{
	for (size_t i = 0; i < c->nregions; i++)
		if (!strcmp(c->regions[i].name, name))
			return &c->regions[i];
	return NULL;
}

const struct conf_provider *conf_provider(const struct conf *c, const char *name, size_t len)
{
	struct iov want = {name, len};
	for (size_t i = 0; i < c->nproviders; i++) {
		const struct conf_provider *p = &c->providers[i];
		if (iov_eq(want, p->name))
			return p;
		for (size_t j = 0; j < p->naliases; j++)
			if (iov_eq(want, p->aliases[j]))
				return p;
	}
	return NULL;
}

const struct conf_provider *conf_default_provider(const struct conf *c)
{
	for (size_t i = 0; i < c->nproviders; i++)
		if (c->providers[i].is_default)
			return &c->providers[i];
	return NULL;
}

struct unit {
	const char *name;
	int64_t mult;
};

/* digits followed by one of units; overflow and anything else give -1 */
static int64_t parse_units(const char *s, const struct unit *units, size_t nunits)
{
	size_t digits = 0;
	int64_t v;

	while (s[digits] >= '0' && s[digits] <= '9')
		digits++;
	v = str_to_i64(s, digits);
	if (v < 0)
		return -1;
	for (size_t i = 0; i < nunits; i++)
		if (!strcmp(s + digits, units[i].name))
			return v > INT64_MAX / units[i].mult ? -1 : v * units[i].mult;
	return -1;
}

int64_t conf_parse_duration_ms(const char *s)
{
	static const struct unit units[] = {
	    {"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000},
	};
	return parse_units(s, units, ARRAY_SIZE(units));
}

int64_t conf_parse_size(const char *s)
{
	static const struct unit units[] = {
	    {"", 1},
	    {"KiB", 1ll << 10},
	    {"MiB", 1ll << 20},
	    {"GiB", 1ll << 30},
	};
	return parse_units(s, units, ARRAY_SIZE(units));
}
