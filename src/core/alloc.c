/* alloc.c - allocation wrappers that abort, naming the call site, when memory runs out */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

static void oom(size_t n, const char *file, int line)
{
	fprintf(stderr, "meridian: out of memory allocating %zu bytes at %s:%d\n", n, file, line);
	abort();
}

void *m__malloc(size_t n, const char *file, int line)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		oom(n, file, line);
	return p;
}

void *m__calloc(size_t nmemb, size_t n, const char *file, int line)
{
	void *p = calloc(nmemb ? nmemb : 1, n ? n : 1);
	if (!p)
		oom(nmemb * n, file, line);
	return p;
}

void *m__realloc(void *p, size_t n, const char *file, int line)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		oom(n, file, line);
	return q;
}

char *m__strndup(const char *s, size_t n, const char *file, int line)
{
	char *p = m__malloc(n + 1, file, line);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}
