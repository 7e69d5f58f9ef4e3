/* logs.c - the request log's bounded lock-free queue, its writer thread and the reader dispatch */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/log.h"
#include "store/backend.h"
#include "store/logs.h"

#define BATCH_MAX 8192         /* records per write (one transaction); see docs/internals/logs.md */
#define WAKE_MS 20             /* the writer's sleep when there is nothing to write */
#define BACKOFF_MIN_MS 100     /* after a failed write; doubles up to BACKOFF_MAX_MS */
#define BACKOFF_MAX_MS 5000
#define PRUNE_EVERY_MS 60000
#define DROP_LOG_EVERY_MS 1000
#define CACHELINE 64

/*
 * Dmitry Vyukov's bounded MPMC queue: each cell carries a sequence number that says whose turn
 * it is. A producer claims position pos when cell[pos & mask].seq == pos (the cell is free for
 * this lap), publishes the record and sets seq = pos + 1; the consumer takes pos when seq ==
 * pos + 1 and frees the cell for the next lap with seq = pos + capacity. A full queue is seen
 * as seq < pos and refused at once: push never waits, never calls the kernel.
 */
struct cell {
	_Atomic size_t seq;
	struct log_record *rec;
};

struct log_writer {
	alignas(CACHELINE) _Atomic size_t head; /* next position to push */
	alignas(CACHELINE) _Atomic size_t tail; /* next position to pop (the writer only) */
	alignas(CACHELINE) struct cell *cells;
	size_t mask;

	/* head - written - abandoned: records accepted and not yet in the store, exactly (the
	 * writer's batch in hand included), whatever the writer is doing */
	_Atomic uint64_t written, dropped, store_errors, abandoned;
	_Atomic bool store_up;

	const struct log_backend_ops *ops;
	void *h;
	uint64_t retention_ms;

	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	bool stopping;           /* under mu */
	uint64_t stop_deadline;  /* under mu: monotonic ms */
};

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int64_t wall_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- the queue ---------------------------------------------------------------------------- */

static bool queue_push(struct log_writer *w, struct log_record *r)
{
	size_t pos = atomic_load_explicit(&w->head, memory_order_relaxed);
	struct cell *c;

	for (;;) {
		size_t seq;
		intptr_t dif;

		c = &w->cells[pos & w->mask];
		seq = atomic_load_explicit(&c->seq, memory_order_acquire);
		dif = (intptr_t)seq - (intptr_t)pos;
		if (dif == 0) {
			if (atomic_compare_exchange_weak_explicit(&w->head, &pos, pos + 1,
								  memory_order_relaxed,
								  memory_order_relaxed))
				break;
		} else if (dif < 0) {
			return false;
		} else {
			pos = atomic_load_explicit(&w->head, memory_order_relaxed);
		}
	}
	c->rec = r;
	atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
	return true;
}

/* The writer thread only. */
static struct log_record *queue_pop(struct log_writer *w)
{
	size_t pos = atomic_load_explicit(&w->tail, memory_order_relaxed);
	struct cell *c = &w->cells[pos & w->mask];
	size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
	struct log_record *r;

	/* seq == pos: nothing pushed here yet (or a producer claimed it and is still copying) */
	if ((intptr_t)seq - (intptr_t)(pos + 1) < 0)
		return NULL;
	r = c->rec;
	c->rec = NULL;
	atomic_store_explicit(&c->seq, pos + w->mask + 1, memory_order_release);
	atomic_store_explicit(&w->tail, pos + 1, memory_order_relaxed);
	return r;
}

static size_t queue_len(const struct log_writer *w)
{
	size_t t = atomic_load_explicit(&w->tail, memory_order_relaxed);
	size_t h = atomic_load_explicit(&w->head, memory_order_relaxed);

	return h > t ? h - t : 0;
}

/* ---- the writer thread -------------------------------------------------------------------- */

struct wstate {
	struct log_record *batch[BATCH_MAX];
	size_t n;
	uint64_t backoff_ms, next_try, next_prune, next_drop_log, dropped_logged;
	uint64_t fail_logged_at;
	char err[256];
};

static void free_batch(struct log_writer *w, struct wstate *s)
{
	for (size_t i = 0; i < s->n; i++)
		log_record_free(s->batch[i]);
	s->n = 0;
}

static void try_write(struct log_writer *w, struct wstate *s, uint64_t now)
{
	if (w->ops->write(w->h, s->batch, s->n, s->err, sizeof(s->err)) == 0) {
		atomic_fetch_add_explicit(&w->written, s->n, memory_order_release);
		free_batch(w, s);
		if (!atomic_load_explicit(&w->store_up, memory_order_relaxed))
			log_info("log store '%s': writing again", w->ops->name);
		atomic_store_explicit(&w->store_up, true, memory_order_relaxed);
		s->backoff_ms = 0;
		s->next_try = 0;
		return;
	}
	atomic_fetch_add_explicit(&w->store_errors, 1, memory_order_relaxed);
	/* one line per transition, then one every 10 s while it stays down */
	if (atomic_load_explicit(&w->store_up, memory_order_relaxed) ||
	    now - s->fail_logged_at >= 10000) {
		log_error("log store '%s': cannot write %zu records (%zu more queued, kept): %s",
			  w->ops->name, s->n, queue_len(w), s->err);
		s->fail_logged_at = now;
	}
	atomic_store_explicit(&w->store_up, false, memory_order_relaxed);
	s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : BACKOFF_MIN_MS;
	if (s->backoff_ms > BACKOFF_MAX_MS)
		s->backoff_ms = BACKOFF_MAX_MS;
	s->next_try = now + s->backoff_ms;
}

static void log_drops(struct log_writer *w, struct wstate *s, uint64_t now, bool force)
{
	uint64_t d = atomic_load_explicit(&w->dropped, memory_order_relaxed);

	if (d == s->dropped_logged || (!force && now < s->next_drop_log))
		return;
	log_error("log queue full (%zu records): %" PRIu64 " records dropped (%" PRIu64 " in all)",
		  w->mask + 1, d - s->dropped_logged, d);
	s->dropped_logged = d;
	s->next_drop_log = now + DROP_LOG_EVERY_MS;
}

/* Gives up on what is left when the store still fails at the shutdown deadline: counted. */
static void abandon(struct log_writer *w, struct wstate *s)
{
	uint64_t lost = s->n;
	struct log_record *r;

	free_batch(w, s);
	while ((r = queue_pop(w))) {
		log_record_free(r);
		lost++;
	}
	atomic_fetch_add_explicit(&w->abandoned, lost, memory_order_relaxed);
	atomic_fetch_add_explicit(&w->dropped, lost, memory_order_relaxed);
	s->dropped_logged += lost;
	log_error("log store '%s': %" PRIu64 " records not written at shutdown: %s", w->ops->name,
		  lost, s->err);
}

static void *writer_main(void *arg)
{
	struct log_writer *w = arg;
	struct wstate *s = xcalloc(1, sizeof(*s));

	for (;;) {
		uint64_t now, wait_ms, deadline;
		bool stopping, full;
		struct timespec ts;

		while (s->n < BATCH_MAX) {
			struct log_record *r = queue_pop(w);
			if (!r)
				break;
			s->batch[s->n++] = r;
		}
		full = s->n == BATCH_MAX;

		pthread_mutex_lock(&w->mu);
		stopping = w->stopping;
		deadline = w->stop_deadline;
		pthread_mutex_unlock(&w->mu);

		now = mono_ms();
		/* at shutdown the last try happens at the deadline, not a backoff after it */
		if (stopping && s->next_try > deadline)
			s->next_try = deadline;
		if (s->n && now >= s->next_try)
			try_write(w, s, now);

		if (w->retention_ms && now >= s->next_prune && !stopping) {
			int64_t before = wall_us() - (int64_t)(w->retention_ms * 1000);
			char err[256];
			if (w->ops->prune(w->h, before, err, sizeof(err)) < 0)
				log_error("log store '%s': cannot delete old records: %s", w->ops->name,
					  err);
			s->next_prune = now + PRUNE_EVERY_MS;
		}
		log_drops(w, s, now, false);

		if (stopping && s->n == 0 && queue_len(w) == 0)
			break;
		if (stopping && s->n && now >= deadline) {
			abandon(w, s);
			break;
		}
		/* a full batch went: more is likely waiting, take it without sleeping */
		if (s->n == 0 && full)
			continue;

		wait_ms = WAKE_MS;
		if (s->n && s->next_try - now < wait_ms)
			wait_ms = s->next_try - now;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += (long)(wait_ms * 1000000);
		ts.tv_sec += ts.tv_nsec / 1000000000;
		ts.tv_nsec %= 1000000000;
		pthread_mutex_lock(&w->mu);
		/* a stop that came since we looked is not slept through */
		if (w->stopping == stopping)
			pthread_cond_timedwait(&w->cond, &w->mu, &ts);
		pthread_mutex_unlock(&w->mu);
	}
	log_drops(w, s, mono_ms(), true);
	free(s);
	return NULL;
}

/* ---- the writer's API --------------------------------------------------------------------- */

static size_t round_pow2(size_t n)
{
	size_t p = 2; /* the sequence scheme needs two cells at least */

	while (p < n && p < ((size_t)1 << 30))
		p <<= 1;
	return p;
}

int log__writer_start_ops(const struct log_backend_ops *ops, const char *spec, size_t capacity,
			  uint64_t retention_ms, struct log_writer **out, char *err, size_t errlen)
{
	struct log_writer *w;
	pthread_condattr_t ca;
	int rc;

	w = aligned_alloc(CACHELINE, (sizeof(*w) + CACHELINE - 1) & ~(size_t)(CACHELINE - 1));
	if (!w)
		abort();
	memset(w, 0, sizeof(*w));
	*out = w;
	if (!ops)
		return 0; /* "off": no queue, no thread; every push is dropped uncounted */

	w->ops = ops;
	w->retention_ms = retention_ms;
	w->mask = round_pow2(capacity) - 1;
	w->cells = xcalloc(w->mask + 1, sizeof(*w->cells));
	for (size_t i = 0; i <= w->mask; i++)
		atomic_init(&w->cells[i].seq, i);

	w->h = ops->open_writer(spec ? spec : "", err, errlen);
	if (!w->h)
		goto fail;
	atomic_store(&w->store_up, true);

	pthread_mutex_init(&w->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->cond, &ca);
	pthread_condattr_destroy(&ca);
	rc = pthread_create(&w->thread, NULL, writer_main, w);
	if (rc) {
		snprintf(err, errlen, "cannot start the log writer thread: %s", strerror(rc));
		ops->close_writer(w->h);
		pthread_cond_destroy(&w->cond);
		pthread_mutex_destroy(&w->mu);
		goto fail;
	}
	return 0;
fail:
	free(w->cells);
	free(w);
	*out = NULL;
	return -1;
}

int log_writer_start(const char *spec, size_t capacity, uint64_t retention_ms, struct log_writer **out,
		     char *err, size_t errlen)
{
	const struct log_backend_ops *ops = NULL;

	if (spec && strcmp(spec, "off") != 0) {
		ops = log_backend_for(spec);
		if (!ops) {
			snprintf(err, errlen,
				 "unknown log store '%s': expected \"sqlite:PATH\" or a postgres:// URL",
				 spec);
			*out = NULL;
			return -1;
		}
	}
	return log__writer_start_ops(ops, spec, capacity, retention_ms, out, err, errlen);
}

bool log_writer_push(struct log_writer *w, struct log_record *r)
{
	if (!w || !w->ops) {
		log_record_free(r);
		return false;
	}
	if (queue_push(w, r))
		return true;
	atomic_fetch_add_explicit(&w->dropped, 1, memory_order_relaxed);
	log_record_free(r);
	return false;
}

void log_writer_stats(const struct log_writer *w, struct log_writer_stats *out)
{
	uint64_t written, settled, head;

	memset(out, 0, sizeof(*out));
	if (!w || !w->ops)
		return;
	/* settled first: a count that moves meanwhile can only make queued look larger */
	written = atomic_load_explicit(&w->written, memory_order_acquire);
	settled = written + atomic_load_explicit(&w->abandoned, memory_order_acquire);
	head = atomic_load_explicit(&w->head, memory_order_acquire);
	out->queued = head > settled ? head - settled : 0;
	out->capacity = w->mask + 1;
	out->written = written;
	out->dropped = atomic_load_explicit(&w->dropped, memory_order_relaxed);
	out->store_errors = atomic_load_explicit(&w->store_errors, memory_order_relaxed);
	out->store_up = atomic_load_explicit(&w->store_up, memory_order_relaxed);
}

void log_writer_stop(struct log_writer *w, uint64_t timeout_ms)
{
	if (!w)
		return;
	if (w->ops) {
		pthread_mutex_lock(&w->mu);
		w->stopping = true;
		w->stop_deadline = mono_ms() + timeout_ms;
		pthread_cond_signal(&w->cond);
		pthread_mutex_unlock(&w->mu);
		pthread_join(w->thread, NULL);
		w->ops->close_writer(w->h);
		pthread_cond_destroy(&w->cond);
		pthread_mutex_destroy(&w->mu);
		free(w->cells);
	}
	free(w);
}

/* ---- the reader --------------------------------------------------------------------------- */

struct log_reader {
	const struct log_backend_ops *ops;
	void *h;
};

int log_reader_open(const char *spec, struct log_reader **out, char *err, size_t errlen)
{
	const struct log_backend_ops *ops;
	void *h;

	*out = NULL;
	if (!spec || strcmp(spec, "off") == 0) {
		snprintf(err, errlen, "the request log is off (logs.store)");
		return -1;
	}
	ops = log_backend_for(spec);
	if (!ops) {
		snprintf(err, errlen,
			 "unknown log store '%s': expected \"sqlite:PATH\" or a postgres:// URL", spec);
		return -1;
	}
	h = ops->open_reader(spec, err, errlen);
	if (!h)
		return -1;
	*out = xmalloc(sizeof(**out));
	(*out)->ops = ops;
	(*out)->h = h;
	return 0;
}

void log_reader_close(struct log_reader *rd)
{
	if (!rd)
		return;
	rd->ops->close_reader(rd->h);
	free(rd);
}

/* What every store may trust: a page size within bounds, a cursor that decodes, a known class. */
static int check_filter(const struct log_filter *f, struct log_filter *n, char *err, size_t errlen)
{
	int64_t ts;
	char id[48];

	*n = *f;
	if (n->limit == 0)
		n->limit = 50;
	if (n->limit > 1000)
		n->limit = 1000;
	if (n->cursor && !n->cursor[0])
		n->cursor = NULL;
	if (n->cursor && log_cursor_decode(n->cursor, &ts, id) < 0) {
		snprintf(err, errlen, "invalid cursor '%.64s'", n->cursor);
		return -1;
	}
	if (n->status_class < 0 || n->status_class > 5 || n->status_class == 1) {
		snprintf(err, errlen, "invalid status class %d: expected 2, 3, 4 or 5",
			 n->status_class);
		return -1;
	}
	if (n->status < 0 || n->status > 999) {
		snprintf(err, errlen, "invalid status %d", n->status);
		return -1;
	}
	return 0;
}

int log_query(struct log_reader *rd, const struct log_filter *f, struct buf *out, char *err,
	      size_t errlen)
{
	struct log_filter n;

	if (check_filter(f, &n, err, errlen) < 0)
		return -1;
	return rd->ops->query(rd->h, &n, out, err, errlen);
}

int log_get(struct log_reader *rd, const char *id, struct buf *out, char *err, size_t errlen)
{
	if (!id || !id[0] || strlen(id) >= sizeof(((struct log_record *)0)->id))
		return 1;
	return rd->ops->get(rd->h, id, out, err, errlen);
}

int log_stats(struct log_reader *rd, const struct log_stats_query *q, struct buf *out, char *err,
	      size_t errlen)
{
	struct log_stats_query n = *q;
	struct log_filter f = q->filter;

	f.cursor = NULL; /* unused by stats: not checked either */
	if (check_filter(&f, &n.filter, err, errlen) < 0)
		return -1;
	if ((unsigned)n.group > LOG_GROUP_GATEWAY) {
		snprintf(err, errlen, "invalid group %d", (int)n.group);
		return -1;
	}
	return rd->ops->stats(rd->h, &n, out, err, errlen);
}
