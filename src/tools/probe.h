/* probe.h - `meridian probe`: the latency of endpoints as a client here sees them, fastest first */
#ifndef MERIDIAN_TOOLS_PROBE_H
#define MERIDIAN_TOOLS_PROBE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

/*
 * `meridian probe [options] URL...` (docs/probe.md). argv as main() gives it minus the program
 * (argv[0] is "probe"). Every request is made alone, on a fresh connection, one after the other
 * (endpoints in turn, rounds in turn), so no two measurements share a link or a CPU. Prints a
 * table, JSON (--json) or the failover order (--failover) to stdout. Returns the exit status: 0 if
 * at least one endpoint answered in at least one round, 1 if none did, 2 for bad arguments (usage
 * on stderr). The API key is read from the environment only and is never printed.
 */
int probe_main(int argc, char **argv);

/* The phases measured, in milliseconds. The first five come from GET /v1/models, the last two
 * from the streamed completion (--model). */
enum probe_phase {
	PROBE_DNS,     /* name resolution */
	PROBE_CONNECT, /* TCP handshake (connect minus DNS) */
	PROBE_TLS,     /* TLS handshake (https only) */
	PROBE_TTFB,    /* request start to the first response byte */
	PROBE_TOTAL,   /* request start to the end of the response */
	PROBE_TTFT,    /* completion start to the first SSE event holding a content token */
	PROBE_STREAM,  /* completion start to the end of the stream */
	PROBE_NPHASES,
};

struct probe_stat {
	size_t n;            /* samples; the others are NAN when 0 */
	double min, median, p90;
};

/* What probing one endpoint found. */
struct probe_result {
	const char *url;          /* borrowed: as given on the command line */
	size_t index;             /* its position there: the last tie-break */
	unsigned rounds_ok;       /* rounds whose ranking request succeeded: the completion with
	                           * --model, else GET /models */
	unsigned requests;        /* requests made */
	unsigned errors;          /* requests that failed */
	struct probe_stat stat[PROBE_NPHASES];
};

/* The p-quantile (0 <= p <= 1) of n ascending values, interpolated linearly between the two
 * nearest ranks; NAN when n is 0. */
double probe_percentile(const double *sorted, size_t n, double p);

/* Fills st from n samples (reordered in place). */
void probe_stat_of(double *samples, size_t n, struct probe_stat *st);

/*
 * qsort order of results, fastest first: endpoints with no failed request, then those with some,
 * then those that never answered; within each, by the median of PROBE_TTFT (by_ttft) or of
 * PROBE_TOTAL, then by index.
 */
int probe_cmp(const struct probe_result *a, const struct probe_result *b, bool by_ttft);

#endif
