/* cache.c - cache keys, entries, the Redis wire format and the per-loop handle */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "cache/cache_int.h"
#include "core/alloc.h"

uint64_t cache__wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t (*cache__now_ms)(void) = cache__wall_ms;

const char *cache_strerror(int err)
{
	switch (err) {
	case 0:
		return "no error";
	case CACHE_EINVAL:
		return "not cacheable (no account, too many headers or an unserialisable body)";
	case CACHE_ESTATUS:
		return "only 2xx answers are cached";
	case CACHE_ETOOBIG:
		return "the answer is over the per-entry cap";
	case CACHE_ENOTTL:
		return "a TTL of 0 means do not cache";
	case CACHE_EAWAY:
		return "the cache's Redis is away";
	case CACHE_EBUSY:
		return "too many bytes wait for the cache's Redis";
	}
	return "unknown error";
}

size_t cache__entry_cap(uint64_t max_bytes)
{
	if (!max_bytes)
		max_bytes = CACHE_DEFAULT_MAX_BYTES;
	return max_bytes / 8 < CACHE_ENTRY_MAX ? (size_t)(max_bytes / 8) : CACHE_ENTRY_MAX;
}

/* --- keys ------------------------------------------------------------------------------------- */

/* OpenSSL 3 looks an algorithm up on every EVP_sha256() use: fetch it once. */
static EVP_MD *sha256_md;

static void sha256_init(void)
{
	sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static void put_u32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/* A length-prefixed field, so no two different tuples give the same material. */
static int feed_field(EVP_MD_CTX *ctx, const void *p, size_t n)
{
	unsigned char len[4];
	if (n > UINT32_MAX)
		return -1;
	put_u32(len, (uint32_t)n);
	return EVP_DigestUpdate(ctx, len, 4) && (!n || EVP_DigestUpdate(ctx, p, n)) ? 0 : -1;
}

static struct iov trim(struct iov v)
{
	while (v.len && (v.base[0] == ' ' || v.base[0] == '\t')) {
		v.base++;
		v.len--;
	}
	while (v.len && (v.base[v.len - 1] == ' ' || v.base[v.len - 1] == '\t'))
		v.len--;
	return v;
}

static int name_cmp(struct iov a, struct iov b)
{
	size_t n = a.len < b.len ? a.len : b.len;
	int d = strncasecmp(a.base ? a.base : "", b.base ? b.base : "", n);
	if (d)
		return d;
	return a.len < b.len ? -1 : a.len > b.len;
}

/* jansson's dump calls back once per token: gather the pieces, so EVP_DigestUpdate() runs once
 * per 4 KiB rather than once per token (about 15% of keying an 800-byte body; the rest is
 * jansson's own serialising). */
struct dump_sink {
	EVP_MD_CTX *ctx;
	size_t len;
	unsigned char b[4096];
};

static int sink_flush(struct dump_sink *s)
{
	int ok = !s->len || EVP_DigestUpdate(s->ctx, s->b, s->len);
	s->len = 0;
	return ok ? 0 : -1;
}

static int dump_to_digest(const char *buffer, size_t size, void *data)
{
	struct dump_sink *s = data;

	if (s->len + size > sizeof(s->b)) {
		if (sink_flush(s) < 0)
			return -1;
		if (size > sizeof(s->b))
			return EVP_DigestUpdate(s->ctx, buffer, size) ? 0 : -1;
	}
	memcpy(s->b + s->len, buffer, size);
	s->len += size;
	return 0;
}

int cache_key_make(struct cache_key *k, const struct cache_request *r)
{
	static const char domain[] = "meridian cache key v1";
	static const char hex[] = "0123456789abcdef";
	static uv_once_t once = UV_ONCE_INIT;
	unsigned char count[4], tag;
	size_t order[CACHE_KEY_HEADERS_MAX];
	EVP_MD_CTX *ctx = NULL;
	unsigned dlen = 0;
	int rc = CACHE_EINVAL;

	if (!r->account.len || r->account.len > CACHE_ACCOUNT_MAX ||
	    r->nheaders > CACHE_KEY_HEADERS_MAX)
		return CACHE_EINVAL;
	for (size_t i = 0; i < r->account.len; i++)
		if ((unsigned char)r->account.base[i] <= ' ' ||
		    (unsigned char)r->account.base[i] >= 0x7f)
			return CACHE_EINVAL;
	uv_once(&once, sha256_init);
	if (!sha256_md || !(ctx = EVP_MD_CTX_new()))
		goto out;

	/* attributes sorted by name, stably: the order of one name's values is kept */
	for (size_t i = 0; i < r->nheaders; i++) {
		size_t j = i;
		while (j > 0 && name_cmp(r->headers[order[j - 1]].name, r->headers[i].name) > 0) {
			order[j] = order[j - 1];
			j--;
		}
		order[j] = i;
	}

	if (!EVP_DigestInit_ex(ctx, sha256_md, NULL) ||
	    feed_field(ctx, domain, sizeof(domain) - 1) < 0 ||
	    feed_field(ctx, r->account.base, r->account.len) < 0 ||
	    feed_field(ctx, r->provider.base, r->provider.len) < 0 ||
	    feed_field(ctx, r->model.base, r->model.len) < 0 ||
	    feed_field(ctx, r->path.base, r->path.len) < 0)
		goto out;
	put_u32(count, (uint32_t)r->nheaders);
	if (!EVP_DigestUpdate(ctx, count, 4))
		goto out;
	for (size_t i = 0; i < r->nheaders; i++) {
		const struct cache_header *h = &r->headers[order[i]];
		char name[256];
		if (h->name.len > sizeof(name))
			goto out;
		for (size_t j = 0; j < h->name.len; j++) {
			char ch = h->name.base[j];
			name[j] = ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
		}
		struct iov v = trim(h->value);
		if (feed_field(ctx, name, h->name.len) < 0 || feed_field(ctx, v.base, v.len) < 0)
			goto out;
	}
	/* the body comes last and runs to the end of the material, so it needs no length */
	tag = r->body ? 'J' : 'R';
	if (!EVP_DigestUpdate(ctx, &tag, 1))
		goto out;
	if (r->body) {
		struct dump_sink sink;
		sink.ctx = ctx;
		sink.len = 0;
		if (json_dump_callback(r->body, dump_to_digest, &sink,
				       JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY) != 0 ||
		    sink_flush(&sink) < 0)
			goto out;
	} else if (r->raw.len && !EVP_DigestUpdate(ctx, r->raw.base, r->raw.len)) {
		goto out;
	}
	if (!EVP_DigestFinal_ex(ctx, k->digest, &dlen) || dlen != 32)
		goto out;

	memcpy(k->id, r->account.base, r->account.len);
	k->account_len = r->account.len;
	k->id[r->account.len] = ':';
	for (size_t i = 0; i < 32; i++) {
		k->id[r->account.len + 1 + 2 * i] = hex[k->digest[i] >> 4];
		k->id[r->account.len + 2 + 2 * i] = hex[k->digest[i] & 15];
	}
	k->id[r->account.len + 1 + 64] = '\0';
	rc = 0;
out:
	EVP_MD_CTX_free(ctx);
	return rc;
}

/* --- entries ---------------------------------------------------------------------------------- */

size_t cache__entry_bytes(size_t account_len, const struct cache_header *h, size_t nh,
			  size_t body_len)
{
	size_t n = sizeof(struct cache_entry) + nh * sizeof(struct cache_header) + account_len + 1 +
		   body_len + 1;
	for (size_t i = 0; i < nh; i++)
		n += h[i].name.len + h[i].value.len + 2;
	return n;
}

struct cache_entry *cache__entry_new(const char *account, size_t account_len,
				     const unsigned char digest[32], int status, bool stream,
				     uint64_t created_ms, uint64_t expires_ms,
				     const struct cache_header *h, size_t nh, const void *body,
				     size_t body_len)
{
	size_t size = cache__entry_bytes(account_len, h, nh, body_len);
	struct cache_entry *e = xmalloc(size);
	struct cache_header *hs = (struct cache_header *)(e + 1);
	char *p = (char *)(hs + nh);

	memset(e, 0, sizeof(*e));
	e->status = status;
	e->stream = stream;
	e->created_ms = created_ms;
	e->expires_ms = expires_ms;
	memcpy(e->digest, digest, 32);
	e->size = size + CACHE_ENTRY_OVERHEAD;
	atomic_init(&e->refs, 1);

	/* strings first, then the body, each NUL-terminated for callers that like C strings */
	e->account = p;
	e->account_len = account_len;
	memcpy(p, account, account_len);
	p[account_len] = '\0';
	p += account_len + 1;
	for (size_t i = 0; i < nh; i++) {
		hs[i].name = (struct iov){p, h[i].name.len};
		if (h[i].name.len)
			memcpy(p, h[i].name.base, h[i].name.len);
		p[h[i].name.len] = '\0';
		p += h[i].name.len + 1;
		hs[i].value = (struct iov){p, h[i].value.len};
		if (h[i].value.len)
			memcpy(p, h[i].value.base, h[i].value.len);
		p[h[i].value.len] = '\0';
		p += h[i].value.len + 1;
	}
	e->headers = hs;
	e->nheaders = nh;
	e->body = p;
	e->body_len = body_len;
	if (body_len)
		memcpy(p, body, body_len);
	p[body_len] = '\0';
	return e;
}

struct cache_entry *cache_entry_ref(struct cache_entry *e)
{
	atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
	return e;
}

void cache_entry_unref(struct cache_entry *e)
{
	if (e && atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1)
		free(e);
}

bool cache__entry_matches(const struct cache_entry *e, const struct cache_key *k)
{
	return e->account_len == k->account_len &&
	       !memcmp(e->account, k->id, k->account_len) && !memcmp(e->digest, k->digest, 32);
}

bool cache_entry_event(const struct cache_entry *e, size_t *off, struct iov *ev)
{
	size_t i = *off, n = e->body_len;
	const char *b = e->body;

	if (i >= n)
		return false;
	while (i < n) {
		size_t start = i;
		while (i < n && b[i] != '\n' && b[i] != '\r')
			i++;
		if (i == n)
			break;                 /* a last line without its terminator */
		bool blank = i == start;
		i += b[i] == '\r' && i + 1 < n && b[i + 1] == '\n' ? 2 : 1;
		if (blank)
			break;                 /* a blank line ends the event */
	}
	*ev = (struct iov){b + *off, i - *off};
	*off = i;
	return true;
}

/* --- what may be stored ----------------------------------------------------------------------- */

/* True if the comma-separated list v holds the directive d (case-insensitive, "d" or "d=..."). */
static bool has_directive(struct iov v, const char *d)
{
	size_t dl = strlen(d);
	size_t i = 0;

	while (i < v.len) {
		size_t s, e;
		while (i < v.len && (v.base[i] == ' ' || v.base[i] == '\t' || v.base[i] == ','))
			i++;
		s = i;
		while (i < v.len && v.base[i] != ',' && v.base[i] != '=' && v.base[i] != ' ' &&
		       v.base[i] != '\t')
			i++;
		e = i;
		if (e - s == dl && !strncasecmp(v.base + s, d, dl))
			return true;
		/* skip a value, quoted strings may hold commas */
		bool quoted = false;
		while (i < v.len && (quoted || v.base[i] != ',')) {
			if (v.base[i] == '"')
				quoted = !quoted;
			else if (quoted && v.base[i] == '\\')
				i++;
			i++;
		}
	}
	return false;
}

bool cache_response_storable(const struct cache_header *h, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (iov_eq_ci(h[i].name, "cache-control") &&
		    (has_directive(h[i].value, "no-store") ||
		     has_directive(h[i].value, "no-cache") || has_directive(h[i].value, "private")))
			return false;
		if (iov_eq_ci(h[i].name, "vary") && has_directive(h[i].value, "*"))
			return false;
	}
	return true;
}

bool cache_header_replayable(struct iov name)
{
	static const char *const drop[] = {
		"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
		"content-length", "set-cookie", "set-cookie2", "retry-after", "date", "age",
		"cache-control", "expires", "pragma", "alt-svc", "strict-transport-security",
		/* the request's own, never the one that filled the entry */
		"x-request-id", "server-timing",
	};
	static const char *const drop_prefix[] = {
		"proxy-", "x-ratelimit-", "anthropic-ratelimit-", "x-meridian-",
	};

	for (size_t i = 0; i < ARRAY_SIZE(drop); i++)
		if (iov_eq_ci(name, drop[i]))
			return false;
	for (size_t i = 0; i < ARRAY_SIZE(drop_prefix); i++)
		if (iov_starts_ci(name, drop_prefix[i]))
			return false;
	return name.len > 0;
}

int cache__check(const struct cache_response *r, uint64_t ttl_ms)
{
	if (!ttl_ms)
		return CACHE_ENOTTL;
	if (r->status < 200 || r->status > 299)
		return CACHE_ESTATUS;
	if (r->nheaders > CACHE_ENTRY_HEADERS_MAX)
		return CACHE_EINVAL;
	for (size_t i = 0; i < r->nheaders; i++)
		if (r->headers[i].name.len > UINT16_MAX || r->headers[i].value.len > UINT32_MAX)
			return CACHE_EINVAL;
	if (r->body_len > UINT32_MAX)
		return CACHE_ETOOBIG;
	return 0;
}

/* --- the Redis wire format -------------------------------------------------------------------- */

static void put_be(struct buf *b, uint64_t v, unsigned bytes)
{
	unsigned char t[8];
	for (unsigned i = 0; i < bytes; i++)
		t[i] = (unsigned char)(v >> (8 * (bytes - 1 - i)));
	buf_append(b, t, bytes);
}

size_t cache__encoded_len(const struct cache_key *k, const struct cache_response *r)
{
	size_t n = 4 + 1 + 2 + 8 + 8 + 32 + 2 + k->account_len + 2 + 4 + r->body_len;
	for (size_t i = 0; i < r->nheaders; i++)
		n += 2 + r->headers[i].name.len + 4 + r->headers[i].value.len;
	return n;
}

void cache__encode(struct buf *out, const struct cache_key *k, const struct cache_response *r,
		   uint64_t created_ms, uint64_t expires_ms)
{
	buf_reserve(out, cache__encoded_len(k, r));
	buf_append(out, CACHE_WIRE_MAGIC, 4);
	put_be(out, r->stream ? 1 : 0, 1);
	put_be(out, (uint64_t)r->status, 2);
	put_be(out, created_ms, 8);
	put_be(out, expires_ms, 8);
	buf_append(out, k->digest, 32);
	put_be(out, k->account_len, 2);
	buf_append(out, k->id, k->account_len);
	put_be(out, r->nheaders, 2);
	for (size_t i = 0; i < r->nheaders; i++) {
		put_be(out, r->headers[i].name.len, 2);
		buf_append(out, r->headers[i].name.base, r->headers[i].name.len);
		put_be(out, r->headers[i].value.len, 4);
		buf_append(out, r->headers[i].value.base, r->headers[i].value.len);
	}
	put_be(out, r->body_len, 4);
	buf_append(out, r->body, r->body_len);
}

struct reader {
	const unsigned char *p;
	size_t left;
	bool bad;
};

static uint64_t get_be(struct reader *rd, unsigned bytes)
{
	uint64_t v = 0;
	if (rd->bad || rd->left < bytes) {
		rd->bad = true;
		return 0;
	}
	for (unsigned i = 0; i < bytes; i++)
		v = v << 8 | rd->p[i];
	rd->p += bytes;
	rd->left -= bytes;
	return v;
}

static const char *get_bytes(struct reader *rd, size_t n)
{
	const char *s = (const char *)rd->p;
	if (rd->bad || rd->left < n) {
		rd->bad = true;
		return NULL;
	}
	rd->p += n;
	rd->left -= n;
	return s;
}

struct cache_entry *cache__decode(const char *p, size_t n, const struct cache_key *k)
{
	struct reader rd = {(const unsigned char *)p, n, false};
	struct cache_header h[CACHE_ENTRY_HEADERS_MAX];
	const char *magic, *digest, *account, *body;
	uint64_t flags, status, created, expires, alen, nh, blen;

	magic = get_bytes(&rd, 4);
	if (!magic || memcmp(magic, CACHE_WIRE_MAGIC, 4))
		return NULL;
	flags = get_be(&rd, 1);
	status = get_be(&rd, 2);
	created = get_be(&rd, 8);
	expires = get_be(&rd, 8);
	digest = get_bytes(&rd, 32);
	alen = get_be(&rd, 2);
	account = get_bytes(&rd, alen);
	nh = get_be(&rd, 2);
	if (rd.bad || flags > 1 || status < 200 || status > 299 || nh > CACHE_ENTRY_HEADERS_MAX)
		return NULL;
	/* another key's entry (a collision, or a value written under the wrong key): a miss */
	if (alen != k->account_len || memcmp(account, k->id, alen) || memcmp(digest, k->digest, 32))
		return NULL;
	for (size_t i = 0; i < nh; i++) {
		h[i].name.len = get_be(&rd, 2);
		h[i].name.base = get_bytes(&rd, h[i].name.len);
		h[i].value.len = get_be(&rd, 4);
		h[i].value.base = get_bytes(&rd, h[i].value.len);
	}
	blen = get_be(&rd, 4);
	body = get_bytes(&rd, blen);
	if (rd.bad || rd.left)
		return NULL;
	return cache__entry_new(account, alen, (const unsigned char *)digest, (int)status,
				flags & 1, created, expires, h, nh, body, blen);
}

/* --- the per-loop handle ---------------------------------------------------------------------- */

struct cache *cache_new(uv_loop_t *loop, const struct cache_config *cfg)
{
	struct cache *c = xcalloc(1, sizeof(*c));

	c->loop = loop;
	c->backend = cfg->backend;
	c->entry_cap = cache__entry_cap(cfg->max_bytes);
	c->mem = cfg->mem;
	if (cfg->backend == CACHE_BACKEND_REDIS)
		c->redis = cache__redis_new(loop, cfg->redis_url ? cfg->redis_url : "",
					    c->entry_cap);
	return c;
}

void cache_free(struct cache *c)
{
	if (!c)
		return;
	cache__redis_free(c->redis);
	free(c);
}

size_t cache_entry_max(const struct cache *c)
{
	return c->entry_cap;
}

void cache_get(struct cache *c, const struct cache_key *k, struct cache_get *g, cache_get_fn done,
	       void *ud)
{
	*g = (struct cache_get){.key = k, .done = done, .ud = ud, .owner = c};
	if (c->redis) {
		cache__redis_get(c->redis, g);
		return;
	}
	done(g, c->mem ? cache_mem_get(c->mem, k) : NULL, ud);
}

void cache_get_cancel(struct cache_get *g)
{
	if (g->pending && g->owner && g->owner->redis)
		cache__redis_cancel(g->owner->redis, g);
	g->pending = false;
}

int cache_put(struct cache *c, const struct cache_key *k, const struct cache_response *r,
	      uint64_t ttl_ms)
{
	int rc = cache__check(r, ttl_ms);

	if (rc < 0)
		return rc;
	if (c->redis) {
		if (cache__encoded_len(k, r) > c->entry_cap)
			return CACHE_ETOOBIG;
		return cache__redis_put(c->redis, k, r, ttl_ms);
	}
	if (!c->mem)
		return CACHE_EINVAL;
	if (cache__entry_bytes(k->account_len, r->headers, r->nheaders, r->body_len) +
		    CACHE_ENTRY_OVERHEAD > c->entry_cap)
		return CACHE_ETOOBIG;
	return cache_mem_put(c->mem, k, r, ttl_ms);
}
