/* route.c - where a request runs: candidate deployments, ranking, health, capacity, affinity */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <uv.h>

#include "core/alloc.h"
#include "core/log.h"
#include "route/route.h"

#define EWMA_WEIGHT_PCT 30                 /* share of a new sample in the measured latency */
#define MODELS_GRACE_MS 10000              /* a replaced model set outlives any reader by far */
#define AFFINITY_SLOTS (1u << 16)
#define AFFINITY_STRIPES 64
#define AFFINITY_TTL_MS (3600u * 1000)

/* What route_attach() derives from a snapshot. */
struct route_conf {
	uint64_t generation;               /* unique per attach: a freed snapshot's address may
					    * come back for the next one */
	struct locator *loc;
	struct key_hash {
		const struct conf_account *account;
		unsigned char sha256[32];
	} *keys;
	size_t nkeys;
};

struct retired_models {
	struct route_models *m;
	uint64_t at_ms;
	struct retired_models *next;
};

/* Deployment states live for the process, so a reload keeps health and load. */
static struct {
	uv_once_t once;
	uv_mutex_t mu;                     /* the registry and the retired list */
	struct route_dep **deps;
	size_t n, cap;
	struct retired_models *retired;
} R = {.once = UV_ONCE_INIT};

struct affinity_slot {
	uint64_t key;
	uint64_t last_ms;
	unsigned dep_id;
};

static struct affinity_slot affinity[AFFINITY_SLOTS];
static uv_mutex_t affinity_mu[AFFINITY_STRIPES];

static void init_once(void)
{
	uv_mutex_init(&R.mu);
	for (size_t i = 0; i < AFFINITY_STRIPES; i++)
		uv_mutex_init(&affinity_mu[i]);
}

uint64_t route_now_ms(void)
{
	/* the coarse clock is a plain read of the vDSO page; milliseconds of overload, affinity
	 * and probe age need no finer resolution than its few milliseconds */
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* --- states and snapshots ---------------------------------------------------------------- */

static struct route_dep *state_get(const char *provider, const char *region, const char *url)
{
	for (size_t i = 0; i < R.n; i++) {
		struct route_dep *s = R.deps[i];
		if (!strcmp(s->provider, provider) && !strcmp(s->region, region) && !strcmp(s->url, url))
			return s;
	}
	if (R.n == R.cap) {
		R.cap = R.cap ? R.cap * 2 : 16;
		R.deps = xrealloc(R.deps, R.cap * sizeof(*R.deps));
	}
	struct route_dep *s = xcalloc(1, sizeof(*s));
	s->id = (unsigned)R.n;
	s->provider = xstrdup(provider);
	s->region = xstrdup(region);
	s->url = xstrdup(url);
	R.deps[R.n++] = s;
	return s;
}

static void route_conf_free(void *p)
{
	struct route_conf *rc = p;
	if (!rc)
		return;
	locator_free(rc->loc);
	free(rc->keys);
	free(rc);
}

static int hex_nibble(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* "sha256:<64 hex>" to 32 bytes; the config loader already checked the form. */
static bool parse_key_hash(const char *s, unsigned char out[32])
{
	if (strncmp(s, "sha256:", 7) || strlen(s) != 7 + 64)
		return false;
	for (size_t i = 0; i < 32; i++) {
		int hi = hex_nibble(s[7 + 2 * i]), lo = hex_nibble(s[8 + 2 * i]);
		if (hi < 0 || lo < 0)
			return false;
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return true;
}

int route_attach(struct conf *c, char *err, size_t errlen)
{
	struct route_conf *rc;

	static atomic_uint_fast64_t generations;

	uv_once(&R.once, init_once);
	rc = xcalloc(1, sizeof(*rc));
	rc->generation = atomic_fetch_add(&generations, 1) + 1;
	rc->loc = locator_new(&c->client_location, err, errlen);
	if (!rc->loc) {
		free(rc);
		return -1;
	}
	size_t nkeys = 0;
	for (size_t i = 0; i < c->naccounts; i++)
		nkeys += c->accounts[i].nkeys;
	rc->keys = xcalloc(nkeys ? nkeys : 1, sizeof(*rc->keys));
	for (size_t i = 0; i < c->naccounts; i++)
		for (size_t k = 0; k < c->accounts[i].nkeys; k++)
			if (parse_key_hash(c->accounts[i].keys[k], rc->keys[rc->nkeys].sha256))
				rc->keys[rc->nkeys++].account = &c->accounts[i];

	uv_mutex_lock(&R.mu);
	for (size_t i = 0; i < c->nproviders; i++) {
		struct conf_provider *p = &c->providers[i];
		for (size_t j = 0; j < p->ndeployments; j++)
			p->deployments[j].state = state_get(p->name, p->deployments[j].region,
							    p->deployments[j].url);
	}
	uv_mutex_unlock(&R.mu);
	c->route = rc;
	c->route_free = route_conf_free;
	return 0;
}

void route_models_free(struct route_models *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n; i++)
		free(m->ids[i]);
	free(m->ids);
	free(m);
}

void route_shutdown(void)
{
	uv_once(&R.once, init_once);
	uv_mutex_lock(&R.mu);
	for (size_t i = 0; i < R.n; i++) {
		struct route_dep *s = R.deps[i];
		route_models_free(atomic_load(&s->models));
		free(s->provider);
		free(s->region);
		free(s->url);
		free(s);
	}
	free(R.deps);
	R.deps = NULL;
	R.n = R.cap = 0;
	while (R.retired) {
		struct retired_models *r = R.retired;
		R.retired = r->next;
		route_models_free(r->m);
		free(r);
	}
	uv_mutex_unlock(&R.mu);
}

enum locate_source route_locate(const struct conf *c, const struct sockaddr *peer,
				const struct iov *location_header, const struct iov *forwarded_for,
				struct geo *out)
{
	const struct route_conf *rc = c->route;
	if (!rc)
		return LOCATE_NONE;
	return locator_find(rc->loc, peer, location_header, forwarded_for, out);
}

/* OpenSSL 3 looks an algorithm up on every EVP_Digest(EVP_sha256()) call, which costs more
 * than hashing a key: fetch it once. */
static EVP_MD *sha256_md;

static void sha256_init(void)
{
	sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static bool sha256(const char *p, size_t len, unsigned char out[32])
{
	static uv_once_t once = UV_ONCE_INIT;
	unsigned n = 0;

	uv_once(&once, sha256_init);
	return sha256_md && EVP_Digest(p, len, out, &n, sha256_md, NULL) && n == 32;
}

const struct conf_account *route_account_by_key(const struct conf *c, const char *key,
						size_t len)
{
	const struct route_conf *rc = c->route;
	unsigned char digest[32];
	const struct conf_account *found = NULL;

	if (!rc || !rc->nkeys || !len)
		return NULL;
	if (!sha256(key, len, digest))
		return NULL;
	/* every entry is compared, so the time does not tell which one matched */
	for (size_t i = 0; i < rc->nkeys; i++)
		if (CRYPTO_memcmp(digest, rc->keys[i].sha256, sizeof(digest)) == 0)
			found = rc->keys[i].account;
	return found;
}

/* --- models ------------------------------------------------------------------------------ */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

bool route_dep_serves(const struct conf_deployment *d, const char *model)
{
	if (!model)
		return true;
	if (!d->models_discover) {
		for (size_t i = 0; i < d->nmodels; i++)
			if (!strcmp(d->models[i], model))
				return true;
		return false;
	}
	const struct route_models *m = d->state ? atomic_load(&d->state->models) : NULL;
	if (!m)
		return true;
	return bsearch(&model, m->ids, m->n, sizeof(*m->ids), cmp_str) != NULL;
}

void route_dep_set_models(struct route_dep *s, struct route_models *m)
{
	uint64_t now = route_now_ms();
	struct route_models *old = atomic_exchange(&s->models, m);
	struct retired_models **pp, *r;

	uv_mutex_lock(&R.mu);
	/* readers hold a set only while they look at it: free what was replaced long ago */
	for (pp = &R.retired; (r = *pp);) {
		if (now - r->at_ms > MODELS_GRACE_MS) {
			*pp = r->next;
			route_models_free(r->m);
			free(r);
		} else {
			pp = &r->next;
		}
	}
	if (old) {
		r = xmalloc(sizeof(*r));
		r->m = old;
		r->at_ms = now;
		r->next = R.retired;
		R.retired = r;
	}
	uv_mutex_unlock(&R.mu);
}

/* --- health, load, latency --------------------------------------------------------------- */

static bool overloaded(const struct route_dep *s, uint64_t now)
{
	return atomic_load_explicit(&s->overloaded_until_ms, memory_order_relaxed) > now;
}

static bool full(const struct conf_deployment *d)
{
	return d->max_inflight &&
	       atomic_load_explicit(&d->state->inflight, memory_order_relaxed) >= d->max_inflight;
}

static bool circuit_open(const struct route_dep *s)
{
	return atomic_load_explicit(&s->circuit_open, memory_order_relaxed);
}

static bool can_take(const struct conf_deployment *d, uint64_t now)
{
	return !circuit_open(d->state) && !overloaded(d->state, now) && !full(d);
}

/* Claims an in-flight slot; exact under races, as the increment comes before the check. */
static bool claim(const struct conf_deployment *d)
{
	unsigned before = atomic_fetch_add(&d->state->inflight, 1);
	if (d->max_inflight && before >= d->max_inflight) {
		atomic_fetch_sub(&d->state->inflight, 1);
		return false;
	}
	return true;
}

void route_release(const struct conf_deployment *d)
{
	atomic_fetch_sub(&d->state->inflight, 1);
}

static void ewma_add(struct route_dep *s, uint64_t sample_us)
{
	uint64_t old = atomic_load(&s->ewma_us), next;
	if (sample_us == 0)
		sample_us = 1; /* 0 means "no sample" */
	do {
		next = old ? (old * (100 - EWMA_WEIGHT_PCT) + sample_us * EWMA_WEIGHT_PCT) / 100
			   : sample_us;
		if (next == 0)
			next = 1;
	} while (!atomic_compare_exchange_weak(&s->ewma_us, &old, next));
}

void route_report_success(const struct conf_deployment *d, uint64_t connect_us)
{
	struct route_dep *s = d->state;
	atomic_fetch_add_explicit(&s->requests, 1, memory_order_relaxed);
	if (atomic_load_explicit(&s->consecutive_failures, memory_order_relaxed))
		atomic_store(&s->consecutive_failures, 0);
	if (connect_us)
		ewma_add(s, connect_us);
}

static void count_failure(struct route_dep *s, const struct conf *c, const char *what)
{
	unsigned n = atomic_fetch_add(&s->consecutive_failures, 1) + 1;
	unsigned limit = c->routing.circuit_failures ? c->routing.circuit_failures : 3;
	if (n >= limit && !atomic_exchange(&s->circuit_open, true))
		log_warn("deployment %s in %s (%s): circuit opened after %u consecutive failures (%s)",
			 s->provider, s->region, s->url, n, what);
}

void route_report_failure(const struct conf_deployment *d, const struct conf *c)
{
	struct route_dep *s = d->state;
	atomic_fetch_add_explicit(&s->requests, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->failures, 1, memory_order_relaxed);
	count_failure(s, c, "requests");
}

void route_report_overload(const struct conf_deployment *d, const struct conf *c,
			   uint64_t retry_after_ms)
{
	struct route_dep *s = d->state;
	uint64_t until = route_now_ms() +
			 (retry_after_ms ? retry_after_ms : c->routing.overload_cooldown_ms);
	uint64_t old = atomic_load(&s->overloaded_until_ms);
	atomic_fetch_add_explicit(&s->requests, 1, memory_order_relaxed);
	while (old < until && !atomic_compare_exchange_weak(&s->overloaded_until_ms, &old, until))
		;
}

void route_report_probe(struct route_dep *s, const struct conf *c, bool ok, int result,
			uint64_t rtt_us)
{
	atomic_store(&s->probe_last_ms, route_now_ms());
	atomic_store(&s->probe_last_result, result);
	if (!ok) {
		atomic_fetch_add(&s->probes_failed, 1);
		count_failure(s, c, "probes");
		return;
	}
	atomic_fetch_add(&s->probes_ok, 1);
	atomic_store(&s->probe_last_rtt_us, rtt_us);
	ewma_add(s, rtt_us);
	atomic_store(&s->consecutive_failures, 0);
	if (atomic_exchange(&s->circuit_open, false))
		log_info("deployment %s in %s (%s): circuit closed, a probe succeeded", s->provider,
			 s->region, s->url);
}

/* --- affinity ---------------------------------------------------------------------------- */

uint64_t route_affinity_key(const char *provider, const char *account, const char *conv,
			    size_t len)
{
	/* FNV-1a: a collision only costs a conversation its warm cache */
	uint64_t h = 0xcbf29ce484222325ull;
	const char *parts[2] = {provider, account ? account : ""};
	for (size_t p = 0; p < 2; p++) {
		for (const char *s = parts[p]; *s; s++)
			h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
		h = (h ^ 0xff) * 0x100000001b3ull;
	}
	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)conv[i]) * 0x100000001b3ull;
	return h ? h : 1;
}

static bool affinity_get(uint64_t key, unsigned *dep_id)
{
	struct affinity_slot *s = &affinity[key & (AFFINITY_SLOTS - 1)];
	uv_mutex_t *mu = &affinity_mu[(key >> 16) % AFFINITY_STRIPES];
	bool found;

	uv_once(&R.once, init_once);
	uv_mutex_lock(mu);
	found = s->key == key && route_now_ms() - s->last_ms < AFFINITY_TTL_MS;
	if (found)
		*dep_id = s->dep_id;
	uv_mutex_unlock(mu);
	return found;
}

void route_affinity_put(uint64_t key, const struct conf_deployment *d)
{
	struct affinity_slot *s = &affinity[key & (AFFINITY_SLOTS - 1)];
	uv_mutex_t *mu = &affinity_mu[(key >> 16) % AFFINITY_STRIPES];

	uv_once(&R.once, init_once);
	uv_mutex_lock(mu);
	s->key = key;
	s->dep_id = d->state->id;
	s->last_ms = route_now_ms();
	uv_mutex_unlock(mu);
}

/* --- planning ---------------------------------------------------------------------------- */

static bool region_allowed(const struct conf_account *a, const char *region)
{
	if (!a || !a->nregions)
		return true;
	for (size_t i = 0; i < a->nregions; i++)
		if (!strcmp(a->regions[i], region))
			return true;
	return false;
}

/* Why nothing can take a request now, and when the first saturated one frees. */
static void explain(struct route_plan *p, uint64_t now)
{
	bool saturated = false;
	uint64_t until = 0;
	for (unsigned i = 0; i < p->n; i++) {
		const struct route_dep *s = p->order[i]->state;
		if (circuit_open(s))
			continue;
		saturated = true;
		uint64_t u = atomic_load(&s->overloaded_until_ms);
		if (u > now && (!until || u < until))
			until = u;
	}
	p->status = p->n == 0 ? ROUTE_NO_MODEL : saturated ? ROUTE_SATURATED : ROUTE_DOWN;
	p->retry_after_ms = until ? until - now : 0;
}

#define DISTANCE_CACHE_REGIONS 64

/* Distances from the last client location a thread saw to every region: clients placed by the
 * same header value, network or default share a location, so the trigonometry runs once per
 * location and snapshot rather than once per candidate and request. */
static const double *region_distances(const struct conf *c, const struct geo *client)
{
	static __thread struct {
		const struct conf *conf;
		uint64_t generation;
		double lat, lon;
		double km[DISTANCE_CACHE_REGIONS];
	} cache;
	const struct route_conf *rc = c->route;

	if (c->nregions > DISTANCE_CACHE_REGIONS || !rc)
		return NULL;
	if (cache.conf != c || cache.generation != rc->generation || cache.lat != client->lat ||
	    cache.lon != client->lon) {
		for (size_t i = 0; i < c->nregions; i++)
			cache.km[i] = geo_distance_km(
			    *client, (struct geo){c->regions[i].lat, c->regions[i].lon});
		cache.conf = c;
		cache.generation = rc->generation;
		cache.lat = client->lat;
		cache.lon = client->lon;
	}
	return cache.km;
}

enum route_status route_plan(const struct route_query *q, struct route_plan *p)
{
	const struct conf_provider *pr = q->provider;
	const double ms_per_km = q->conf->routing.ms_per_1000km / 1000.0;
	uint64_t now = route_now_ms();
	bool ready[CONF_MAX_DEPLOYMENTS];
	const double *km = q->client ? region_distances(q->conf, q->client) : NULL;

	p->n = 0;
	p->tried = 0;
	p->excluded = 0;
	p->status = ROUTE_OK;
	p->retry_after_ms = 0;
	p->affinity_key = q->affinity_key;
	for (size_t i = 0; i < pr->ndeployments && p->n < CONF_MAX_DEPLOYMENTS; i++) {
		const struct conf_deployment *d = &pr->deployments[i];
		if (q->region && strcmp(d->region, q->region))
			continue;
		if (!region_allowed(q->account, d->region))
			continue;
		if (!route_dep_serves(d, q->model))
			continue;
		double est = (double)atomic_load_explicit(&d->state->ewma_us, memory_order_relaxed);
		if (q->client && d->reg)
			est += (km ? km[d->reg - q->conf->regions]
				   : geo_distance_km(*q->client, (struct geo){d->reg->lat, d->reg->lon})) *
			       ms_per_km * 1000.0;
		bool r = can_take(d, now);
		/* insertion sort: those that can take it first, then by estimate */
		unsigned j = p->n;
		while (j > 0 && ((r && !ready[j - 1]) ||
				 (r == ready[j - 1] && est < (double)p->est_us[j - 1]))) {
			p->order[j] = p->order[j - 1];
			p->est_us[j] = p->est_us[j - 1];
			ready[j] = ready[j - 1];
			j--;
		}
		p->order[j] = d;
		p->est_us[j] = est > 4e9 ? UINT32_MAX : (uint32_t)est;
		ready[j] = r;
		p->n++;
	}
	if (p->n == 0) {
		p->status = ROUTE_NO_MODEL;
		return p->status;
	}
	bool any_ready = ready[0];
	unsigned id;
	if (any_ready && q->affinity_key && affinity_get(q->affinity_key, &id)) {
		for (unsigned i = 0; i < p->n; i++) {
			if (p->order[i]->state->id != id)
				continue;
			if (i > 0 && ready[i]) {
				const struct conf_deployment *d = p->order[i];
				uint32_t est = p->est_us[i];
				memmove(&p->order[1], &p->order[0], i * sizeof(p->order[0]));
				memmove(&p->est_us[1], &p->est_us[0], i * sizeof(p->est_us[0]));
				p->order[0] = d;
				p->est_us[0] = est;
			}
			break;
		}
	}
	if (!any_ready)
		explain(p, now);
	return p->status;
}

static const struct conf_deployment *take(struct route_plan *p, unsigned i, uint64_t now)
{
	const struct conf_deployment *d = p->order[i];
	if ((p->excluded & (1u << i)) || circuit_open(d->state) || overloaded(d->state, now) ||
	    !claim(d))
		return NULL;
	p->tried |= 1u << i;
	return d;
}

void route_exclude(struct route_plan *p, const struct conf_deployment *d)
{
	for (unsigned i = 0; i < p->n; i++)
		if (p->order[i] == d)
			p->excluded |= 1u << i;
}

const struct conf_deployment *route_next(struct route_plan *p)
{
	uint64_t now = route_now_ms();
	const struct conf_deployment *d;

	for (unsigned i = 0; i < p->n; i++)
		if (!(p->tried & (1u << i)) && (d = take(p, i, now)))
			return d;
	for (unsigned i = 0; i < p->n; i++)
		if ((p->tried & (1u << i)) && (d = take(p, i, now)))
			return d;
	explain(p, now);
	return NULL;
}

/* --- the live table ---------------------------------------------------------------------- */

static void json_str(struct buf *out, const char *s)
{
	buf_append(out, "\"", 1);
	buf_append_json_str(out, s, strlen(s));
	buf_append(out, "\"", 1);
}

static void describe_models(const struct conf_deployment *d, struct buf *out)
{
	const struct route_models *m = d->models_discover ? atomic_load(&d->state->models) : NULL;
	char *const *ids = d->models_discover ? (m ? m->ids : NULL) : d->models;
	size_t n = d->models_discover ? (m ? m->n : 0) : d->nmodels;

	buf_puts(out, ",\"models\":[");
	for (size_t i = 0; i < n; i++) {
		if (i)
			buf_append(out, ",", 1);
		json_str(out, ids[i]);
	}
	buf_puts(out, "],\"models_source\":");
	json_str(out, !d->models_discover ? "config" : m ? "discovered" : "pending");
}

static void describe_dep(const struct conf_deployment *d, uint64_t now, struct buf *out)
{
	const struct route_dep *s = d->state;
	uint64_t ewma = atomic_load(&s->ewma_us), until = atomic_load(&s->overloaded_until_ms);
	uint64_t probe_at = atomic_load(&s->probe_last_ms);
	bool open = circuit_open(s);

	buf_puts(out, "{\"provider\":");
	json_str(out, d->provider->name);
	buf_puts(out, ",\"region\":");
	json_str(out, d->region);
	buf_puts(out, ",\"url\":");
	json_str(out, d->url);
	buf_appendf(out, ",\"healthy\":%s,\"circuit\":\"%s\"", open ? "false" : "true",
		    open ? "open" : "closed");
	if (ewma)
		buf_appendf(out, ",\"ewma_ms\":%.3f", (double)ewma / 1000.0);
	else
		buf_puts(out, ",\"ewma_ms\":null");
	buf_appendf(out, ",\"inflight\":%u", atomic_load(&s->inflight));
	if (d->max_inflight)
		buf_appendf(out, ",\"max_inflight\":%u", d->max_inflight);
	else
		buf_puts(out, ",\"max_inflight\":null");
	buf_appendf(out,
		    ",\"saturated\":%s,\"overloaded_for_ms\":%llu,\"consecutive_failures\":%u,"
		    "\"requests\":%llu,\"failures\":%llu",
		    (!open && (overloaded(s, now) || full(d))) ? "true" : "false",
		    (unsigned long long)(until > now ? until - now : 0),
		    atomic_load(&s->consecutive_failures),
		    (unsigned long long)atomic_load(&s->requests),
		    (unsigned long long)atomic_load(&s->failures));
	buf_appendf(out, ",\"probe\":{\"ok\":%llu,\"failed\":%llu",
		    (unsigned long long)atomic_load(&s->probes_ok),
		    (unsigned long long)atomic_load(&s->probes_failed));
	uint64_t rtt = atomic_load(&s->probe_last_rtt_us);
	if (probe_at) {
		buf_appendf(out, ",\"last_ago_ms\":%llu,\"last_result\":%d",
			    (unsigned long long)(now - probe_at), atomic_load(&s->probe_last_result));
		/* the round trip of the last probe that was answered; none yet: null */
		if (rtt)
			buf_appendf(out, ",\"last_rtt_ms\":%.3f}", (double)rtt / 1000.0);
		else
			buf_puts(out, ",\"last_rtt_ms\":null}");
	} else
		buf_puts(out, ",\"last_ago_ms\":null,\"last_result\":null,\"last_rtt_ms\":null}");
	describe_models(d, out);
	buf_append(out, "}", 1);
}

void route_describe_json(const struct conf *c, struct buf *out)
{
	uint64_t now = route_now_ms();
	bool first = true;

	buf_puts(out, "{\"regions\":[");
	for (size_t i = 0; i < c->nregions; i++) {
		if (i)
			buf_append(out, ",", 1);
		buf_puts(out, "{\"name\":");
		json_str(out, c->regions[i].name);
		buf_appendf(out, ",\"location\":[%.6g,%.6g]}", c->regions[i].lat, c->regions[i].lon);
	}
	buf_puts(out, "],\"deployments\":[");
	for (size_t i = 0; i < c->nproviders; i++) {
		const struct conf_provider *p = &c->providers[i];
		for (size_t j = 0; j < p->ndeployments; j++) {
			if (!p->deployments[j].state)
				continue;
			if (!first)
				buf_append(out, ",", 1);
			first = false;
			describe_dep(&p->deployments[j], now, out);
		}
	}
	buf_puts(out, "]}");
}
