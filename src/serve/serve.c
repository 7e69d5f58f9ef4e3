/* serve.c - `meridian serve`: workers, control thread, signals, reload and graceful shutdown */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "core/alloc.h"
#include "core/log.h"
#include "ctl/ctl.h"
#include "net/worker.h"
#include "limit/limit.h"
#include "route/route.h"
#include "serve/gateway.h"
#include "serve/serve.h"
#include "store/logs.h"

enum phase { PHASE_RUN, PHASE_DRAIN, PHASE_CLOSE };

/* Shared between the main thread (signals) and the workers; workers read it on wake. */
struct serve {
	const char *conf_path;
	struct conf *conf;                /* the main thread's current snapshot */
	struct worker_group workers;
	struct gw_worker *gws;
	_Atomic(struct conf *) *pending;  /* per worker: a snapshot to adopt */
	struct ctl *ctl;                  /* probes and the admin listener */
	struct log_writer *logw;          /* the request log */
	atomic_int phase;
	uv_signal_t sig_term, sig_int, sig_hup;
	uv_timer_t drain_timer;
	uint64_t drain_deadline_ns;
	char start_err[256];
	uv_mutex_t err_mu;
};

static struct serve S;

static void worker_start(struct worker *w)
{
	struct gw_worker *gw = &S.gws[w->id];
	char err[256];
	int rc = gw_worker_start(gw, &w->loop, conf_ref(S.conf), err, sizeof(err));
	if (rc < 0) {
		uv_mutex_lock(&S.err_mu);
		if (!S.start_err[0])
			snprintf(S.start_err, sizeof(S.start_err), "%s", err);
		uv_mutex_unlock(&S.err_mu);
		gw_worker_close(gw);
		w->start_error = rc;
	}
}

static void worker_wake(struct worker *w)
{
	struct gw_worker *gw = &S.gws[w->id];
	struct conf *next = atomic_exchange(&S.pending[w->id], NULL);
	int phase = atomic_load(&S.phase);

	if (next)
		gw_worker_set_conf(gw, next);
	if (phase >= PHASE_DRAIN && !gw->stopping)
		gw_worker_drain(gw);
	if (phase == PHASE_CLOSE && gw->pool) {
		gw_worker_close(gw);
		worker_stop_self(w);
	}
}

static unsigned active_requests(void)
{
	unsigned n = 0;
	for (unsigned i = 0; i < S.workers.n; i++)
		n += atomic_load(&S.gws[i].active);
	return n;
}

static void close_main_handles(void)
{
	uv_close((uv_handle_t *)&S.sig_term, NULL);
	uv_close((uv_handle_t *)&S.sig_int, NULL);
	uv_close((uv_handle_t *)&S.sig_hup, NULL);
	uv_close((uv_handle_t *)&S.drain_timer, NULL);
}

static void begin_close(void)
{
	atomic_store(&S.phase, PHASE_CLOSE);
	workers_wake(&S.workers);
	close_main_handles();
}

static void drain_tick(uv_timer_t *t)
{
	unsigned n = active_requests();
	if (n == 0) {
		log_info("all requests finished; exiting");
		begin_close();
	} else if (uv_hrtime() >= S.drain_deadline_ns) {
		log_warn("shutdown grace period over; aborting %u request(s) still in flight", n);
		begin_close();
	}
}

static void on_stop_signal(uv_signal_t *h, int signum)
{
	if (atomic_load(&S.phase) != PHASE_RUN) {
		log_warn("second %s: stopping now", strsignal(signum));
		uv_timer_stop(&S.drain_timer);
		begin_close();
		return;
	}
	log_info("%s: no longer accepting; waiting up to %llums for %u request(s) in flight",
		 strsignal(signum), (unsigned long long)S.conf->server.shutdown_grace_ms,
		 active_requests());
	atomic_store(&S.phase, PHASE_DRAIN);
	workers_wake(&S.workers);
	ctl_drain(S.ctl);
	S.drain_deadline_ns = uv_hrtime() + S.conf->server.shutdown_grace_ms * 1000000ull;
	uv_timer_start(&S.drain_timer, drain_tick, 0, 20);
}

static bool listens_equal(const struct conf *a, const struct conf *b)
{
	if (a->nlistens != b->nlistens)
		return false;
	for (size_t i = 0; i < a->nlistens; i++) {
		if (strcmp(a->listens[i].address, b->listens[i].address))
			return false;
		const char *ra = a->listens[i].region, *rb = b->listens[i].region;
		if ((ra == NULL) != (rb == NULL) || (ra && strcmp(ra, rb)))
			return false;
	}
	return true;
}

static bool str_equal(const char *a, const char *b)
{
	return (a == NULL) == (b == NULL) && (!a || !strcmp(a, b));
}

static void on_hup(uv_signal_t *h, int signum)
{
	char err[512];
	struct conf *next;

	if (atomic_load(&S.phase) != PHASE_RUN)
		return;
	next = conf_load(S.conf_path, err, sizeof(err));
	if (next && route_attach(next, err, sizeof(err)) < 0) {
		conf_unref(next);
		next = NULL;
	}
	if (!next) {
		log_error("reload refused, keeping the running configuration: %s", err);
		return;
	}
	if (!listens_equal(S.conf, next))
		log_warn("reload: listener changes take effect only after a restart");
	if (!str_equal(S.conf->admin_address, next->admin_address) ||
	    !str_equal(S.conf->admin_token_env, next->admin_token_env))
		log_warn("reload: admin listener changes take effect only after a restart");
	if (!str_equal(S.conf->logs_store, next->logs_store) ||
	    S.conf->logs_queue != next->logs_queue ||
	    S.conf->logs_retention_ms != next->logs_retention_ms)
		log_warn("reload: logs.store, logs.queue and logs.retention take effect only after a "
			 "restart");
	for (unsigned i = 0; i < S.workers.n; i++) {
		struct conf *old = atomic_exchange(&S.pending[i], conf_ref(next));
		conf_unref(old);
	}
	conf_unref(S.conf);
	S.conf = next;
	workers_wake(&S.workers);
	ctl_set_conf(S.ctl, next);
	log_info("configuration reloaded from '%s'", S.conf_path);
}

static void usage(FILE *f)
{
	fputs("usage: meridian serve [-c FILE]\n"
	      "\n"
	      "  -c, --config FILE   configuration (default: meridian.yaml)\n"
	      "\n"
	      "Signals: SIGHUP reloads the configuration (a bad one is refused); SIGTERM or SIGINT\n"
	      "stop accepting, let requests in flight finish within server.shutdown_grace, exit 0.\n",
	      f);
}

int serve_main(int argc, char **argv)
{
	char err[512];
	unsigned nworkers;
	int rc;

	S.conf_path = "meridian.yaml";
	for (int i = 1; i < argc; i++) {
		if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc) {
			S.conf_path = argv[++i];
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "meridian serve: unknown argument '%s'\n", argv[i]);
			usage(stderr);
			return 2;
		}
	}
	S.conf = conf_load(S.conf_path, err, sizeof(err));
	if (!S.conf) {
		fprintf(stderr, "meridian: %s\n", err);
		return 1;
	}
	if (route_attach(S.conf, err, sizeof(err)) < 0) {
		fprintf(stderr, "meridian: %s: %s\n", S.conf_path, err);
		conf_unref(S.conf);
		route_shutdown();
		return 1;
	}
	if (log_writer_start(S.conf->logs_store, S.conf->logs_queue, S.conf->logs_retention_ms,
			     &S.logw, err, sizeof(err)) < 0) {
		fprintf(stderr, "meridian: %s: logs.store: %s\n", S.conf_path, err);
		conf_unref(S.conf);
		route_shutdown();
		return 1;
	}
	gw_set_log_writer(S.logw);
	signal(SIGPIPE, SIG_IGN);
	uv_mutex_init(&S.err_mu);
	nworkers = S.conf->server.workers ? S.conf->server.workers : workers_default_count();
	S.gws = xcalloc(nworkers, sizeof(*S.gws));
	S.pending = xcalloc(nworkers, sizeof(*S.pending));
	atomic_store(&S.phase, PHASE_RUN);

	uv_loop_t *main_loop = uv_default_loop();
	uv_signal_init(main_loop, &S.sig_term);
	uv_signal_init(main_loop, &S.sig_int);
	uv_signal_init(main_loop, &S.sig_hup);
	uv_timer_init(main_loop, &S.drain_timer);
	uv_signal_start(&S.sig_term, on_stop_signal, SIGTERM);
	uv_signal_start(&S.sig_int, on_stop_signal, SIGINT);
	uv_signal_start(&S.sig_hup, on_hup, SIGHUP);

	/* the workers bind with SO_REUSEPORT, which would join another gateway's port silently;
	 * a listener with share: true joins it on purpose (several processes on one port) */
	rc = 0;
	for (size_t i = 0; i < S.conf->nlistens; i++) {
		if (!S.conf->listens[i].share && http_address_in_use(S.conf->listens[i].address)) {
			snprintf(S.start_err, sizeof(S.start_err), "cannot listen on '%s': %s",
				 S.conf->listens[i].address, uv_strerror(UV_EADDRINUSE));
			rc = UV_EADDRINUSE;
			break;
		}
	}
	if (rc == 0)
		rc = workers_start(&S.workers, nworkers, worker_start, worker_wake, NULL);
	/* after the workers, so that a gateway port in use is the error reported first */
	if (rc == 0 &&
	    (rc = ctl_start(S.conf, S.logw, S.start_err, sizeof(S.start_err), &S.ctl)) != 0)
		S.ctl = NULL;
	if (rc != 0) {
		fprintf(stderr, "meridian: %s\n", S.start_err);
		atomic_store(&S.phase, PHASE_CLOSE);
		workers_wake(&S.workers);
		close_main_handles();
		uv_run(main_loop, UV_RUN_DEFAULT);
		workers_join(&S.workers);
		rc = 1;
		goto out;
	}
	for (size_t i = 0; i < S.conf->nlistens; i++)
		log_info("listening on %s%s%s (%u workers)", S.conf->listens[i].address,
			 S.conf->listens[i].region ? ", pinned to region " : "",
			 S.conf->listens[i].region ? S.conf->listens[i].region : "", nworkers);
	uv_run(main_loop, UV_RUN_DEFAULT);
	workers_join(&S.workers);
	rc = 0;
out:
	/* before route_shutdown(): its probes hold deployment states */
	ctl_stop(S.ctl);
	S.ctl = NULL;
	/* every request has ended and pushed its record: what is queued goes to the store now */
	log_writer_stop(S.logw, S.conf->server.shutdown_grace_ms + 5000);
	S.logw = NULL;
	gw_set_log_writer(NULL);
	uv_loop_close(main_loop);
	for (unsigned i = 0; i < nworkers; i++)
		conf_unref(atomic_exchange(&S.pending[i], NULL));
	free(S.pending);
	free(S.gws);
	conf_unref(S.conf);
	route_shutdown();
	limit_shutdown();
	gw_shutdown();
	uv_mutex_destroy(&S.err_mu);
	return rc;
}
