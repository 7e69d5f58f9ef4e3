/* bench_report.c - `meridian bench` results as text, as JSON and as a self-contained HTML page */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "tools/bench_assets.h"
#include "tools/bench_int.h"

static const char *api_name(enum bench_api api)
{
	return api == BENCH_OPENAI ? "openai" : "anthropic";
}

/* ---- JSON --------------------------------------------------------------------------------- */

/* ns as milliseconds, kept to the nanosecond. */
static json_t *ms(double ns)
{
	return json_real(ns / 1e6);
}

static json_t *summary(const struct bench_hist *h, double scale)
{
	if (!h->count)
		return json_null();
	return json_pack("{s:I,s:o,s:o,s:o,s:o,s:o,s:o}", "count", (json_int_t)h->count,
			 "mean", json_real(bench_hist_mean(h) / scale),
			 "min", json_real((double)h->min / scale),
			 "p50", json_real((double)bench_hist_quantile(h, 0.50) / scale),
			 "p90", json_real((double)bench_hist_quantile(h, 0.90) / scale),
			 "p99", json_real((double)bench_hist_quantile(h, 0.99) / scale),
			 "max", json_real((double)h->max / scale));
}

/* The non-empty buckets as [low, high, count], scaled. */
static json_t *buckets(const struct bench_hist *h, double scale)
{
	json_t *a = json_array();
	if (!h->counts)
		return a;
	for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++) {
		uint64_t lo, hi;
		if (!h->counts[i])
			continue;
		bench_hist_bounds(i, &lo, &hi);
		json_array_append_new(a, json_pack("[f,f,I]", (double)lo / scale, (double)hi / scale,
						   (json_int_t)h->counts[i]));
	}
	return a;
}

static json_t *stats_json(const struct bench_stats *s, double elapsed, bool detail)
{
	json_t *status = json_object(), *transport = json_object();
	char k[16];
	for (int i = 0; i < BENCH_MAX_STATUS; i++) {
		if (!s->status[i])
			continue;
		snprintf(k, sizeof(k), "%d", i);
		json_object_set_new(status, k, json_integer((json_int_t)s->status[i]));
	}
	for (int i = 0; i < BF_COUNT; i++)
		if (s->fail[i])
			json_object_set_new(transport, bench_fail_names[i], json_integer((json_int_t)s->fail[i]));
	json_t *j = json_pack("{s:I,s:I,s:I,s:o,s:o,s:f,s:I,s:I,s:f}", "requests", (json_int_t)s->requests,
			      "ok", (json_int_t)s->ok, "errors", (json_int_t)s->errors, "status", status,
			      "transport", transport, "requests_per_s", elapsed > 0 ? (double)s->requests / elapsed : 0.0,
			      "output_tokens", (json_int_t)s->output_tokens, "input_tokens", (json_int_t)s->input_tokens,
			      "output_tokens_per_s", elapsed > 0 ? (double)s->output_tokens / elapsed : 0.0);
	json_object_set_new(j, "ttft_ms", summary(&s->ttft, 1e6));
	json_object_set_new(j, "itl_ms", summary(&s->itl, 1e6));
	json_object_set_new(j, "e2e_ms", summary(&s->e2e, 1e6));
	json_object_set_new(j, "stream_tokens_per_s", summary(&s->tps, 1e3));
	if (detail)
		json_object_set_new(j, "histograms",
				    json_pack("{s:o,s:o,s:o,s:o}", "ttft_ms", buckets(&s->ttft, 1e6), "itl_ms",
					      buckets(&s->itl, 1e6), "e2e_ms", buckets(&s->e2e, 1e6),
					      "stream_tokens_per_s", buckets(&s->tps, 1e3)));
	return j;
}

static json_t *timeline_json(const struct bench_result *res)
{
	json_t *t = json_array(), *started = json_array(), *finished = json_array(), *errors = json_array(),
	       *tokens = json_array(), *ttft = json_array(), *e2e = json_array(), *ttft_max = json_array(),
	       *e2e_max = json_array(), *inflight = json_array();
	for (unsigned i = 0; i < res->npoints; i++) {
		const struct bench_point *p = &res->timeline[i];
		json_array_append_new(t, json_real(i * res->interval_s));
		json_array_append_new(started, json_integer((json_int_t)p->started));
		json_array_append_new(finished, json_integer((json_int_t)p->finished));
		json_array_append_new(errors, json_integer((json_int_t)p->errors));
		json_array_append_new(tokens, json_integer((json_int_t)p->output_tokens));
		json_array_append_new(ttft, p->ttft_n ? ms(p->ttft_sum_ns / (double)p->ttft_n) : json_null());
		json_array_append_new(e2e, p->e2e_n ? ms(p->e2e_sum_ns / (double)p->e2e_n) : json_null());
		json_array_append_new(ttft_max, p->ttft_n ? ms((double)p->ttft_max_ns) : json_null());
		json_array_append_new(e2e_max, p->e2e_n ? ms((double)p->e2e_max_ns) : json_null());
		json_array_append_new(inflight, json_integer(p->inflight_max));
	}
	return json_pack("{s:f,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "interval_s", res->interval_s, "t", t,
			 "started", started, "finished", finished, "errors", errors, "output_tokens", tokens,
			 "ttft_mean_ms", ttft, "e2e_mean_ms", e2e, "ttft_max_ms", ttft_max, "e2e_max_ms", e2e_max,
			 "inflight_max", inflight);
}

json_t *bench__json(const struct bench_result *res, bool detail)
{
	const struct bench_opts *o = res->o;
	char when[32];
	struct tm tm;
	gmtime_r(&res->started_at, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);

	json_t *cfg = json_pack("{s:s,s:s,s:s,s:s,s:b,s:o,s:o,s:o,s:o,s:o,s:f,s:o}", "url", o->url, "endpoint",
				res->endpoint, "api", api_name(o->api), "model", o->model, "stream", o->stream, "rate",
				o->rate > 0 ? json_real(o->rate) : json_null(), "concurrency",
				o->concurrency ? json_integer(o->concurrency) : json_null(), "duration_s",
				o->duration_s > 0 ? json_real(o->duration_s) : json_null(), "requests",
				o->requests ? json_integer((json_int_t)o->requests) : json_null(), "max_tokens",
				o->max_tokens > 0 ? json_integer(o->max_tokens) : json_null(), "timeout_s", o->timeout_s,
				"key_env", res->key_source ? json_string(res->key_source) : json_null());
	json_object_set_new(cfg, "prompts",
			    json_pack("{s:s,s:I,s:f}", "source", o->prompts_path ? o->prompts_path : "generated",
				      "count", (json_int_t)res->prompts, "mean_tokens", res->prompt_tokens_mean));
	json_t *regions = json_object();
	for (unsigned i = 0; i < res->nregions; i++)
		json_object_set_new(regions, res->region_names[i], stats_json(&res->regions[i], res->elapsed_s, detail));
	json_t *j = json_pack("{s:s,s:s,s:o,s:s,s:f,s:b,s:I,s:i}", "tool", "meridian bench", "version",
			      MERIDIAN_VERSION, "config", cfg, "started_at", when, "elapsed_s", res->elapsed_s,
			      "interrupted", res->interrupted, "started", (json_int_t)res->started, "max_inflight",
			      (int)res->inflight_max);
	json_object_set_new(cfg, "warmup_s", json_real(o->warmup_s));
	json_object_set_new(cfg, "latency_from", json_string(o->from_start ? "start" : "schedule"));
	json_object_set_new(cfg, "arrivals", o->rate > 0 ? json_string(o->poisson ? "poisson" : "uniform")
							 : json_null());
	json_object_set_new(j, "warmup_requests", json_integer((json_int_t)res->warmup_requests));
	json_object_set_new(j, "start_lag_ms", summary(&res->start_lag, 1e6));
	json_object_set_new(j, "overall", stats_json(&res->all, res->elapsed_s, detail));
	json_object_set_new(j, "regions", regions);
	json_object_set_new(j, "timeline", timeline_json(res));
	return j;
}

/* ---- text --------------------------------------------------------------------------------- */

static void dur(char *out, size_t n, double ns)
{
	if (ns < 1e6)
		snprintf(out, n, "%.0f us", ns / 1e3);
	else if (ns < 1e10)
		snprintf(out, n, "%.2f ms", ns / 1e6);
	else
		snprintf(out, n, "%.2f s", ns / 1e9);
}

static void lat_row(FILE *f, const char *name, const struct bench_hist *h, bool is_time)
{
	static const double qs[] = {0.5, 0.9, 0.99, 1.0};
	char cell[32];
	fprintf(f, "  %-14s", name);
	if (!h->count) {
		fprintf(f, " %10s\n", "-");
		return;
	}
	for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
		double v = (double)bench_hist_quantile(h, qs[i]);
		if (is_time)
			dur(cell, sizeof(cell), v);
		else
			snprintf(cell, sizeof(cell), "%.1f", v / 1e3);
		fprintf(f, " %10s", cell);
	}
	if (is_time)
		dur(cell, sizeof(cell), bench_hist_mean(h));
	else
		snprintf(cell, sizeof(cell), "%.1f", bench_hist_mean(h) / 1e3);
	fprintf(f, " %10s %9" PRIu64 "\n", cell, h->count);
}

static void stats_text(FILE *f, const char *title, const struct bench_stats *s, double elapsed)
{
	bool any = false;
	fprintf(f, "%s: %" PRIu64 " requests, %" PRIu64 " ok, %" PRIu64 " errors, %.1f req/s, %" PRIu64
		   " output tokens (%.1f tokens/s)\n",
		title, s->requests, s->ok, s->errors, elapsed > 0 ? (double)s->requests / elapsed : 0.0,
		s->output_tokens, elapsed > 0 ? (double)s->output_tokens / elapsed : 0.0);
	fputs("  status:", f);
	for (int i = 0; i < BENCH_MAX_STATUS; i++)
		if (s->status[i]) {
			fprintf(f, " %d: %" PRIu64, i, s->status[i]);
			any = true;
		}
	fputs(any ? "\n" : " none\n", f);
	any = false;
	for (int i = 0; i < BF_COUNT; i++)
		if (s->fail[i]) {
			fprintf(f, "%s %s: %" PRIu64, any ? "," : "  transport errors:", bench_fail_names[i], s->fail[i]);
			any = true;
		}
	if (any)
		fputc('\n', f);
	fprintf(f, "  %-14s %10s %10s %10s %10s %10s %9s\n", "", "p50", "p90", "p99", "max", "mean", "count");
	lat_row(f, "ttft", &s->ttft, true);
	lat_row(f, "inter-token", &s->itl, true);
	lat_row(f, "end-to-end", &s->e2e, true);
	lat_row(f, "tokens/s/strm", &s->tps, false);
}

void bench__print_text(FILE *f, const struct bench_result *res)
{
	const struct bench_opts *o = res->o;
	fprintf(f, "meridian bench: POST %s (%s, model %s%s)\n", res->endpoint, api_name(o->api), o->model,
		o->stream ? ", streamed" : "");
	fputs("load:", f);
	if (o->rate > 0)
		fprintf(f, " %g req/s open loop%s", o->rate, o->poisson ? ", Poisson arrivals" : "");
	if (o->concurrency)
		fprintf(f, "%s concurrency %u", o->rate > 0 ? ", at most" : "", o->concurrency);
	if (o->requests)
		fprintf(f, ", %" PRIu64 " requests", o->requests);
	if (o->duration_s > 0)
		fprintf(f, ", for %g s", o->duration_s);
	fprintf(f, "; prompts: %u %s, %.0f tokens on average\n", res->prompts,
		o->prompts_path ? "from the file" : "generated", res->prompt_tokens_mean);
	fprintf(f, "ran %.2f s%s: %" PRIu64 " started, at most %u in flight", res->elapsed_s,
		res->interrupted ? " (interrupted)" : "", res->started, res->inflight_max);
	if (o->warmup_s > 0)
		fprintf(f, ", after a warm-up of %g s (%" PRIu64 " requests)", o->warmup_s, res->warmup_requests);
	if (res->start_lag.count) {
		char lag[32];
		dur(lag, sizeof(lag), (double)res->start_lag.max);
		fprintf(f, ", started at most %s late", lag);
	}
	fputs("\n\n", f);
	stats_text(f, "all", &res->all, res->elapsed_s);
	for (unsigned i = 0; i < res->nregions; i++) {
		char title[BENCH_REGION_LEN + 16];
		snprintf(title, sizeof(title), "region %s", res->region_names[i]);
		fputc('\n', f);
		stats_text(f, title, &res->regions[i], res->elapsed_s);
	}
}

/* ---- HTML --------------------------------------------------------------------------------- */

static const struct dash_asset *asset(const char *name)
{
	for (size_t i = 0; i < bench_report_assets_count; i++)
		if (!strcmp(bench_report_assets[i].path, name))
			return &bench_report_assets[i];
	return NULL;
}

int bench__write_report(const char *path, const struct bench_result *res)
{
	const struct dash_asset *js = asset("report.js"), *css = asset("report.css");
	json_t *j = NULL;
	FILE *f = NULL;
	int rc = 0;

	if (!js || !css)
		return -ENOENT;
	f = fopen(path, "w");
	if (!f)
		return -errno;
	j = bench__json(res, true);
	fputs("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
	      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
	      "<title>meridian bench report</title>\n<style>\n", f);
	fwrite(css->data, 1, css->len, f);
	fputs("</style>\n</head>\n<body>\n<main id=\"report\"><p>This report needs JavaScript.</p></main>\n"
	      "<script type=\"application/json\" id=\"bench-data\">", f);
	// JSON_ESCAPE_SLASH writes "/" as "\/": no "</script>" can end the block early
	json_dumpf(j, f, JSON_COMPACT | JSON_ESCAPE_SLASH | JSON_REAL_PRECISION(10));
	fputs("</script>\n<script>\n", f);
	fwrite(js->data, 1, js->len, f);
	fputs("</script>\n</body>\n</html>\n", f);
	if (ferror(f))
		rc = -EIO;
	if (fclose(f) != 0 && !rc)
		rc = -errno;
	json_decref(j);
	return rc;
}
