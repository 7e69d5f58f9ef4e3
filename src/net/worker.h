/* worker.h - one libuv loop per thread, started together and stopped together */
#ifndef MERIDIAN_NET_WORKER_H
#define MERIDIAN_NET_WORKER_H

#include <stdbool.h>
#include <uv.h>

struct worker;
typedef void (*worker_fn)(struct worker *w);

struct worker {
	unsigned id;
	uv_loop_t loop;
	uv_thread_t thread;
	uv_async_t wake;       /* wakes the loop to run on_wake (stop, reload, ...) */
	worker_fn on_start;    /* runs on the worker's thread before its loop starts */
	worker_fn on_wake;     /* runs on the worker's thread after workers_wake() */
	void *data;            /* owner's */
	int start_error;       /* set by on_start to refuse startup */
};

struct worker_group {
	unsigned n;
	struct worker *w;
};

/* Starts n threads, each running its own loop after on_start. Returns once every on_start has
 * run; if one set start_error, stops all and returns that error. */
int workers_start(struct worker_group *g, unsigned n, worker_fn on_start, worker_fn on_wake,
		  void *data);
/* Runs on_wake on every worker's thread (asynchronously). Thread-safe. */
void workers_wake(struct worker_group *g);
/* Waits for every loop to end (a worker ends its loop by closing all its handles; the wake
 * handle is closed by worker_stop_self), then frees the group. */
void workers_join(struct worker_group *g);
/* From a worker's own thread: close the wake handle so the loop can end once the owner's
 * handles are closed. */
void worker_stop_self(struct worker *w);
/* Number of CPUs available to this process. */
unsigned workers_default_count(void);

#endif
