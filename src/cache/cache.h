/* cache.h - exact-match response cache: canonical keys, refcounted entries, memory and Redis */
#ifndef MERIDIAN_CACHE_CACHE_H
#define MERIDIAN_CACHE_CACHE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "core/str.h"

/*
 * What is cached: one complete, successful (2xx) upstream answer, keyed by everything that can
 * change it: the account, the provider, the model, the upstream path and query, the request body
 * in canonical form (parsed, object keys sorted, no whitespace), and the request attributes that
 * go upstream (e.g. anthropic-version), all hashed with SHA-256. A streamed answer is stored as
 * its raw SSE bytes and replayed event by event.
 *
 * Two backends behind one per-loop handle (struct cache):
 * - memory: one process-wide store (struct cache_mem) that every worker's handle shares, an LRU
 *   bounded by max_bytes, a TTL per entry; a hit hands out a reference to an immutable entry,
 *   so nothing is copied under the lock and an eviction never frees an entry in use.
 * - redis: one pipelined hiredis connection per worker loop; SET key value PX ttl with the
 *   entry in a versioned binary format, GET to read. Every call has a 50 ms deadline; a Redis
 *   that is away (down, frozen, refusing) is a miss and a dropped put, never an error or a wait.
 *
 * Isolation: the account is hashed into the key and is its visible prefix, and every entry
 * carries the account and the full digest, compared on read: one account never reads
 * another's entry, even if two keys collided.
 */

#define CACHE_ACCOUNT_MAX 128            /* bytes of an account id; longer: no key */
#define CACHE_KEY_HEADERS_MAX 32         /* request attributes hashed into a key */
#define CACHE_ENTRY_HEADERS_MAX 64       /* response headers stored with an entry */
#define CACHE_ENTRY_MAX ((size_t)8 << 20) /* the per-entry cap: min(max_bytes / 8, this) */
#define CACHE_TTL_MAX_MS (366ull * 24 * 3600 * 1000) /* longer TTLs are cut to this */

enum cache_error {
	CACHE_EINVAL = -1,    /* a key without a usable account, too many headers, a bad body */
	CACHE_ESTATUS = -2,   /* put: the status is not 2xx */
	CACHE_ETOOBIG = -3,   /* put: the entry is over the per-entry cap */
	CACHE_ENOTTL = -4,    /* put: TTL 0, do not cache */
	CACHE_EAWAY = -5,     /* put: Redis is away; the entry was dropped */
	CACHE_EBUSY = -6,     /* put: too many bytes already wait for Redis; dropped */
};

/* A short lowercase description of a cache_error (or "unknown error"). */
const char *cache_strerror(int err);

/* A header or request attribute: borrowed slices (same layout as struct http_header). */
struct cache_header {
	struct iov name;
	struct iov value;
};

/* --- keys ----------------------------------------------------------------------------------- */

/* What a key is made of. Every slice is borrowed for the duration of cache_key_make(). */
struct cache_request {
	struct iov account;              /* required: 1..CACHE_ACCOUNT_MAX printable ASCII bytes */
	struct iov provider;             /* the provider's canonical name (not an alias) */
	struct iov model;
	struct iov path;                 /* upstream path and query: "/v1/messages?beta=true" */
	const json_t *body;              /* the parsed body (parse it with JSON_REJECT_DUPLICATES);
					  * NULL: raw is hashed byte for byte instead */
	struct iov raw;                  /* used only when body is NULL (e.g. a GET's empty body) */
	/* Every other request attribute that goes upstream and can change the answer:
	 * anthropic-version, anthropic-beta, openai-organization, openai-project, ... and
	 * pseudo-attributes the gateway chooses (":region" for a pinned region, ":gateway").
	 * Names compare case-insensitively; their order does not matter, but the order of values
	 * of one name does. Values are hashed with surrounding whitespace trimmed. */
	const struct cache_header *headers;
	size_t nheaders;                 /* at most CACHE_KEY_HEADERS_MAX */
};

/* A key: fixed-size, made once per request, no allocation to keep. */
struct cache_key {
	unsigned char digest[32];        /* SHA-256 of the canonical key material */
	size_t account_len;
	/* "<account>:<64 hex digits of digest>", NUL-terminated: the account is a visible prefix */
	char id[CACHE_ACCOUNT_MAX + 1 + 64 + 1];
};

/*
 * Makes r's key. The body is serialised with JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY,
 * so key order and whitespace do not matter while values (1 and 1.0 are different numbers) do.
 * Returns 0, or CACHE_EINVAL (no account, an account that is too long or not printable ASCII,
 * more than CACHE_KEY_HEADERS_MAX headers, a body jansson cannot serialise): do not cache.
 */
int cache_key_make(struct cache_key *k, const struct cache_request *r);

/* --- entries -------------------------------------------------------------------------------- */

/*
 * One cached answer, in one allocation. Immutable once made: any number of threads may read it
 * while they hold a reference. The store's fields at the end are the store's alone.
 */
struct cache_entry {
	int status;                      /* 2xx */
	bool stream;                     /* body is an SSE stream, replay it as one */
	uint64_t created_ms;             /* cache clock (wall ms since the epoch) when stored */
	uint64_t expires_ms;
	const struct cache_header *headers; /* as given to cache_put(), in order */
	size_t nheaders;
	const char *body;                /* NUL-terminated after body_len, for convenience */
	size_t body_len;
	const char *account;             /* NUL-terminated */
	size_t account_len;
	unsigned char digest[32];
	size_t size;                     /* bytes it counts against max_bytes */

	/* private to the store */
	atomic_uint refs;
	struct cache_entry *lru_prev, *lru_next, *hnext;
	bool linked;
};

/* Returns e with one more reference (for a second holder). */
struct cache_entry *cache_entry_ref(struct cache_entry *e);
/* Drops one reference; the last one frees e. NULL is accepted. */
void cache_entry_unref(struct cache_entry *e);

/*
 * Steps through a stream entry's body one SSE event at a time (an event ends with a blank line;
 * lines end with CRLF, LF or CR). Start with *off = 0; each call sets ev to the next event's raw
 * bytes, terminator included (borrowed from e), and advances *off. Trailing bytes without a
 * blank line come out as a last event. Returns false when nothing is left.
 */
bool cache_entry_event(const struct cache_entry *e, size_t *off, struct iov *ev);

/* What cache_put() stores, borrowed for the call. */
struct cache_response {
	int status;
	bool stream;
	const struct cache_header *headers; /* what to replay; the caller chooses them (see
					     * cache_header_replayable) */
	size_t nheaders;                 /* at most CACHE_ENTRY_HEADERS_MAX */
	const void *body;                /* a stream: the raw SSE bytes, complete */
	size_t body_len;
};

/* False if the upstream's answer must not be stored: Cache-Control with no-store, no-cache or
 * private (this cache is shared by every user of an account and cannot revalidate), or
 * Vary: *. Give it all the upstream's response headers. */
bool cache_response_storable(const struct cache_header *h, size_t n);

/* True if a response header is worth replaying from the cache: not hop-by-hop (Connection,
 * Keep-Alive, Transfer-Encoding, TE, Trailer, Upgrade, Proxy-*), not framing (Content-Length),
 * not Set-Cookie, not rate-limit state (x-ratelimit-*, anthropic-ratelimit-*, Retry-After), not
 * per-answer (Date, Age, Cache-Control, Expires, x-meridian-*). A default; the gateway decides. */
bool cache_header_replayable(struct iov name);

/* --- the memory store ------------------------------------------------------------------------ */

struct cache_mem;

struct cache_mem_stats {
	uint64_t entries, bytes, max_bytes;
	uint64_t hits, misses, puts, evictions, expirations;
};

/* A process-wide store of at most max_bytes (entries, headers, bodies and keys counted; its hash
 * table is not). Thread-safe. */
struct cache_mem *cache_mem_new(uint64_t max_bytes);
/* A reload: a smaller bound evicts at once. */
void cache_mem_set_max(struct cache_mem *m, uint64_t max_bytes);
/* Frees the store. No handle may use it any more; entries still held stay valid until their
 * last cache_entry_unref(). NULL is accepted. */
void cache_mem_free(struct cache_mem *m);
void cache_mem_stats(struct cache_mem *m, struct cache_mem_stats *out);

/* Synchronous access, what cache_get()/cache_put() do with the memory backend. get returns a
 * new reference, or NULL on a miss (absent, or expired: then it is removed). put returns 0 or a
 * cache_error; an entry with the same key is replaced. */
struct cache_entry *cache_mem_get(struct cache_mem *m, const struct cache_key *k);
int cache_mem_put(struct cache_mem *m, const struct cache_key *k, const struct cache_response *r,
		  uint64_t ttl_ms);

/* --- the per-loop handle --------------------------------------------------------------------- */

enum cache_backend { CACHE_BACKEND_MEMORY, CACHE_BACKEND_REDIS };

struct cache_config {
	enum cache_backend backend;
	uint64_t max_bytes;              /* cache.max_bytes: the per-entry cap is max_bytes / 8,
					  * at most CACHE_ENTRY_MAX; 0: 256 MiB */
	struct cache_mem *mem;           /* memory: the process-wide store (borrowed; must
					  * outlive the handle) */
	const char *redis_url;           /* redis: redis://[[user]:password@]host[:port][/db] or
					  * unix://[[user]:password@]/path[?db=N]; copied */
};

struct cache;

/* A lookup in progress. Lives in the request context; the caller fills nothing. */
struct cache_get;
typedef void (*cache_get_fn)(struct cache_get *g, struct cache_entry *e, void *ud);

struct cache_get {
	const struct cache_key *key;     /* borrowed until done runs or the lookup is cancelled */
	cache_get_fn done;
	void *ud;
	struct cache *owner;
	bool pending;                    /* a Redis answer is awaited */
};

/* One per worker loop; with redis it connects in the background. The config is copied. */
struct cache *cache_new(uv_loop_t *loop, const struct cache_config *cfg);
/* Closes the connection: pending lookups are answered as misses first. The loop must run
 * afterwards for the handles to close. NULL is accepted. */
void cache_free(struct cache *c);

/* The largest entry that will be stored: the gateway stops collecting a body beyond it. */
size_t cache_entry_max(const struct cache *c);

/*
 * Looks k up. done runs exactly once: before cache_get returns (memory backend, or Redis not
 * connected), or later on the loop (Redis), with e a new reference the caller releases with
 * cache_entry_unref(), or NULL for a miss (absent, expired, Redis away or slow, an entry that
 * does not decode or belongs to another key). k must stay valid until done runs.
 */
void cache_get(struct cache *c, const struct cache_key *k, struct cache_get *g, cache_get_fn done,
	       void *ud);
/* The request is gone before done ran: done will not run. Nothing happens if it already ran. */
void cache_get_cancel(struct cache_get *g);

/*
 * Stores r under k for ttl_ms (cut to CACHE_TTL_MAX_MS). Call it only for a complete,
 * successful answer that cache_response_storable() allowed. Everything is copied; with Redis
 * the write is sent and not waited for. Returns 0 or CACHE_ENOTTL, CACHE_ESTATUS,
 * CACHE_ETOOBIG, CACHE_EINVAL (too many headers), CACHE_EAWAY, CACHE_EBUSY.
 */
int cache_put(struct cache *c, const struct cache_key *k, const struct cache_response *r,
	      uint64_t ttl_ms);

#endif
