/* gateway.h - the request pipeline of one worker: classify, validate, proxy, relay */
#ifndef MERIDIAN_SERVE_GATEWAY_H
#define MERIDIAN_SERVE_GATEWAY_H

#include <stdatomic.h>
#include <uv.h>

#include "conf/conf.h"
#include "http/server.h"
#include "upstream/upstream.h"

struct gw_req;
struct gw_worker;

/* What a listener hands the handler: its worker and its index in conf->listens (a pinned
 * listener's region is looked up in the request's own snapshot). */
struct gw_listen_ctx {
	struct gw_worker *gw;
	size_t index;
};

/* Everything one worker loop owns. Only its own thread touches it, except the atomics. */
struct gw_worker {
	uv_loop_t *loop;
	struct conf *conf;                /* current snapshot; a request holds its own reference */
	struct upstream_pool *pool;
	struct limiter *limiter;          /* the account limits' connection on this loop */
	struct cache *cache;              /* the response cache's handle on this loop */
	struct http_listener **listeners;
	struct gw_listen_ctx *listen_ctx;
	size_t nlisteners;
	atomic_uint active;               /* requests in progress (read by the main thread) */
	struct gw_req *free_reqs;         /* recycled request contexts */
	unsigned nfree;
	uint64_t rng;                     /* request ids */
	bool stopping;
	bool closing;                     /* gw_worker_close() runs: no new upstream work */
	uv_check_t flush_check;           /* sends response headers held back (gateway.c) */
	struct gw_req *flush_list;
	uv_idle_t spin;                   /* server.busy_poll: active, the loop never sleeps */
	uint64_t last_end_ms;             /* loop time the last request in flight ended */
};

/* Creates the upstream pool and a listener for every conf listen entry on loop. Returns 0 or a
 * negative error, with a message in err. */
int gw_worker_start(struct gw_worker *gw, uv_loop_t *loop, struct conf *conf, char *err,
		    size_t errlen);
/* Adopts a new snapshot for new requests (steals the reference). */
void gw_worker_set_conf(struct gw_worker *gw, struct conf *conf);
/* Stops accepting; requests in flight go on. */
void gw_worker_drain(struct gw_worker *gw);
/* Closes everything; in-flight requests are aborted. The loop ends once handles are closed. */
void gw_worker_close(struct gw_worker *gw);

struct log_writer;
/* Where every worker's requests send their records (NULL: nowhere). Set before the workers
 * start and cleared after they stopped. */
void gw_set_log_writer(struct log_writer *w);

/* Frees what the workers shared (the memory cache); no worker may run. */
void gw_shutdown(void);

/* The listener error renderer: OpenAI shape, or Anthropic's for /v1/messages paths. */
const char *gw_render_error(const struct http_req *req, int status, const char *code,
			    const char *message, struct buf *out, void *ctx);

#endif
