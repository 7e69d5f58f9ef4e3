/* worker.c - one libuv loop per thread, started together and stopped together */
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "net/worker.h"

struct start_sync {
	uv_mutex_t mu;
	uv_cond_t cv;
	unsigned started;
};

static void wake_cb(uv_async_t *h)
{
	struct worker *w = container_of(h, struct worker, wake);
	if (w->on_wake)
		w->on_wake(w);
}

struct thread_arg {
	struct worker *w;
	struct start_sync *s;
};

static void thread_main(void *arg)
{
	struct thread_arg *ta = arg;
	struct worker *w = ta->w;
	struct start_sync *s = ta->s;

	free(ta);
	if (w->on_start)
		w->on_start(w);
	uv_mutex_lock(&s->mu);
	s->started++;
	uv_cond_signal(&s->cv);
	uv_mutex_unlock(&s->mu);
	if (w->start_error)
		uv_close((uv_handle_t *)&w->wake, NULL);
	uv_run(&w->loop, UV_RUN_DEFAULT);
}

int workers_start(struct worker_group *g, unsigned n, worker_fn on_start, worker_fn on_wake,
		  void *data)
{
	/* on the stack: every thread is done with it before the wait below ends */
	struct start_sync sync, *s = &sync;
	int err = 0;

	g->n = n;
	g->w = xcalloc(n, sizeof(*g->w));
	uv_mutex_init(&s->mu);
	uv_cond_init(&s->cv);
	s->started = 0;
	for (unsigned i = 0; i < n; i++) {
		struct worker *w = &g->w[i];
		struct thread_arg *ta = xmalloc(sizeof(*ta));
		w->id = i;
		w->on_start = on_start;
		w->on_wake = on_wake;
		w->data = data;
		uv_loop_init(&w->loop);
		uv_async_init(&w->loop, &w->wake, wake_cb);
		ta->w = w;
		ta->s = s;
		if (uv_thread_create(&w->thread, thread_main, ta) != 0)
			abort();
	}
	uv_mutex_lock(&s->mu);
	while (s->started < n)
		uv_cond_wait(&s->cv, &s->mu);
	uv_mutex_unlock(&s->mu);
	uv_cond_destroy(&s->cv);
	uv_mutex_destroy(&s->mu);
	for (unsigned i = 0; i < n; i++)
		if (g->w[i].start_error && !err)
			err = g->w[i].start_error;
	return err;
}

void workers_wake(struct worker_group *g)
{
	for (unsigned i = 0; i < g->n; i++)
		uv_async_send(&g->w[i].wake);
}

void worker_stop_self(struct worker *w)
{
	if (!uv_is_closing((uv_handle_t *)&w->wake))
		uv_close((uv_handle_t *)&w->wake, NULL);
}

void workers_join(struct worker_group *g)
{
	for (unsigned i = 0; i < g->n; i++) {
		uv_thread_join(&g->w[i].thread);
		uv_loop_close(&g->w[i].loop);
	}
	xfree(g->w);
	g->n = 0;
}

unsigned workers_default_count(void)
{
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
		return (unsigned)CPU_COUNT(&set);
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (unsigned)n : 1;
}
