/* test_route.c - the router: scope, ranking, exact capacity, overload, circuit, affinity */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <uv.h>

#include "conf/conf.h"
#include "core/alloc.h"
#include "route/route.h"

/* sha256("test") */
#define HASH_TEST "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

#define REGIONS                                                                             \
	"listen: [{address: \"127.0.0.1:8080\"}]\n"                                         \
	"regions:\n"                                                                        \
	"  us-east-1: {location: [39.0, -77.5]}\n"                                          \
	"  us-west-1: {location: [37.4, -122.0]}\n"                                         \
	"  eu-west-1: {location: [53.3, -6.3]}\n"

static const struct geo DUBLIN = {53.35, -6.26}, VIRGINIA = {38.9, -77.4},
			SAN_JOSE = {37.3, -121.9};

static struct conf *load(const char *yaml)
{
	char err[512];
	struct conf *c = conf_load_string(yaml, strlen(yaml), "t.yaml", err, sizeof(err));
	if (!c)
		fail_msg("%s", err);
	if (route_attach(c, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	return c;
}

static struct conf *three(const char *extra_routing)
{
	char yaml[2048];
	snprintf(yaml, sizeof(yaml),
		 REGIONS
		 "providers:\n"
		 "  xai:\n"
		 "    auth: {mode: passthrough}\n"
		 "    deployments:\n"
		 "      - {region: us-east-1, url: \"http://127.0.0.1:9001\", models: [grok-4, mini], max_inflight: 2}\n"
		 "      - {region: us-west-1, url: \"http://127.0.0.1:9002\", models: [grok-4]}\n"
		 "      - {region: eu-west-1, url: \"http://127.0.0.1:9003\", models: [grok-4, mini]}\n"
		 "accounts:\n"
		 "  acme: {keys: [\"" HASH_TEST "\"], regions: [eu-west-1]}\n"
		 "routing: {circuit_failures: 3, overload_cooldown: 5s%s}\n",
		 extra_routing ? extra_routing : "");
	return load(yaml);
}

static const struct conf_deployment *dep(const struct conf *c, const char *region)
{
	const struct conf_provider *p = &c->providers[0];
	for (size_t i = 0; i < p->ndeployments; i++)
		if (!strcmp(p->deployments[i].region, region))
			return &p->deployments[i];
	fail_msg("no deployment in %s", region);
	return NULL;
}

static struct route_query query(const struct conf *c, const char *model, const struct geo *client)
{
	return (struct route_query){.conf = c, .provider = &c->providers[0], .model = model,
				    .client = client};
}

static void teardown_all(struct conf *c)
{
	conf_unref(c);
	route_shutdown();
}

static void test_ranks_by_distance(void **state)
{
	struct conf *c = three(NULL);
	struct route_plan p;
	struct route_query q = query(c, "grok-4", &DUBLIN);

	assert_int_equal(route_plan(&q, &p), ROUTE_OK);
	assert_int_equal(p.n, 3);
	assert_string_equal(p.order[0]->region, "eu-west-1");
	assert_string_equal(p.order[1]->region, "us-east-1");
	assert_string_equal(p.order[2]->region, "us-west-1");
	/* Dublin to Ashburn is about 5,470 km: 54.7 ms at the default 10 ms per 1000 km */
	assert_true(p.est_us[1] > 53000 && p.est_us[1] < 56000);

	q.client = &SAN_JOSE;
	route_plan(&q, &p);
	assert_string_equal(p.order[0]->region, "us-west-1");
	assert_string_equal(p.order[1]->region, "us-east-1");

	/* a model served in two regions only */
	q = query(c, "mini", &SAN_JOSE);
	route_plan(&q, &p);
	assert_int_equal(p.n, 2);
	assert_string_equal(p.order[0]->region, "us-east-1");
	q.model = "nope";
	assert_int_equal(route_plan(&q, &p), ROUTE_NO_MODEL);
	teardown_all(c);
}

static void test_measured_latency_ranks_equal_distances(void **state)
{
	struct conf *c = three(", ms_per_1000km: 0");
	struct route_plan p;
	struct route_query q = query(c, "grok-4", &DUBLIN);

	route_report_probe(dep(c, "us-east-1")->state, c, true, 200, 40000);
	route_report_probe(dep(c, "us-west-1")->state, c, true, 200, 5000);
	route_report_probe(dep(c, "eu-west-1")->state, c, true, 200, 80000);
	route_plan(&q, &p);
	assert_string_equal(p.order[0]->region, "us-west-1");
	assert_string_equal(p.order[1]->region, "us-east-1");
	assert_string_equal(p.order[2]->region, "eu-west-1");

	/* us-west slows down: a few probes move it behind us-east */
	for (int i = 0; i < 4; i++)
		route_report_probe(dep(c, "us-west-1")->state, c, true, 200, 150000);
	route_plan(&q, &p);
	assert_string_equal(p.order[0]->region, "us-east-1");
	teardown_all(c);
}

static void test_capacity_is_exact_and_spills_over(void **state)
{
	struct conf *c = three(NULL);
	struct route_plan a, b, d;
	struct route_query q = query(c, "grok-4", &VIRGINIA);
	const struct conf_deployment *east = dep(c, "us-east-1");

	route_plan(&q, &a);
	assert_ptr_equal(route_next(&a), east);
	route_plan(&q, &b);
	assert_ptr_equal(route_next(&b), east);
	/* max_inflight 2 is reached: the next request goes to the next closest region */
	route_plan(&q, &d);
	assert_string_equal(route_next(&d)->region, "us-west-1");
	assert_int_equal(atomic_load(&east->state->inflight), 2);
	route_release(east);
	route_plan(&q, &d);
	assert_ptr_equal(route_next(&d), east);
	route_release(east);
	route_release(east);
	route_release(dep(c, "us-west-1"));
	teardown_all(c);
}

struct race {
	const struct conf *c;
	atomic_int won;
};

static void claim_many(void *arg)
{
	struct race *r = arg;
	const struct conf_deployment *east = dep(r->c, "us-east-1");
	for (int i = 0; i < 2000; i++) {
		struct route_query q = {.conf = r->c, .provider = &r->c->providers[0],
					.model = "grok-4", .region = "us-east-1"};
		struct route_plan p;
		route_plan(&q, &p);
		if (route_next(&p) == east)
			atomic_fetch_add(&r->won, 1);
	}
}

static void test_capacity_exact_across_threads(void **state)
{
	struct conf *c = three(NULL);
	struct race r = {.c = c};
	uv_thread_t t[8];

	for (int i = 0; i < 8; i++)
		uv_thread_create(&t[i], claim_many, &r);
	for (int i = 0; i < 8; i++)
		uv_thread_join(&t[i]);
	/* nobody released: exactly max_inflight claims succeeded */
	assert_int_equal(atomic_load(&r.won), 2);
	assert_int_equal(atomic_load(&dep(c, "us-east-1")->state->inflight), 2);
	teardown_all(c);
}

static void test_overload_signal_and_retry_after(void **state)
{
	struct conf *c = three(NULL);
	struct route_plan p;
	struct route_query q = query(c, "mini", &VIRGINIA);

	route_report_overload(dep(c, "us-east-1"), c, 3000);
	assert_int_equal(route_plan(&q, &p), ROUTE_OK);
	assert_string_equal(route_next(&p)->region, "eu-west-1");
	route_release(dep(c, "eu-west-1"));

	route_report_overload(dep(c, "eu-west-1"), c, 0); /* cooldown: 5 s */
	assert_int_equal(route_plan(&q, &p), ROUTE_SATURATED);
	assert_null(route_next(&p));
	assert_int_equal(p.status, ROUTE_SATURATED);
	/* the first to free is us-east, in about 3 s */
	assert_true(p.retry_after_ms > 2500 && p.retry_after_ms <= 3000);
	teardown_all(c);
}

static void test_circuit_opens_and_a_probe_closes_it(void **state)
{
	struct conf *c = three(NULL);
	struct route_plan p;
	struct route_query q = query(c, "grok-4", &DUBLIN);
	q.region = "eu-west-1";
	const struct conf_deployment *eu = dep(c, "eu-west-1");

	route_report_failure(eu, c);
	route_report_failure(eu, c);
	assert_false(atomic_load(&eu->state->circuit_open));
	route_report_success(eu, 0); /* a success in between resets the count */
	route_report_failure(eu, c);
	route_report_failure(eu, c);
	assert_false(atomic_load(&eu->state->circuit_open));
	route_report_probe(eu->state, c, false, -1, 0);
	assert_true(atomic_load(&eu->state->circuit_open));
	assert_int_equal(route_plan(&q, &p), ROUTE_DOWN);
	assert_null(route_next(&p));

	/* the global scope goes around it */
	q.region = NULL;
	route_plan(&q, &p);
	assert_string_equal(route_next(&p)->region, "us-east-1");
	route_release(dep(c, "us-east-1"));

	route_report_probe(eu->state, c, true, 200, 1000);
	assert_false(atomic_load(&eu->state->circuit_open));
	q.region = "eu-west-1";
	assert_int_equal(route_plan(&q, &p), ROUTE_OK);
	assert_ptr_equal(route_next(&p), eu);
	route_release(eu);
	teardown_all(c);
}

static void test_scope_pinned_and_account(void **state)
{
	struct conf *c = three(NULL);
	struct route_plan p;
	struct route_query q = query(c, "grok-4", &SAN_JOSE);
	const struct conf_account *acme = route_account_by_key(c, "test", 4);

	assert_non_null(acme);
	assert_string_equal(acme->id, "acme");
	assert_null(route_account_by_key(c, "tesT", 4));
	assert_null(route_account_by_key(c, "", 0));

	/* the account is only ever processed in eu-west-1, wherever the client is */
	q.account = acme;
	route_plan(&q, &p);
	assert_int_equal(p.n, 1);
	assert_string_equal(p.order[0]->region, "eu-west-1");

	/* a pinned region lacking the model */
	q = query(c, "mini", NULL);
	q.region = "us-west-1";
	assert_int_equal(route_plan(&q, &p), ROUTE_NO_MODEL);
	q.region = "eu-west-1";
	assert_int_equal(route_plan(&q, &p), ROUTE_OK);
	assert_int_equal(p.n, 1);
	teardown_all(c);
}

static void test_tried_deployments_come_last(void **state)
{
	struct conf *c = three(NULL);
	struct route_plan p;
	struct route_query q = query(c, "grok-4", &DUBLIN);
	const struct conf_deployment *seen[4];

	route_plan(&q, &p);
	for (int i = 0; i < 4; i++) {
		seen[i] = route_next(&p);
		assert_non_null(seen[i]);
		route_release(seen[i]);
	}
	assert_string_equal(seen[0]->region, "eu-west-1");
	assert_string_equal(seen[1]->region, "us-east-1");
	assert_string_equal(seen[2]->region, "us-west-1");
	/* all tried: the best one that can still take it */
	assert_string_equal(seen[3]->region, "eu-west-1");
	teardown_all(c);
}

static void test_affinity(void **state)
{
	struct conf *c = three(NULL);
	struct route_plan p;
	struct route_query q = query(c, "grok-4", &DUBLIN);
	uint64_t key = route_affinity_key("xai", NULL, "conv-1", 6);

	assert_true(key != 0);
	assert_true(key != route_affinity_key("xai", "acme", "conv-1", 6));
	assert_true(key != route_affinity_key("xai", NULL, "conv-2", 6));

	q.affinity_key = key;
	route_plan(&q, &p);
	assert_string_equal(p.order[0]->region, "eu-west-1");
	route_affinity_put(key, dep(c, "us-west-1"));
	route_plan(&q, &p);
	assert_string_equal(p.order[0]->region, "us-west-1");

	/* it moves only when its deployment cannot take the request */
	route_report_overload(dep(c, "us-west-1"), c, 10000);
	route_plan(&q, &p);
	assert_string_equal(p.order[0]->region, "eu-west-1");
	teardown_all(c);
}

static void test_discovered_models(void **state)
{
	struct conf *c = load(REGIONS
			      "providers:\n"
			      "  xai:\n"
			      "    auth: {mode: passthrough}\n"
			      "    deployments:\n"
			      "      - {region: eu-west-1, url: \"http://127.0.0.1:9003\", models: [\"*\"]}\n");
	const struct conf_deployment *d = &c->providers[0].deployments[0];
	struct route_models *m = xcalloc(1, sizeof(*m));

	/* not discovered yet: anything may be served */
	assert_true(route_dep_serves(d, "anything"));
	m->n = 2;
	m->ids = xcalloc(2, sizeof(*m->ids));
	m->ids[0] = xstrdup("grok-3");
	m->ids[1] = xstrdup("grok-4");
	route_dep_set_models(d->state, m);
	assert_true(route_dep_serves(d, "grok-4"));
	assert_true(route_dep_serves(d, "grok-3"));
	assert_false(route_dep_serves(d, "anything"));
	assert_true(route_dep_serves(d, NULL));

	/* a second set replaces the first; the first is freed later, not under a reader */
	m = xcalloc(1, sizeof(*m));
	m->n = 1;
	m->ids = xcalloc(1, sizeof(*m->ids));
	m->ids[0] = xstrdup("grok-5");
	route_dep_set_models(d->state, m);
	assert_false(route_dep_serves(d, "grok-4"));
	assert_true(route_dep_serves(d, "grok-5"));
	teardown_all(c);
}

static void test_state_survives_reload(void **state)
{
	struct conf *a = three(NULL), *b = three(", max_attempts: 2");
	assert_ptr_equal(dep(a, "eu-west-1")->state, dep(b, "eu-west-1")->state);
	assert_ptr_not_equal(dep(a, "eu-west-1")->state, dep(a, "us-east-1")->state);
	conf_unref(a);
	teardown_all(b);
}

static void test_describe_json(void **state)
{
	struct conf *c = three(NULL);
	struct buf out = BUF_INIT;

	route_report_probe(dep(c, "eu-west-1")->state, c, true, 200, 12500);
	route_describe_json(c, &out);
	assert_non_null(strstr(out.data, "\"name\":\"us-east-1\",\"location\":[39,-77.5]"));
	assert_non_null(strstr(out.data, "\"region\":\"eu-west-1\",\"url\":\"http://127.0.0.1:9003\""));
	assert_non_null(strstr(out.data, "\"ewma_ms\":12.500"));
	assert_non_null(strstr(out.data, "\"max_inflight\":2"));
	assert_non_null(strstr(out.data, "\"models\":[\"grok-4\",\"mini\"],\"models_source\":\"config\""));
	buf_release(&out);
	teardown_all(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ranks_by_distance),
		cmocka_unit_test(test_measured_latency_ranks_equal_distances),
		cmocka_unit_test(test_capacity_is_exact_and_spills_over),
		cmocka_unit_test(test_capacity_exact_across_threads),
		cmocka_unit_test(test_overload_signal_and_retry_after),
		cmocka_unit_test(test_circuit_opens_and_a_probe_closes_it),
		cmocka_unit_test(test_scope_pinned_and_account),
		cmocka_unit_test(test_tried_deployments_come_last),
		cmocka_unit_test(test_affinity),
		cmocka_unit_test(test_discovered_models),
		cmocka_unit_test(test_state_survives_reload),
		cmocka_unit_test(test_describe_json),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
