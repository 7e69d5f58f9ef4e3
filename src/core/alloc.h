/* alloc.h - allocation wrappers that abort, naming the call site, when memory runs out */
#ifndef MERIDIAN_CORE_ALLOC_H
#define MERIDIAN_CORE_ALLOC_H

#include <stddef.h>
#include <stdlib.h>

void *m__malloc(size_t n, const char *file, int line);
void *m__calloc(size_t nmemb, size_t n, const char *file, int line);
void *m__realloc(void *p, size_t n, const char *file, int line);
char *m__strndup(const char *s, size_t n, const char *file, int line);

/* Never return NULL: an allocation failure aborts the process with file and line. */
#define xmalloc(n) m__malloc((n), __FILE__, __LINE__)
#define xcalloc(c, n) m__calloc((c), (n), __FILE__, __LINE__)
#define xrealloc(p, n) m__realloc((p), (n), __FILE__, __LINE__)
#define xstrndup(s, n) m__strndup((s), (n), __FILE__, __LINE__)
#define xstrdup(s) m__strndup((s), strlen(s), __FILE__, __LINE__)

/* Frees and clears the pointer so no stale copy stays reachable. */
#define xfree(p) do { free(p); (p) = NULL; } while (0)

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
#endif

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
