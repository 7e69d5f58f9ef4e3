/* ctl.h - the control thread: active probes of every deployment, and the admin listener */
#ifndef MERIDIAN_CTL_CTL_H
#define MERIDIAN_CTL_CTL_H

#include <stddef.h>

#include "conf/conf.h"

/*
 * One extra thread with its own libuv loop. It probes every deployment of the current snapshot
 * (GET <url>/v1/models every routing.probe_interval, at most one probe in flight per
 * deployment), reports each outcome to the router (route_report_probe) and publishes the models
 * of "*" deployments (route_dep_set_models). When conf->admin_address is set it also serves the
 * admin listener: /healthz, /readyz and /admin/api/regions (docs/admin.md).
 *
 * The snapshots given must have been through route_attach(). Every function here is called from
 * one thread, the owner's (the main thread of `meridian serve`); ctl_set_conf() and ctl_drain()
 * only hand things over and wake the control thread.
 */

struct ctl;

/* Starts the control thread on conf (takes a reference of its own). The admin token is read
 * here, once, from the environment variable conf->admin_token_env names (default
 * MERIDIAN_ADMIN_TOKEN); only its SHA-256 is kept. Refuses an admin address that is not a
 * loopback address when no token is set. Returns 0 and the control thread in *out, or a
 * negative errno/UV_E* with a message in err (e.g. "cannot listen on '127.0.0.1:9090' (admin):
 * address already in use"); nothing is left running then. logs (may be NULL) is the request
 * log's writer, whose counts /metrics shows; it must outlive the control thread. */
struct log_writer;
int ctl_start(struct conf *conf, struct log_writer *logs, char *err, size_t errlen,
	      struct ctl **out);
/* Hands a new snapshot to the control thread (takes a reference of its own); the next probe
 * round uses it, and a changed probe_interval reschedules the next round at once. Changes of
 * admin.address or admin.token_env are not applied (the caller logs that a restart is needed). */
void ctl_set_conf(struct ctl *c, struct conf *conf);
/* The process is shutting down: /readyz answers 503 from now on. */
void ctl_drain(struct ctl *c);
/* Cancels the probes in flight, closes the admin listener and its connections, waits for the
 * thread to end and frees everything. Call before route_shutdown(). Accepts NULL. */
void ctl_stop(struct ctl *c);

#endif
