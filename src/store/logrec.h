/* logrec.h - one request's log record: built on a worker, queued, written by the log writer */
#ifndef MERIDIAN_STORE_LOGREC_H
#define MERIDIAN_STORE_LOGREC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One upstream attempt of a request, in order. */
struct log_attempt {
	const char *region;
	const char *deployment;  /* the deployment's URL: scheme, host, port, no credentials */
	const char *model;       /* the model asked of it (a fallback's differs) */
	int status;              /* the upstream's HTTP status; 0: none (connect failure, ...) */
	const char *error;       /* NULL, or what went wrong: "connect", "timeout@headers", ... */
	uint32_t ms;             /* from the attempt's start to its end or its response headers */
};

/*
 * Every string is NUL-terminated UTF-8 or NULL (absent). A record made by log_record_new() is
 * one allocation holding its strings and attempts; it is owned by whoever holds the pointer
 * (the queue, then the writer) and freed with log_record_free().
 */
struct log_record {
	char id[48];                 /* the request id, as in x-request-id; unique */
	int64_t ts_us;               /* when the request arrived: Unix time in microseconds */
	const char *account;         /* the account id; NULL: no accounts configured */
	const char *gateway;         /* "acct/gw" of /v1/{acct}/{gw}/..., else NULL */
	const char *provider;        /* the provider that served (or was meant to) */
	const char *model;           /* the model the client asked for */
	const char *model_served;    /* the model that answered (a fallback), NULL: none */
	const char *endpoint;        /* "global" or "pinned" */
	const char *region_requested; /* the pinned region, NULL on the global endpoint */
	const char *region;          /* where it was processed; NULL: nowhere */
	const char *method;          /* "POST" */
	const char *path;            /* the client's path, without its query */
	const char *surface;         /* the client's format: "openai" or "anthropic" */
	bool stream;
	int status;                  /* the status the client got */
	const char *error_code;      /* the error code of an error answer, else NULL */
	const char *termination;     /* how it ended: "ok", "client_abort@stream", ... */
	uint64_t latency_us;         /* arrival to the last byte (or the abort) */
	uint64_t ttfb_us;            /* arrival to the first body byte to the client; for a
				      * stream, its first content event (time to first token);
				      * 0: none went */
	uint64_t tokens_in, tokens_out;
	bool tokens_estimated;       /* no usage reported: the counts are the estimate */
	double cost_usd;             /* from prices; 0 without a price for the model */
	const char *cache;           /* "HIT", "MISS", or NULL (not cacheable) */
	const char *metadata;        /* the x-meridian-metadata header: a JSON object's text */
	const char *request_body;    /* only when the gateway logs bodies: capped, keys redacted */
	const char *response_body;
	struct log_attempt *attempts;
	size_t nattempts;
	char data[];                 /* the strings and attempts above */
};

/* A copy of t in one allocation: every string of t and its attempts, deep. Strings of t may
 * point anywhere (they are borrowed for the call). Never fails (aborts on OOM). */
struct log_record *log_record_new(const struct log_record *t);
void log_record_free(struct log_record *r);

#endif
