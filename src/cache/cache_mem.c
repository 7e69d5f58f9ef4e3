/* cache_mem.c - the memory backend: one process-wide LRU of refcounted entries under a mutex */
#include <stdlib.h>
#include <string.h>

#include "cache/cache_int.h"
#include "core/alloc.h"

/*
 * One mutex guards the hash table, the LRU list and the counters. Under it: a lookup (a chain
 * walk, a reference taken, a move to the LRU's head) or an insertion (links, unlinks). Entries
 * are built and freed outside it: an insertion makes its entry first, and what it unlinks
 * (replaced, evicted, expired) is chained on a local list and released after the unlock. The
 * store holds one reference to each linked entry; a reader's reference keeps an evicted entry
 * alive until the reader lets go.
 */
struct cache_mem {
	uv_mutex_t mu;
	struct cache_entry **table;   /* chains through hnext */
	size_t nbuckets;              /* a power of two */
	struct cache_entry *head, *tail; /* LRU: head is the most recently used */
	uint64_t bytes, max_bytes;
	struct cache_mem_stats st;
};

static size_t bucket_of(const unsigned char digest[32], size_t nbuckets)
{
	uint64_t h;
	memcpy(&h, digest, sizeof(h));   /* SHA-256 bytes are as good as any hash of them */
	return (size_t)h & (nbuckets - 1);
}

struct cache_mem *cache_mem_new(uint64_t max_bytes)
{
	struct cache_mem *m = xcalloc(1, sizeof(*m));
	size_t nb = 64;

	if (!max_bytes)
		max_bytes = CACHE_DEFAULT_MAX_BYTES;
	/* sized for 8 KiB entries on average, so growing is rare */
	while (nb < ((size_t)1 << 20) && nb < max_bytes / 8192)
		nb <<= 1;
	uv_mutex_init(&m->mu);
	m->table = xcalloc(nb, sizeof(*m->table));
	m->nbuckets = nb;
	m->max_bytes = max_bytes;
	return m;
}

static void lru_unlink(struct cache_mem *m, struct cache_entry *e)
{
	if (e->lru_prev)
		e->lru_prev->lru_next = e->lru_next;
	else
		m->head = e->lru_next;
	if (e->lru_next)
		e->lru_next->lru_prev = e->lru_prev;
	else
		m->tail = e->lru_prev;
	e->lru_prev = e->lru_next = NULL;
}

static void lru_push_head(struct cache_mem *m, struct cache_entry *e)
{
	e->lru_prev = NULL;
	e->lru_next = m->head;
	if (m->head)
		m->head->lru_prev = e;
	else
		m->tail = e;
	m->head = e;
}

/* Takes e out of the store; its reference moves to *dead (chained through hnext). */
static void remove_entry(struct cache_mem *m, struct cache_entry *e, struct cache_entry **dead)
{
	struct cache_entry **pp = &m->table[bucket_of(e->digest, m->nbuckets)];

	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	lru_unlink(m, e);
	e->linked = false;
	m->bytes -= e->size;
	m->st.entries--;
	e->hnext = *dead;
	*dead = e;
}

static void release_all(struct cache_entry *dead)
{
	while (dead) {
		struct cache_entry *e = dead;
		dead = e->hnext;
		cache_entry_unref(e);
	}
}

static struct cache_entry *find(struct cache_mem *m, const struct cache_key *k)
{
	struct cache_entry *e = m->table[bucket_of(k->digest, m->nbuckets)];
	while (e && !cache__entry_matches(e, k))
		e = e->hnext;
	return e;
}

/* Evicts from the LRU's tail until the bytes fit. */
static void shrink(struct cache_mem *m, struct cache_entry **dead)
{
	while (m->bytes > m->max_bytes && m->tail) {
		remove_entry(m, m->tail, dead);
		m->st.evictions++;
	}
}

struct cache_entry *cache_mem_get(struct cache_mem *m, const struct cache_key *k)
{
	struct cache_entry *e, *dead = NULL;
	uint64_t now = cache__now_ms();

	uv_mutex_lock(&m->mu);
	e = find(m, k);
	if (e && now >= e->expires_ms) {
		remove_entry(m, e, &dead);
		m->st.expirations++;
		e = NULL;
	}
	if (e) {
		cache_entry_ref(e);
		if (m->head != e) {
			lru_unlink(m, e);
			lru_push_head(m, e);
		}
		m->st.hits++;
	} else {
		m->st.misses++;
	}
	uv_mutex_unlock(&m->mu);
	release_all(dead);
	return e;
}

/* Doubles the table if chains got long. The new array is allocated outside the lock. */
static void maybe_grow(struct cache_mem *m)
{
	struct cache_entry **nt, **old;
	size_t nb;

	uv_mutex_lock(&m->mu);
	nb = m->nbuckets;
	bool need = m->st.entries > 2 * nb && nb < ((size_t)1 << 24);
	uv_mutex_unlock(&m->mu);
	if (!need)
		return;
	nt = xcalloc(nb * 2, sizeof(*nt));
	uv_mutex_lock(&m->mu);
	if (m->nbuckets != nb) {
		/* another thread grew it meanwhile */
		uv_mutex_unlock(&m->mu);
		free(nt);
		return;
	}
	for (size_t i = 0; i < nb; i++) {
		struct cache_entry *e = m->table[i];
		while (e) {
			struct cache_entry *next = e->hnext;
			size_t b = bucket_of(e->digest, nb * 2);
			e->hnext = nt[b];
			nt[b] = e;
			e = next;
		}
	}
	old = m->table;
	m->table = nt;
	m->nbuckets = nb * 2;
	uv_mutex_unlock(&m->mu);
	free(old);
}

int cache_mem_put(struct cache_mem *m, const struct cache_key *k, const struct cache_response *r,
		  uint64_t ttl_ms)
{
	struct cache_entry *e, *old, *dead = NULL;
	uint64_t now = cache__now_ms(), max;
	int rc = cache__check(r, ttl_ms);

	if (rc < 0)
		return rc;
	uv_mutex_lock(&m->mu);
	max = m->max_bytes;
	uv_mutex_unlock(&m->mu);
	if (cache__entry_bytes(k->account_len, r->headers, r->nheaders, r->body_len) +
		    CACHE_ENTRY_OVERHEAD > cache__entry_cap(max))
		return CACHE_ETOOBIG;
	if (ttl_ms > CACHE_TTL_MAX_MS)
		ttl_ms = CACHE_TTL_MAX_MS;
	e = cache__entry_new(k->id, k->account_len, k->digest, r->status, r->stream, now,
			     now + ttl_ms, r->headers, r->nheaders, r->body, r->body_len);

	uv_mutex_lock(&m->mu);
	old = find(m, k);
	if (old)
		remove_entry(m, old, &dead);
	size_t b = bucket_of(e->digest, m->nbuckets);
	e->hnext = m->table[b];
	m->table[b] = e;
	e->linked = true;
	lru_push_head(m, e);
	m->bytes += e->size;
	m->st.entries++;
	m->st.puts++;
	shrink(m, &dead);
	uv_mutex_unlock(&m->mu);
	release_all(dead);
	maybe_grow(m);
	return 0;
}

void cache_mem_set_max(struct cache_mem *m, uint64_t max_bytes)
{
	struct cache_entry *dead = NULL;

	uv_mutex_lock(&m->mu);
	m->max_bytes = max_bytes ? max_bytes : CACHE_DEFAULT_MAX_BYTES;
	shrink(m, &dead);
	uv_mutex_unlock(&m->mu);
	release_all(dead);
}

void cache_mem_stats(struct cache_mem *m, struct cache_mem_stats *out)
{
	uv_mutex_lock(&m->mu);
	*out = m->st;
	out->bytes = m->bytes;
	out->max_bytes = m->max_bytes;
	uv_mutex_unlock(&m->mu);
}

void cache_mem_free(struct cache_mem *m)
{
	struct cache_entry *dead = NULL;

	if (!m)
		return;
	while (m->tail)
		remove_entry(m, m->tail, &dead);
	release_all(dead);
	uv_mutex_destroy(&m->mu);
	free(m->table);
	free(m);
}
