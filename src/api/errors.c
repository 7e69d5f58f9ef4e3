/* errors.c - error bodies and stream error events in the shape each client SDK parses */
#include <string.h>

#include "api/errors.h"

const char *api_error_type(enum api_format f, int status)
{
	if (f == API_ANTHROPIC) {
		switch (status) {
		case 401: return "authentication_error";
		case 403: return "permission_error";
		case 404: return "not_found_error";
		case 413: return "request_too_large";
		case 429: return "rate_limit_error";
		case 529: case 503: return "overloaded_error";
		case 504: case 408: return "timeout_error";
		}
		return status >= 500 ? "api_error" : "invalid_request_error";
	}
	switch (status) {
	case 401: return "authentication_error";
	case 403: return "permission_error";
	case 404: return "invalid_request_error";
	case 429: return "rate_limit_error";
	case 408: case 504: return "timeout_error";
	}
	return status >= 500 ? "server_error" : "invalid_request_error";
}

static void json_str_or_null(struct buf *out, const char *s)
{
	if (!s) {
		buf_append(out, "null", 4);
		return;
	}
	buf_append(out, "\"", 1);
	buf_append_json_str(out, s, strlen(s));
	buf_append(out, "\"", 1);
}

void api_error_body(enum api_format f, int status, const char *code, const char *param,
		    const char *message, struct buf *out)
{
	const char *type = api_error_type(f, status);
	if (f == API_ANTHROPIC) {
		buf_puts(out, "{\"type\":\"error\",\"error\":{\"type\":\"");
		buf_puts(out, type);
		buf_puts(out, "\",\"message\":");
		json_str_or_null(out, message);
		buf_puts(out, "}}");
		return;
	}
	buf_puts(out, "{\"error\":{\"message\":");
	json_str_or_null(out, message);
	buf_puts(out, ",\"type\":\"");
	buf_puts(out, type);
	buf_puts(out, "\",\"param\":");
	json_str_or_null(out, param);
	buf_puts(out, ",\"code\":");
	json_str_or_null(out, code);
	buf_puts(out, "}}");
}

void api_error_event(enum api_format f, const char *code, const char *message, struct buf *out)
{
	if (f == API_ANTHROPIC) {
		buf_puts(out, "event: error\ndata: ");
		api_error_body(f, 500, code, NULL, message, out);
		buf_puts(out, "\n\n");
		return;
	}
	buf_puts(out, "data: ");
	api_error_body(f, 500, code, NULL, message, out);
	buf_puts(out, "\n\n");
}
