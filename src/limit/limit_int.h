/* limit_int.h - what limit.c (memory state, dispatch) and limit_redis.c share; not for callers */
#ifndef MERIDIAN_LIMIT_LIMIT_INT_H
#define MERIDIAN_LIMIT_LIMIT_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "limit/limit.h"

#define LIMIT_WINDOW_S 60             /* the window: the current second and the 59 before it */
#define LIMIT_CONC_RETRY_MS 1000      /* when a concurrency slot frees is unknown */

/* One second of an account's window. */
struct limit_bucket {
	uint64_t sec;                 /* which second it counts; another value: empty */
	uint64_t requests;
	uint64_t tokens;
};

/*
 * An account's process-wide state, found by its id. Created on first use, never freed before
 * limit_shutdown(), so a pointer to it stays valid across reloads. The mutex guards the
 * buckets and inflight; id and the Redis keys never change.
 */
struct limit_acct {
	char *id;
	uint64_t hash;
	uv_mutex_t mu;
	struct limit_bucket b[LIMIT_WINDOW_S]; /* b[sec % 60] */
	uint64_t inflight;            /* admitted by this process's memory limiter, not finished */
	char *rkey_window;            /* meridian:rl:{id}:w, the Redis hash of per-second counts */
	char *rkey_conc;              /* meridian:rl:{id}:c, the Redis sorted set of slots */
};

/* The clock of the windows, milliseconds since the epoch; tests replace it. */
extern uint64_t (*limit__now_ms)(void);
uint64_t limit__wall_ms(void);

/* The state of account id: limit__acct_get creates it when absent, limit__acct_find returns
 * NULL then. Lock-free when the account is known. Borrowed, valid until limit_shutdown(). */
struct limit_acct *limit__acct_get(const char *id);
struct limit_acct *limit__acct_find(const char *id);

/* Checks and counts one request in s (memory backend, or Redis away with on_redis_error:
 * allow). Fills t (second, reserved_tokens, admitted, local) and view. */
enum limit_verdict limit__mem_admit(struct limit_acct *s, const struct conf_limits *lim,
				    uint64_t est, struct limit_ticket *t, struct limit_view *view);
/* Settles a ticket limit__mem_admit admitted. */
void limit__mem_finish(struct limit_acct *s, const struct limit_ticket *t, uint64_t used);

/* A new ticket id, unique in the process. */
uint64_t limit__ticket_id(void);
/* This process's random id (16 hex digits), which names its concurrency slots in Redis. */
const char *limit__node_id(void);

/* Answers an admission that Redis cannot take: by the memory limiter (allow) or
 * LIMIT_UNAVAILABLE (deny). Runs t->done. */
void limit__fallback(struct limit_ticket *t, uint64_t est, bool deny);

/*
 * The Redis side of one limiter: one async connection on loop, every call with a deadline,
 * reconnecting by itself. limit__redis_free answers what is pending as if Redis were away and
 * frees the rest once its handles closed (the loop must run).
 */
struct limit_redis;
struct limit_redis *limit__redis_new(uv_loop_t *loop, const char *url);
void limit__redis_free(struct limit_redis *r);
const char *limit__redis_url(const struct limit_redis *r);
/* Sends t's admission (t is filled, t->pending set), or answers it at once when Redis is
 * known to be away. */
void limit__redis_admit(struct limit_redis *r, struct limit_acct *s, const struct conf *c,
			uint64_t est, struct limit_ticket *t);
void limit__redis_cancel(struct limit_redis *r, struct limit_ticket *t);
void limit__redis_finish(struct limit_redis *r, struct limit_acct *s, const struct limit_ticket *t,
			 uint64_t used);
/* For tests: the handshake is done and nothing has failed since; no call is outstanding. */
bool limit__redis_up(const struct limit_redis *r);
bool limit__redis_idle(const struct limit_redis *r);
/* For tests: no lease holds requests, tokens or slots, none has anything to give back. */
bool limit__redis_leases_idle(const struct limit_redis *r);
/* Every call's deadline (50 ms); tests of exactness on a loaded machine raise it. */
extern uint64_t limit__redis_deadline_ms;

struct limiter {
	uv_loop_t *loop;
	struct limit_redis *redis;    /* with backend redis; NULL with memory */
};

#endif
