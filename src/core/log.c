/* log.c - leveled, context-carrying log lines to stderr, with per-feature debug traces */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

int log__level = LOG_INFO;
unsigned log__features;
static const char *prog = "meridian";

void log_init(const char *progname)
{
	const char *lvl = getenv("MERIDIAN_LOG_LEVEL");
	const char *dbg = getenv("MERIDIAN_DEBUG");
	static const struct { const char *name; unsigned bit; } feats[] = {
		{"http", LOGF_HTTP}, {"upstream", LOGF_UPSTREAM}, {"route", LOGF_ROUTE},
		{"store", LOGF_STORE}, {"conf", LOGF_CONF}, {"mock", LOGF_MOCK},
	};

	if (progname)
		prog = progname;
	if (lvl) {
		if (!strcmp(lvl, "error"))
			log__level = LOG_ERROR;
		else if (!strcmp(lvl, "warn"))
			log__level = LOG_WARN;
		else if (!strcmp(lvl, "debug"))
			log__level = LOG_DEBUG;
	}
	if (dbg) {
		for (size_t i = 0; i < sizeof(feats) / sizeof(feats[0]); i++)
			if (!strcmp(dbg, "all") || strstr(dbg, feats[i].name))
				log__features |= feats[i].bit;
	}
}

void log_write(enum log_level lvl, const char *fmt, ...)
{
	static const char *names[] = {"error", "warn", "info", "debug"};
	char line[2048];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%d] %s: ",
		     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		     ts.tv_nsec / 1000000, prog, (int)getpid(), names[lvl]);
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	/* one write per line so lines from several threads never interleave */
	ssize_t w = write(STDERR_FILENO, line, (size_t)n);
	(void)w;
}
