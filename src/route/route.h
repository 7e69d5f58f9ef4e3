/* route.h - where a request runs: candidate deployments, ranking, health, capacity, affinity */
#ifndef MERIDIAN_ROUTE_ROUTE_H
#define MERIDIAN_ROUTE_ROUTE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "conf/conf.h"
#include "core/buf.h"
#include "route/locate.h"

/*
 * Every deployment has one struct route_dep of live state, shared by all threads through
 * atomics. It is keyed by provider name, region and URL, so a reload that keeps a deployment
 * keeps its health, latency and in-flight count; states live until route_shutdown().
 *
 * A request asks route_plan() for its candidates once, ranked, then takes them one at a time
 * with route_next(), which claims an in-flight slot atomically (so max_inflight is exact across
 * workers) and re-checks health and overload at that moment. The outcome of each attempt comes
 * back through route_report_*().
 */

/* Models discovered from a deployment's /v1/models: sorted, unique, immutable once published. */
struct route_models {
	size_t n;
	char **ids;
	uint64_t fetched_ms;          /* route_now_ms() when fetched */
};

struct route_dep {
	unsigned id;                  /* stable index, for the affinity table */
	char *provider, *region, *url;

	atomic_uint inflight;         /* attempts running now, across all workers */
	atomic_uint consecutive_failures;
	atomic_bool circuit_open;
	_Atomic uint64_t ewma_us;     /* measured latency; 0 = no sample yet */
	_Atomic uint64_t overloaded_until_ms; /* route_now_ms() clock; 0 = not overloaded */

	_Atomic uint64_t probe_last_ms;       /* when the last probe ended; 0 = none yet */
	_Atomic uint64_t probe_last_rtt_us;
	atomic_int probe_last_result;         /* HTTP status, or an enum upstream_result (< 0) */
	_Atomic uint64_t probes_ok, probes_failed;
	_Atomic uint64_t requests, failures;  /* attempts by real requests, and failed ones */

	_Atomic(struct route_models *) models; /* discovered ("*" deployments); NULL = not yet */
};

/* A monotonic clock in milliseconds (uv_hrtime based). */
uint64_t route_now_ms(void);

/* Gives every deployment of c its state (found or created) and builds the location tables and
 * GeoIP database of client_location into c->route. Call on a snapshot before any other thread
 * sees it. Returns 0, or -1 with a message in err (a GeoIP file that cannot be opened). */
int route_attach(struct conf *c, char *err, size_t errlen);
/* Frees every state; no request may be running. */
void route_shutdown(void);

/* Where the client is, per c->client_location; see locate.h. */
enum locate_source route_locate(const struct conf *c, const struct sockaddr *peer,
				const struct iov *location_header, const struct iov *forwarded_for,
				struct geo *out);

/* Whether d serves model (NULL: any model). A "*" deployment serves every model until its
 * first discovery, then exactly what it discovered. */
bool route_dep_serves(const struct conf_deployment *d, const char *model);
/* Frees a set that was never published. Accepts NULL. */
void route_models_free(struct route_models *m);
/* Publishes a new discovered set (takes ownership of m; ids sorted and unique). */
void route_dep_set_models(struct route_dep *s, struct route_models *m);

enum route_status {
	ROUTE_OK = 0,
	ROUTE_NO_MODEL,               /* no deployment in scope serves the model */
	ROUTE_SATURATED,              /* all in scope are at max_inflight or overloaded */
	ROUTE_DOWN,                   /* all in scope have an open circuit (some may be saturated) */
};

struct route_query {
	const struct conf *conf;
	const struct conf_provider *provider;
	const char *model;            /* NULL: any */
	const char *region;           /* pinned region; NULL: global */
	const struct conf_account *account; /* its regions restrict the scope; NULL: none */
	const struct geo *client;     /* NULL: unknown, distance plays no part */
	uint64_t affinity_key;        /* 0: none */
};

struct route_plan {
	const struct conf_deployment *order[CONF_MAX_DEPLOYMENTS]; /* best first */
	uint32_t est_us[CONF_MAX_DEPLOYMENTS]; /* estimated latency when planned */
	unsigned n;
	uint32_t tried;               /* bit i: order[i] had an attempt */
	uint32_t excluded;            /* bit i: order[i] is not to be tried again */
	enum route_status status;     /* why route_next() last returned NULL */
	uint64_t retry_after_ms;      /* when saturated: until the first one frees, 0 if unknown */
	uint64_t affinity_key;
};

/* Ranks the deployments in scope that serve the model: deployments that can take a request now
 * (circuit closed, not saturated) by estimated latency (distance x ms_per_1000km + EWMA), the
 * affinity key's deployment first when it can take it. Returns ROUTE_OK or why not. */
enum route_status route_plan(const struct route_query *q, struct route_plan *p);
/* The next deployment to try, with an in-flight slot claimed: the best untried one that can take
 * a request now; once all were tried, the best tried one that still can. NULL when none can
 * (p->status says why). */
const struct conf_deployment *route_next(struct route_plan *p);
/* Keeps d out of this plan's later attempts (a silent deployment is not asked twice). */
void route_exclude(struct route_plan *p, const struct conf_deployment *d);
/* Gives back the slot route_next() claimed. */
void route_release(const struct conf_deployment *d);

/* Outcomes. connect_us: the time to connect a new connection (0: a reused one, no sample). */
void route_report_success(const struct conf_deployment *d, uint64_t connect_us);
/* A connect failure, timeout or 5xx: counts towards opening the circuit. */
void route_report_failure(const struct conf_deployment *d, const struct conf *c);
/* A 429, 503 or 529: the deployment takes nothing for retry_after_ms (0: overload_cooldown). */
void route_report_overload(const struct conf_deployment *d, const struct conf *c,
			   uint64_t retry_after_ms);
/* An active probe ended: ok closes the circuit and resets failures; rtt_us feeds the EWMA. */
void route_report_probe(struct route_dep *s, const struct conf *c, bool ok, int result,
			uint64_t rtt_us);

/* Conversation affinity: remembers where a conversation ran last (kept an hour after its last
 * use, in a fixed table). The key never is 0. */
void route_affinity_put(uint64_t key, const struct conf_deployment *d);
uint64_t route_affinity_key(const char *provider, const char *account, const char *conv,
			    size_t len);

/* The account whose key hash matches key (sha256, compared in constant time), or NULL. */
const struct conf_account *route_account_by_key(const struct conf *c, const char *key,
						size_t len);

/* Appends the live routing table as JSON (for /admin/api/regions): regions with their
 * locations, and per deployment provider, region, url, health, circuit, EWMA, in-flight,
 * capacity, overload, probe results and models. */
void route_describe_json(const struct conf *c, struct buf *out);

#endif
