/* limit.h - per-account limits: requests and tokens per minute, concurrency; memory or Redis */
#ifndef MERIDIAN_LIMIT_LIMIT_H
#define MERIDIAN_LIMIT_LIMIT_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "conf/conf.h"

/*
 * Limits belong to an account (conf_account.limits), not to a region or a node: one budget
 * wherever its requests run. A window is the last 60 seconds in one-second buckets: a request
 * is admitted when the requests counted in the window plus one stay within
 * requests_per_minute, the tokens counted plus its reservation within tokens_per_minute, and
 * its account's requests in progress stay below max_concurrent. Admission counts the request
 * and reserves its estimated tokens in the current second's bucket, atomically with the check,
 * so concurrent admissions cannot overspend. limit_finish() replaces the reservation by the
 * tokens actually used and frees the concurrency slot.
 *
 * ratelimit.backend memory: the state is process-wide (every worker), exact under races.
 * ratelimit.backend redis: the state is in Redis, shared by every node, changed only by Lua
 * scripts (check and count in one step), every key with a TTL; each worker has its own
 * pipelined async connection on its loop, every call has a deadline, and the connection comes
 * back by itself. While Redis cannot answer, on_redis_error: allow admits by this node's
 * memory limiter, deny refuses with LIMIT_UNAVAILABLE. With ratelimit.lease (the default), far
 * from an account's limits each limiter admits from budget counted in Redis ahead of need
 * (requests and tokens of one Redis second, a pool of slots), so done may run before
 * limit_admit returns with the redis backend too; near the limits every admission is a call.
 */

enum limit_verdict {
	LIMIT_OK,
	LIMIT_REQUESTS,               /* requests_per_minute reached */
	LIMIT_TOKENS,                 /* tokens_per_minute would be exceeded */
	LIMIT_CONCURRENCY,            /* max_concurrent requests in progress */
	LIMIT_UNAVAILABLE,            /* the shared state cannot be reached and on_redis_error: deny */
};

/* What the rate-limit headers say. A limit of 0 means none is configured (no headers). */
struct limit_view {
	uint64_t requests_limit, requests_remaining, requests_reset_ms;
	uint64_t tokens_limit, tokens_remaining, tokens_reset_ms;
	uint64_t retry_after_ms;      /* when refused: until the refusal would no longer apply */
};

/* What one request holds from admission to limit_finish(). Lives in the request context. */
struct limit_ticket {
	const struct conf_account *account;
	uint64_t second;              /* the bucket it was counted in (seconds since the epoch) */
	uint64_t reserved_tokens;
	uint64_t id;                  /* unique in this process */
	bool admitted;                /* limit_finish() must settle it */
	bool local;                   /* admitted by the memory limiter (backend memory, or Redis
				       * unavailable with on_redis_error: allow) */
	bool pending;                 /* a Redis answer is awaited */
	bool cancelled;
	uint64_t pool;                /* its slot is one of this limiter's pool (its serial), 0: none */
	struct limiter *owner;
	void (*done)(struct limit_ticket *t, enum limit_verdict v, const struct limit_view *view,
		     void *ud);
	void *ud;
	struct limit_ticket *next_pending;
};

typedef void (*limit_done_fn)(struct limit_ticket *t, enum limit_verdict v,
			      const struct limit_view *view, void *ud);

struct limiter;

/* One per worker loop. With the redis backend it connects to c->redis_url in the background. */
struct limiter *limiter_new(uv_loop_t *loop, const struct conf *c);
/* A reload: a new redis_url or backend takes effect for later admissions. */
void limiter_set_conf(struct limiter *l, const struct conf *c);
/* Closes the connection; pending admissions are answered as if Redis were away. */
void limiter_free(struct limiter *l);

/* Admits or refuses one request of account a (NULL: no account, always admitted) that is
 * estimated to cost est_tokens. done runs exactly once, either before limit_admit returns
 * (memory backend, nothing to limit, a lease, or Redis known to be away) or later on the
 * loop; view is valid during the call only. */
void limit_admit(struct limiter *l, const struct conf *c, const struct conf_account *a,
		 uint64_t est_tokens, struct limit_ticket *t, limit_done_fn done, void *ud);
/* The request is gone before done ran: done will not run, and an admission that arrives
 * anyway is given back. */
void limit_cancel(struct limit_ticket *t);
/* The request ended (any way): its tokens become used_tokens instead of the reservation, and
 * its concurrency slot is freed. Does nothing for a ticket that was not admitted. */
void limit_finish(struct limiter *l, const struct conf *c, struct limit_ticket *t,
		  uint64_t used_tokens);

/* The current view of account a without counting anything (for headers on answers that were not
 * limited, e.g. errors before admission). Memory state only. */
void limit_peek(const struct conf *c, const struct conf_account *a, struct limit_view *view);

/* Frees the process-wide memory state; no limiter may be alive. */
void limit_shutdown(void);

#endif
