/* h1.h - the native HTTP/1.1 client behind upstream.h, for plain-http upstreams */
#ifndef MERIDIAN_UPSTREAM_H1_H
#define MERIDIAN_UPSTREAM_H1_H

#include <string.h>
#include <uv.h>

#include "upstream/upstream.h"

/*
 * Private to src/upstream: upstream.c owns one struct upstream__h1 per pool and sends it the
 * requests it takes (plain http://, HTTP/1.1 or AUTO). The request contract is upstream.h's,
 * unchanged; this header only says how the dispatch works.
 */
struct upstream__h1;

/* Clears what a previous attempt left in r (status, timestamps, response headers). Shared by
 * both clients; defined in upstream.c. */
void upstream__req_reset(struct upstream_req *r);
/* How much of a URL a log line may show: up to its query, which can carry keys. */
static inline int upstream__url_loggable(const char *url)
{
	return (int)strcspn(url, "?#");
}

/* Returns a new client on loop. Disabled (every start returns 1) when MERIDIAN_UPSTREAM_CURL is
 * set to a non-empty value other than "0", or when a proxy is configured in the environment
 * (http_proxy, all_proxy, ALL_PROXY), which only libcurl honours. */
struct upstream__h1 *upstream__h1_new(uv_loop_t *loop);
/* Cancels every active request (no callbacks), closes every connection and frees the client
 * once the last handle closed and the last name lookup returned. Accepts NULL. */
void upstream__h1_free(struct upstream__h1 *h);
/* Number of requests started and not yet done or cancelled. */
unsigned upstream__h1_active(const struct upstream__h1 *h);

/* Starts r. Returns 0 (on_done runs exactly once, never from inside this call), or 1 when r is
 * not for this client (not http://, HTTP/2 asked for, a URL with user info or an odd port or
 * path, client disabled): the caller then uses libcurl. Sets r->h1 while r is active. */
int upstream__h1_start(struct upstream__h1 *h, struct upstream_req *r);
/* upstream_cancel() for a request with r->h1 set: closes its connection at once. */
void upstream__h1_cancel(struct upstream_req *r);
/* upstream_resume() for a request with r->h1 set. The refused bytes are delivered again from
 * the loop shortly after, never from inside this call. */
void upstream__h1_resume(struct upstream_req *r);

#endif
