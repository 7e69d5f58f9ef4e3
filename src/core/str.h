/* str.h - borrowed byte slices and the small string helpers the parsers share */
#ifndef MERIDIAN_CORE_STR_H
#define MERIDIAN_CORE_STR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

/* 64-bit FNV-1a of n bytes, continuing from h (STR_FNV_BASIS to start): hash tables' keys. */
#define STR_FNV_BASIS 0xcbf29ce484222325ull
static inline uint64_t str_fnv1a(uint64_t h, const void *p, size_t n)
{
	const unsigned char *s = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ s[i]) * 0x100000001b3ull;
	return h;
}

/* A borrowed slice: never owns its bytes. */
struct iov {
	const char *base;
	size_t len;
};

#define IOV_LIT(s) ((struct iov){(s), sizeof(s) - 1})
#define IOV_NULL ((struct iov){NULL, 0})

static inline struct iov iov_of(const char *s) { return (struct iov){s, s ? strlen(s) : 0}; }

static inline bool iov_eq(struct iov a, const char *lit)
{
	size_t n = strlen(lit);
	return a.len == n && memcmp(a.base, lit, n) == 0;
}

static inline bool iov_eq_ci(struct iov a, const char *lit)
{
	size_t n = strlen(lit);
	return a.len == n && strncasecmp(a.base, lit, n) == 0;
}

static inline bool iov_starts(struct iov a, const char *lit)
{
	size_t n = strlen(lit);
	return a.len >= n && memcmp(a.base, lit, n) == 0;
}

static inline bool iov_starts_ci(struct iov a, const char *lit)
{
	size_t n = strlen(lit);
	return a.len >= n && strncasecmp(a.base, lit, n) == 0;
}

/* Parses a non-negative decimal integer spanning all of s; -1 if it is not one or overflows. */
int64_t str_to_i64(const char *s, size_t n);

#endif
