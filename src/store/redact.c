/* redact.c - keys out of logged bodies */
#include <stdbool.h>
#include <string.h>

#include "store/redact.h"

#define KEEP 4
#define MIN_TAIL 16

static bool key_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-';
}

static void mask(char *p, size_t len)
{
	if (len > KEEP)
		memset(p + KEEP, '*', len - KEEP);
}

/* The length of the key-shaped word at s[i] (its prefix included), or 0. */
static size_t key_at(const char *s, size_t n, size_t i)
{
	static const char *const prefixes[] = {"sk-", "sk_", "xai-", "mrd_", "pk-", "rk-", "AKIA"};

	if (i > 0 && key_char(s[i - 1]))
		return 0;
	for (size_t k = 0; k < sizeof(prefixes) / sizeof(prefixes[0]); k++) {
		size_t pl = strlen(prefixes[k]), j;
		if (n - i < pl + MIN_TAIL || memcmp(s + i, prefixes[k], pl))
			continue;
		for (j = i + pl; j < n && key_char(s[j]); j++)
			;
		if (j - i - pl >= MIN_TAIL)
			return j - i;
	}
	if (n - i > 7 && !memcmp(s + i, "Bearer ", 7)) {
		size_t j;
		for (j = i + 7; j < n && s[j] > ' ' && s[j] != '"' && s[j] != '\\' && s[j] != 0x7f; j++)
			;
		if (j - i - 7 >= 8)
			return j - i;
	}
	return 0;
}

size_t redact_secrets(char *s, size_t n, const struct iov *known, size_t nknown)
{
	size_t masked = 0;

	for (size_t k = 0; k < nknown; k++) {
		const struct iov *x = &known[k];
		if (x->len < 8)
			continue;
		for (char *p = s; (size_t)(p - s) + x->len <= n;) {
			char *hit = memmem(p, n - (size_t)(p - s), x->base, x->len);
			if (!hit)
				break;
			mask(hit, x->len);
			masked++;
			p = hit + x->len;
		}
	}
	for (size_t i = 0; i < n;) {
		size_t len = key_at(s, n, i);
		if (!len) {
			i++;
			continue;
		}
		/* "Bearer " itself stays readable */
		size_t skip = s[i] == 'B' ? 7 : 0;
		mask(s + i + skip, len - skip);
		masked++;
		i += len;
	}
	return masked;
}
