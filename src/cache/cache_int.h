/* cache_int.h - what the cache's files share (entries, the wire format, Redis); not for callers */
#ifndef MERIDIAN_CACHE_CACHE_INT_H
#define MERIDIAN_CACHE_CACHE_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "cache/cache.h"
#include "core/buf.h"

#define CACHE_DEFAULT_MAX_BYTES ((uint64_t)256 << 20)
#define CACHE_ENTRY_OVERHEAD 64     /* the store's share per entry beyond the allocation */

/* The cache's clock, wall milliseconds since the epoch; tests replace it. */
extern uint64_t (*cache__now_ms)(void);
uint64_t cache__wall_ms(void);

/* min(max_bytes / 8, CACHE_ENTRY_MAX); max_bytes 0 is the default. */
size_t cache__entry_cap(uint64_t max_bytes);

/* Checks r against the rules every backend applies (status, header count, TTL); returns 0 or a
 * cache_error. */
int cache__check(const struct cache_response *r, uint64_t ttl_ms);

/* A new entry (one reference) holding copies of everything; size is set. */
struct cache_entry *cache__entry_new(const char *account, size_t account_len,
				     const unsigned char digest[32], int status, bool stream,
				     uint64_t created_ms, uint64_t expires_ms,
				     const struct cache_header *h, size_t nh, const void *body,
				     size_t body_len);
/* The bytes cache__entry_new would allocate. */
size_t cache__entry_bytes(size_t account_len, const struct cache_header *h, size_t nh,
			  size_t body_len);

/* True if e was stored under k: same account, same digest. */
bool cache__entry_matches(const struct cache_entry *e, const struct cache_key *k);

/*
 * The value stored in Redis (version 1), big-endian:
 *   "MRC" 0x01 | flags u8 (1: stream) | status u16 | created_ms u64 | expires_ms u64 |
 *   digest 32 | account_len u16, account | nheaders u16, per header: name_len u16, name,
 *   value_len u32, value | body_len u32, body
 * and nothing after. cache__encode appends it to out; cache__decode checks every length
 * against n and that it belongs to k, and returns a new entry or NULL.
 */
#define CACHE_WIRE_MAGIC "MRC\x01"
void cache__encode(struct buf *out, const struct cache_key *k, const struct cache_response *r,
		   uint64_t created_ms, uint64_t expires_ms);
size_t cache__encoded_len(const struct cache_key *k, const struct cache_response *r);
struct cache_entry *cache__decode(const char *p, size_t n, const struct cache_key *k);

/* The Redis side of one handle (cache_redis.c). */
struct cache_redis;
struct cache_redis *cache__redis_new(uv_loop_t *loop, const char *url, size_t entry_cap);
/* Answers pending lookups as misses; frees the rest once its handles closed. */
void cache__redis_free(struct cache_redis *r);
void cache__redis_get(struct cache_redis *r, struct cache_get *g);
void cache__redis_cancel(struct cache_redis *r, struct cache_get *g);
int cache__redis_put(struct cache_redis *r, const struct cache_key *k,
		     const struct cache_response *r2, uint64_t ttl_ms);
/* For tests: the handshake is done and nothing failed since; no call is outstanding. */
bool cache__redis_up(const struct cache_redis *r);
bool cache__redis_idle(const struct cache_redis *r);
/* The Redis key of k: "meridian:cache:{<account>}:<hex>" into out (at least
 * CACHE_REDIS_KEY_MAX bytes). */
#define CACHE_REDIS_KEY_MAX (sizeof("meridian:cache:{}:") + CACHE_ACCOUNT_MAX + 64)
void cache__redis_key(const struct cache_key *k, char *out);
/* Every call's deadline (50 ms); tests may change it. */
extern uint64_t cache__redis_deadline_ms;

struct cache {
	uv_loop_t *loop;
	enum cache_backend backend;
	size_t entry_cap;
	struct cache_mem *mem;
	struct cache_redis *redis;
};

#endif
