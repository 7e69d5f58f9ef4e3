/* describe.c - the human-readable account of a loaded config that `meridian check` prints */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "conf/conf.h"
#include "core/alloc.h"
#include "route/locate.h"

#define LABEL 18 /* "  key" column width of the key-value sections */

static void fmt_duration(char *out, size_t n, uint64_t ms)
{
	static const struct {
		const char *unit;
		uint64_t ms;
	} units[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}};

	for (size_t i = 0; ms && i < ARRAY_SIZE(units); i++) {
		if (ms % units[i].ms == 0) {
			snprintf(out, n, "%" PRIu64 "%s", ms / units[i].ms, units[i].unit);
			return;
		}
	}
	snprintf(out, n, "%" PRIu64 "ms", ms);
}

static void fmt_size(char *out, size_t n, uint64_t bytes)
{
	static const struct {
		const char *unit;
		uint64_t mult;
	} units[] = {{"GiB", 1u << 30}, {"MiB", 1u << 20}, {"KiB", 1u << 10}};

	for (size_t i = 0; bytes && i < ARRAY_SIZE(units); i++) {
		if (bytes % units[i].mult == 0) {
			snprintf(out, n, "%" PRIu64 "%s", bytes / units[i].mult, units[i].unit);
			return;
		}
	}
	snprintf(out, n, "%" PRIu64 " bytes", bytes);
}

/* "  key           " then the value: the key-value lines of every section */
static void label(struct buf *out, int indent, const char *key)
{
	buf_appendf(out, "%*s%-*s", indent, "",
		    LABEL - indent > (int)strlen(key) ? LABEL - indent : (int)strlen(key) + 1, key);
}

static void join(struct buf *out, char *const *l, size_t n, const char *none)
{
	if (n == 0)
		buf_puts(out, none);
	for (size_t i = 0; i < n; i++)
		buf_appendf(out, "%s%s", i ? ", " : "", l[i]);
}

/* A URL as it may be shown: the password of user:password@ replaced by ***. */
static void put_url(struct buf *out, const char *url)
{
	const char *auth = strstr(url, "://");
	const char *at, *end, *colon;

	if (!auth) {
		buf_puts(out, url);
		return;
	}
	auth += 3;
	end = auth + strcspn(auth, "/?#");
	at = memrchr(auth, '@', (size_t)(end - auth));
	colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
	if (!colon) {
		buf_puts(out, url);
		return;
	}
	buf_append(out, url, (size_t)(colon + 1 - url));
	buf_puts(out, "***");
	buf_puts(out, at);
}

static size_t widest(size_t w, const char *s)
{
	size_t n = strlen(s);
	return n > w ? n : w;
}

static void describe_front(const struct conf *c, struct buf *out)
{
	size_t w = 0;

	buf_puts(out, "listen\n");
	for (size_t i = 0; i < c->nlistens; i++)
		w = widest(w, c->listens[i].address);
	for (size_t i = 0; i < c->nlistens; i++) {
		const struct conf_listen *l = &c->listens[i];
		buf_appendf(out, "  %-*s  ", (int)w, l->address);
		if (l->region)
			buf_appendf(out, "pinned to %s", l->region);
		else
			buf_puts(out, "global");
		buf_puts(out, l->share ? ", port shared with other processes\n" : "\n");
	}
	label(out, 0, "admin");
	if (c->admin_address) {
		buf_puts(out, c->admin_address);
		if (c->admin_token_env)
			buf_appendf(out, ", token from $%s", c->admin_token_env);
		buf_puts(out, "\n");
	} else {
		buf_puts(out, "none\n");
	}
	label(out, 0, "hosts");
	if (c->global_host)
		buf_appendf(out, "global %s, regional <region>.%s\n", c->global_host,
			    c->global_host);
	else
		buf_puts(out, "any (no regional host names)\n");

	buf_puts(out, "\nregions\n");
	w = 0;
	for (size_t i = 0; i < c->nregions; i++)
		w = widest(w, c->regions[i].name);
	for (size_t i = 0; i < c->nregions; i++)
		buf_appendf(out, "  %-*s  %9.4f %10.4f\n", (int)w, c->regions[i].name,
			    c->regions[i].lat, c->regions[i].lon);
	if (!c->nregions)
		buf_puts(out, "  none\n");
}

static void describe_provider(const struct conf_provider *p, struct buf *out)
{
	static const char *const http[] = {"auto", "1.1", "2"};
	size_t wr = strlen("region"), wu = strlen("url");
	char inflight[32];

	buf_appendf(out, "  %s%s\n", p->name, p->is_default ? " (default)" : "");
	label(out, 4, "aliases");
	join(out, p->aliases, p->naliases, "none");
	buf_puts(out, "\n");
	label(out, 4, "api");
	buf_appendf(out, "%s%s%s\n", p->api & CONF_API_OPENAI ? "openai" : "",
		    p->api == (CONF_API_OPENAI | CONF_API_ANTHROPIC) ? ", " : "",
		    p->api & CONF_API_ANTHROPIC ? "anthropic" : "");
	label(out, 4, "auth");
	if (p->auth_mode == CONF_AUTH_PASSTHROUGH)
		buf_puts(out, "passthrough (the client's key goes upstream)\n");
	else if (p->key_env)
		buf_appendf(out, "inject, key from $%s\n", p->key_env);
	else
		buf_appendf(out, "inject, key from file %s\n", p->key_file);
	label(out, 4, "http");
	buf_appendf(out, "%s%s%s\n", http[p->http_version], p->ca_file ? ", ca_file " : "",
		    p->ca_file ? p->ca_file : "");

	for (size_t i = 0; i < p->ndeployments; i++) {
		wr = widest(wr, p->deployments[i].region);
		wu = widest(wu, p->deployments[i].url);
	}
	buf_puts(out, "    deployments\n");
	buf_appendf(out, "      %-*s  %-*s  %-12s  %s\n", (int)wr, "region", (int)wu, "url",
		    "max_inflight", "models");
	for (size_t i = 0; i < p->ndeployments; i++) {
		const struct conf_deployment *d = &p->deployments[i];
		if (d->max_inflight)
			snprintf(inflight, sizeof(inflight), "%u", d->max_inflight);
		else
			snprintf(inflight, sizeof(inflight), "unlimited");
		buf_appendf(out, "      %-*s  %-*s  %-12s  ", (int)wr, d->region, (int)wu, d->url,
			    inflight);
		if (d->models_discover)
			buf_puts(out, "discovered from /v1/models");
		else
			join(out, d->models, d->nmodels, "none");
		buf_puts(out, "\n");
	}
}

static void put_limit(struct buf *out, uint64_t v, const char *what, bool first)
{
	buf_puts(out, first ? "" : ", ");
	if (v)
		buf_appendf(out, "%" PRIu64 " %s", v, what);
	else
		buf_appendf(out, "%s unlimited", what);
}

static void describe_accounts(const struct conf *c, struct buf *out)
{
	size_t w = 0;
	char ttl[32];

	buf_puts(out, "\naccounts\n");
	if (!c->naccounts)
		buf_puts(out, "  none\n");
	for (size_t i = 0; i < c->naccounts; i++) {
		const struct conf_account *a = &c->accounts[i];
		buf_appendf(out, "  %s\n", a->id);
		label(out, 4, "keys");
		for (size_t j = 0; j < a->nkeys; j++)
			/* a hash is not a secret, but the full 64 digits help no reader */
			buf_appendf(out, "%s%.15s\u2026", j ? ", " : "", a->keys[j]);
		buf_puts(out, "\n");
		label(out, 4, "limits");
		put_limit(out, a->limits.requests_per_minute, "requests/min", true);
		put_limit(out, a->limits.tokens_per_minute, "tokens/min", false);
		put_limit(out, a->limits.max_concurrent, "concurrent", false);
		buf_puts(out, "\n");
		label(out, 4, "regions");
		join(out, a->regions, a->nregions, "any");
		buf_puts(out, "\n");
	}

	buf_puts(out, "\ngateways\n");
	if (!c->ngateways)
		buf_puts(out, "  none\n");
	for (size_t i = 0; i < c->ngateways; i++)
		w = widest(w, c->gateways[i].id);
	for (size_t i = 0; i < c->ngateways; i++) {
		const struct conf_gateway *g = &c->gateways[i];
		if (g->cache_ttl_ms)
			fmt_duration(ttl, sizeof(ttl), g->cache_ttl_ms);
		else
			snprintf(ttl, sizeof(ttl), "off");
		buf_appendf(out, "  %-*s  cache_ttl %s, log_bodies %s\n", (int)w, g->id, ttl,
			    g->log_bodies ? "yes" : "no");
	}
}

static void describe_client_location(const struct conf_client_location *cl, struct buf *out)
{
	buf_puts(out, "\nclient location\n");
	label(out, 2, "header");
	if (cl->header) {
		buf_appendf(out, "%s, trusted from ", cl->header);
		join(out, cl->trusted_proxies, cl->ntrusted_proxies, "no proxy");
		buf_puts(out, "\n");
	} else {
		buf_puts(out, "none\n");
	}
	label(out, 2, "networks");
	for (size_t i = 0; i < cl->nnetworks; i++)
		buf_appendf(out, "%s%s at %.4f, %.4f", i ? ", " : "", cl->networks[i].cidr,
			    cl->networks[i].lat, cl->networks[i].lon);
	buf_appendf(out, "%s\n", cl->nnetworks ? "" : "none");
	label(out, 2, "geoip_db");
	buf_appendf(out, "%s\n", cl->geoip_db ? cl->geoip_db : "none");
	label(out, 2, "default");
	if (cl->has_default)
		buf_appendf(out, "%.4f, %.4f\n", cl->default_lat, cl->default_lon);
	else
		buf_puts(out, "none (unknown clients rank regions by measured latency only)\n");
}

static void describe_routing(const struct conf *c, struct buf *out)
{
	const struct conf_routing *r = &c->routing;
	const struct conf_server *s = &c->server;
	char a[32], b[32], d[32], e[32];
	bool first = true;

	buf_puts(out, "\nrouting\n");
	label(out, 2, "max_attempts");
	buf_appendf(out, "%u\n", r->max_attempts);
	label(out, 2, "retry_on");
	if (r->retry_on & CONF_RETRY_CONNECT)
		buf_puts(out, "connect"), first = false;
	if (r->retry_on & CONF_RETRY_TIMEOUT)
		buf_appendf(out, "%stimeout", first ? "" : ", "), first = false;
	for (size_t i = 0; i < r->nretry_statuses; i++, first = false)
		buf_appendf(out, "%s%d", first ? "" : ", ", r->retry_statuses[i]);
	buf_appendf(out, "%s\n", first ? "nothing" : "");
	fmt_duration(a, sizeof(a), r->connect_timeout_ms);
	fmt_duration(b, sizeof(b), r->first_byte_timeout_ms);
	fmt_duration(d, sizeof(d), r->idle_timeout_ms);
	fmt_duration(e, sizeof(e), r->total_timeout_ms);
	label(out, 2, "timeouts");
	buf_appendf(out, "connect %s, first_byte %s, idle %s, total %s\n", a, b, d, e);
	fmt_duration(a, sizeof(a), r->probe_interval_ms);
	label(out, 2, "probe_interval");
	buf_appendf(out, "%s\n", a);
	label(out, 2, "ms_per_1000km");
	buf_appendf(out, "%g\n", r->ms_per_1000km);
	fmt_duration(a, sizeof(a), r->overload_cooldown_ms);
	label(out, 2, "circuit");
	buf_appendf(out, "opens after %u consecutive failures; overload cooldown %s\n",
		    r->circuit_failures, a);

	buf_puts(out, "\nserver\n");
	label(out, 2, "workers");
	if (s->workers)
		buf_appendf(out, "%u\n", s->workers);
	else
		buf_puts(out, "one per core\n");
	fmt_duration(a, sizeof(a), s->shutdown_grace_ms);
	label(out, 2, "connections");
	buf_appendf(out, "%u per worker, shutdown grace %s\n", s->max_connections, a);
	fmt_size(a, sizeof(a), s->max_body);
	fmt_size(b, sizeof(b), s->max_url);
	fmt_size(d, sizeof(d), s->max_header_line);
	fmt_size(e, sizeof(e), s->max_header_bytes);
	label(out, 2, "limits");
	buf_appendf(out, "body %s, url %s, header line %s, headers %s and %u at most\n", a, b, d, e,
		    s->max_headers);
	fmt_duration(a, sizeof(a), s->header_timeout_ms);
	fmt_duration(b, sizeof(b), s->body_timeout_ms);
	fmt_duration(d, sizeof(d), s->keepalive_timeout_ms);
	fmt_duration(e, sizeof(e), s->send_timeout_ms);
	label(out, 2, "timeouts");
	buf_appendf(out, "header %s, body %s, keepalive %s, send %s\n", a, b, d, e);
	fmt_size(a, sizeof(a), s->stream_buffer);
	label(out, 2, "stream_buffer");
	buf_appendf(out, "%s\n", a);
	label(out, 2, "busy_poll");
	if (s->busy_poll_ms) {
		fmt_duration(a, sizeof(a), s->busy_poll_ms);
		buf_appendf(out, "on: a worker polls without sleeping while requests are in flight"
				 " and %s after\n", a);
	} else {
		buf_puts(out, "off\n");
	}
}

static void describe_backends(const struct conf *c, struct buf *out)
{
	static const char *const backend[] = {"memory", "redis"};
	char a[32];

	buf_puts(out, "\nbackends\n");
	fmt_size(a, sizeof(a), c->cache_max_bytes);
	label(out, 2, "cache");
	buf_appendf(out, "%s, max %s\n", backend[c->cache_backend], a);
	label(out, 2, "ratelimit");
	const char *lease = c->ratelimit_backend != CONF_BACKEND_REDIS ? ""
			    : c->ratelimit_lease ? ", leases" : ", no leases";
	buf_appendf(out, "%s, on redis error %s%s\n", backend[c->ratelimit_backend],
		    c->ratelimit_deny_on_redis_error ? "deny" : "allow", lease);
	label(out, 2, "redis");
	if (c->redis_url)
		put_url(out, c->redis_url);
	else
		buf_puts(out, "none");
	fmt_duration(a, sizeof(a), c->logs_retention_ms);
	buf_puts(out, "\n");
	label(out, 2, "logs");
	put_url(out, c->logs_store);
	buf_appendf(out, ", bodies %s, retention %s\n", c->logs_bodies ? "yes" : "no", a);

	if (!c->nprices)
		return;
	size_t w = LABEL - 4;
	for (size_t i = 0; i < c->nprices; i++)
		w = widest(w, c->prices[i].model);
	buf_puts(out, "\nprices (per million tokens)\n");
	for (size_t i = 0; i < c->nprices; i++)
		buf_appendf(out, "  %-*s  input %.2f, output %.2f\n", (int)w, c->prices[i].model,
			    c->prices[i].input_per_mtok, c->prices[i].output_per_mtok);
}

static struct geo region_geo(const struct conf_region *r)
{
	return (struct geo){r->lat, r->lon};
}

/* Whether model m was already listed by a deployment before index i. */
static bool model_seen(const struct conf_provider *p, size_t i, const char *m)
{
	for (size_t k = 0; k < i; k++)
		for (size_t j = 0; j < p->deployments[k].nmodels; j++)
			if (strcmp(p->deployments[k].models[j], m) == 0)
				return true;
	return false;
}

/* "    MODEL  region  url  note" for each deployment that serves model m (NULL: the "*" row) */
static bool serves(const struct conf_deployment *d, const char *m)
{
	if (d->models_discover)
		return true;
	for (size_t j = 0; m && j < d->nmodels; j++)
		if (!strcmp(d->models[j], m))
			return true;
	return false;
}

/* "    MODEL  r1, r2 x2, r3 (if discovered)": one line per model, each region once (with its
 * number of deployments when there are several), in config order. m NULL: the "*" line. */
static void table_model(const struct conf_provider *p, const char *m, int w, struct buf *out)
{
	bool first = true;

	buf_appendf(out, "    %-*s  ", w, m ? m : "*");
	for (size_t i = 0; i < p->ndeployments; i++) {
		const struct conf_deployment *d = &p->deployments[i];
		unsigned n = 0;
		bool discovered = false, earlier = false;
		if (!serves(d, m) || (!m && !d->models_discover))
			continue;
		for (size_t k = 0; k < i && !earlier; k++)
			earlier = !strcmp(p->deployments[k].region, d->region) &&
				  serves(&p->deployments[k], m) && (m || p->deployments[k].models_discover);
		if (earlier)
			continue;
		for (size_t k = i; k < p->ndeployments; k++) {
			const struct conf_deployment *e = &p->deployments[k];
			if (strcmp(e->region, d->region) || !serves(e, m) || (!m && !e->models_discover))
				continue;
			n++;
			discovered |= e->models_discover && m;
		}
		buf_appendf(out, "%s%s", first ? "" : ", ", d->region);
		if (n > 1)
			buf_appendf(out, " x%u", n);
		if (discovered)
			buf_puts(out, " (if discovered)");
		first = false;
	}
	buf_puts(out, m ? "\n" : "  (discovered at run time)\n");
}

/* "    CLIENT  r1 0 ms, r2 39 ms, ..." : the provider's regions by distance penalty from at */
static void table_order(const struct conf *c, const struct conf_region **regs, size_t n,
			struct geo at, const char *who, int w, struct buf *out)
{
	const struct conf_region *order[CONF_MAX_DEPLOYMENTS];
	double ms[CONF_MAX_DEPLOYMENTS];
	const double per_km = c->routing.ms_per_1000km / 1000.0;

	/* insertion sort: stable, so equal estimates keep the order of the config, and n is at
	 * most CONF_MAX_DEPLOYMENTS */
	for (size_t i = 0; i < n; i++) {
		double v = geo_distance_km(at, region_geo(regs[i])) * per_km;
		size_t j = i;
		for (; j > 0 && ms[j - 1] > v; j--) {
			ms[j] = ms[j - 1];
			order[j] = order[j - 1];
		}
		ms[j] = v;
		order[j] = regs[i];
	}
	buf_appendf(out, "    %-*s  ", w, who);
	for (size_t i = 0; i < n; i++)
		buf_appendf(out, "%s%s %.0f ms", i ? ", " : "", order[i]->name, ms[i]);
	buf_puts(out, "\n");
}

/*
 * The static routing table: per provider and model where it is served, and for a client at each
 * region (and at the default location) the order in which the provider's regions would be tried
 * before any latency is measured. The ranking is the same estimate the router uses, distance x
 * ms_per_1000km, with measured latency zero everywhere.
 */
static void describe_routing_table(const struct conf *c, struct buf *out)
{
	const struct conf_client_location *cl = &c->client_location;

	buf_appendf(out, "\nrouting table (before measured latency: distance x %g ms per 1000 km)\n",
		    c->routing.ms_per_1000km);
	if (!c->nproviders)
		buf_puts(out, "  none\n");
	for (size_t pi = 0; pi < c->nproviders; pi++) {
		const struct conf_provider *p = &c->providers[pi];
		const struct conf_region *regs[CONF_MAX_DEPLOYMENTS];
		size_t nregs = 0;
		bool discover = false;
		size_t w = strlen("client at");

		for (size_t i = 0; i < p->ndeployments && i < CONF_MAX_DEPLOYMENTS; i++) {
			const struct conf_deployment *d = &p->deployments[i];
			const struct conf_region *r = d->reg ? d->reg : conf_region(c, d->region);
			size_t k = 0;

			while (k < nregs && regs[k] != r)
				k++;
			if (k == nregs && r)
				regs[nregs++] = r;
			discover |= d->models_discover;
			for (size_t j = 0; j < d->nmodels; j++)
				w = widest(w, d->models[j]);
		}
		for (size_t i = 0; i < c->nregions; i++)
			w = widest(w, c->regions[i].name);

		buf_appendf(out, "  %s\n", p->name);
		buf_appendf(out, "    %-*s  served in\n", (int)w, "model");
		for (size_t i = 0; i < p->ndeployments; i++)
			for (size_t j = 0; j < p->deployments[i].nmodels; j++)
				if (!model_seen(p, i, p->deployments[i].models[j]))
					table_model(p, p->deployments[i].models[j], (int)w, out);
		if (discover)
			table_model(p, NULL, (int)w, out);

		buf_appendf(out, "    %-*s  regions tried in order\n", (int)w, "client at");
		for (size_t i = 0; i < c->nregions; i++)
			table_order(c, regs, nregs, region_geo(&c->regions[i]), c->regions[i].name,
				    (int)w, out);
		if (cl->has_default)
			table_order(c, regs, nregs, (struct geo){cl->default_lat, cl->default_lon},
				    "default", (int)w, out);
	}
}

void conf_describe(const struct conf *c, struct buf *out)
{
	describe_front(c, out);
	buf_puts(out, "\nproviders\n");
	if (!c->nproviders)
		buf_puts(out, "  none\n");
	for (size_t i = 0; i < c->nproviders; i++)
		describe_provider(&c->providers[i], out);
	describe_accounts(c, out);
	describe_client_location(&c->client_location, out);
	describe_routing(c, out);
	describe_backends(c, out);
	describe_routing_table(c, out);
}
