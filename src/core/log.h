/* log.h - leveled, context-carrying log lines to stderr, with per-feature debug traces */
#ifndef MERIDIAN_CORE_LOG_H
#define MERIDIAN_CORE_LOG_H

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Debug traces per feature, enabled by MERIDIAN_DEBUG=http,upstream,... or "all". */
enum log_feature {
	LOGF_HTTP = 1 << 0,
	LOGF_UPSTREAM = 1 << 1,
	LOGF_ROUTE = 1 << 2,
	LOGF_STORE = 1 << 3,
	LOGF_CONF = 1 << 4,
	LOGF_MOCK = 1 << 5,
};

extern int log__level;
extern unsigned log__features;

/* Reads MERIDIAN_LOG_LEVEL (error|warn|info|debug) and MERIDIAN_DEBUG. */
void log_init(const char *progname);
void log_write(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) do { if (log__level >= LOG_WARN) log_write(LOG_WARN, __VA_ARGS__); } while (0)
#define log_info(...) do { if (log__level >= LOG_INFO) log_write(LOG_INFO, __VA_ARGS__); } while (0)
#define log_trace(feat, ...) do { if (log__features & (feat)) log_write(LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
