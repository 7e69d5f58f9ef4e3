/* server.h - HTTP/1.1 server on libuv and llhttp: strict parsing, limits, keep-alive, pipelining */
#ifndef MERIDIAN_HTTP_SERVER_H
#define MERIDIAN_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/buf.h"
#include "core/str.h"

/*
 * Model
 * -----
 * One struct http_listener per (loop, address). Each accepted connection parses requests with
 * llhttp in strict mode (lenient flags off) plus our own policy (no '_' in header names, one
 * Host, one Content-Length, only "chunked" as Transfer-Encoding, caps below). A request is
 * handed to the handler only once its whole body has been received (the body is capped and
 * buffered), so a handler never sees a partial request.
 *
 * Requests on one connection are handled one at a time, in order: bytes of pipelined requests
 * wait in the connection's input buffer until the current response ends. While a request is
 * being handled the socket keeps being read (bounded), so a client that disconnects is noticed
 * at once and req->on_abort runs.
 *
 * Every error the server produces itself (400, 408, 413, 414, 417, 431, 501, 505) is rendered
 * by the listener's error callback, so the body is in the shape the client's SDK parses, and
 * the connection is closed after it.
 */

struct http_conn;

struct http_header {
	struct iov name;   /* as received; compare case-insensitively */
	struct iov value;  /* leading and trailing whitespace trimmed */
};

struct http_limits {
	size_t max_url;              /* request target bytes; over: 414 (default 8 KiB) */
	size_t max_header_line;      /* one field, name + value; over: 431 (default 16 KiB) */
	size_t max_header_bytes;     /* whole header section; over: 431 (default 32 KiB) */
	unsigned max_headers;        /* field count; over: 431 (default 100) */
	uint64_t max_body;           /* body bytes; over: 413 (default 32 MiB) */
	uint64_t header_timeout_ms;  /* first byte of a request to end of its headers; 408 (10 s) */
	uint64_t body_timeout_ms;    /* end of headers to end of body; 408 (60 s) */
	uint64_t keepalive_timeout_ms; /* idle between requests; silent close (75 s) */
	uint64_t send_timeout_ms;    /* no write progress to a client with data queued: abort (60 s) */
	size_t write_high_water;     /* queued response bytes above which req->on_drain is armed (256 KiB) */
	size_t write_low_water;      /* below which on_drain runs (64 KiB) */
	unsigned max_connections;    /* per listener; over: accepted and closed at once (default 10000) */
};

/* Fills l with the defaults named above. */
void http_limits_default(struct http_limits *l);

struct http_req {
	struct http_conn *conn;      /* borrowed; valid until the response ends */
	uint8_t method;              /* llhttp_method_t */
	uint8_t http_minor;          /* 1 for HTTP/1.1, 0 for HTTP/1.0 */
	bool keep_alive;             /* the connection may be reused after this response; the
				      * handler may clear it before http_resp_begin to close after */
	bool aborted;                /* the client went away; only end/abort may follow */
	struct iov method_name;
	struct iov target;           /* raw request target, e.g. "/v1/chat/completions?x=1" */
	struct iov path;             /* target without the query */
	struct iov query;            /* after '?', without it; empty if none */
	struct http_header *headers; /* borrowed from the connection until the response ends */
	size_t nheaders;
	struct buf body;             /* the whole body; owned by the connection */
	uint64_t t_start_ns;         /* uv_hrtime() at the request's first byte */
	uint64_t t_ready_ns;         /* uv_hrtime() when the handler was called */
	struct sockaddr_storage peer;

	/* Set by the handler. */
	void *data;
	/* The client disconnected (or a send timeout fired) before the response ended. The handler
	 * must stop work and then call http_resp_abort() (or http_resp_end()) exactly once. It runs
	 * from the loop (a read, write or timer callback), never from inside an http_resp_* call,
	 * so a handler's own call never re-enters it; a write that fails returns < 0 and on_abort
	 * follows from the loop unless the handler ends the response first. */
	void (*on_abort)(struct http_req *req);
	/* Queued output fell below the low water mark after http_resp_write() returned more than
	 * the high water mark. Used to resume a paused upstream. */
	void (*on_drain)(struct http_req *req);
};

/* Called once per complete request, on the listener's loop. The handler must eventually end the
 * request with exactly one of http_resp_send(), http_resp_end() or http_resp_abort(). */
typedef void (*http_handler_fn)(struct http_req *req, void *ctx);

/* Renders the body of an error the server produces itself. req may be partially filled (path
 * and headers may be empty when the request line itself was bad). Must append a complete body
 * to out and return its content type (a static string). */
typedef const char *(*http_error_fn)(const struct http_req *req, int status, const char *code,
				     const char *message, struct buf *out, void *ctx);

struct http_listener;

/* Binds addr ("host:port", "[v6]:port" or ":port") with SO_REUSEPORT on loop, so one listener
 * per worker loop can share the port. limits is copied. Returns 0 or a negative errno/UV_E*
 * (UV_EINVAL for a bad address). With port 0 each call gets its own port: bind one listener,
 * then pass http_listener_port() to the others. */
int http_listen(uv_loop_t *loop, const char *addr, const struct http_limits *limits,
		http_handler_fn handler, http_error_fn render_error, void *ctx,
		struct http_listener **out);
/* UV_EADDRINUSE when a socket already listens on addr, else 0 (also for port 0 or an address
 * http_listen would refuse). http_listen binds with SO_REUSEPORT, which would silently join
 * another process's listener and split the traffic with it: check first. */
int http_address_in_use(const char *addr);

/* Header fields for an error the server answers itself (e.g. a request id, or a mock's region).
 * Writes at most max fields to out and returns how many; their strings must stay valid until
 * the callback is called again on the same thread. req may be partially filled, as for
 * http_error_fn. */
typedef size_t (*http_error_fields_fn)(const struct http_req *req, struct http_header *out,
				       size_t max, void *ctx);

/* Sets (or, with NULL, clears) the error fields callback of l; it gets l's ctx. */
void http_listener_set_error_fields(struct http_listener *l, http_error_fields_fn fn);

/* Stops accepting; existing connections continue. Idle keep-alive connections are closed, and
 * busy ones are closed after their current response ("Connection: close" is added). The
 * listener stays allocated until http_listener_close(). */
void http_listener_stop(struct http_listener *l);
/* Closes every connection at once (in-flight requests get on_abort) and frees the listener once
 * every handle has closed. */
void http_listener_close(struct http_listener *l);
/* Number of open connections and of requests being handled. */
unsigned http_listener_connections(const struct http_listener *l);
unsigned http_listener_active_requests(const struct http_listener *l);
/* The bound port (useful with port 0). */
int http_listener_port(const struct http_listener *l);

/* Returns the first header named name (case-insensitive), or NULL. Borrowed like req->headers. */
const struct iov *http_req_header(const struct http_req *req, const char *name);

/* Starts the response. status line, headers, then either "Content-Length: content_length"
 * (content_length >= 0) or chunked transfer encoding (content_length < 0). The server adds
 * Date-free framing headers itself (Content-Length / Transfer-Encoding, Connection); callers
 * must not pass those. Bytes are queued; they go out with the next write, http_resp_flush()
 * or the end. */
void http_resp_begin(struct http_req *req, int status, const struct http_header *hdrs,
		     size_t nhdrs, int64_t content_length);
/* Queues body bytes (chunk-framed when chunked) and writes them to the socket now. Returns the
 * bytes still queued for this connection after the write attempt (compare with
 * limits.write_high_water to apply back-pressure), or a negative UV_E* when the connection is
 * gone (UV_ECONNRESET) or no response was begun (UV_EINVAL). p is borrowed for the call only.
 * Bytes beyond a declared Content-Length, and any body of a HEAD response, are dropped. */
int64_t http_resp_write(struct http_req *req, const void *p, size_t n);
/* Writes queued bytes now (e.g. headers of a stream before its first event). */
void http_resp_flush(struct http_req *req);
/* Ends the response (terminal chunk when chunked) and moves on to the next request on the
 * connection, or closes it. A Content-Length response ended short closes the connection; one
 * never begun gets a 500. req is invalid afterwards. */
void http_resp_end(struct http_req *req);
/* Ends the response abortively: the connection closes without the terminal chunk, so the client
 * sees a truncated message, never a complete one. req is invalid afterwards. */
void http_resp_abort(struct http_req *req);
/* begin + write + end for a whole response with a known body. */
void http_resp_send(struct http_req *req, int status, const struct http_header *hdrs, size_t nhdrs,
		    const void *body, size_t len);
/* An error response rendered by the listener's error callback; closes the connection after it
 * when close_conn. Ends the request like http_resp_send(); after http_resp_begin() it is too
 * late for a status, and it acts as http_resp_abort(). */
void http_resp_error(struct http_req *req, int status, const char *code, const char *message,
		     bool close_conn);
/* Bytes queued for this request's connection and not yet accepted by the kernel. */
size_t http_req_queued(const struct http_req *req);

/* The reason phrase of a status code ("OK", "Too Many Requests", ...). */
const char *http_status_reason(int status);

#endif
