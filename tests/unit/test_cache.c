/* test_cache.c - cache keys, entries, the wire format and the memory store (LRU, TTL, threads) */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <uv.h>

#include "cache/cache.h"
#include "cache/cache_int.h"
#include "core/alloc.h"
#include "core/buf.h"

#define MSGS "{\"model\":\"grok-4\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"

/* --- helpers -------------------------------------------------------------------------------- */

static uint64_t fake_now = 1700000000000ull;

static uint64_t fake_clock(void)
{
	return fake_now;
}

static int setup_clock(void **state)
{
	(void)state;
	fake_now = 1700000000000ull;
	cache__now_ms = fake_clock;
	return 0;
}

static int restore_clock(void **state)
{
	(void)state;
	cache__now_ms = cache__wall_ms;
	return 0;
}

static json_t *parse(const char *s)
{
	json_error_t err;
	json_t *j = json_loads(s, JSON_REJECT_DUPLICATES, &err);
	if (!j)
		fail_msg("bad test JSON '%s': %s", s, err.text);
	return j;
}

/* A request with the usual fields; tests change one at a time. */
struct req {
	const char *account, *provider, *model, *path, *body;
	struct cache_header h[4];
	size_t nh;
};

static struct req base_req(void)
{
	struct req r = {
		.account = "acme",
		.provider = "xai",
		.model = "grok-4",
		.path = "/v1/chat/completions",
		.body = MSGS "\"temperature\":0.5}",
	};
	return r;
}

/* Makes the key of q into k; returns cache_key_make's result. */
static int key_of(const struct req *q, struct cache_key *k)
{
	json_t *body = q->body ? parse(q->body) : NULL;
	struct cache_request r = {
		.account = iov_of(q->account),
		.provider = iov_of(q->provider),
		.model = iov_of(q->model),
		.path = iov_of(q->path),
		.body = body,
		.headers = q->h,
		.nheaders = q->nh,
	};
	int rc = cache_key_make(k, &r);
	json_decref(body);
	return rc;
}

static void key_ok(const struct req *q, struct cache_key *k)
{
	assert_int_equal(key_of(q, k), 0);
}

static struct cache_header hdr(const char *name, const char *value)
{
	return (struct cache_header){iov_of(name), iov_of(value)};
}

/* A key whose digest is made from n (for store tests that need many distinct keys). */
static void key_n(struct cache_key *k, const char *account, unsigned n)
{
	char body[64];
	snprintf(body, sizeof(body), "{\"n\":%u}", n);
	struct req q = base_req();
	q.account = account;
	q.body = body;
	key_ok(&q, k);
}

static struct cache_response resp_of(const char *body, size_t len)
{
	static const struct cache_header h[] = {
		{IOV_LIT("content-type"), IOV_LIT("application/json")},
		{IOV_LIT("openai-processing-ms"), IOV_LIT("12")},
	};
	return (struct cache_response){
		.status = 200, .headers = h, .nheaders = ARRAY_SIZE(h),
		.body = body, .body_len = len,
	};
}

/* --- keys ------------------------------------------------------------------------------------ */

static void test_key_canonical_body(void **state)
{
	struct req a = base_req(), b = base_req();
	struct cache_key ka, kb;

	(void)state;
	b.body = "  {\n\t\"temperature\" : 0.50 ,\"messages\" : [ { \"content\":\"hi\", "
		 "\"role\" : \"user\" } ],\n \"model\":\"grok-4\"}\n";
	key_ok(&a, &ka);
	key_ok(&b, &kb);
	assert_memory_equal(ka.digest, kb.digest, 32);
	assert_string_equal(ka.id, kb.id);
	/* the account is the visible prefix, the digest the rest */
	assert_int_equal(strlen(ka.id), strlen("acme:") + 64);
	assert_true(!strncmp(ka.id, "acme:", 5));
	assert_int_equal(ka.account_len, 4);

	/* escapes that parse to the same string are the same body */
	a.body = "{\"s\":\"\\u00e9\\/\"}";
	b.body = "{\"s\":\"\xc3\xa9/\"}";
	key_ok(&a, &ka);
	key_ok(&b, &kb);
	assert_string_equal(ka.id, kb.id);

	/* nested objects are sorted too */
	a.body = "{\"x\":{\"b\":1,\"a\":{\"d\":2,\"c\":3}}}";
	b.body = "{\"x\":{\"a\":{\"c\":3,\"d\":2},\"b\":1}}";
	key_ok(&a, &ka);
	key_ok(&b, &kb);
	assert_string_equal(ka.id, kb.id);
}

static void test_key_headers_order_and_case(void **state)
{
	struct req a = base_req(), b = base_req();
	struct cache_key ka, kb;

	(void)state;
	a.h[0] = hdr("anthropic-version", "2023-06-01");
	a.h[1] = hdr("anthropic-beta", "tools-2024-04-04");
	a.nh = 2;
	b.h[0] = hdr("Anthropic-Beta", "  tools-2024-04-04 ");
	b.h[1] = hdr("ANTHROPIC-VERSION", "2023-06-01");
	b.nh = 2;
	key_ok(&a, &ka);
	key_ok(&b, &kb);
	assert_string_equal(ka.id, kb.id);

	/* two values of one name: their order is kept, so it matters */
	a.h[0] = hdr("anthropic-beta", "x");
	a.h[1] = hdr("anthropic-beta", "y");
	b.h[0] = hdr("anthropic-beta", "y");
	b.h[1] = hdr("anthropic-beta", "x");
	key_ok(&a, &ka);
	key_ok(&b, &kb);
	assert_string_not_equal(ka.id, kb.id);
}

/* Every attribute changes the key; the same request keyed for two accounts shares no hex. */
static void test_key_every_part_counts(void **state)
{
	struct cache_key k0, k;
	struct req q;

	(void)state;
	q = base_req();
	key_ok(&q, &k0);

#define DIFFERS(change)                                                                       \
	do {                                                                                  \
		q = base_req();                                                               \
		change;                                                                       \
		key_ok(&q, &k);                                                               \
		if (!memcmp(k.digest, k0.digest, 32))                                         \
			fail_msg("same key after: %s", #change);                              \
	} while (0)

	DIFFERS(q.account = "globex");
	DIFFERS(q.provider = "openai");
	DIFFERS(q.model = "grok-3-mini");
	DIFFERS(q.path = "/v1/messages");
	DIFFERS(q.path = "/v1/chat/completions?x=1");
	DIFFERS(q.body = MSGS "\"temperature\":0.6}");
	/* 1 and 1.0 are different JSON numbers for an upstream too */
	DIFFERS(q.body = MSGS "\"temperature\":1}");
	DIFFERS(q.body = MSGS "\"temperature\":0.5,\"stream\":true}");
	DIFFERS((q.h[0] = hdr("anthropic-version", "2023-06-01"), q.nh = 1));
	DIFFERS((q.h[0] = hdr("openai-organization", "org-1"), q.nh = 1));
	DIFFERS((q.h[0] = hdr("openai-project", "p"), q.nh = 1));
	DIFFERS((q.h[0] = hdr(":region", "eu-west-1"), q.nh = 1));
	/* a header with an empty value is not the same as no header */
	DIFFERS((q.h[0] = hdr("anthropic-beta", ""), q.nh = 1));
	DIFFERS(q.body = NULL);

	/* two values of the same header differ */
	struct cache_key kv1, kv2;
	q = base_req();
	q.h[0] = hdr("anthropic-version", "2023-06-01");
	q.nh = 1;
	key_ok(&q, &kv1);
	q.h[0] = hdr("anthropic-version", "2023-01-01");
	key_ok(&q, &kv2);
	assert_memory_not_equal(kv1.digest, kv2.digest, 32);

	/* fields are length-prefixed: moving bytes from one field to the next changes the key */
	struct cache_key ka, kb;
	q = base_req();
	q.provider = "xai";
	q.model = "grok";
	key_ok(&q, &ka);
	q.provider = "xaig";
	q.model = "rok";
	key_ok(&q, &kb);
	assert_memory_not_equal(ka.digest, kb.digest, 32);
	q = base_req();
	q.h[0] = hdr("a", "bc");
	q.nh = 1;
	key_ok(&q, &ka);
	q.h[0] = hdr("ab", "c");
	key_ok(&q, &kb);
	assert_memory_not_equal(ka.digest, kb.digest, 32);

	/* another account: the hex part differs too, so a visible key tells nothing across */
	q = base_req();
	q.account = "globex";
	key_ok(&q, &k);
	assert_string_not_equal(k.id + strlen("globex:"), k0.id + strlen("acme:"));
#undef DIFFERS
}

static void test_key_raw_body(void **state)
{
	struct cache_key a, b, c;
	struct cache_request r = {
		.account = IOV_LIT("acme"), .provider = IOV_LIT("xai"),
		.path = IOV_LIT("/v1/models"),
	};

	(void)state;
	assert_int_equal(cache_key_make(&a, &r), 0);
	r.raw = IOV_LIT("x");
	assert_int_equal(cache_key_make(&b, &r), 0);
	assert_memory_not_equal(a.digest, b.digest, 32);
	/* a raw body "{}" is not the parsed body {} (kept apart by a tag) */
	json_t *empty = json_object();
	r.raw = IOV_LIT("{}");
	assert_int_equal(cache_key_make(&b, &r), 0);
	r.raw = IOV_NULL;
	r.body = empty;
	assert_int_equal(cache_key_make(&c, &r), 0);
	assert_memory_not_equal(b.digest, c.digest, 32);
	json_decref(empty);
}

static void test_key_refused(void **state)
{
	struct cache_key k;
	struct req q;
	char longacct[CACHE_ACCOUNT_MAX + 2];

	(void)state;
	q = base_req();
	q.account = "";
	assert_int_equal(key_of(&q, &k), CACHE_EINVAL);
	q.account = "ac me";
	assert_int_equal(key_of(&q, &k), CACHE_EINVAL);
	memset(longacct, 'a', sizeof(longacct) - 1);
	longacct[sizeof(longacct) - 1] = '\0';
	q.account = longacct;
	assert_int_equal(key_of(&q, &k), CACHE_EINVAL);
	longacct[CACHE_ACCOUNT_MAX] = '\0';   /* exactly the maximum is fine */
	assert_int_equal(key_of(&q, &k), 0);
	assert_int_equal(strlen(k.id), CACHE_ACCOUNT_MAX + 1 + 64);

	struct cache_header many[CACHE_KEY_HEADERS_MAX + 1];
	for (size_t i = 0; i < ARRAY_SIZE(many); i++)
		many[i] = hdr("x-a", "b");
	struct cache_request r = {.account = IOV_LIT("acme"), .headers = many,
				  .nheaders = ARRAY_SIZE(many)};
	assert_int_equal(cache_key_make(&k, &r), CACHE_EINVAL);
	r.nheaders--;
	assert_int_equal(cache_key_make(&k, &r), 0);
}

/* --- entries, helpers, wire format ------------------------------------------------------------ */

static void test_storable_and_replayable(void **state)
{
	struct cache_header h[2];

	(void)state;
	h[0] = hdr("content-type", "application/json");
	h[1] = hdr("Cache-Control", "max-age=60, must-revalidate");
	assert_true(cache_response_storable(h, 2));
	h[1] = hdr("Cache-Control", "max-age=0, No-Store");
	assert_false(cache_response_storable(h, 2));
	h[1] = hdr("cache-control", "no-store");
	assert_false(cache_response_storable(h, 2));
	h[1] = hdr("cache-control", "private=\"x, no-store\"");
	assert_false(cache_response_storable(h, 2));   /* private */
	h[1] = hdr("cache-control", "x=\"a, no-store\", max-age=5");
	assert_true(cache_response_storable(h, 2));    /* quoted, not a directive */
	h[1] = hdr("cache-control", "no-storex");
	assert_true(cache_response_storable(h, 2));
	h[1] = hdr("cache-control", "no-cache");
	assert_false(cache_response_storable(h, 2));
	h[1] = hdr("vary", "accept, *");
	assert_false(cache_response_storable(h, 2));
	h[1] = hdr("vary", "accept-encoding");
	assert_true(cache_response_storable(h, 2));

	assert_true(cache_header_replayable(IOV_LIT("Content-Type")));
	assert_true(cache_header_replayable(IOV_LIT("openai-processing-ms")));
	assert_false(cache_header_replayable(IOV_LIT("x-request-id")));   /* the hit's own */
	assert_false(cache_header_replayable(IOV_LIT("Set-Cookie")));
	assert_false(cache_header_replayable(IOV_LIT("connection")));
	assert_false(cache_header_replayable(IOV_LIT("Transfer-Encoding")));
	assert_false(cache_header_replayable(IOV_LIT("content-length")));
	assert_false(cache_header_replayable(IOV_LIT("x-ratelimit-remaining-requests")));
	assert_false(cache_header_replayable(IOV_LIT("anthropic-ratelimit-tokens-limit")));
	assert_false(cache_header_replayable(IOV_LIT("retry-after")));
	assert_false(cache_header_replayable(IOV_LIT("proxy-authenticate")));
	assert_false(cache_header_replayable(IOV_LIT("x-meridian-cache")));
	assert_false(cache_header_replayable(IOV_NULL));
}

static void test_entry_events(void **state)
{
	static const char sse[] = "data: {\"a\":1}\n\n"
				  "event: x\r\ndata: 2\r\n\r\n"
				  "data: 3\r\r"
				  ": comment\n\n"
				  "data: [DONE]";
	unsigned char d[32] = {0};
	struct cache_entry *e =
		cache__entry_new("a", 1, d, 200, true, 1, 2, NULL, 0, sse, sizeof(sse) - 1);
	const char *want[] = {"data: {\"a\":1}\n\n", "event: x\r\ndata: 2\r\n\r\n", "data: 3\r\r",
			      ": comment\n\n", "data: [DONE]"};
	struct iov ev;
	size_t off = 0, n = 0;
	struct buf all = BUF_INIT;

	(void)state;
	while (cache_entry_event(e, &off, &ev)) {
		assert_true(n < ARRAY_SIZE(want));
		assert_int_equal(ev.len, strlen(want[n]));
		assert_memory_equal(ev.base, want[n], ev.len);
		buf_append(&all, ev.base, ev.len);
		n++;
	}
	assert_int_equal(n, ARRAY_SIZE(want));
	/* replayed as it was, byte for byte */
	assert_int_equal(all.len, sizeof(sse) - 1);
	assert_memory_equal(all.data, sse, all.len);
	buf_release(&all);
	cache_entry_unref(e);
}

static void test_wire_roundtrip_and_refusals(void **state)
{
	struct cache_key k, other;
	struct req q = base_req();
	struct buf b = BUF_INIT;
	static const char body[] = "event: message_start\ndata: {}\n\n";
	struct cache_response r = resp_of(body, sizeof(body) - 1);
	struct cache_entry *e;

	(void)state;
	r.stream = true;
	r.status = 201;
	key_ok(&q, &k);
	cache__encode(&b, &k, &r, 1000, 61000);
	assert_int_equal(b.len, cache__encoded_len(&k, &r));
	assert_memory_equal(b.data, CACHE_WIRE_MAGIC, 4);
	e = cache__decode(b.data, b.len, &k);
	assert_non_null(e);
	assert_int_equal(e->status, 201);
	assert_true(e->stream);
	assert_int_equal(e->created_ms, 1000);
	assert_int_equal(e->expires_ms, 61000);
	assert_int_equal(e->nheaders, 2);
	assert_true(iov_eq(e->headers[0].name, "content-type"));
	assert_true(iov_eq(e->headers[0].value, "application/json"));
	assert_true(iov_eq(e->headers[1].name, "openai-processing-ms"));
	assert_int_equal(e->body_len, sizeof(body) - 1);
	assert_memory_equal(e->body, body, e->body_len);
	assert_string_equal(e->account, "acme");
	assert_true(cache__entry_matches(e, &k));
	cache_entry_unref(e);

	/* every truncation, and one byte too many, is refused */
	for (size_t n = 0; n < b.len; n++)
		assert_null(cache__decode(b.data, n, &k));
	buf_append(&b, "x", 1);
	assert_null(cache__decode(b.data, b.len, &k));
	b.len--;

	/* another account's key, or the same account with another digest: refused */
	q.account = "globex";
	key_ok(&q, &other);
	assert_null(cache__decode(b.data, b.len, &other));
	other = k;
	other.digest[31] ^= 1;
	assert_null(cache__decode(b.data, b.len, &other));
	/* a collision across accounts: same digest, another account prefix */
	other = k;
	memcpy(other.id, "acmf", 4);
	assert_null(cache__decode(b.data, b.len, &other));

	/* another version, a bad status */
	b.data[3] = 2;
	assert_null(cache__decode(b.data, b.len, &k));
	b.data[3] = 1;
	b.data[5] = 0x01;   /* status 256 + 201 */
	assert_null(cache__decode(b.data, b.len, &k));
	buf_release(&b);
}

/* --- the memory store ------------------------------------------------------------------------- */

static void test_mem_put_get_replace(void **state)
{
	struct cache_mem *m = cache_mem_new(1 << 20);
	struct cache_key k, k2;
	struct cache_response r = resp_of("{\"v\":1}", 7);
	struct cache_entry *e;
	struct cache_mem_stats st;

	(void)state;
	key_n(&k, "acme", 1);
	key_n(&k2, "acme", 2);
	assert_null(cache_mem_get(m, &k));
	assert_int_equal(cache_mem_put(m, &k, &r, 60000), 0);
	e = cache_mem_get(m, &k);
	assert_non_null(e);
	assert_int_equal(e->status, 200);
	assert_false(e->stream);
	assert_int_equal(e->created_ms, fake_now);
	assert_int_equal(e->expires_ms, fake_now + 60000);
	assert_memory_equal(e->body, "{\"v\":1}", 7);
	assert_int_equal(e->body[7], '\0');
	assert_null(cache_mem_get(m, &k2));

	/* a second put replaces; the holder of the first still reads the first */
	r = resp_of("{\"v\":2}", 7);
	assert_int_equal(cache_mem_put(m, &k, &r, 60000), 0);
	assert_memory_equal(e->body, "{\"v\":1}", 7);
	cache_entry_unref(e);
	e = cache_mem_get(m, &k);
	assert_memory_equal(e->body, "{\"v\":2}", 7);
	cache_mem_stats(m, &st);
	assert_int_equal(st.entries, 1);
	assert_int_equal(st.bytes, e->size);
	assert_int_equal(st.hits, 2);
	assert_int_equal(st.misses, 2);
	assert_int_equal(st.puts, 2);
	cache_entry_unref(e);

	/* refusals */
	r.status = 500;
	assert_int_equal(cache_mem_put(m, &k2, &r, 60000), CACHE_ESTATUS);
	r.status = 304;
	assert_int_equal(cache_mem_put(m, &k2, &r, 60000), CACHE_ESTATUS);
	r.status = 200;
	assert_int_equal(cache_mem_put(m, &k2, &r, 0), CACHE_ENOTTL);
	assert_null(cache_mem_get(m, &k2));
	cache_mem_free(m);
}

/* One account's entry is never another's, even with the same digest (a forged collision). */
static void test_mem_account_isolation(void **state)
{
	struct cache_mem *m = cache_mem_new(1 << 20);
	struct cache_key a, b;
	struct cache_response r = resp_of("secret", 6);
	struct cache_entry *e;

	(void)state;
	key_n(&a, "acme", 1);
	b = a;   /* same digest, same bucket */
	memcpy(b.id, "acmf", 4);
	assert_int_equal(cache_mem_put(m, &a, &r, 60000), 0);
	assert_null(cache_mem_get(m, &b));
	b = a;
	b.account_len = 3;  /* "acm": a prefix of the account is not the account */
	assert_null(cache_mem_get(m, &b));
	/* the same request keyed for another account: a miss */
	key_n(&b, "globex", 1);
	assert_null(cache_mem_get(m, &b));
	e = cache_mem_get(m, &a);
	assert_non_null(e);
	cache_entry_unref(e);
	cache_mem_free(m);
}

static void test_mem_lru_by_bytes(void **state)
{
	const uint64_t max = 64 * 1024;   /* per-entry cap 8 KiB */
	struct cache_mem *m = cache_mem_new(max);
	struct cache_key k[40];
	static char body[4000];
	struct cache_response r;
	struct cache_entry *e;
	struct cache_mem_stats st;
	size_t one;

	(void)state;
	memset(body, 'x', sizeof(body));
	r = resp_of(body, sizeof(body));
	for (unsigned i = 0; i < ARRAY_SIZE(k); i++)
		key_n(&k[i], "acme", i);
	one = cache__entry_bytes(4, r.headers, r.nheaders, sizeof(body)) + CACHE_ENTRY_OVERHEAD;
	size_t fit = max / one;
	assert_true(fit >= 10 && fit < 20);

	for (unsigned i = 0; i < fit; i++)
		assert_int_equal(cache_mem_put(m, &k[i], &r, 60000), 0);
	cache_mem_stats(m, &st);
	assert_int_equal(st.entries, fit);
	assert_int_equal(st.evictions, 0);
	/* touch the oldest: it becomes the most recently used */
	e = cache_mem_get(m, &k[0]);
	assert_non_null(e);
	cache_entry_unref(e);
	/* one more: the least recently used (k[1]) goes, k[0] stays */
	assert_int_equal(cache_mem_put(m, &k[fit], &r, 60000), 0);
	cache_mem_stats(m, &st);
	assert_int_equal(st.evictions, 1);
	assert_true(st.bytes <= max);
	assert_null(cache_mem_get(m, &k[1]));
	e = cache_mem_get(m, &k[0]);
	assert_non_null(e);
	cache_entry_unref(e);
	for (unsigned i = 2; i <= fit; i++) {
		e = cache_mem_get(m, &k[i]);
		if (!e)
			fail_msg("k[%u] was evicted", i);
		cache_entry_unref(e);
	}
	/* many more: bytes never exceed the bound, the newest are there */
	for (unsigned i = fit + 1; i < ARRAY_SIZE(k); i++) {
		assert_int_equal(cache_mem_put(m, &k[i], &r, 60000), 0);
		cache_mem_stats(m, &st);
		assert_true(st.bytes <= max);
	}
	assert_int_equal(st.entries, fit);
	assert_int_equal(st.bytes, fit * one);
	for (unsigned i = ARRAY_SIZE(k) - fit; i < ARRAY_SIZE(k); i++) {
		e = cache_mem_get(m, &k[i]);
		assert_non_null(e);
		cache_entry_unref(e);
	}

	/* a smaller bound evicts at once */
	cache_mem_set_max(m, 3 * one);
	cache_mem_stats(m, &st);
	assert_int_equal(st.entries, 3);
	assert_true(st.bytes <= 3 * one);
	cache_mem_free(m);
}

static void test_mem_oversize_refused(void **state)
{
	struct cache_mem *m = cache_mem_new(64 * 1024);   /* cap 8 KiB */
	struct cache_key k;
	char *big = xcalloc(1, 16 * 1024);
	struct cache_response r = resp_of(big, 8 * 1024);
	struct cache_mem_stats st;

	(void)state;
	key_n(&k, "acme", 1);
	assert_int_equal(cache_mem_put(m, &k, &r, 60000), CACHE_ETOOBIG);
	r.body_len = 7 * 1024;
	assert_int_equal(cache_mem_put(m, &k, &r, 60000), 0);
	cache_mem_stats(m, &st);
	assert_int_equal(st.entries, 1);
	cache_mem_free(m);

	/* the 8 MiB ceiling with a large store */
	m = cache_mem_new((uint64_t)1 << 30);
	free(big);
	big = xcalloc(1, CACHE_ENTRY_MAX);
	r = resp_of(big, CACHE_ENTRY_MAX);
	assert_int_equal(cache_mem_put(m, &k, &r, 60000), CACHE_ETOOBIG);
	r.body_len = CACHE_ENTRY_MAX - 4096;
	assert_int_equal(cache_mem_put(m, &k, &r, 60000), 0);
	free(big);
	cache_mem_free(m);

	/* the handle's own cap, from its max_bytes */
	m = cache_mem_new((uint64_t)1 << 30);
	struct cache_config cfg = {.backend = CACHE_BACKEND_MEMORY, .max_bytes = 80 * 1024,
				   .mem = m};
	struct cache *c = cache_new(NULL, &cfg);
	assert_int_equal(cache_entry_max(c), 10 * 1024);
	big = xcalloc(1, 16 * 1024);
	r = resp_of(big, 12 * 1024);
	assert_int_equal(cache_put(c, &k, &r, 60000), CACHE_ETOOBIG);
	r.body_len = 9 * 1024;
	assert_int_equal(cache_put(c, &k, &r, 60000), 0);
	free(big);
	cache_free(c);
	cache_mem_free(m);
}

static void test_mem_ttl(void **state)
{
	struct cache_mem *m = cache_mem_new(1 << 20);
	struct cache_key k1, k2;
	struct cache_response r = resp_of("{}", 2);
	struct cache_entry *e;
	struct cache_mem_stats st;

	(void)state;
	key_n(&k1, "acme", 1);
	key_n(&k2, "acme", 2);
	assert_int_equal(cache_mem_put(m, &k1, &r, 1000), 0);
	assert_int_equal(cache_mem_put(m, &k2, &r, 5000), 0);
	fake_now += 999;
	e = cache_mem_get(m, &k1);
	assert_non_null(e);
	fake_now += 1;   /* exactly the TTL: gone */
	assert_null(cache_mem_get(m, &k1));
	/* the holder still has it */
	assert_memory_equal(e->body, "{}", 2);
	cache_entry_unref(e);
	e = cache_mem_get(m, &k2);
	assert_non_null(e);
	cache_entry_unref(e);
	cache_mem_stats(m, &st);
	assert_int_equal(st.expirations, 1);
	assert_int_equal(st.entries, 1);
	fake_now += 4000;
	assert_null(cache_mem_get(m, &k2));
	cache_mem_stats(m, &st);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.bytes, 0);

	/* an absurd TTL is cut, not overflowed */
	assert_int_equal(cache_mem_put(m, &k1, &r, UINT64_MAX), 0);
	e = cache_mem_get(m, &k1);
	assert_non_null(e);
	assert_int_equal(e->expires_ms, fake_now + CACHE_TTL_MAX_MS);
	cache_entry_unref(e);
	cache_mem_free(m);
}

/* An entry held by a reader survives its eviction and the store's end. */
static void test_mem_held_survives_eviction(void **state)
{
	struct cache_mem *m = cache_mem_new(64 * 1024);
	struct cache_key k[40];
	static char body[4000];
	struct cache_response r;
	struct cache_entry *held, *again;

	(void)state;
	for (unsigned i = 0; i < ARRAY_SIZE(body); i++)
		body[i] = (char)('a' + i % 26);
	r = resp_of(body, sizeof(body));
	for (unsigned i = 0; i < ARRAY_SIZE(k); i++)
		key_n(&k[i], "acme", i);
	assert_int_equal(cache_mem_put(m, &k[0], &r, 60000), 0);
	held = cache_mem_get(m, &k[0]);
	again = cache_entry_ref(held);
	assert_int_equal(atomic_load(&held->refs), 3);   /* the store and two holders */
	for (unsigned i = 1; i < ARRAY_SIZE(k); i++)
		assert_int_equal(cache_mem_put(m, &k[i], &r, 60000), 0);
	assert_null(cache_mem_get(m, &k[0]));   /* evicted */
	assert_int_equal(atomic_load(&held->refs), 2);
	assert_false(held->linked);
	cache_entry_unref(again);
	cache_mem_free(m);
	/* still readable (ASan would see a use after free) */
	assert_int_equal(held->body_len, sizeof(body));
	assert_memory_equal(held->body, body, sizeof(body));
	assert_true(iov_eq(held->headers[0].value, "application/json"));
	cache_entry_unref(held);
}

/* The handle on the memory backend answers before cache_get returns. */
struct got {
	int calls;
	struct cache_entry *e;
};

static void on_got(struct cache_get *g, struct cache_entry *e, void *ud)
{
	struct got *got = ud;
	(void)g;
	got->calls++;
	got->e = e;
}

static void test_handle_memory(void **state)
{
	struct cache_mem *m = cache_mem_new(1 << 20);
	struct cache_config cfg = {.backend = CACHE_BACKEND_MEMORY, .mem = m};
	struct cache *c1 = cache_new(NULL, &cfg), *c2 = cache_new(NULL, &cfg);
	struct cache_key k;
	struct cache_get g;
	struct got got = {0};
	struct cache_response r = resp_of("{\"ok\":true}", 11);

	(void)state;
	key_n(&k, "acme", 7);
	cache_get(c1, &k, &g, on_got, &got);
	assert_int_equal(got.calls, 1);
	assert_null(got.e);
	assert_int_equal(cache_put(c1, &k, &r, 1000), 0);
	/* another worker's handle shares the store */
	cache_get(c2, &k, &g, on_got, &got);
	assert_int_equal(got.calls, 2);
	assert_non_null(got.e);
	assert_memory_equal(got.e->body, "{\"ok\":true}", 11);
	cache_entry_unref(got.e);
	cache_get_cancel(&g);   /* after the answer: nothing happens */
	r.status = 502;
	assert_int_equal(cache_put(c1, &k, &r, 1000), CACHE_ESTATUS);
	assert_string_equal(cache_strerror(CACHE_ESTATUS), "only 2xx answers are cached");
	cache_free(c1);
	cache_free(c2);
	cache_mem_free(m);
}

/* --- threads -------------------------------------------------------------------------------- */

#define THREADS 8
#define OPS 20000
#define KEYS 300

static struct cache_key tkeys[KEYS];

struct worker {
	struct cache_mem *m;
	unsigned seed;
	uv_barrier_t *start;
	unsigned hits, puts, bad;
};

/* The body of key i: its index repeated, of a length that depends on i. */
static size_t body_of(unsigned i, char *out)
{
	size_t n = 100 + (i * 37) % 3000;
	for (size_t j = 0; j < n; j++)
		out[j] = (char)('A' + (i + j) % 50);
	return n;
}

static void worker_main(void *arg)
{
	struct worker *w = arg;
	char *body = xmalloc(4096);

	uv_barrier_wait(w->start);
	for (unsigned op = 0; op < OPS; op++) {
		w->seed = w->seed * 1103515245u + 12345u;
		unsigned i = (w->seed >> 8) % KEYS;
		if ((w->seed >> 4) % 3 == 0) {
			size_t n = body_of(i, body);
			struct cache_response r = resp_of(body, n);
			if (cache_mem_put(w->m, &tkeys[i], &r, 60000) == 0)
				w->puts++;
		} else {
			struct cache_entry *e = cache_mem_get(w->m, &tkeys[i]);
			if (!e)
				continue;
			size_t n = body_of(i, body);
			if (e->body_len != n || memcmp(e->body, body, n) ||
			    !cache__entry_matches(e, &tkeys[i]))
				w->bad++;
			w->hits++;
			cache_entry_unref(e);
		}
	}
	free(body);
}

static void test_mem_threads(void **state)
{
	/* small enough that threads evict each other's entries all the time */
	struct cache_mem *m = cache_mem_new(256 * 1024);
	struct worker w[THREADS];
	uv_thread_t th[THREADS];
	uv_barrier_t start;
	struct cache_mem_stats st;
	unsigned hits = 0, puts = 0;

	(void)state;
	cache__now_ms = cache__wall_ms;
	for (unsigned i = 0; i < KEYS; i++)
		key_n(&tkeys[i], i % 2 ? "acme" : "globex", i);
	uv_barrier_init(&start, THREADS);
	for (unsigned t = 0; t < THREADS; t++) {
		w[t] = (struct worker){.m = m, .seed = 17 + t * 7919, .start = &start};
		assert_int_equal(uv_thread_create(&th[t], worker_main, &w[t]), 0);
	}
	for (unsigned t = 0; t < THREADS; t++) {
		uv_thread_join(&th[t]);
		assert_int_equal(w[t].bad, 0);
		hits += w[t].hits;
		puts += w[t].puts;
	}
	uv_barrier_destroy(&start);
	cache_mem_stats(m, &st);
	assert_int_equal(st.puts, puts);
	assert_int_equal(st.hits, hits);
	assert_true(hits > 1000);
	assert_true(st.evictions > 100);
	assert_true(st.bytes <= 256 * 1024);
	/* the counted bytes are the sum of what is linked */
	uint64_t sum = 0, n = 0;
	for (unsigned i = 0; i < KEYS; i++) {
		struct cache_entry *e = cache_mem_get(m, &tkeys[i]);
		if (e) {
			sum += e->size;
			n++;
			cache_entry_unref(e);
		}
	}
	assert_int_equal(n, st.entries);
	assert_int_equal(sum, st.bytes);
	cache_mem_free(m);
	cache__now_ms = fake_clock;
}

/* Many entries: the table grows and every entry is still found. */
static void test_mem_table_grows(void **state)
{
	struct cache_mem *m = cache_mem_new(1 << 20);   /* 128 buckets to start with */
	struct cache_response r = resp_of("", 0);
	struct cache_key k;
	struct cache_mem_stats st;

	(void)state;
	for (unsigned i = 0; i < 2000; i++) {
		key_n(&k, "acme", i);
		assert_int_equal(cache_mem_put(m, &k, &r, 60000), 0);
	}
	cache_mem_stats(m, &st);
	assert_int_equal(st.evictions, 0);
	assert_int_equal(st.entries, 2000);
	for (unsigned i = 0; i < 2000; i++) {
		key_n(&k, "acme", i);
		struct cache_entry *e = cache_mem_get(m, &k);
		assert_non_null(e);
		cache_entry_unref(e);
	}
	cache_mem_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_canonical_body),
		cmocka_unit_test(test_key_headers_order_and_case),
		cmocka_unit_test(test_key_every_part_counts),
		cmocka_unit_test(test_key_raw_body),
		cmocka_unit_test(test_key_refused),
		cmocka_unit_test(test_storable_and_replayable),
		cmocka_unit_test(test_entry_events),
		cmocka_unit_test(test_wire_roundtrip_and_refusals),
		cmocka_unit_test(test_mem_put_get_replace),
		cmocka_unit_test(test_mem_account_isolation),
		cmocka_unit_test(test_mem_lru_by_bytes),
		cmocka_unit_test(test_mem_oversize_refused),
		cmocka_unit_test(test_mem_ttl),
		cmocka_unit_test(test_mem_held_survives_eviction),
		cmocka_unit_test(test_handle_memory),
		cmocka_unit_test(test_mem_threads),
		cmocka_unit_test(test_mem_table_grows),
	};
	return cmocka_run_group_tests(tests, setup_clock, restore_clock);
}
