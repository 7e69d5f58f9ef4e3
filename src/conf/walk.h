/* walk.h - conf internals: YAML node tree with positions, and the table-driven directive walker */
#ifndef MERIDIAN_CONF_WALK_H
#define MERIDIAN_CONF_WALK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The YAML document is first read into a tree of cnodes that remember where they were written,
 * then a walk over per-mapping directive tables turns it into struct conf. The tree stays alive
 * until validation ends so that every semantic error can point at the value at fault: the walk
 * records, for each struct field it fills, the node it came from (an "origin").
 */

enum cnode_type { CNODE_SCALAR, CNODE_SEQ, CNODE_MAP };

struct cnode {
	enum cnode_type type;
	int line, col;                  /* 1-based, where the node starts */
	bool plain;                     /* scalar written without quotes: `true`, `12`, `~` mean what YAML says */
	char *str;                      /* scalar: the text, NUL-terminated (may hold an inner NUL: see len) */
	size_t len;
	struct cnode **items;           /* seq: the items; map: key, value, key, value, ... */
	size_t n;                       /* number of items (a map holds n / 2 pairs) */
	size_t cap;
	const struct cnode *parent;     /* NULL for the document root */
	const char *key;                /* a map's key or value node: the key text; NULL in a seq */
	size_t index;                   /* a seq item: its position */
};

/* The walk's state: where messages go, and the field origins recorded so far. */
struct walk {
	const char *name;               /* file name used in messages */
	const struct cnode *root;       /* where errors without a recorded origin point */
	char *err;
	size_t errlen;
	struct origin {
		const void *addr;
		const struct cnode *node;
	} *origins;
	size_t norigins, corigins;
};

/* Parses yaml into a tree. Returns a new tree, or NULL after writing "NAME:LINE:COL: ..." into
 * w->err. An empty document gives a null scalar root. Aliases and multiple documents are refused. */
struct cnode *conf__yaml_parse(struct walk *w, const char *yaml, size_t len);
void conf__node_free(struct cnode *n);
/* A plain empty, `~` or `null` scalar. */
bool conf__node_is_null(const struct cnode *n);

/* Writes "NAME:LINE:COL: key 'a.b[1].c': message" into w->err, positioned at pos and naming the
 * key path of path_of (plus ".leaf" when leaf is not NULL). Returns -1 for `return conf__fail()`. */
int conf__fail_at(struct walk *w, const struct cnode *pos, const struct cnode *path_of,
		  const char *leaf, const char *fmt, ...) __attribute__((format(printf, 5, 6)));
#define conf__fail(w, n, ...) conf__fail_at((w), (n), (n), NULL, __VA_ARGS__)
/* Same, at the node recorded for the struct field addr (the document root if none was). */
int conf__fail_field(struct walk *w, const void *addr, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

void conf__origin_add(struct walk *w, const void *addr, const struct cnode *n);
const struct cnode *conf__origin(const struct walk *w, const void *addr);

/* Among s[0..n), the first string (in order) equal to an earlier one: returns its index and
 * puts the earlier one's in *first. SIZE_MAX if all differ. O(n log n). */
size_t conf__find_dup(const char *const *s, size_t n, size_t *first);

/* The candidate closest to s by edit distance, if close enough to be a likely typo; else NULL. */
const char *conf__suggest(const char *s, const char *const *candidates, size_t n);

/*
 * A directive: one key of a mapping, its type and where it lands. Offsets are relative to the
 * struct that the mapping fills (the "base"). Tables end with a zeroed entry.
 */
enum dir_type {
	T_STR,          /* char * */
	T_BOOL,         /* bool */
	T_UINT,         /* unsigned, within [min, max] (max 0: UINT_MAX) */
	T_U64,          /* uint64_t, within [min, max] (max 0: none) */
	T_DOUBLE,       /* double, finite; >= 0 with D_NONNEG */
	T_DURATION,     /* uint64_t milliseconds, >= min */
	T_SIZE,         /* uint64_t bytes, >= min */
	T_ENUM,         /* int-sized enum: index of the value in names */
	T_LOC,          /* [lat, lon]: double at off (latitude) and at off2 (longitude) */
	T_STRS,         /* char ** NULL-terminated, with its size_t count at off2 */
	T_MAP,          /* a sub-mapping filling the struct at base + off with sub */
	T_LIST,         /* a sequence of mappings: array of size-byte elements at off, count at off2 */
	T_NAMED,        /* a mapping name -> mapping: same, and each element's first member is char *name */
	T_FN,           /* anything else: fn(w, node, base) */
};

#define D_REQ    (1u << 0)      /* the key must be present */
#define D_NONNEG (1u << 1)      /* T_DOUBLE: >= 0 */

struct walk;
typedef int (*dir_fn)(struct walk *w, const struct cnode *n, void *base);

struct dir {
	const char *key;
	enum dir_type type;
	size_t off;
	unsigned flags;
	size_t off2;
	const struct dir *sub;          /* T_MAP, T_LIST, T_NAMED */
	size_t size;                    /* T_LIST, T_NAMED: element size */
	int64_t min, max;
	const char *const *names;       /* T_ENUM: NULL-terminated */
	dir_fn fn;                      /* T_FN */
};

/* Fills base from map following dirs: unknown keys, duplicates, missing required keys and wrong
 * types are errors. A null value counts as an empty mapping. Returns 0 or -1 (w->err set). */
int conf__walk_map(struct walk *w, const struct cnode *map, const struct dir *dirs, void *base);

/* Scalar readers shared with the T_FN handlers; -1 after writing the error. */
int conf__get_str(struct walk *w, const struct cnode *n, const char **out);
int conf__get_double(struct walk *w, const struct cnode *n, double *out);

#endif
