/* errors.h - error bodies and stream error events in the shape each client SDK parses */
#ifndef MERIDIAN_API_ERRORS_H
#define MERIDIAN_API_ERRORS_H

#include "core/buf.h"

enum api_format { API_OPENAI, API_ANTHROPIC };

/* The error "type" the format uses for an HTTP status: OpenAI "invalid_request_error",
 * "authentication_error", "rate_limit_error", "server_error", ...; Anthropic
 * "invalid_request_error", "not_found_error", "overloaded_error", "api_error", ... */
const char *api_error_type(enum api_format f, int status);

/* Appends a whole error body. OpenAI: {"error":{"message","type","param","code"}}; Anthropic:
 * {"type":"error","error":{"type","message"}}. code and param may be NULL (JSON null; Anthropic
 * has no code field). */
void api_error_body(enum api_format f, int status, const char *code, const char *param,
		    const char *message, struct buf *out);

/* Appends the terminal error event that ends a broken stream: OpenAI `data: {"error":...}`,
 * Anthropic `event: error` + data. The SDKs raise it as an error, never as a completion. */
void api_error_event(enum api_format f, const char *code, const char *message, struct buf *out);

#endif
