/* xlate_int.h - helpers the translation files share: ids, stop reasons, usage numbers */
#ifndef MERIDIAN_XLATE_XLATE_INT_H
#define MERIDIAN_XLATE_XLATE_INT_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

/* A 64-bit hash of s (NULL: ""), mixed with salt: the root of every generated id. */
uint64_t xlate__hash(const char *s, uint64_t salt);

/* The root of the n-th generated tool call id (0-based) of the answer whose root is root. */
uint64_t xlate__tool_hash(uint64_t root, uint64_t n);

/* Writes prefix followed by 24 base62 characters derived from h into out (NUL-terminated,
 * truncated to outlen). Same h, same id. */
void xlate__id(char *out, size_t outlen, const char *prefix, uint64_t h);

/* Anthropic stop_reason -> OpenAI finish_reason, and back. Unknown values map to "stop" /
 * "end_turn". Return static strings. */
const char *xlate__finish_reason(const char *anthropic_stop);
const char *xlate__stop_reason(const char *openai_finish);

/* A non-negative integer member of o, or 0. */
uint64_t xlate__u64(const json_t *o, const char *key);

#endif
