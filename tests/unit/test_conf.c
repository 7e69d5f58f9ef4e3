/* test_conf.c - config loading: every field of the reference config, every class of error, units */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <cmocka.h>

#include "conf/conf.h"

#define HASH1 "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
#define HASH2 "sha256:60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
#define SECRET "xai-test-secret-value"

/* Six lines every error case below can extend: extra lines start at line 7. */
#define BASE                                                                                \
	"listen: [{address: \"127.0.0.1:8080\"}]\n"                                         \
	"regions: {r1: {location: [1, 2]}, eu-west-1: {location: [53.3, -6.3]}}\n"          \
	"providers:\n"                                                                      \
	"  p:\n"                                                                            \
	"    auth: {mode: passthrough}\n"                                                   \
	"    deployments: [{region: r1, url: \"http://127.0.0.1:9000\", models: [m]}]\n"

static struct conf *load(const char *yaml, char *err, size_t errlen)
{
	return conf_load_string(yaml, strlen(yaml), "t.yaml", err, errlen);
}

static void test_design_example(void **state)
{
	char err[512];
	struct conf *c;

	setenv("XAI_API_KEY", SECRET "\n", 1); /* a trailing newline is not part of the key */
	c = conf_load("tests/unit/conf/design.yaml", err, sizeof(err));
	if (!c)
		fail_msg("%s", err);
	assert_string_equal(c->path, "tests/unit/conf/design.yaml");
	assert_int_equal(c->refcount, 1);

	assert_int_equal(c->nlistens, 2);
	assert_string_equal(c->listens[0].address, "0.0.0.0:8080");
	assert_null(c->listens[0].region);
	assert_string_equal(c->listens[1].address, "0.0.0.0:8081");
	assert_string_equal(c->listens[1].region, "eu-west-1");
	assert_false(c->listens[0].share);
	assert_string_equal(c->admin_address, "127.0.0.1:9090");
	assert_string_equal(c->admin_token_env, "MERIDIAN_ADMIN_TOKEN");
	assert_string_equal(c->global_host, "api.example.com");

	assert_int_equal(c->nregions, 3);
	assert_string_equal(c->regions[0].name, "us-east-1");
	assert_true(c->regions[0].lat == 39.0 && c->regions[0].lon == -77.5);
	assert_string_equal(c->regions[1].name, "us-west-1");
	assert_true(c->regions[1].lat == 37.4 && c->regions[1].lon == -122.0);
	assert_string_equal(c->regions[2].name, "eu-west-1");
	assert_true(c->regions[2].lat == 53.3 && c->regions[2].lon == -6.3);
	assert_ptr_equal(conf_region(c, "eu-west-1"), &c->regions[2]);
	assert_null(conf_region(c, "eu-west-2"));

	assert_int_equal(c->nproviders, 1);
	const struct conf_provider *p = &c->providers[0];
	assert_string_equal(p->name, "xai");
	assert_int_equal(p->naliases, 1);
	assert_string_equal(p->aliases[0], "grok");
	assert_null(p->aliases[1]);
	assert_true(p->is_default);
	assert_int_equal(p->api, CONF_API_OPENAI | CONF_API_ANTHROPIC);
	assert_int_equal(p->auth_mode, CONF_AUTH_INJECT);
	assert_string_equal(p->key_env, "XAI_API_KEY");
	assert_null(p->key_file);
	assert_string_equal(p->key, SECRET);
	assert_null(p->ca_file);
	assert_int_equal(p->http_version, CONF_HTTP_AUTO);
	assert_int_equal(p->ndeployments, 3);
	const struct conf_deployment *d = p->deployments;
	assert_ptr_equal(d[0].provider, p);
	assert_string_equal(d[0].region, "us-east-1");
	assert_string_equal(d[0].url, "https://us-east-1.api.x.ai");
	assert_int_equal(d[0].nmodels, 2);
	assert_string_equal(d[0].models[0], "grok-4");
	assert_string_equal(d[0].models[1], "grok-3-mini");
	assert_null(d[0].models[2]);
	assert_false(d[0].models_discover);
	assert_int_equal(d[0].max_inflight, 512);
	assert_string_equal(d[1].region, "us-west-1");
	assert_string_equal(d[1].url, "https://us-west-1.api.x.ai");
	assert_int_equal(d[1].nmodels, 1);
	assert_int_equal(d[1].max_inflight, 0);
	assert_string_equal(d[2].region, "eu-west-1");
	assert_true(d[2].models_discover);
	assert_int_equal(d[2].nmodels, 0);
	assert_non_null(d[2].models);
	assert_null(d[2].models[0]);
	assert_ptr_equal(d[2].provider, p);
	assert_ptr_equal(conf_provider(c, "xai", 3), p);
	assert_ptr_equal(conf_provider(c, "grok/x", 4), p);
	assert_null(conf_provider(c, "gro", 3));
	assert_null(conf_provider(c, "Grok", 4));
	assert_ptr_equal(conf_default_provider(c), p);

	assert_int_equal(c->naccounts, 1);
	const struct conf_account *a = &c->accounts[0];
	assert_string_equal(a->id, "acme");
	assert_int_equal(a->nkeys, 1);
	assert_string_equal(a->keys[0], HASH1);
	assert_int_equal(a->limits.requests_per_minute, 600);
	assert_int_equal(a->limits.tokens_per_minute, 200000);
	assert_int_equal(a->limits.max_concurrent, 50);
	assert_int_equal(a->nregions, 1);
	assert_string_equal(a->regions[0], "eu-west-1");

	assert_int_equal(c->ngateways, 1);
	assert_string_equal(c->gateways[0].id, "acme/prod");
	assert_int_equal(c->gateways[0].cache_ttl_ms, 300000);
	assert_false(c->gateways[0].log_bodies);

	const struct conf_client_location *cl = &c->client_location;
	assert_string_equal(cl->header, "x-client-location");
	assert_int_equal(cl->ntrusted_proxies, 1);
	assert_string_equal(cl->trusted_proxies[0], "127.0.0.0/8");
	assert_int_equal(cl->nnetworks, 1);
	assert_string_equal(cl->networks[0].cidr, "10.20.0.0/16");
	assert_true(cl->networks[0].lat == 48.9 && cl->networks[0].lon == 2.4);
	assert_string_equal(cl->geoip_db, "/var/lib/GeoIP/GeoLite2-City.mmdb");
	assert_true(cl->has_default);
	assert_true(cl->default_lat == 39.0 && cl->default_lon == -77.5);

	const struct conf_routing *r = &c->routing;
	assert_int_equal(r->max_attempts, 3);
	assert_int_equal(r->retry_on, CONF_RETRY_CONNECT | CONF_RETRY_TIMEOUT);
	assert_int_equal(r->nretry_statuses, 5);
	static const int statuses[] = {429, 500, 502, 503, 504};
	assert_memory_equal(r->retry_statuses, statuses, sizeof(statuses));
	assert_int_equal(r->connect_timeout_ms, 5000);
	assert_int_equal(r->first_byte_timeout_ms, 60000);
	assert_int_equal(r->idle_timeout_ms, 120000);
	assert_int_equal(r->total_timeout_ms, 600000);
	assert_int_equal(r->probe_interval_ms, 5000);
	assert_true(r->ms_per_1000km == 10);

	assert_int_equal(c->cache_backend, CONF_BACKEND_MEMORY);
	assert_int_equal(c->cache_max_bytes, 256u << 20);
	assert_int_equal(c->ratelimit_backend, CONF_BACKEND_MEMORY);
	assert_false(c->ratelimit_deny_on_redis_error);
	assert_true(c->ratelimit_lease);
	assert_string_equal(c->redis_url, "redis://127.0.0.1:6379/0");
	assert_string_equal(c->logs_store, "sqlite:meridian.db");
	assert_false(c->logs_bodies);
	assert_int_equal(c->logs_retention_ms, 30ull * 86400000);
	assert_int_equal(c->logs_queue, 65536);
	assert_int_equal(c->nprices, 1);
	assert_string_equal(c->prices[0].model, "grok-4");
	assert_true(c->prices[0].input_per_mtok == 3.0 && c->prices[0].output_per_mtok == 15.0);

	/* server: absent from the example, so every default */
	const struct conf_server *s = &c->server;
	assert_int_equal(s->workers, 0);
	assert_int_equal(s->shutdown_grace_ms, 30000);
	assert_int_equal(s->max_connections, 10000);
	assert_int_equal(s->max_body, 32u << 20);
	assert_int_equal(s->max_url, 8u << 10);
	assert_int_equal(s->max_header_line, 16u << 10);
	assert_int_equal(s->max_header_bytes, 32u << 10);
	assert_int_equal(s->max_headers, 100);
	assert_int_equal(s->header_timeout_ms, 10000);
	assert_int_equal(s->body_timeout_ms, 60000);
	assert_int_equal(s->keepalive_timeout_ms, 75000);
	assert_int_equal(s->send_timeout_ms, 60000);
	assert_int_equal(s->stream_buffer, 256u << 10);
	assert_int_equal(s->busy_poll_ms, 0);

	conf_unref(c);
}

/* Every key that has a default, set to something else; plus the provider keys beyond DESIGN.md. */
static void test_full_fixture(void **state)
{
	char err[512];
	FILE *f = fopen("/tmp/meridian-test-conf-key", "w");
	assert_non_null(f);
	fputs("file-secret \r\n\n", f);
	fclose(f);

	struct conf *c = conf_load("tests/unit/conf/full.yaml", err, sizeof(err));
	if (!c)
		fail_msg("%s", err);
	assert_true(c->listens[0].share);
	assert_false(c->listens[1].share);
	assert_int_equal(c->nproviders, 2);
	const struct conf_provider *a = &c->providers[0], *b = &c->providers[1];
	assert_false(a->is_default);
	assert_true(b->is_default);
	assert_ptr_equal(conf_default_provider(c), b);
	assert_int_equal(a->api, CONF_API_ANTHROPIC);
	assert_int_equal(a->auth_mode, CONF_AUTH_INJECT);
	assert_string_equal(a->key_file, "/tmp/meridian-test-conf-key");
	assert_string_equal(a->key, "file-secret");
	assert_string_equal(a->ca_file, "/dev/null");
	assert_int_equal(a->http_version, CONF_HTTP_1_1);
	assert_string_equal(a->deployments[0].url, "http://127.0.0.1:9001/base");
	assert_int_equal(b->api, CONF_API_OPENAI);
	assert_int_equal(b->auth_mode, CONF_AUTH_PASSTHROUGH);
	assert_null(b->key);
	assert_int_equal(b->http_version, CONF_HTTP_2);
	assert_int_equal(b->naliases, 2);
	assert_ptr_equal(conf_provider(c, "o2", 2), b);

	assert_int_equal(c->naccounts, 2);
	assert_int_equal(c->accounts[1].nregions, 0);
	assert_non_null(c->accounts[1].regions);
	assert_int_equal(c->accounts[1].limits.requests_per_minute, 0);
	assert_false(c->client_location.has_default);
	assert_string_equal(c->client_location.header, "x-loc");
	assert_int_equal(c->client_location.ntrusted_proxies, 3);

	const struct conf_routing *r = &c->routing;
	assert_int_equal(r->max_attempts, 10);
	assert_int_equal(r->retry_on, CONF_RETRY_TIMEOUT);
	assert_int_equal(r->nretry_statuses, 2);
	assert_int_equal(r->retry_statuses[0], 503);
	assert_int_equal(r->retry_statuses[1], 429);
	assert_int_equal(r->connect_timeout_ms, 250);
	assert_int_equal(r->first_byte_timeout_ms, 2 * 60000);
	assert_int_equal(r->idle_timeout_ms, 45000);
	assert_int_equal(r->total_timeout_ms, 3600000);
	assert_int_equal(r->probe_interval_ms, 1000);
	assert_true(r->ms_per_1000km == 7.5);

	const struct conf_server *s = &c->server;
	assert_int_equal(s->workers, 2);
	assert_int_equal(s->shutdown_grace_ms, 5000);
	assert_int_equal(s->max_connections, 100);
	assert_int_equal(s->max_body, 1u << 20);
	assert_int_equal(s->max_url, 2048);
	assert_int_equal(s->max_header_line, 4u << 10);
	assert_int_equal(s->max_header_bytes, 8u << 10);
	assert_int_equal(s->max_headers, 50);
	assert_int_equal(s->header_timeout_ms, 2000);
	assert_int_equal(s->body_timeout_ms, 3000);
	assert_int_equal(s->keepalive_timeout_ms, 4000);
	assert_int_equal(s->send_timeout_ms, 5000);
	assert_int_equal(s->stream_buffer, 64u << 10);
	assert_int_equal(s->busy_poll_ms, 2);

	assert_int_equal(c->cache_backend, CONF_BACKEND_REDIS);
	assert_int_equal(c->cache_max_bytes, 1ull << 30);
	assert_int_equal(c->ratelimit_backend, CONF_BACKEND_REDIS);
	assert_true(c->ratelimit_deny_on_redis_error);
	assert_false(c->ratelimit_lease);
	assert_string_equal(c->logs_store, "postgres://meridian:pw@127.0.0.1/logs");
	assert_true(c->logs_bodies);
	assert_int_equal(c->logs_retention_ms, 7ull * 86400000);
	assert_null(c->admin_address);
	assert_null(c->global_host);

	/* the description never shows a secret: neither the key nor URL passwords */
	struct buf out = BUF_INIT;
	conf_describe(c, &out);
	assert_null(strstr(out.data, "file-secret"));
	assert_null(strstr(out.data, "pw@"));
	assert_non_null(strstr(out.data, "postgres://meridian:***@127.0.0.1/logs"));
	assert_non_null(strstr(out.data, "redis://:***@127.0.0.1:6379/1"));
	assert_non_null(strstr(out.data, "inject, key from file /tmp/meridian-test-conf-key\n"));
	assert_non_null(strstr(out.data, "  o (default)\n"));
	assert_non_null(strstr(out.data, "  retry_on        timeout, 503, 429\n"));
	buf_release(&out);
	conf_unref(c);
	unlink("/tmp/meridian-test-conf-key");
}

static void test_describe(void **state)
{
	char err[512];
	struct buf out = BUF_INIT;

	setenv("XAI_API_KEY", SECRET, 1);
	struct conf *c = conf_load("tests/unit/conf/design.yaml", err, sizeof(err));
	assert_non_null(c);
	conf_describe(c, &out);
	assert_null(strstr(out.data, SECRET));
	assert_null(strstr(out.data, HASH1)); /* shortened */
	static const char *const lines[] = {
		"listen\n  0.0.0.0:8080  global\n  0.0.0.0:8081  pinned to eu-west-1\n",
		"admin             127.0.0.1:9090, token from $MERIDIAN_ADMIN_TOKEN\n",
		"  us-west-1    37.4000  -122.0000\n",
		"  xai (default)\n    aliases       grok\n    api           openai, anthropic\n"
		"    auth          inject, key from $XAI_API_KEY\n",
		"    deployments\n"
		"      region     url                         max_inflight  models\n"
		"      us-east-1  https://us-east-1.api.x.ai  512           grok-4, grok-3-mini\n"
		"      us-west-1  https://us-west-1.api.x.ai  unlimited     grok-4\n"
		"      eu-west-1  https://eu-west-1.api.x.ai  unlimited     discovered from /v1/models\n",
		"    keys          sha256:9f86d081\u2026\n"
		"    limits        600 requests/min, 200000 tokens/min, 50 concurrent\n"
		"    regions       eu-west-1\n",
		"  acme/prod  cache_ttl 5m, log_bodies no\n",
		"  timeouts        connect 5s, first_byte 1m, idle 2m, total 10m\n",
		"  logs            sqlite:meridian.db, bodies no, retention 30d\n",
		"  grok-4          input 3.00, output 15.00\n",
	};
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		if (!strstr(out.data, lines[i]))
			fail_msg("missing from the description:\n%s\n--- got:\n%s", lines[i], out.data);
	buf_release(&out);
	conf_unref(c);
}

struct bad {
	const char *yaml;
	const char *err;
};

static const struct bad bad[] = {
	/* unknown keys, with a suggestion when one is close */
	{BASE "routing: {max_atempts: 3}\n",
	 "t.yaml:7:11: key 'routing.max_atempts': unknown key; did you mean 'max_attempts'?"},
	{"listen: [{address: \"127.0.0.1:8080\"}]\n"
	 "regions: {r1: {location: [1, 2]}}\n"
	 "providers:\n"
	 "  xai:\n"
	 "    auth: {mode: passthrough}\n"
	 "    deployments:\n"
	 "      - {region: r1, url: \"http://127.0.0.1:9000\", models: [m]}\n"
	 "      - {region: r1, url: \"http://127.0.0.1:9001\", models: [m], max_inflght: 5}\n",
	 "t.yaml:8:65: key 'providers.xai.deployments[1].max_inflght': unknown key; did you mean 'max_inflight'?"},
	{BASE "colour: blue\n", "t.yaml:7:1: key 'colour': unknown key"},
	/* duplicates */
	{BASE "routing:\n  max_attempts: 2\n  max_attempts: 3\n",
	 "t.yaml:9:3: key 'routing.max_attempts': duplicate key (first at line 8, column 3)"},
	{BASE "accounts:\n  a: {keys: [\"" HASH1 "\"]}\n  a: {keys: [\"" HASH2 "\"]}\n",
	 "t.yaml:9:3: key 'accounts.a': duplicate key (first at line 8, column 3)"},
	/* types */
	{BASE "routing: {timeouts: {connect: 5 seconds}}\n",
	 "t.yaml:7:31: key 'routing.timeouts.connect': expected a duration like 30s (units ms, s, m, h, d), got '5 seconds'"},
	{BASE "routing: {probe_interval: 0s}\n",
	 "t.yaml:7:27: key 'routing.probe_interval': must be more than 0"},
	{BASE "cache: {max_bytes: 256MB}\n",
	 "t.yaml:7:20: key 'cache.max_bytes': expected a size like 256MiB (units KiB, MiB, GiB, or bytes), got '256MB'"},
	{BASE "routing: {max_attempts: 11}\n",
	 "t.yaml:7:25: key 'routing.max_attempts': must be between 1 and 10, got 11"},
	{BASE "routing: {max_attempts: \"3\"}\n",
	 "t.yaml:7:25: key 'routing.max_attempts': expected a non-negative integer, got '3'"},
	{BASE "logs: {bodies: yes}\n",
	 "t.yaml:7:16: key 'logs.bodies': expected true or false, got 'yes'"},
	{BASE "logs: {queue: 0}\n",
	 "t.yaml:7:15: key 'logs.queue': must be between 1 and 16777216, got 0"},
	{BASE "logs: {queue: 16777217}\n",
	 "t.yaml:7:15: key 'logs.queue': must be between 1 and 16777216, got 16777217"},
	{BASE "hosts: {global: }\n", "t.yaml:7:17: key 'hosts.global': expected a string, got nothing"},
	{BASE "hosts: [a]\n", "t.yaml:7:8: key 'hosts': expected a mapping, got a list"},
	{BASE "prices: {m: {input_per_mtok: -1}}\n",
	 "t.yaml:7:30: key 'prices.m.input_per_mtok': must be 0 or more, got -1"},
	{BASE "prices: {\"m.1\": {output_per_mtok: x}}\n",
	 "t.yaml:7:35: key 'prices[\"m.1\"].output_per_mtok': expected a number, got 'x'"},
	{BASE "cache: {backend: redsi}\n",
	 "t.yaml:7:18: key 'cache.backend': expected memory or redis, got 'redsi'"},
	{BASE "ratelimit: {on_redis_error: block}\n",
	 "t.yaml:7:29: key 'ratelimit.on_redis_error': expected allow or deny, got 'block'"},
	/* required keys */
	{"listen: [{address: \"127.0.0.1:8080\"}]\n"
	 "regions: {r1: {location: [1, 2]}}\n"
	 "providers:\n"
	 "  p:\n"
	 "    auth: {mode: passthrough}\n"
	 "    deployments: [{region: r1, models: [m]}]\n",
	 "t.yaml:6:19: key 'providers.p.deployments[0].url': required key is missing"},
	{"regions: {}\n", "t.yaml:1:1: key 'listen': required key is missing"},
	{"", "t.yaml:1:1: key 'listen': required key is missing"},
	{"listen: []\n", "t.yaml:1:9: key 'listen': at least one listen address is required"},
	/* regions */
	{BASE "accounts: {a: {keys: [\"" HASH1 "\"], regions: [eu-west-2]}}\n",
	 "t.yaml:7:109: key 'accounts.a.regions[0]': unknown region 'eu-west-2'; did you mean 'eu-west-1'?"},
	{"listen: [{address: \"127.0.0.1:8080\", region: mars}]\n"
	 "regions: {r1: {location: [1, 2]}}\n",
	 "t.yaml:1:46: key 'listen[0].region': unknown region 'mars'"},
	{"listen: [{address: \"127.0.0.1:8080\"}]\n"
	 "providers: {p: {auth: {mode: passthrough}, deployments: [{region: r1, url: \"http://h\", models: [m]}]}}\n",
	 "t.yaml:2:67: key 'providers.p.deployments[0].region': unknown region 'r1': no regions are defined"},
	{BASE "regions: {}\n", "t.yaml:7:1: key 'regions': duplicate key (first at line 2, column 1)"},
	{"listen: [{address: \"127.0.0.1:8080\"}]\nregions: {US-East: {location: [1, 2]}}\n",
	 "t.yaml:2:11: key 'regions.US-East': a region name is a DNS label: lowercase letters, digits and '-'"},
	{"listen: [{address: \"127.0.0.1:8080\"}]\nregions: {r: {location: [91, 2]}}\n",
	 "t.yaml:2:26: key 'regions.r.location[0]': latitude must be between -90 and 90, got 91"},
	{"listen: [{address: \"127.0.0.1:8080\"}]\nregions: {r: {location: [1, -180.5]}}\n",
	 "t.yaml:2:29: key 'regions.r.location[1]': longitude must be between -180 and 180, got -180.5"},
	{"listen: [{address: \"127.0.0.1:8080\"}]\nregions: {r: {location: [1]}}\n",
	 "t.yaml:2:25: key 'regions.r.location': expected a location [latitude, longitude], got a list"},
	/* listen addresses */
	{"listen: [{address: \"localhost:8080\"}]\n",
	 "t.yaml:1:20: key 'listen[0].address': expected host:port with a numeric IP, like 0.0.0.0:8080 or [::1]:8080, got 'localhost:8080'"},
	{"listen: [{address: \"127.0.0.1:65536\"}]\n",
	 "t.yaml:1:20: key 'listen[0].address': expected host:port with a numeric IP, like 0.0.0.0:8080 or [::1]:8080, got '127.0.0.1:65536'"},
	{"listen: [{address: \"[::1]:80\"}, {address: \"[::1]:80\"}]\n",
	 "t.yaml:1:43: key 'listen[1].address': '[::1]:80' is already listen[0]"},
	/* deployment URLs and models */
	{BASE "  q:\n    auth: {mode: passthrough}\n    deployments: [{region: r1, url: \"ftp://h/\", models: [m]}]\n",
	 "t.yaml:9:37: key 'providers.q.deployments[0].url': expected an http:// or https:// URL, not ftp://"},
	{BASE "  q:\n    auth: {mode: passthrough}\n    deployments: [{region: r1, url: \"not a url\", models: [m]}]\n",
	 "t.yaml:9:37: key 'providers.q.deployments[0].url': expected an http:// or https:// URL, got 'not a url'"},
	{BASE "  q:\n    auth: {mode: passthrough}\n    deployments: [{region: r1, url: \"https://h/v1?x=1\", models: [m]}]\n",
	 "t.yaml:9:37: key 'providers.q.deployments[0].url': a deployment URL takes no query or fragment"},
	{BASE "  q:\n    auth: {mode: passthrough}\n    deployments: [{region: r1, url: \"http://h\", models: [a, \"*\"]}]\n",
	 "t.yaml:9:61: key 'providers.q.deployments[0].models[1]': \"*\" (discover the models) must be alone in the list"},
	{BASE "  q:\n    auth: {mode: passthrough}\n    deployments: [{region: r1, url: \"http://h\", models: []}]\n",
	 "t.yaml:9:57: key 'providers.q.deployments[0].models': list at least one model, or \"*\" to discover them"},
	{BASE "  q:\n    auth: {mode: passthrough}\n    deployments: [{region: r1, url: \"http://h\", models: }]\n",
	 "t.yaml:9:57: key 'providers.q.deployments[0].models': list at least one model, or \"*\" to discover them"},
	{BASE "  q:\n    auth: {mode: passthrough}\n    deployments: []\n",
	 "t.yaml:9:18: key 'providers.q.deployments': a provider needs at least one deployment"},
	/* providers */
	{BASE "    default: true\n  q:\n    default: true\n    auth: {mode: passthrough}\n"
	      "    deployments: [{region: r1, url: \"http://h\", models: [m]}]\n",
	 "t.yaml:9:14: key 'providers.q.default': provider 'p' is already the default"},
	{BASE "    aliases: [q]\n  q:\n    auth: {mode: passthrough}\n"
	      "    deployments: [{region: r1, url: \"http://h\", models: [m]}]\n",
	 "t.yaml:7:15: key 'providers.p.aliases[0]': alias 'q' is already the name of provider 'q'"},
	{BASE "    aliases: [a]\n  q:\n    aliases: [b, a]\n    auth: {mode: passthrough}\n"
	      "    deployments: [{region: r1, url: \"http://h\", models: [m]}]\n",
	 "t.yaml:9:18: key 'providers.q.aliases[1]': alias 'a' is already used by provider 'p'"},
	{BASE "    api: [openai, gemini]\n",
	 "t.yaml:7:19: key 'providers.p.api[1]': expected openai or anthropic, got 'gemini'"},
	{BASE "    http_version: 3\n",
	 "t.yaml:7:19: key 'providers.p.http_version': expected auto, 1.1 or 2, got '3'"},
	{BASE "  a/b:\n    auth: {mode: passthrough}\n    deployments: [{region: r1, url: \"http://h\", models: [m]}]\n",
	 "t.yaml:7:3: key 'providers.a/b': a provider name takes letters, digits, '.', '_' and '-'"},
	/* provider auth */
	{BASE "  q:\n    auth: {mode: inject, key_env: MERIDIAN_TEST_UNSET}\n"
	      "    deployments: [{region: r1, url: \"http://h\", models: [m]}]\n",
	 "t.yaml:8:35: key 'providers.q.auth.key_env': environment variable 'MERIDIAN_TEST_UNSET' is not set"},
	{BASE "  q:\n    auth: {mode: inject, key_env: MERIDIAN_TEST_EMPTY}\n"
	      "    deployments: [{region: r1, url: \"http://h\", models: [m]}]\n",
	 "t.yaml:8:35: key 'providers.q.auth.key_env': environment variable 'MERIDIAN_TEST_EMPTY' is empty"},
	{BASE "  q:\n    auth: {mode: inject, key_file: /nonexistent/key}\n"
	      "    deployments: [{region: r1, url: \"http://h\", models: [m]}]\n",
	 "t.yaml:8:36: key 'providers.q.auth.key_file': cannot read '/nonexistent/key': No such file or directory"},
	{BASE "  q:\n    auth: {mode: inject, key_file: /dev/null}\n"
	      "    deployments: [{region: r1, url: \"http://h\", models: [m]}]\n",
	 "t.yaml:8:36: key 'providers.q.auth.key_file': cannot read '/dev/null': not a regular file"},
	{BASE "  q:\n    auth: {mode: inject, key_env: MERIDIAN_TEST_SPACE}\n"
	      "    deployments: [{region: r1, url: \"http://h\", models: [m]}]\n",
	 "t.yaml:8:35: key 'providers.q.auth.key_env': the key in environment variable 'MERIDIAN_TEST_SPACE' contains a space or control character"},
	{BASE "  q:\n    auth: {mode: inject}\n    deployments: [{region: r1, url: \"http://h\", models: [m]}]\n",
	 "t.yaml:8:18: key 'providers.q.auth.mode': mode inject needs key_env or key_file"},
	{BASE "  q:\n    auth: {mode: passthrough, key_env: HOME}\n"
	      "    deployments: [{region: r1, url: \"http://h\", models: [m]}]\n",
	 "t.yaml:8:40: key 'providers.q.auth.key_env': mode passthrough forwards the client's key; remove key_env"},
	{BASE "  q:\n    auth: {mode: magic}\n    deployments: [{region: r1, url: \"http://h\", models: [m]}]\n",
	 "t.yaml:8:18: key 'providers.q.auth.mode': expected inject or passthrough, got 'magic'"},
	{BASE "  q:\n    auth: {key_env: HOME}\n    deployments: [{region: r1, url: \"http://h\", models: [m]}]\n",
	 "t.yaml:8:11: key 'providers.q.auth.mode': required key is missing"},
	{BASE "    ca_file: /nonexistent/ca.pem\n",
	 "t.yaml:7:14: key 'providers.p.ca_file': cannot read '/nonexistent/ca.pem': No such file or directory"},
	/* accounts and gateways */
	{BASE "accounts: {a: {keys: [\"sha256:9F86\"]}}\n",
	 "t.yaml:7:23: key 'accounts.a.keys[0]': expected \"sha256:\" and 64 lowercase hex digits (`meridian key new` prints one)"},
	{BASE "accounts:\n  a: {keys: [\"" HASH1 "\"]}\n  b: {keys: [\"" HASH2 "\", \"" HASH1 "\"]}\n",
	 "t.yaml:9:89: key 'accounts.b.keys[1]': this key is already listed for account 'a'"},
	{BASE "accounts: {a: {keys: [\"" HASH1 "\"], limits: {requests_per_min: 5}}}\n",
	 "t.yaml:7:108: key 'accounts.a.limits.requests_per_min': unknown key; did you mean 'requests_per_minute'?"},
	{BASE "accounts: {acme: {keys: [\"" HASH1 "\"]}}\ngateways: {acme/prod: {}, acne/dev: {}}\n",
	 "t.yaml:8:27: key 'gateways.acne/dev': unknown account 'acne'"},
	{BASE "gateways: {prod: {cache_ttl: 5m}}\n",
	 "t.yaml:7:12: key 'gateways.prod': expected \"account/gateway\""},
	/* client location */
	{BASE "client_location: {trusted_proxies: [10.0.0.0/33]}\n",
	 "t.yaml:7:37: key 'client_location.trusted_proxies[0]': expected an address or CIDR like 10.0.0.0/8, got '10.0.0.0/33'"},
	{BASE "client_location: {networks: [{cidr: 10.1.0.0/16}]}\n",
	 "t.yaml:7:30: key 'client_location.networks[0].location': required key is missing"},
	{BASE "client_location: {header: \"x loc\"}\n",
	 "t.yaml:7:27: key 'client_location.header': not an HTTP header name"},
	/* routing */
	{BASE "routing: {retry_on: [connect, 600]}\n",
	 "t.yaml:7:31: key 'routing.retry_on[1]': expected connect, timeout or an HTTP status 400-599, got '600'"},
	{BASE "routing: {retry_on: [429, 429]}\n",
	 "t.yaml:7:27: key 'routing.retry_on[1]': '429' is listed twice"},
	/* backends */
	{BASE "cache: {backend: redis}\n",
	 "t.yaml:7:18: key 'cache.backend': backend redis needs redis.url"},
	{BASE "redis: {}\n", "t.yaml:7:8: key 'redis.url': required key is missing"},
	{BASE "redis: {url: \"http://x\"}\n",
	 "t.yaml:7:14: key 'redis.url': expected a redis://, rediss:// or unix:// URL"},
	{BASE "redis: {url: \"rediss://:pw@h:6380/0\"}\n",
	 "t.yaml:7:14: key 'redis.url': rediss:// (TLS) is not supported: this build's hiredis "
	 "(0.14) has no TLS; use redis:// over a trusted network or unix://"},
	{BASE "logs: {store: \"mysql://u:secret@h/db\"}\n",
	 "t.yaml:7:15: key 'logs.store': expected \"sqlite:PATH\", a postgres:// URL or \"off\""},
	{BASE "logs: {store: \"sqlite:\"}\n",
	 "t.yaml:7:15: key 'logs.store': expected \"sqlite:PATH\", a postgres:// URL or \"off\""},
	/* YAML itself */
	{"listen:\n  - address: 127.0.0.1:8080\n   region: x\n",
	 "t.yaml:3:4: invalid YAML: did not find expected '-' indicator (while parsing a block collection at line 2, column 3)"},
	{"listen:\n  - address: 127.0.0.1:8080 region: x\n",
	 "t.yaml:2:35: invalid YAML: mapping values are not allowed in this context"},
	{"listen: [{address: \"127.0.0.1:8080\"}\n",
	 "t.yaml:2:1: invalid YAML: did not find expected ',' or ']' (while parsing a flow sequence at line 1, column 9)"},
	{"a: &x {b: 1}\nc: *x\n", "t.yaml:2:4: key 'c': YAML aliases (*x) are not supported"},
	{BASE "---\nlisten: []\n", "t.yaml:7:1: a config holds one YAML document, this is a second one"},
	{"listen:\n\t- address: x\n",
	 "t.yaml:2:1: invalid YAML: found character that cannot start any token (while scanning for the next token at line 2, column 1)"},
	{"listen:\n  - address: \"0.0.0.0:8080\xff\"\n",
	 "t.yaml:2:27: invalid YAML: invalid leading UTF-8 octet"},
	{"listen: [{address: \"\xc3\xa9\x01\"}]\n",
	 "t.yaml:1:22: invalid YAML: control characters are not allowed"},
	{"- a\n- b\n", "t.yaml:1:1: expected a mapping, got a list"},
	{"[a]: b\n", "t.yaml:1:1: a key must be a plain string, not a list"},
};

static void test_errors(void **state)
{
	char err[512];
	int failures = 0;

	unsetenv("MERIDIAN_TEST_UNSET");
	setenv("MERIDIAN_TEST_EMPTY", " \n", 1);
	setenv("MERIDIAN_TEST_SPACE", "Bearer s3cret", 1);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct conf *c = load(bad[i].yaml, err, sizeof(err));
		if (c) {
			conf_unref(c);
			print_error("case %zu loaded, expected: %s\n", i, bad[i].err);
			failures++;
		} else if (strcmp(err, bad[i].err)) {
			print_error("case %zu:\n  expected: %s\n  got:      %s\n", i, bad[i].err, err);
			failures++;
		}
	}
	assert_int_equal(failures, 0);
}

static void test_small_valid(void **state)
{
	char err[512];
	struct conf *c;

	/* trailing slashes go, a single provider is the default, a null section is empty */
	c = load(BASE "  q:\n    auth: {mode: passthrough}\n"
		      "    deployments: [{region: r1, url: \"HTTPS://h:8443/base//\", models: [\"*\"]}]\n"
		      "admin:\n  address: \"[::1]:9090\"\nprices:\nhosts: {global: API.Example.COM}\n",
		 err, sizeof(err));
	if (!c)
		fail_msg("%s", err);
	assert_string_equal(c->providers[1].deployments[0].url, "HTTPS://h:8443/base");
	assert_null(conf_default_provider(c)); /* two providers, none marked */
	assert_string_equal(c->global_host, "api.example.com");
	assert_int_equal(c->nprices, 0);
	assert_non_null(c->client_location.trusted_proxies);
	conf_unref(c);

	c = load(BASE, err, sizeof(err));
	assert_non_null(c);
	assert_true(c->providers[0].is_default);
	assert_int_equal(c->providers[0].naliases, 0);
	assert_non_null(c->providers[0].aliases);
	assert_null(c->providers[0].aliases[0]);
	conf_unref(c);

	/* an empty retry_on list is allowed: never retry; an empty value is an empty list */
	c = load(BASE "    aliases:\nrouting: {retry_on: }\n", err, sizeof(err));
	if (!c)
		fail_msg("%s", err);
	assert_non_null(c->providers[0].aliases);
	assert_null(c->providers[0].aliases[0]);
	conf_unref(c);
	c = load(BASE "routing: {retry_on: []}\n", err, sizeof(err));
	assert_non_null(c);
	assert_int_equal(c->routing.retry_on, 0);
	assert_int_equal(c->routing.nretry_statuses, 0);
	conf_unref(c);

	c = load(BASE "logs: {queue: 1024}\n", err, sizeof(err));
	if (!c)
		fail_msg("%s", err);
	assert_int_equal(c->logs_queue, 1024);
	conf_unref(c);
}

/* The reference config in examples/ stays loadable. */
static void test_example(void **state)
{
	char err[512];
	struct conf *c;

	unsetenv("XAI_API_KEY");
	assert_null(conf_load("examples/meridian.yaml", err, sizeof(err)));
	assert_string_equal(err, "examples/meridian.yaml:34:16: key 'providers.xai.auth.key_env': "
				 "environment variable 'XAI_API_KEY' is not set");
	setenv("XAI_API_KEY", SECRET, 1);
	c = conf_load("examples/meridian.yaml", err, sizeof(err));
	if (!c)
		fail_msg("%s", err);
	assert_int_equal(c->nproviders, 2);
	assert_string_equal(conf_default_provider(c)->name, "xai");
	assert_int_equal(c->providers[1].auth_mode, CONF_AUTH_PASSTHROUGH);
	assert_int_equal(c->naccounts, 2);
	assert_int_equal(c->ngateways, 2);
	assert_int_equal(c->nprices, 2);
	assert_int_equal(c->server.max_body, 32u << 20);
	conf_unref(c);
}

static void test_load_file_errors(void **state)
{
	char err[512];

	assert_null(conf_load("tests/unit/conf/does-not-exist.yaml", err, sizeof(err)));
	assert_string_equal(err, "tests/unit/conf/does-not-exist.yaml: cannot open: No such file or directory");
	assert_null(conf_load("tests/unit/conf", err, sizeof(err)));
	assert_string_equal(err, "tests/unit/conf: not a regular file");
	assert_null(conf_load("tests/unit/conf/bad-syntax.yaml", err, sizeof(err)));
	assert_string_equal(err, "tests/unit/conf/bad-syntax.yaml:4:10: invalid YAML: mapping values are not "
				 "allowed in this context");
	assert_null(conf_load("tests/unit/conf/bad-region.yaml", err, sizeof(err)));
	assert_string_equal(err, "tests/unit/conf/bad-region.yaml:11:18: key "
				 "'providers.xai.deployments[1].region': unknown region 'us-west-2'; did you "
				 "mean 'us-west-1'?");
	/* err may be omitted */
	assert_null(conf_load_string("x: 1", 4, "n", NULL, 0));
}

static void test_units(void **state)
{
	static const struct {
		const char *s;
		int64_t ms;
	} durations[] = {
		{"0", 0}, {"30", 30000}, {"30s", 30000}, {"250ms", 250}, {"5m", 300000},
		{"2h", 7200000}, {"1d", 86400000}, {"30d", 2592000000}, {"0ms", 0},
		{"", -1}, {"s", -1}, {"-5s", -1}, {"1.5s", -1}, {"5 s", -1}, {"5S", -1},
		{"5sec", -1}, {"5w", -1}, {"1ms ", -1}, {" 1s", -1}, {"999999999999999999d", -1},
		{"9999999999999999999", -1},
	};
	static const struct {
		const char *s;
		int64_t bytes;
	} sizes[] = {
		{"0", 0}, {"100", 100}, {"8KiB", 8192}, {"256MiB", 268435456}, {"1GiB", 1073741824},
		{"3GiB", 3221225472}, {"", -1}, {"1KB", -1}, {"1MB", -1}, {"1kib", -1}, {"1 MiB", -1},
		{"1.5GiB", -1}, {"-1", -1}, {"1TiB", -1}, {"1B", -1}, {"999999999999999999GiB", -1},
	};
	for (size_t i = 0; i < sizeof(durations) / sizeof(durations[0]); i++)
		if (conf_parse_duration_ms(durations[i].s) != durations[i].ms)
			fail_msg("duration '%s': got %lld", durations[i].s,
				 (long long)conf_parse_duration_ms(durations[i].s));
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		if (conf_parse_size(sizes[i].s) != sizes[i].bytes)
			fail_msg("size '%s': got %lld", sizes[i].s, (long long)conf_parse_size(sizes[i].s));

	/* YAML integers are accepted where durations and sizes are: a bare number */
	char err[512];
	struct conf *c = load(BASE "routing: {probe_interval: 2}\ncache: {max_bytes: 4096}\n", err, sizeof(err));
	if (!c)
		fail_msg("%s", err);
	assert_int_equal(c->routing.probe_interval_ms, 2000);
	assert_int_equal(c->cache_max_bytes, 4096);
	conf_unref(c);
}

static void test_address(void **state)
{
	struct sockaddr_storage ss;
	const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;

	assert_int_equal(conf_parse_address("127.0.0.1:8080", &ss), 0);
	assert_int_equal(in->sin_family, AF_INET);
	assert_int_equal(ntohs(in->sin_port), 8080);
	assert_int_equal(ntohl(in->sin_addr.s_addr), 0x7f000001);
	assert_int_equal(conf_parse_address("[::1]:0", &ss), 0);
	assert_int_equal(in6->sin6_family, AF_INET6);
	assert_int_equal(in6->sin6_addr.s6_addr[15], 1);
	static const char *const bad_addrs[] = {
		"127.0.0.1", "127.0.0.1:", ":80", "::1:80", "[::1]80", "[::1]:", "1.2.3.4:65536",
		"1.2.3:80", "host:80", "[127.0.0.1]:80", "1.2.3.4:+80", "",
	};
	for (size_t i = 0; i < sizeof(bad_addrs) / sizeof(bad_addrs[0]); i++)
		if (conf_parse_address(bad_addrs[i], &ss) != -EINVAL)
			fail_msg("'%s' parsed", bad_addrs[i]);
}

static void test_refcount(void **state)
{
	char err[512];
	struct conf *c = load(BASE, err, sizeof(err));
	assert_non_null(c);
	assert_ptr_equal(conf_ref(c), c);
	assert_int_equal(c->refcount, 2);
	conf_unref(c);
	assert_int_equal(c->refcount, 1);
	assert_string_equal(c->providers[0].name, "p"); /* still alive */
	conf_unref(c);                                  /* freed: LSan reports a leak otherwise */
	conf_unref(NULL);
}

static void test_check_main(void **state)
{
	char *ok[] = {"check", "-q", "-c", "tests/unit/conf/full.yaml", NULL};
	/* DESIGN.md's example names a GeoIP database this machine does not have: check opens it */
	char *no_geoip[] = {"check", "-q", "-c", "tests/unit/conf/design.yaml", NULL};
	char *bad_file[] = {"check", "--config", "tests/unit/conf/bad-region.yaml", NULL};
	char *help[] = {"check", "-h", NULL};
	char *extra[] = {"check", "x", NULL};

	setenv("XAI_API_KEY", SECRET, 1);
	FILE *f = fopen("/tmp/meridian-test-conf-key", "w");
	assert_non_null(f);
	fputs("file-secret\n", f);
	fclose(f);
	assert_int_equal(conf_check_main(4, ok), 0);
	if (access("/var/lib/GeoIP/GeoLite2-City.mmdb", R_OK) != 0)
		assert_int_equal(conf_check_main(4, no_geoip), 1);
	assert_int_equal(conf_check_main(3, bad_file), 1);
	assert_int_equal(conf_check_main(2, help), 0);
	assert_int_equal(conf_check_main(2, extra), 2);
}

/* The routing table that `meridian check` prints after the config: where each model is served
 * and, for a client at each region, the order of the regions by distance penalty alone. */
static void test_describe_routing_table(void **state)
{
	char err[512];
	struct buf out = BUF_INIT;

	setenv("XAI_API_KEY", SECRET, 1);
	struct conf *c = conf_load("tests/unit/conf/design.yaml", err, sizeof(err));
	assert_non_null(c);
	conf_describe(c, &out);
	static const char *const table =
		"\nrouting table (before measured latency: distance x 10 ms per 1000 km)\n"
		"  xai\n"
		"    model        served in\n"
		"    grok-4       us-east-1, us-west-1, eu-west-1 (if discovered)\n"
		"    grok-3-mini  us-east-1, eu-west-1 (if discovered)\n"
		"    *            eu-west-1  (discovered at run time)\n"
		"    client at    regions tried in order\n"
		"    us-east-1    us-east-1 0 ms, us-west-1 39 ms, eu-west-1 55 ms\n"
		"    us-west-1    us-west-1 0 ms, us-east-1 39 ms, eu-west-1 82 ms\n"
		"    eu-west-1    eu-west-1 0 ms, us-east-1 55 ms, us-west-1 82 ms\n"
		"    default      us-east-1 0 ms, us-west-1 39 ms, eu-west-1 55 ms\n";
	const char *at = strstr(out.data, table);
	if (!at || at[strlen(table)] != '\0')
		fail_msg("routing table not at the end:\n%s\n--- got:\n%s", table, out.data);
	assert_non_null(strstr(out.data, "  circuit         opens after 3 consecutive failures; "
					 "overload cooldown 5s\n"));
	buf_release(&out);
	conf_unref(c);

	/* several providers, two deployments in one region (listed twice, ranked once), no
	 * default location, and a distance weight of 0: every region ties, config order */
	c = load("listen: [{address: \"127.0.0.1:8080\"}]\n"
		 "regions: {ap: {location: [-33.9, 151.2]}, eu: {location: [53.3, -6.3]},"
		 " us: {location: [39.0, -77.5]}}\n"
		 "providers:\n"
		 "  a:\n"
		 "    default: true\n"
		 "    auth: {mode: passthrough}\n"
		 "    deployments:\n"
		 "      - {region: eu, url: \"http://127.0.0.1:9001\", models: [m1, m2]}\n"
		 "      - {region: us, url: \"http://127.0.0.1:9002\", models: [m2]}\n"
		 "      - {region: eu, url: \"http://127.0.0.1:9003\", models: [m1]}\n"
		 "  b:\n"
		 "    auth: {mode: passthrough}\n"
		 "    deployments: [{region: ap, url: \"http://127.0.0.1:9004\", models: [\"*\"]}]\n"
		 "routing: {ms_per_1000km: 0}\n",
		 err, sizeof(err));
	if (!c)
		fail_msg("%s", err);
	conf_describe(c, &out);
	static const char *const table2 =
		"\nrouting table (before measured latency: distance x 0 ms per 1000 km)\n"
		"  a\n"
		"    model      served in\n"
		"    m1         eu x2\n"
		"    m2         eu, us\n"
		"    client at  regions tried in order\n"
		"    ap         eu 0 ms, us 0 ms\n"
		"    eu         eu 0 ms, us 0 ms\n"
		"    us         eu 0 ms, us 0 ms\n"
		"  b\n"
		"    model      served in\n"
		"    *          ap  (discovered at run time)\n"
		"    client at  regions tried in order\n"
		"    ap         ap 0 ms\n"
		"    eu         ap 0 ms\n"
		"    us         ap 0 ms\n";
	at = strstr(out.data, table2);
	if (!at || at[strlen(table2)] != '\0')
		fail_msg("routing table not at the end:\n%s\n--- got:\n%s", table2, out.data);
	buf_release(&out);
	conf_unref(c);

	/* with a weight the nearer region goes first: from Sydney us is 15,700 km away and eu
	 * 17,200 km; the default location gets its own row */
	c = load("listen: [{address: \"127.0.0.1:8080\"}]\n"
		 "regions: {ap: {location: [-33.9, 151.2]}, eu: {location: [53.3, -6.3]},"
		 " us: {location: [39.0, -77.5]}}\n"
		 "providers:\n"
		 "  a:\n"
		 "    auth: {mode: passthrough}\n"
		 "    deployments:\n"
		 "      - {region: eu, url: \"http://127.0.0.1:9001\", models: [m]}\n"
		 "      - {region: us, url: \"http://127.0.0.1:9002\", models: [m]}\n"
		 "client_location: {default: [-33.9, 151.2]}\n"
		 "routing: {ms_per_1000km: 2.5}\n",
		 err, sizeof(err));
	if (!c)
		fail_msg("%s", err);
	conf_describe(c, &out);
	assert_non_null(strstr(out.data, "distance x 2.5 ms per 1000 km)\n"));
	assert_non_null(strstr(out.data, "    ap         us 39 ms, eu 43 ms\n"));
	assert_non_null(strstr(out.data, "    eu         eu 0 ms, us 14 ms\n"));
	assert_non_null(strstr(out.data, "    default    us 39 ms, eu 43 ms\n"));
	buf_release(&out);
	conf_unref(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_design_example),
		cmocka_unit_test(test_full_fixture),
		cmocka_unit_test(test_describe),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_small_valid),
		cmocka_unit_test(test_example),
		cmocka_unit_test(test_load_file_errors),
		cmocka_unit_test(test_units),
		cmocka_unit_test(test_address),
		cmocka_unit_test(test_refcount),
		cmocka_unit_test(test_check_main),
		cmocka_unit_test(test_describe_routing_table),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
