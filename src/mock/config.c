/* config.c - the settings of `meridian mock`: flags, runtime changes, JSON view */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/str.h"
#include "mock/config.h"
#include "mock/gen.h"

#define MODELS_MAX 64

const char mock_config_usage[] =
	"usage: meridian mock [options]\n"
	"\n"
	"An OpenAI- and Anthropic-compatible test upstream (see docs/mock.md).\n"
	"\n"
	"  --listen ADDR          host:port to listen on (default 127.0.0.1:18000; port 0: any)\n"
	"  --region NAME          region named in x-mock-region and in the output (default local)\n"
	"  --models a,b           models served (default mock-1)\n"
	"  --rtt-ms N             delay before every response's headers (default 0)\n"
	"  --ttft-ms N            extra delay before the first token of a completion (default 0)\n"
	"  --tokens-per-sec N     streamed token pace; 0 = as fast as possible (default 0)\n"
	"  --max-inflight N       over N requests in flight: 429 (OpenAI) / 529 (Anthropic); 0 = no limit\n"
	"  --fail-rate P          fraction 0..1 of requests answered 500 (default 0)\n"
	"  --drop-rate P          fraction 0..1 of streams cut midway without terminator (default 0)\n"
	"  --api openai,anthropic formats served (default both)\n"
	"  --seed N               seed of the fail/drop decisions (default 1)\n"
	"  --workers N            event loops, one thread each, sharing the port (default 1; 0 = CPUs)\n"
	"  --quiet                no startup line\n";

void mock_config_init(struct mock_config *c)
{
	memset(c, 0, sizeof(*c));
	c->listen = xstrdup("127.0.0.1:18000");
	c->region = xstrdup("local");
	c->seed = 1;
	c->workers = 1;
	c->models = xcalloc(1, sizeof(*c->models));
	c->models[0] = xstrdup("mock-1");
	c->nmodels = 1;
	c->api = MOCK_API_OPENAI | MOCK_API_ANTHROPIC;
}

static void models_free(char **m, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(m[i]);
	free(m);
}

void mock_config_release(struct mock_config *c)
{
	xfree(c->listen);
	xfree(c->region);
	models_free(c->models, c->nmodels);
	c->models = NULL;
	c->nmodels = 0;
}

static char **models_dup(char *const *m, size_t n)
{
	char **r = xcalloc(n ? n : 1, sizeof(*r));
	for (size_t i = 0; i < n; i++)
		r[i] = xstrdup(m[i]);
	return r;
}

void mock_config_copy(struct mock_config *dst, const struct mock_config *src)
{
	*dst = *src;
	dst->listen = xstrdup(src->listen);
	dst->region = xstrdup(src->region);
	dst->models = models_dup(src->models, src->nmodels);
}

int mock_models_parse(const char *csv, char ***out, size_t *n, struct buf *err)
{
	char **m = NULL;
	size_t cnt = 0;
	const char *p = csv;

	for (;;) {
		const char *e = strchr(p, ',');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		/* surrounding spaces are a typo's, not part of a name */
		while (len && *p == ' ') {
			p++;
			len--;
		}
		while (len && p[len - 1] == ' ')
			len--;
		if (len == 0 || len > 256) {
			buf_appendf(err, "models: each name must have 1 to 256 characters in '%s'", csv);
			goto fail;
		}
		for (size_t i = 0; i < len; i++) {
			if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f) {
				buf_appendf(err, "models: control character in '%s'", csv);
				goto fail;
			}
		}
		if (cnt == MODELS_MAX) {
			buf_appendf(err, "models: at most %d names", MODELS_MAX);
			goto fail;
		}
		m = xrealloc(m, (cnt + 1) * sizeof(*m));
		m[cnt++] = xstrndup(p, len);
		if (!e)
			break;
		p = e + 1;
	}
	*out = m;
	*n = cnt;
	return 0;
fail:
	models_free(m, cnt);
	return -1;
}

int mock_api_parse(const char *csv)
{
	int api = 0;
	const char *p = csv;
	for (;;) {
		const char *e = strchr(p, ',');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		if (len == 6 && !memcmp(p, "openai", 6))
			api |= MOCK_API_OPENAI;
		else if (len == 9 && !memcmp(p, "anthropic", 9))
			api |= MOCK_API_ANTHROPIC;
		else
			return -1;
		if (!e)
			break;
		p = e + 1;
	}
	return api;
}

bool mock_config_serves(const struct mock_config *c, const char *model, size_t len)
{
	for (size_t i = 0; i < c->nmodels; i++)
		if (strlen(c->models[i]) == len && !memcmp(c->models[i], model, len))
			return true;
	return false;
}

static int parse_u32(const char *s, uint32_t *out)
{
	int64_t v = str_to_i64(s, strlen(s));
	if (v < 0 || v > MOCK_CONFIG_MAX_U32)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

static int parse_rate(const char *s, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (!*s || *end || errno || !isfinite(v) || v < 0 || v > 1)
		return -1;
	*out = v;
	return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	if (!*s || strlen(s) > 20)
		return -1;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		unsigned d = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	if (v > INT64_MAX)
		return -1; /* shown as a JSON integer */
	*out = v;
	return 0;
}

static void set_str(char **dst, const char *v)
{
	free(*dst);
	*dst = xstrdup(v);
}

int mock_config_parse_args(struct mock_config *c, int argc, char **argv, struct buf *err)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = NULL;
		char name[32];

		if (!strcmp(a, "-h") || !strcmp(a, "--help"))
			return 1;
		if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) {
			c->quiet = true;
			continue;
		}
		if (strncmp(a, "--", 2)) {
			buf_appendf(err, "unexpected argument '%s'", a);
			return -1;
		}
		static const char *const known[] = {
			"--listen", "--region", "--models", "--rtt-ms", "--ttft-ms", "--tokens-per-sec",
			"--max-inflight", "--fail-rate", "--drop-rate", "--api", "--seed", "--workers",
		};
		const char *eq = strchr(a, '=');
		size_t nl = eq ? (size_t)(eq - a) : strlen(a);
		bool ok = false;
		if (nl < sizeof(name)) {
			memcpy(name, a, nl);
			name[nl] = '\0';
			for (size_t k = 0; k < sizeof(known) / sizeof(known[0]) && !ok; k++)
				ok = !strcmp(name, known[k]);
		}
		if (!ok) {
			buf_appendf(err, "unknown option '%.*s'", (int)nl, a);
			return -1;
		}
		if (eq) {
			v = eq + 1;
		} else if (i + 1 < argc) {
			v = argv[++i];
		} else {
			buf_appendf(err, "option '%s' needs a value", name);
			return -1;
		}

		int rc = 0;
		if (!strcmp(name, "--listen")) {
			if (!strchr(v, ':'))
				rc = -1;
			else
				set_str(&c->listen, v);
		} else if (!strcmp(name, "--region")) {
			if (!mock_region_valid(v))
				rc = -1;
			else
				set_str(&c->region, v);
		} else if (!strcmp(name, "--models")) {
			char **m;
			size_t n;
			if (mock_models_parse(v, &m, &n, err))
				return -1;
			models_free(c->models, c->nmodels);
			c->models = m;
			c->nmodels = n;
		} else if (!strcmp(name, "--rtt-ms")) {
			rc = parse_u32(v, &c->rtt_ms);
		} else if (!strcmp(name, "--ttft-ms")) {
			rc = parse_u32(v, &c->ttft_ms);
		} else if (!strcmp(name, "--tokens-per-sec")) {
			rc = parse_u32(v, &c->tokens_per_sec);
		} else if (!strcmp(name, "--max-inflight")) {
			rc = parse_u32(v, &c->max_inflight);
		} else if (!strcmp(name, "--fail-rate")) {
			rc = parse_rate(v, &c->fail_rate);
		} else if (!strcmp(name, "--drop-rate")) {
			rc = parse_rate(v, &c->drop_rate);
		} else if (!strcmp(name, "--api")) {
			int api = mock_api_parse(v);
			if (api < 0)
				rc = -1;
			else
				c->api = (unsigned)api;
		} else if (!strcmp(name, "--seed")) {
			rc = parse_u64(v, &c->seed);
		} else if (!strcmp(name, "--workers")) {
			uint32_t w;
			rc = parse_u32(v, &w);
			if (!rc && w > 256)
				rc = -1;
			if (!rc)
				c->workers = w;
		} else {
			buf_appendf(err, "unknown option '%s'", name);
			return -1;
		}
		if (rc) {
			buf_appendf(err, "invalid value '%s' for %s", v, name);
			return -1;
		}
	}
	return 0;
}

static int json_u32(const json_t *v, uint32_t *out)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    json_integer_value(v) > MOCK_CONFIG_MAX_U32)
		return -1;
	*out = (uint32_t)json_integer_value(v);
	return 0;
}

static int json_rate(const json_t *v, double *out)
{
	if (!json_is_number(v))
		return -1;
	double r = json_number_value(v);
	if (!isfinite(r) || r < 0 || r > 1)
		return -1;
	*out = r;
	return 0;
}

/* A list given as "a,b" or ["a","b"], joined to "a,b" in out. */
static int json_list(const json_t *v, struct buf *out)
{
	if (json_is_string(v)) {
		buf_puts(out, json_string_value(v));
		return 0;
	}
	if (!json_is_array(v) || !json_array_size(v))
		return -1;
	size_t i;
	const json_t *x;
	json_array_foreach(v, i, x) {
		if (!json_is_string(x) || strchr(json_string_value(x), ','))
			return -1;
		if (i)
			buf_append(out, ",", 1);
		buf_puts(out, json_string_value(x));
	}
	return 0;
}

int mock_config_apply_json(struct mock_config *c, const json_t *obj, struct buf *err)
{
	struct mock_config n = *c; /* shallow: its scalars are checked here, then copied */
	struct buf tmp = BUF_INIT;
	char **models = NULL;
	size_t nmodels = 0;
	const char *k;
	json_t *v;
	int rc = -1;

	if (!json_is_object(obj)) {
		buf_puts(err, "the config must be a JSON object");
		return -1;
	}
	json_object_foreach((json_t *)obj, k, v) {
		int bad = 0;
		if (!strcmp(k, "rtt_ms"))
			bad = json_u32(v, &n.rtt_ms);
		else if (!strcmp(k, "ttft_ms"))
			bad = json_u32(v, &n.ttft_ms);
		else if (!strcmp(k, "tokens_per_sec"))
			bad = json_u32(v, &n.tokens_per_sec);
		else if (!strcmp(k, "max_inflight"))
			bad = json_u32(v, &n.max_inflight);
		else if (!strcmp(k, "fail_rate"))
			bad = json_rate(v, &n.fail_rate);
		else if (!strcmp(k, "drop_rate"))
			bad = json_rate(v, &n.drop_rate);
		else if (!strcmp(k, "models")) {
			buf_reset(&tmp);
			if (json_list(v, &tmp)) {
				bad = -1;
			} else {
				models_free(models, nmodels);
				models = NULL;
				nmodels = 0;
				if (mock_models_parse(tmp.data, &models, &nmodels, err))
					goto out;
			}
		} else if (!strcmp(k, "api")) {
			buf_reset(&tmp);
			int api = json_list(v, &tmp) ? -1 : mock_api_parse(tmp.data);
			if (api < 0)
				bad = -1;
			else
				n.api = (unsigned)api;
		} else {
			buf_appendf(err, "unknown or read-only setting '%s'", k);
			goto out;
		}
		if (bad) {
			buf_appendf(err, "invalid value for '%s'", k);
			goto out;
		}
	}
	/* only the runtime fields are written: other threads read the rest without a lock */
	if (models) {
		models_free(c->models, c->nmodels);
		c->models = models;
		c->nmodels = nmodels;
		models = NULL;
		nmodels = 0;
	}
	c->rtt_ms = n.rtt_ms;
	c->ttft_ms = n.ttft_ms;
	c->tokens_per_sec = n.tokens_per_sec;
	c->max_inflight = n.max_inflight;
	c->fail_rate = n.fail_rate;
	c->drop_rate = n.drop_rate;
	c->api = n.api;
	rc = 0;
out:
	models_free(models, nmodels);
	buf_release(&tmp);
	return rc;
}

json_t *mock_config_to_json(const struct mock_config *c)
{
	json_t *models = json_array(), *api = json_array();
	for (size_t i = 0; i < c->nmodels; i++)
		json_array_append_new(models, json_string(c->models[i]));
	if (c->api & MOCK_API_OPENAI)
		json_array_append_new(api, json_string("openai"));
	if (c->api & MOCK_API_ANTHROPIC)
		json_array_append_new(api, json_string("anthropic"));
	return json_pack("{s:s, s:s, s:I, s:I, s:o, s:I, s:I, s:I, s:I, s:f, s:f, s:o}",
			 "listen", c->listen, "region", c->region, "seed", (json_int_t)c->seed,
			 "workers", (json_int_t)c->workers, "models", models,
			 "rtt_ms", (json_int_t)c->rtt_ms, "ttft_ms", (json_int_t)c->ttft_ms,
			 "tokens_per_sec", (json_int_t)c->tokens_per_sec,
			 "max_inflight", (json_int_t)c->max_inflight, "fail_rate", c->fail_rate,
			 "drop_rate", c->drop_rate, "api", api);
}
