/* config.h - the settings of `meridian mock`: flags, runtime changes, JSON view */
#ifndef MERIDIAN_MOCK_CONFIG_H
#define MERIDIAN_MOCK_CONFIG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/*
 * The mock's settings. The fields after `quiet` can also be changed at runtime through
 * POST /mock/config (JSON keys: the flag names with underscores). All strings are owned.
 */
struct mock_config {
	char *listen;            /* --listen, "host:port" (default 127.0.0.1:18000) */
	char *region;            /* --region (default "local"); see mock_region_valid */
	uint64_t seed;           /* --seed (<= 2^63-1): fail/drop decisions repeat (default 1) */
	unsigned workers;        /* --workers: loops/threads (default 1) */
	bool quiet;              /* --quiet: no startup line */
	char **models;           /* --models a,b (default "mock-1"); nmodels >= 1 */
	size_t nmodels;
	uint32_t rtt_ms;         /* --rtt-ms: before every response's headers */
	uint32_t ttft_ms;        /* --ttft-ms: after the headers, before the first token */
	uint32_t tokens_per_sec; /* --tokens-per-sec: stream pace; 0 = as fast as possible */
	uint32_t max_inflight;   /* --max-inflight: 0 = unlimited; over it 429 / 529 */
	double fail_rate;        /* --fail-rate: 0..1, that fraction answers 500 */
	double drop_rate;        /* --drop-rate: 0..1, that fraction of streams is cut midway */
	unsigned api;            /* --api: enum mock_api bits (default both) */
};

/* Largest value of the integer settings (about 11.5 days in ms). */
#define MOCK_CONFIG_MAX_U32 1000000000u

/* The --help text. */
extern const char mock_config_usage[];

/* Fills c with the defaults above. */
void mock_config_init(struct mock_config *c);
/* Frees what c owns; c can be initialised again afterwards. */
void mock_config_release(struct mock_config *c);
/* Deep copy of src into dst (dst is overwritten, not released first). */
void mock_config_copy(struct mock_config *dst, const struct mock_config *src);

/* Parses the flags after argv[0] ("--flag value" or "--flag=value") into c, which holds the
 * defaults. Returns 0, 1 when --help was asked for, or -1 with a message appended to err. On
 * error c may hold the flags parsed before the bad one; it is released the same way. */
int mock_config_parse_args(struct mock_config *c, int argc, char **argv, struct buf *err);

/* Applies a POST /mock/config object: keys rtt_ms, ttft_ms, tokens_per_sec, max_inflight
 * (non-negative integers), fail_rate, drop_rate (numbers in 0..1), models ("a,b" or an array of
 * strings), api ("openai,anthropic" or an array). All or nothing: on an unknown key or a bad
 * value returns -1 with a message in err and leaves c unchanged. Never touches listen, region,
 * seed or workers (their storage stays, so other threads may read them without a lock). */
int mock_config_apply_json(struct mock_config *c, const json_t *obj, struct buf *err);

/* The whole configuration as a JSON object. Returns a new reference. */
json_t *mock_config_to_json(const struct mock_config *c);

/* Parses "a,b" into an owned array of non-empty names (1..256 bytes, no control characters,
 * at most 64 of them). Returns 0 or -1 with a message in err. */
int mock_models_parse(const char *csv, char ***out, size_t *n, struct buf *err);
/* Parses "openai,anthropic" (any non-empty subset) into enum mock_api bits; -1 if invalid. */
int mock_api_parse(const char *csv);

/* Whether model names one of c's models. */
bool mock_config_serves(const struct mock_config *c, const char *model, size_t len);

#endif
