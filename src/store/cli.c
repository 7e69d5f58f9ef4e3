/* cli.c - `meridian logs` and `meridian stats`: the admin API's log queries from a shell */
#include "store/cli.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conf/conf.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "store/logs.h"

/* jansson prints reals with 17 digits (0.3672 becomes 0.36720000000000003); the store writes
 * at most 15 significant ones, so 15 gives back what it wrote. */
#define JSON_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(15))

/* `--follow` reads again every POLL_MS. */
#define POLL_MS 500
/* What is added to the longest request to get the window `--follow` reads: the writer commits in
 * batches and retries a failing store, so a record lands a little after its request ends. */
#define FOLLOW_MARGIN_MS 60000
/* The most records `--follow` reads per poll and remembers (about 100 bytes each). */
#define FOLLOW_MAX 200000

enum cmd { CMD_LOGS, CMD_STATS };

struct cli {
	enum cmd cmd;
	const char *conf_path;    /* NULL: meridian.yaml, unless --store is given */
	const char *store;        /* --store */
	struct log_stats_query sq; /* sq.filter: the filters */
	size_t limit;             /* logs: records to print, default 50 */
	bool json, follow;
	const char *id;
	uint64_t window_ms;       /* follow: how far back a record can still land */
};

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static const char logs_usage[] =
	"usage: meridian logs [options] [ID]\n"
	"\n"
	"Prints the request log, newest first (an aligned table, or JSON Lines with --json); with\n"
	"an ID, that record in full (pretty JSON, bodies included).\n"
	"\n"
	"  -c FILE             the config whose logs.store to read (default meridian.yaml)\n"
	"  --store SPEC        sqlite:PATH or postgres://... (instead of the config's)\n"
	"  --since TIME        records that arrived at or after TIME: RFC 3339\n"
	"                      (2026-11-22T08:00:00Z), Unix seconds, or a duration ago (15m, 2h, 1d)\n"
	"  --until TIME        records that arrived before TIME (same forms)\n"
	"  --account ID  --gateway ACCT/GW  --provider NAME  --model NAME  --region NAME\n"
	"  --status CODE       an exact status (429) or a class (4xx)\n"
	"  --termination HOW   ok, client_abort@stream, timeout@headers, ...\n"
	"  -q, --search TEXT   a substring of the id, model, error code or metadata\n"
	"  --limit N           at most N records (default 50)\n"
	"  --json              one JSON object per line\n"
	"  -f, --follow        print records as they are written, until interrupted\n"
	"  -h, --help          this text\n";

static const char stats_usage[] =
	"usage: meridian stats [options]\n"
	"\n"
	"Prints request counts, errors, tokens, cost, latency percentiles and the cache hit rate:\n"
	"a table per series and a totals line, or the admin API's JSON with --json.\n"
	"\n"
	"  -c FILE             the config whose logs.store to read (default meridian.yaml)\n"
	"  --store SPEC        sqlite:PATH or postgres://... (instead of the config's)\n"
	"  --since TIME  --until TIME  (RFC 3339, Unix seconds, or a duration ago: 15m, 2h, 1d)\n"
	"  --account ID  --gateway ACCT/GW  --provider NAME  --model NAME  --region NAME\n"
	"  --status CODE (429 or 4xx)  --termination HOW  -q, --search TEXT\n"
	"  --bucket DURATION   one point per DURATION (at least 1s; default: one for the range)\n"
	"  --group-by KEY      model, region, provider, account, gateway or none\n"
	"  --json              the JSON of /admin/api/stats\n"
	"  -h, --help          this text\n";

static int64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/*
 * RFC 3339 ("2026-11-22T10:00:00Z", fraction and offset allowed) or Unix seconds, as the admin
 * API takes them (ctl.c has the same parser), and for the command line a duration before now
 * ("15m", "2h", "1d", "90s"). To Unix microseconds.
 */
static bool parse_time_us(const char *s, int64_t *out)
{
	struct tm tm = {0};
	char *end;
	int64_t frac_us = 0, off = 0;

	if (*s && strspn(s, "0123456789") == strlen(s)) {
		long long secs;

		errno = 0;
		secs = strtoll(s, &end, 10);
		if (errno || *end || secs > 253402300799LL)
			return false;
		*out = (int64_t)secs * 1000000;
		return true;
	}
	if (*s >= '0' && *s <= '9' && !strchr(s, '-') && !strchr(s, ':')) {
		int64_t ms = conf_parse_duration_ms(s);

		if (ms < 0 || ms > 100LL * 366 * 86400 * 1000)
			return false;
		*out = now_us() - ms * 1000;
		return true;
	}
	end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!end)
		return false;
	if (*end == '.') {
		int64_t scale = 100000;

		for (end++; *end >= '0' && *end <= '9'; end++, scale /= 10)
			if (scale)
				frac_us += (*end - '0') * scale;
	}
	if (*end == 'Z' || *end == 'z') {
		end++;
	} else if ((*end == '+' || *end == '-') && strlen(end) == 6 && end[3] == ':' &&
		   strspn(end + 1, "0123456789") == 2 && strspn(end + 4, "0123456789") == 2) {
		int hh = (end[1] - '0') * 10 + (end[2] - '0'), mm = (end[4] - '0') * 10 + (end[5] - '0');

		off = (int64_t)(hh * 3600 + mm * 60) * (*end == '+' ? 1 : -1);
		end += 6;
	} else {
		return false;
	}
	if (*end)
		return false;
	*out = ((int64_t)timegm(&tm) - off) * 1000000 + frac_us;
	return true;
}

/* "429" or "4xx" into the filter. */
static bool parse_status(const char *v, struct log_filter *f)
{
	if (strlen(v) != 3)
		return false;
	if (v[1] == 'x' && v[2] == 'x' && v[0] >= '1' && v[0] <= '5') {
		f->status_class = v[0] - '0';
		f->status = 0;
		return true;
	}
	if (strspn(v, "0123456789") != 3 || v[0] < '1' || v[0] > '5')
		return false;
	f->status = (v[0] - '0') * 100 + (v[1] - '0') * 10 + (v[2] - '0');
	f->status_class = 0;
	return true;
}

enum {
	OPT_STORE = 256, OPT_SINCE, OPT_UNTIL, OPT_ACCOUNT, OPT_GATEWAY, OPT_PROVIDER, OPT_MODEL,
	OPT_REGION, OPT_STATUS, OPT_TERMINATION, OPT_LIMIT, OPT_JSON, OPT_BUCKET, OPT_GROUP_BY,
};

/* Fills cli from argv. Returns 0, 1 for --help (printed), or 2 with a message on stderr. */
static int parse_args(struct cli *cli, int argc, char **argv)
{
	static const struct option logs_opts[] = {
		{"config", required_argument, NULL, 'c'}, {"store", required_argument, NULL, OPT_STORE},
		{"since", required_argument, NULL, OPT_SINCE}, {"until", required_argument, NULL, OPT_UNTIL},
		{"account", required_argument, NULL, OPT_ACCOUNT},
		{"gateway", required_argument, NULL, OPT_GATEWAY},
		{"provider", required_argument, NULL, OPT_PROVIDER},
		{"model", required_argument, NULL, OPT_MODEL}, {"region", required_argument, NULL, OPT_REGION},
		{"status", required_argument, NULL, OPT_STATUS},
		{"termination", required_argument, NULL, OPT_TERMINATION},
		{"search", required_argument, NULL, 'q'}, {"limit", required_argument, NULL, OPT_LIMIT},
		{"json", no_argument, NULL, OPT_JSON}, {"follow", no_argument, NULL, 'f'},
		{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
	};
	static const struct option stats_opts[] = {
		{"config", required_argument, NULL, 'c'}, {"store", required_argument, NULL, OPT_STORE},
		{"since", required_argument, NULL, OPT_SINCE}, {"until", required_argument, NULL, OPT_UNTIL},
		{"account", required_argument, NULL, OPT_ACCOUNT},
		{"gateway", required_argument, NULL, OPT_GATEWAY},
		{"provider", required_argument, NULL, OPT_PROVIDER},
		{"model", required_argument, NULL, OPT_MODEL}, {"region", required_argument, NULL, OPT_REGION},
		{"status", required_argument, NULL, OPT_STATUS},
		{"termination", required_argument, NULL, OPT_TERMINATION},
		{"search", required_argument, NULL, 'q'}, {"json", no_argument, NULL, OPT_JSON},
		{"bucket", required_argument, NULL, OPT_BUCKET},
		{"group-by", required_argument, NULL, OPT_GROUP_BY}, {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	static const char *const groups[] = {"none", "model", "region", "provider", "account",
					     "gateway"};
	const char *name = cli->cmd == CMD_LOGS ? "logs" : "stats";
	const char *usage = cli->cmd == CMD_LOGS ? logs_usage : stats_usage;
	struct log_filter *f = &cli->sq.filter;
	int opt;

	optind = 1;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, cli->cmd == CMD_LOGS ? ":c:q:fh" : ":c:q:h",
				  cli->cmd == CMD_LOGS ? logs_opts : stats_opts, NULL)) != -1) {
		bool ok = true;

		switch (opt) {
		case 'c':
			cli->conf_path = optarg;
			break;
		case OPT_STORE:
			cli->store = optarg;
			break;
		case OPT_SINCE:
			ok = parse_time_us(optarg, &f->since_us);
			break;
		case OPT_UNTIL:
			ok = parse_time_us(optarg, &f->until_us);
			break;
		case OPT_ACCOUNT:
			f->account = optarg;
			break;
		case OPT_GATEWAY:
			f->gateway = optarg;
			break;
		case OPT_PROVIDER:
			f->provider = optarg;
			break;
		case OPT_MODEL:
			f->model = optarg;
			break;
		case OPT_REGION:
			f->region = optarg;
			break;
		case OPT_STATUS:
			ok = parse_status(optarg, f);
			break;
		case OPT_TERMINATION:
			f->termination = optarg;
			break;
		case 'q':
			f->q = optarg;
			break;
		case OPT_JSON:
			cli->json = true;
			break;
		case 'f':
			cli->follow = true;
			break;
		case OPT_LIMIT: {
			char *end;
			long long n;

			errno = 0;
			n = strtoll(optarg, &end, 10);
			ok = *optarg >= '0' && *optarg <= '9' && !*end && !errno && n >= 1 && n <= 100000000;
			cli->limit = ok ? (size_t)n : 0;
			break;
		}
		case OPT_BUCKET: {
			int64_t ms = conf_parse_duration_ms(optarg);

			ok = ms >= 1000 && ms <= 366LL * 86400 * 1000;
			cli->sq.bucket_us = ok ? (uint64_t)ms * 1000 : 0;
			break;
		}
		case OPT_GROUP_BY:
			ok = false;
			for (size_t i = 0; i < ARRAY_SIZE(groups); i++)
				if (!strcmp(optarg, groups[i])) {
					cli->sq.group = (enum log_group)i;
					ok = true;
				}
			break;
		case 'h':
			fputs(usage, stdout);
			return 1;
		case ':':
			fprintf(stderr, "meridian %s: option '%s' needs a value\n\n", name, argv[optind - 1]);
			fputs(usage, stderr);
			return 2;
		default:
			fprintf(stderr, "meridian %s: unknown option '%s'\n\n", name, argv[optind - 1]);
			fputs(usage, stderr);
			return 2;
		}
		if (!ok) {
			fprintf(stderr, "meridian %s: option '%s' cannot take '%s'\n\n", name,
				argv[optind - 1], optarg);
			fputs(usage, stderr);
			return 2;
		}
	}
	if (cli->cmd == CMD_LOGS && optind < argc)
		cli->id = argv[optind++];
	if (optind < argc) {
		fprintf(stderr, "meridian %s: unexpected argument '%s'\n\n", name, argv[optind]);
		fputs(usage, stderr);
		return 2;
	}
	if (cli->id && cli->follow) {
		fprintf(stderr, "meridian logs: an ID and --follow do not go together\n\n");
		fputs(usage, stderr);
		return 2;
	}
	return 0;
}

/*
 * Opens the reader: --store's, or the config's logs.store. The config also gives the longest
 * a request can take (routing.total_timeout) for --follow's window. Returns 0, or 1 with a
 * message on stderr.
 */
static int open_store(struct cli *cli, struct log_reader **rd)
{
	const char *name = cli->cmd == CMD_LOGS ? "logs" : "stats";
	struct conf *conf = NULL;
	char err[512];
	const char *spec = cli->store;
	int rc = 1;

	cli->window_ms = 600000 + FOLLOW_MARGIN_MS;
	if (!spec || cli->conf_path) {
		conf = conf_load(cli->conf_path ? cli->conf_path : "meridian.yaml", err, sizeof(err));
		if (!conf) {
			fprintf(stderr, "meridian %s: %s\n", name, err);
			return 1;
		}
		if (!spec)
			spec = conf->logs_store;
		cli->window_ms = conf->routing.total_timeout_ms + FOLLOW_MARGIN_MS;
	}
	if (!spec || !strcmp(spec, "off")) {
		fprintf(stderr, "meridian %s: no log store (logs.store is off)\n", name);
		goto out;
	}
	if (log_reader_open(spec, rd, err, sizeof(err)) < 0) {
		fprintf(stderr, "meridian %s: cannot open the log store: %s\n", name, err);
		goto out;
	}
	rc = 0;
out:
	conf_unref(conf);
	return rc;
}

static const char *jstr(const json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "-";
}

/* A JSON number as text with that many decimals (0: an integer as it is); null as "-". */
static void jnum(char *dst, size_t n, const json_t *v, int decimals)
{
	if (json_is_integer(v) && !decimals)
		snprintf(dst, n, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
	else if (json_is_integer(v))
		snprintf(dst, n, "%.*f", decimals, (double)json_integer_value(v));
	else if (json_is_real(v))
		snprintf(dst, n, "%.*f", decimals, json_real_value(v));
	else
		snprintf(dst, n, "-");
}

#define NCOLS 11

/* The widths of the table so far: they only grow, so --follow's lines stay aligned as long as
 * nothing wider comes. */
struct table {
	int w[NCOLS];
	bool header_done;
};

static const char *const log_cols[NCOLS] = {"TIME", "ID", "ACCOUNT", "MODEL", "REGION", "STATUS",
					    "TERMINATION", "LATENCY_MS", "TOKENS_IN", "TOKENS_OUT",
					    "COST_USD"};

/* One record's cells; cells[i] points into rec or into storage. */
static void log_cells(const json_t *rec, const char *cells[NCOLS], char storage[5][32])
{
	cells[0] = jstr(rec, "ts");
	cells[1] = jstr(rec, "id");
	cells[2] = jstr(rec, "account");
	cells[3] = jstr(rec, "model");
	cells[4] = jstr(rec, "region");
	jnum(storage[0], 32, json_object_get(rec, "status"), 0);
	cells[5] = storage[0];
	cells[6] = jstr(rec, "termination");
	jnum(storage[1], 32, json_object_get(rec, "latency_ms"), 3);
	cells[7] = storage[1];
	jnum(storage[2], 32, json_object_get(rec, "tokens_in"), 0);
	cells[8] = storage[2];
	jnum(storage[3], 32, json_object_get(rec, "tokens_out"), 0);
	cells[9] = storage[3];
	jnum(storage[4], 32, json_object_get(rec, "cost_usd"), 6);
	cells[10] = storage[4];
}

static void print_row(const struct table *t, const char *const cells[NCOLS])
{
	for (int i = 0; i < NCOLS; i++) {
		/* numbers right-aligned, text left-aligned; no trailing blanks */
		bool num = i >= 7 || i == 5;

		if (num)
			printf("%*s", t->w[i], cells[i]);
		else if (i == NCOLS - 1)
			fputs(cells[i], stdout);
		else
			printf("%-*s", t->w[i], cells[i]);
		fputs(i == NCOLS - 1 ? "\n" : "  ", stdout);
	}
}

/* Prints recs[0..n) (JSON objects): as JSON Lines, or as table rows (widths from these rows
 * and the previous ones, the header before the first). In the order given. */
static void print_records(const struct cli *cli, struct table *t, json_t *const *recs, size_t n)
{
	char storage[5][32];
	const char *cells[NCOLS];

	if (cli->json) {
		for (size_t i = 0; i < n; i++) {
			char *s = json_dumps(recs[i], JSON_FLAGS);

			if (s)
				puts(s);
			free(s);
		}
		fflush(stdout);
		return;
	}
	if (!t->header_done)
		for (int i = 0; i < NCOLS; i++)
			if ((int)strlen(log_cols[i]) > t->w[i])
				t->w[i] = (int)strlen(log_cols[i]);
	for (size_t r = 0; r < n; r++) {
		log_cells(recs[r], cells, storage);
		for (int i = 0; i < NCOLS; i++)
			if ((int)strlen(cells[i]) > t->w[i])
				t->w[i] = (int)strlen(cells[i]);
	}
	if (!t->header_done && (n || !cli->follow)) {
		print_row(t, log_cols);
		t->header_done = true;
	}
	for (size_t r = 0; r < n; r++) {
		log_cells(recs[r], cells, storage);
		print_row(t, cells);
	}
	fflush(stdout);
}

/* One page of log_query into *page (a new reference); *cursor replaced by its next_cursor
 * (NULL on the last page). Returns 0 or 1 (message printed). */
static int query_page(struct log_reader *rd, struct log_filter *f, size_t limit, char **cursor,
		      json_t **page)
{
	struct buf out = {0};
	char err[512];
	json_error_t jerr;
	json_t *root;

	f->limit = limit;
	f->cursor = *cursor;
	if (log_query(rd, f, &out, err, sizeof(err)) < 0) {
		fprintf(stderr, "meridian logs: query failed: %s\n", err);
		buf_release(&out);
		return 1;
	}
	root = json_loadb(out.data, out.len, 0, &jerr);
	buf_release(&out);
	if (!root || !json_is_array(json_object_get(root, "data"))) {
		fprintf(stderr, "meridian logs: the store answered something unreadable\n");
		json_decref(root);
		return 1;
	}
	const char *next = json_string_value(json_object_get(root, "next_cursor"));

	xfree(*cursor);
	*cursor = next ? xstrdup(next) : NULL;
	f->cursor = NULL;
	*page = root;
	return 0;
}

/* Pages newest first through what matches, printing up to cli->limit records. */
static int logs_list(struct cli *cli, struct log_reader *rd)
{
	struct table t = {0};
	struct log_filter f = cli->sq.filter;
	char *cursor = NULL;
	size_t left = cli->limit;
	json_t **all = xcalloc(left < 1000 ? left : 1000, sizeof(*all));
	size_t nall = 0, cap = left < 1000 ? left : 1000;
	int rc = 0;

	/* the table is aligned over every row, so rows are kept until the end (the default 50 is
	 * small; --json prints page by page) */
	do {
		json_t *page = NULL;

		if (query_page(rd, &f, left < 1000 ? left : 1000, &cursor, &page)) {
			rc = 1;
			break;
		}
		json_t *data = json_object_get(page, "data");
		size_t n = json_array_size(data);

		if (n > left)
			n = left;
		if (cli->json) {
			for (size_t i = 0; i < n; i++)
				print_records(cli, &t, (json_t *const[]){json_array_get(data, i)}, 1);
		} else {
			if (nall + n > cap) {
				cap = nall + n > 2 * cap ? nall + n : 2 * cap;
				all = xrealloc(all, cap * sizeof(*all));
			}
			for (size_t i = 0; i < n; i++)
				all[nall++] = json_incref(json_array_get(data, i));
		}
		left -= n;
		json_decref(page);
	} while (cursor && left);
	if (!cli->json && !rc)
		print_records(cli, &t, all, nall);
	for (size_t i = 0; i < nall; i++)
		json_decref(all[i]);
	xfree(all);
	xfree(cursor);
	return rc;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * --follow. A record's ts is when its request arrived, but the writer gets it when the request
 * ends: a stream that started before a short request is written after it with an older ts, so
 * "ts > the newest seen" would skip it. Asking for records written since the last poll would
 * need an insertion order that the reader's API does not expose. Instead every poll reads the
 * window in which a record can still appear: since = now - (routing.total_timeout, the longest a
 * request may last, default 10 minutes, + FOLLOW_MARGIN_MS for the writer's batching and
 * retries), and prints the ids it did not see in the previous poll's window. A record older
 * than the window can no longer be written, so the set of ids is exactly the window's and stays
 * bounded; a record is printed once, in the order records appear (oldest first within a poll).
 * Cost: each poll reads the window's records (their ids from the time index; filters narrow
 * it); past FOLLOW_MAX records in the window the oldest part is not read and one warning says
 * that long requests may be missed.
 */
static int logs_follow(struct cli *cli, struct log_reader *rd)
{
	struct table t = {0};
	char **seen = NULL, **cur = NULL;
	size_t nseen = 0, ncur = 0, capcur = 0;
	json_t **fresh = NULL;
	size_t nfresh = 0, capfresh = 0;
	bool first = true, warned = false;
	struct sigaction sa = {0};
	int rc = 0;

	sa.sa_handler = on_stop;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_DFL);

	while (!stop_requested) {
		struct log_filter f = cli->sq.filter;
		int64_t since = now_us() - (int64_t)cli->window_ms * 1000;
		char *cursor = NULL;
		size_t read = 0;

		if (f.since_us < since)
			f.since_us = since;
		ncur = 0;
		nfresh = 0;
		do {
			json_t *page = NULL;

			if (query_page(rd, &f, 1000, &cursor, &page)) {
				rc = 1;
				break;
			}
			json_t *data = json_object_get(page, "data");
			size_t n = json_array_size(data);

			for (size_t i = 0; i < n; i++) {
				json_t *rec = json_array_get(data, i);
				const char *id = json_string_value(json_object_get(rec, "id"));
				char *key = (char *)id;

				if (!id)
					continue;
				if (ncur == capcur) {
					capcur = capcur ? 2 * capcur : 1024;
					cur = xrealloc(cur, capcur * sizeof(*cur));
				}
				cur[ncur++] = xstrdup(id);
				if (first || (seen && bsearch(&key, seen, nseen, sizeof(*seen), cmp_str)))
					continue;
				if (nfresh == capfresh) {
					capfresh = capfresh ? 2 * capfresh : 64;
					fresh = xrealloc(fresh, capfresh * sizeof(*fresh));
				}
				fresh[nfresh++] = json_incref(rec);
			}
			read += n;
			json_decref(page);
		} while (cursor && read < FOLLOW_MAX && !stop_requested);
		if (cursor && !warned) {
			fprintf(stderr, "meridian logs: more than %d records in the last %" PRIu64
				" s: long requests may be missed (narrow with filters)\n",
				FOLLOW_MAX, cli->window_ms / 1000);
			warned = true;
		}
		xfree(cursor);
		if (rc)
			break;
		/* newest first from the store; printed oldest first, like a log */
		for (size_t i = 0; i < nfresh / 2; i++) {
			json_t *tmp = fresh[i];

			fresh[i] = fresh[nfresh - 1 - i];
			fresh[nfresh - 1 - i] = tmp;
		}
		print_records(cli, &t, fresh, nfresh);
		for (size_t i = 0; i < nfresh; i++)
			json_decref(fresh[i]);
		for (size_t i = 0; i < nseen; i++)
			xfree(seen[i]);
		xfree(seen);
		qsort(cur, ncur, sizeof(*cur), cmp_str);
		seen = cur;
		nseen = ncur;
		cur = NULL;
		ncur = capcur = 0;
		first = false;

		struct timespec ts = {POLL_MS / 1000, (POLL_MS % 1000) * 1000000L};

		/* a signal cuts the sleep short (no SA_RESTART) */
		while (!stop_requested && nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
	for (size_t i = 0; i < nseen; i++)
		xfree(seen[i]);
	xfree(seen);
	xfree(cur);
	xfree(fresh);
	return rc;
}

static int logs_one(struct cli *cli, struct log_reader *rd)
{
	struct buf out = {0};
	char err[512];
	json_error_t jerr;
	json_t *rec = NULL;
	char *s = NULL;
	int rc = log_get(rd, cli->id, &out, err, sizeof(err));

	if (rc < 0) {
		fprintf(stderr, "meridian logs: query failed: %s\n", err);
		rc = 1;
		goto out;
	}
	if (rc == 1) {
		fprintf(stderr, "meridian logs: no record with id '%s'\n", cli->id);
		goto out;
	}
	rec = json_loadb(out.data, out.len, 0, &jerr);
	s = rec ? json_dumps(rec, JSON_INDENT(2) | JSON_REAL_PRECISION(15)) : NULL;
	if (!s) {
		fprintf(stderr, "meridian logs: the store answered something unreadable\n");
		rc = 1;
		goto out;
	}
	puts(s);
out:
	free(s);
	json_decref(rec);
	buf_release(&out);
	return rc;
}

int logs_cli_main(int argc, char **argv)
{
	struct cli cli = {.cmd = CMD_LOGS, .limit = 50};
	struct log_reader *rd = NULL;
	int rc = parse_args(&cli, argc, argv);

	if (rc)
		return rc == 1 ? 0 : rc;
	if (open_store(&cli, &rd))
		return 1;
	if (cli.id)
		rc = logs_one(&cli, rd);
	else if (cli.follow)
		rc = logs_follow(&cli, rd);
	else
		rc = logs_list(&cli, rd);
	log_reader_close(rd);
	return rc;
}

/* A table of points (time or "total", then the numbers) with aligned columns. */
#define NSTAT 9

static const char *const stat_cols[NSTAT] = {"TIME", "REQUESTS", "ERRORS", "TOKENS_IN",
					     "TOKENS_OUT", "COST_USD", "P50_MS", "P95_MS",
					     "CACHE_HIT"};

static void stat_cells(const json_t *p, const char *label, char cells[NSTAT][48])
{
	const json_t *hr = json_object_get(p, "cache_hit_rate");

	snprintf(cells[0], 48, "%s", label ? label : jstr(p, "t"));
	jnum(cells[1], 48, json_object_get(p, "requests"), 0);
	jnum(cells[2], 48, json_object_get(p, "errors"), 0);
	jnum(cells[3], 48, json_object_get(p, "tokens_in"), 0);
	jnum(cells[4], 48, json_object_get(p, "tokens_out"), 0);
	jnum(cells[5], 48, json_object_get(p, "cost_usd"), 6);
	jnum(cells[6], 48, json_object_get(p, "p50_ms"), 3);
	jnum(cells[7], 48, json_object_get(p, "p95_ms"), 3);
	if (json_is_number(hr))
		snprintf(cells[8], 48, "%.1f%%", json_number_value(hr) * 100);
	else
		snprintf(cells[8], 48, "-");
}

static void stat_row(const int w[NSTAT], char cells[NSTAT][48])
{
	printf("%-*s", w[0], cells[0]);
	for (int i = 1; i < NSTAT; i++)
		printf("  %*s", w[i], cells[i]);
	putchar('\n');
}

static void stats_table(const json_t *root)
{
	const json_t *series = json_object_get(root, "series"), *totals = json_object_get(root, "totals");
	const char *group = json_string_value(json_object_get(root, "group_by"));
	char cells[NSTAT][48];
	int w[NSTAT];
	size_t i, j;
	const json_t *s, *p;

	/* one set of widths over every series and the totals, so the tables line up */
	for (int c = 0; c < NSTAT; c++)
		w[c] = (int)strlen(stat_cols[c]);
	json_array_foreach(series, i, s) {
		json_array_foreach(json_object_get(s, "points"), j, p) {
			stat_cells(p, NULL, cells);
			for (int c = 0; c < NSTAT; c++)
				if ((int)strlen(cells[c]) > w[c])
					w[c] = (int)strlen(cells[c]);
		}
	}
	if (w[0] < 5)
		w[0] = 5;
	json_array_foreach(series, i, s) {
		const char *key = json_string_value(json_object_get(s, "key"));

		if (group)
			printf("%s%s: %s\n", i ? "\n" : "", group, key ? key : "(none)");
		char hdr[NSTAT][48];

		for (int c = 0; c < NSTAT; c++)
			snprintf(hdr[c], 48, "%s", stat_cols[c]);
		stat_row(w, hdr);
		json_array_foreach(json_object_get(s, "points"), j, p) {
			stat_cells(p, NULL, cells);
			stat_row(w, cells);
		}
	}
	if (json_is_object(totals)) {
		if (json_array_size(series))
			putchar('\n');
		stat_cells(totals, "total", cells);
		stat_row(w, cells);
	}
}

int stats_cli_main(int argc, char **argv)
{
	struct cli cli = {.cmd = CMD_STATS};
	struct log_reader *rd = NULL;
	struct buf out = {0};
	char err[512];
	json_error_t jerr;
	json_t *root = NULL;
	int rc = parse_args(&cli, argc, argv);

	if (rc)
		return rc == 1 ? 0 : rc;
	if (open_store(&cli, &rd))
		return 1;
	rc = 1;
	if (log_stats(rd, &cli.sq, &out, err, sizeof(err)) < 0) {
		fprintf(stderr, "meridian stats: query failed: %s\n", err);
		goto out;
	}
	if (cli.json) {
		fwrite(out.data, 1, out.len, stdout);
		putchar('\n');
		rc = 0;
		goto out;
	}
	root = json_loadb(out.data, out.len, 0, &jerr);
	if (!root) {
		fprintf(stderr, "meridian stats: the store answered something unreadable\n");
		goto out;
	}
	stats_table(root);
	rc = 0;
out:
	json_decref(root);
	buf_release(&out);
	log_reader_close(rd);
	return rc;
}
