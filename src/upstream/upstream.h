/* upstream.h - upstream HTTP requests on a libuv loop: a native HTTP/1.1 client or libcurl's multi */
#ifndef MERIDIAN_UPSTREAM_UPSTREAM_H
#define MERIDIAN_UPSTREAM_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <curl/curl.h>
#include <uv.h>

#include "core/buf.h"
#include "core/str.h"

/*
 * One struct upstream_pool per worker loop. Plain http:// requests for HTTP/1.1 (or AUTO) go
 * through a native client on libuv and llhttp (h1.c) with its own keep-alive pool per host;
 * everything else (https, HTTP/2, a proxy from the environment) through a CURLM whose sockets
 * are watched with uv_poll and whose timeouts run on one uv_timer. Either way connections are
 * pooled per loop and nothing blocks, and the contract below is the same.
 *
 * A struct upstream_req is owned by the caller and must stay valid until on_done runs or
 * upstream_cancel() returns. Callbacks run on the pool's loop. They must not call
 * upstream_cancel() or upstream_start() on the same request (return a code instead); they may
 * call them on other requests.
 */

enum upstream_result {
	UPSTREAM_OK = 0,
	UPSTREAM_ECONNECT = -1,      /* could not connect (refused, unreachable, DNS, TLS) */
	UPSTREAM_ETIMEOUT_CONNECT = -2,
	UPSTREAM_ETIMEOUT_FIRST_BYTE = -3, /* no response headers within first_byte_ms */
	UPSTREAM_ETIMEOUT_IDLE = -4, /* no bytes for idle_ms once the response started */
	UPSTREAM_ETIMEOUT_TOTAL = -5,
	UPSTREAM_EPROTO = -6,        /* malformed or truncated response */
	UPSTREAM_ESEND = -7,         /* the connection broke while sending or receiving */
	UPSTREAM_EABORTED = -8,      /* a callback asked to stop */
	UPSTREAM_ETLS = -9,          /* certificate verification failed */
	UPSTREAM_ETOOBIG = -10,      /* response headers over the cap */
};

const char *upstream_strerror(int result);

struct upstream_pool;
struct upstream_req;

/* Response headers are complete (final, non-1xx). headers holds "Name: value\r\n" lines without
 * the status line. Return 0 to go on, or non-zero to abort (on_done then gets EABORTED). */
typedef int (*upstream_headers_fn)(struct upstream_req *r, int status, const struct buf *headers);
/* Body bytes, as they arrive. Return UPSTREAM_DATA_OK, _PAUSE (the bytes were NOT consumed; they
 * are delivered again after upstream_resume()), or _ABORT. */
typedef int (*upstream_data_fn)(struct upstream_req *r, const char *p, size_t n);
/* Exactly once per started request, unless cancelled: result is UPSTREAM_OK or an error. */
typedef void (*upstream_done_fn)(struct upstream_req *r, int result);

enum { UPSTREAM_DATA_OK = 0, UPSTREAM_DATA_PAUSE = 1, UPSTREAM_DATA_ABORT = -1 };

enum upstream_http_version { UPSTREAM_HTTP_AUTO, UPSTREAM_HTTP_1_1, UPSTREAM_HTTP_2 };

struct upstream_req {
	/* Set by the caller before upstream_start(); borrowed until done. */
	const char *method;          /* "GET", "POST", ... */
	const char *url;
	struct curl_slist *headers;  /* "Name: value" lines */
	const char *body;
	size_t body_len;
	uint64_t connect_timeout_ms;
	uint64_t first_byte_timeout_ms;
	uint64_t idle_timeout_ms;
	uint64_t total_timeout_ms;
	const char *ca_file;         /* NULL: system store; verification is always on */
	enum upstream_http_version http_version;
	upstream_headers_fn on_headers;
	upstream_data_fn on_data;
	upstream_done_fn on_done;
	void *data;

	/* Filled in as the transfer runs; read-only for the caller. */
	int status;
	struct buf resp_headers;     /* owned; released by upstream_req_release() */
	uint64_t t_start_ns;         /* upstream_start() */
	uint64_t t_connected_ns;     /* TCP (and TLS) connected, 0 if unknown */
	uint64_t t_headers_ns;       /* final response headers received */
	uint64_t bytes_in;

	/* Private. */
	struct upstream__slot *slot; /* easy handle and timer, recycled by the pool */
	struct upstream__h1_conn *h1; /* the native client's connection, while active on it */
	uint64_t last_activity_ns;
	int fail;                    /* a result decided by us (timeout, cap) before curl's */
	bool headers_done;
	bool paused;
};

/* Returns a new pool on loop. */
struct upstream_pool *upstream_pool_new(uv_loop_t *loop);
/* Cancels every active request (no callbacks) and frees the pool once its handles closed. */
void upstream_pool_free(struct upstream_pool *pool);
/* Number of active requests. */
unsigned upstream_pool_active(const struct upstream_pool *pool);

/* Starts r. Returns 0 (on_done will run exactly once) or a negative code (no callback runs). */
int upstream_start(struct upstream_pool *pool, struct upstream_req *r);
/* Stops r at once; no callback runs afterwards. The connection is closed, so the upstream sees
 * the cancellation. Safe on a request that is not active. */
void upstream_cancel(struct upstream_req *r);
/* Resumes a request paused by UPSTREAM_DATA_PAUSE. Must not be called from r's callbacks. The
 * refused bytes come again through on_data, from inside this call (libcurl) or from the loop
 * shortly after it (the native client); on_done never runs inside it on the native client. */
void upstream_resume(struct upstream_req *r);
/* Frees what r owns (resp_headers); r can be reused for another attempt. */
void upstream_req_release(struct upstream_req *r);

#endif
