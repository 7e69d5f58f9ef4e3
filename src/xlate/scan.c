/* scan.c - a one-pass, validating reader of a few JSON members, for stream events without a tree */
#include <string.h>

#include "xlate/scan.h"

bool xlate__scan_off;

const char *xlate__scan_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

static int hex4(const char *p)
{
	int v = 0;
	for (int k = 0; k < 4; k++) {
		char c = p[k];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			return -1;
	}
	return v;
}

/* The length of the UTF-8 sequence at p (RFC 3629: no overlong form, no surrogate, nothing past
 * U+10FFFF, as jansson checks), or 0. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
	unsigned c = p[0];
	size_t n;
	unsigned lo = 0x80, hi = 0xbf;

	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return 0;
	if ((size_t)(end - p) < n)
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (size_t k = 2; k < n; k++)
		if (p[k] < 0x80 || p[k] > 0xbf)
			return 0;
	return n;
}

/* The escape at p (its backslash) read as a code point, with *len its length; -1 if invalid or
 * "\u0000" (which the tree refuses). A surrogate pair is one escape of 12 bytes. */
static long escape(const char *p, const char *end, size_t *len)
{
	long cp, lo;

	if (end - p < 2)
		return -1;
	*len = 2;
	switch (p[1]) {
	case '"': return '"';
	case '\\': return '\\';
	case '/': return '/';
	case 'b': return '\b';
	case 'f': return '\f';
	case 'n': return '\n';
	case 'r': return '\r';
	case 't': return '\t';
	case 'u': break;
	default: return -1;
	}
	if (end - p < 6 || (cp = hex4(p + 2)) <= 0)
		return -1;
	*len = 6;
	if (cp >= 0xdc00 && cp <= 0xdfff)
		return -1;
	if (cp < 0xd800 || cp > 0xdbff)
		return cp;
	if (end - p < 12 || p[6] != '\\' || p[7] != 'u' || (lo = hex4(p + 8)) < 0xdc00 ||
	    lo > 0xdfff)
		return -1;
	*len = 12;
	return 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
}

/* Past the string at p (its opening quote), validated, or NULL. trust: the text was validated
 * before, only its end is looked for (memchr finds each candidate quote; one preceded by an odd
 * run of backslashes is escaped). */
static const char *string(const char *p, const char *end, bool *esc, bool trust)
{
	const unsigned char *u = (const unsigned char *)p + 1, *e = (const unsigned char *)end;

	if (trust) {
		const char *s = p + 1, *q;
		for (p = s; (q = memchr(p, '"', (size_t)(end - p))); p = q + 1) {
			const char *b = q;
			while (b > s && b[-1] == '\\')
				b--;
			if (((q - b) & 1) == 0) {
				*esc = memchr(s, '\\', (size_t)(q - s)) != NULL;
				return q + 1;
			}
		}
		return NULL;
	}
	*esc = false;
	while (u < e) {
		unsigned c = *u;
		if (c - 0x20u < 0x5f && c != '"' && c != '\\') {  /* printable ASCII, as it is */
			u++;
		} else if (c == '"') {
			return (const char *)u + 1;
		} else if (c == '\\') {
			size_t n;
			if (escape((const char *)u, end, &n) < 0)
				return NULL;
			*esc = true;
			u += n;
		} else if (c >= 0x80) {
			size_t n = utf8_len(u, e);
			if (!n)
				return NULL;
			u += n;
		} else {
			return NULL;  /* a raw control character */
		}
	}
	return NULL;
}

/* Past the number at p, or NULL; an integer of at most 18 digits is read into *i. */
static const char *number(const char *p, const char *end, struct xscan_val *v)
{
	const char *s = p, *d;
	bool neg = false;
	int64_t n = 0;

	if (p < end && *p == '-') {
		neg = true;
		p++;
	}
	d = p;
	if (p >= end || *p < '0' || *p > '9')
		return NULL;
	if (*p == '0')
		p++;
	else
		while (p < end && *p >= '0' && *p <= '9') {
			/* past 18 digits an integer may be out of range (and a real's overflow is
			 * the tree's call) */
			if (p - d == 18)
				return NULL;
			n = n * 10 + (*p++ - '0');
		}
	v->type = XJ_INT;
	v->i = neg ? -n : n;
	if (p < end && *p == '.') {
		const char *f = ++p;
		while (p < end && *p >= '0' && *p <= '9')
			p++;
		if (p == f)
			return NULL;
		v->type = XJ_OTHER;
	}
	if (p < end && (*p == 'e' || *p == 'E'))
		return NULL;
	v->p = s;
	v->end = p;
	return p;
}

static const char *value(const char *p, const char *end, struct xscan_val *v, int depth,
			 bool trust);

/* The members of the object at p ('{'); names as scan_object. */
static const char *object(const char *p, const char *end, const char *const *names, size_t n,
			  struct xscan_val *vals, int depth, bool trust)
{
	struct xscan_val tmp;
	bool esc;

	for (size_t k = 0; k < n; k++)
		vals[k].type = XJ_ABSENT;
	p = xlate__scan_ws(p + 1, end);
	if (p < end && *p == '}')
		return p + 1;
	while (p < end && *p == '"') {
		const char *ks = p + 1, *ke = string(p, end, &esc, trust);
		struct xscan_val *into = &tmp;
		if (!ke || esc)
			return NULL;
		size_t klen = (size_t)(ke - 1 - ks);
		for (size_t k = 0; k < n; k++) {
			if (names[k][0] == *ks && !strncmp(names[k], ks, klen) && !names[k][klen]) {
				/* the tree keeps the last of duplicates; rare enough to leave to it */
				if (vals[k].type != XJ_ABSENT)
					return NULL;
				into = &vals[k];
				break;
			}
		}
		p = xlate__scan_ws(ke, end);
		if (p >= end || *p != ':')
			return NULL;
		p = xlate__scan_ws(p + 1, end);
		if (!(p = value(p, end, into, depth, trust)))
			return NULL;
		p = xlate__scan_ws(p, end);
		if (p < end && *p == '}')
			return p + 1;
		if (p >= end || *p != ',')
			return NULL;
		p = xlate__scan_ws(p + 1, end);
	}
	return NULL;
}

static const char *array(const char *p, const char *end, int depth, bool trust)
{
	struct xscan_val tmp;

	p = xlate__scan_ws(p + 1, end);
	if (p < end && *p == ']')
		return p + 1;
	while (p < end) {
		if (!(p = value(p, end, &tmp, depth, trust)))
			return NULL;
		p = xlate__scan_ws(p, end);
		if (p < end && *p == ']')
			return p + 1;
		if (p >= end || *p != ',')
			return NULL;
		p = xlate__scan_ws(p + 1, end);
	}
	return NULL;
}

static bool literal(const char *p, const char *end, const char *lit, size_t n)
{
	return (size_t)(end - p) >= n && !memcmp(p, lit, n);
}

static const char *value(const char *p, const char *end, struct xscan_val *v, int depth,
			 bool trust)
{
	const char *q;

	if (p >= end)
		return NULL;
	v->p = p;
	switch (*p) {
	case '"':
		v->type = XJ_STRING;
		v->p = p + 1;
		if (!(q = string(p, end, &v->esc, trust)))
			return NULL;
		v->end = q - 1;
		return q;
	case '{':
	case '[':
		if (depth >= XSCAN_MAX_DEPTH)
			return NULL;
		v->type = *p == '{' ? XJ_OBJECT : XJ_ARRAY;
		q = *p == '{' ? object(p, end, NULL, 0, NULL, depth + 1, trust)
			      : array(p, end, depth + 1, trust);
		v->end = q;
		return q;
	case 'n':
		v->type = XJ_NULL;
		q = literal(p, end, "null", 4) ? p + 4 : NULL;
		break;
	case 't':
		v->type = XJ_OTHER;
		q = literal(p, end, "true", 4) ? p + 4 : NULL;
		break;
	case 'f':
		v->type = XJ_OTHER;
		q = literal(p, end, "false", 5) ? p + 5 : NULL;
		break;
	default:
		return number(p, end, v);
	}
	v->end = q;
	return q;
}

const char *xlate__scan_value(const char *p, const char *end, struct xscan_val *v)
{
	return value(p, end, v, 0, false);
}

const char *xlate__scan_object(const char *p, const char *end, const char *const *names,
			       size_t n, struct xscan_val *vals)
{
	p = xlate__scan_ws(p, end);
	if (p >= end || *p != '{')
		return NULL;
	return object(p, end, names, n, vals, 0, false);
}

bool xlate__scan_members(const struct xscan_val *o, const char *const *names, size_t n,
			 struct xscan_val *vals)
{
	for (size_t k = 0; k < n; k++)
		vals[k].type = XJ_ABSENT;
	return o->type != XJ_OBJECT || object(o->p, o->end, names, n, vals, 0, true);
}

bool xlate__scan_next(const struct xscan_val *a, const char **it, struct xscan_val *v)
{
	const char *p = *it ? *it : a->p + 1, *end = a->end;

	p = xlate__scan_ws(p, end);
	if (*p == ',')
		p = xlate__scan_ws(p + 1, end);
	if (*p == ']' || !(p = value(p, end, v, 0, true)))
		return false;
	*it = p;
	return true;
}

bool xlate__scan_is(const struct xscan_val *v, const char *lit)
{
	size_t n = strlen(lit);
	return v->type == XJ_STRING && (size_t)(v->end - v->p) == n && !memcmp(v->p, lit, n);
}

void xlate__scan_put(struct buf *out, const struct xscan_val *v)
{
	static const char hex[] = "0123456789abcdef";
	const char *p = v->p, *end = v->end, *b;

	buf_reserve(out, (size_t)(end - p) + 2);
	buf_append(out, "\"", 1);
	while (p < end) {
		if (!v->esc || !(b = memchr(p, '\\', (size_t)(end - p))))
			b = end;
		buf_append(out, p, (size_t)(b - p));
		if (b == end)
			break;
		size_t n;
		long cp = escape(b, end, &n);
		p = b + n;
		if (cp >= 0x20 && cp != '"' && cp != '\\') {
			char u[4];
			size_t k;
			if (cp < 0x80) {
				u[0] = (char)cp;
				k = 1;
			} else if (cp < 0x800) {
				u[0] = (char)(0xc0 | (cp >> 6));
				u[1] = (char)(0x80 | (cp & 0x3f));
				k = 2;
			} else if (cp < 0x10000) {
				u[0] = (char)(0xe0 | (cp >> 12));
				u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
				u[2] = (char)(0x80 | (cp & 0x3f));
				k = 3;
			} else {
				u[0] = (char)(0xf0 | (cp >> 18));
				u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
				u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
				u[3] = (char)(0x80 | (cp & 0x3f));
				k = 4;
			}
			buf_append(out, u, k);
			continue;
		}
		switch (cp) {
		case '"': buf_append(out, "\\\"", 2); break;
		case '\\': buf_append(out, "\\\\", 2); break;
		case '\n': buf_append(out, "\\n", 2); break;
		case '\r': buf_append(out, "\\r", 2); break;
		case '\t': buf_append(out, "\\t", 2); break;
		default: {
			char e[6] = {'\\', 'u', '0', '0', hex[cp >> 4], hex[cp & 15]};
			buf_append(out, e, 6);
		}
		}
	}
	buf_append(out, "\"", 1);
}
