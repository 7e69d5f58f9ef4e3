/* walk.c - YAML (libyaml events) to a positioned node tree, and the directive-table walker */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "conf/conf.h"
#include "conf/walk.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/str.h"

/* Deeper than any sane config; bounds the recursion of the walk and of the free. */
#define MAX_DEPTH 64
/* Longest value echoed back in an error message. */
#define ECHO_MAX 40

/* ---- errors ---------------------------------------------------------------------------- */

/* Keys that would make a dotted path ambiguous are written as ["key"]. */
static void path_append_key(struct buf *b, const char *key, bool first)
{
	bool plain = *key != '\0';
	for (const char *p = key; *p; p++)
		if (*p == '.' || *p == '[' || *p == ']' || *p == '"' || *p == '\'' ||
		    (unsigned char)*p <= ' ')
			plain = false;
	if (plain) {
		if (!first)
			buf_puts(b, ".");
		buf_puts(b, key);
		return;
	}
	buf_puts(b, "[\"");
	for (const char *p = key; *p; p++) {
		if ((unsigned char)*p < ' ' || *p == 0x7f)
			buf_appendf(b, "\\x%02x", (unsigned char)*p);
		else
			buf_append(b, p, 1);
	}
	buf_puts(b, "\"]");
}

static void node_path(struct buf *b, const struct cnode *n)
{
	const struct cnode *chain[MAX_DEPTH + 2];
	size_t depth = 0;
	for (; n && n->parent && depth < ARRAY_SIZE(chain); n = n->parent)
		chain[depth++] = n;
	while (depth--) {
		n = chain[depth];
		if (n->key)
			path_append_key(b, n->key, b->len == 0);
		else
			buf_appendf(b, "[%zu]", n->index);
	}
}

int conf__fail_at(struct walk *w, const struct cnode *pos, const struct cnode *path_of,
		  const char *leaf, const char *fmt, ...)
{
	struct buf path = BUF_INIT, msg = BUF_INIT;
	va_list ap;

	if (path_of)
		node_path(&path, path_of);
	if (leaf)
		path_append_key(&path, leaf, path.len == 0);
	if (pos)
		buf_appendf(&msg, "%s:%d:%d: ", w->name, pos->line, pos->col);
	else
		buf_appendf(&msg, "%s: ", w->name);
	if (path.len)
		buf_appendf(&msg, "key '%s': ", path.data);
	va_start(ap, fmt);
	buf_vappendf(&msg, fmt, ap);
	va_end(ap);
	if (w->errlen)
		snprintf(w->err, w->errlen, "%s", msg.data);
	buf_release(&path);
	buf_release(&msg);
	return -1;
}

void conf__origin_add(struct walk *w, const void *addr, const struct cnode *n)
{
	if (w->norigins == w->corigins) {
		w->corigins = w->corigins ? 2 * w->corigins : 64;
		w->origins = xrealloc(w->origins, w->corigins * sizeof(*w->origins));
	}
	w->origins[w->norigins++] = (struct origin){addr, n};
}

const struct cnode *conf__origin(const struct walk *w, const void *addr)
{
	for (size_t i = 0; i < w->norigins; i++)
		if (w->origins[i].addr == addr)
			return w->origins[i].node;
	return NULL;
}

int conf__fail_field(struct walk *w, const void *addr, const char *fmt, ...)
{
	const struct cnode *n = conf__origin(w, addr);
	char msg[512];

	if (!n)
		n = w->root;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return conf__fail(w, n, "%s", msg);
}

/* ---- the node tree ------------------------------------------------------------------------- */

bool conf__node_is_null(const struct cnode *n)
{
	return n->type == CNODE_SCALAR && n->plain &&
	       (n->len == 0 || !strcmp(n->str, "~") || !strcmp(n->str, "null") ||
		!strcmp(n->str, "Null") || !strcmp(n->str, "NULL"));
}

void conf__node_free(struct cnode *n)
{
	if (!n)
		return;
	for (size_t i = 0; i < n->n; i++)
		conf__node_free(n->items[i]);
	free(n->items);
	free(n->str);
	free(n);
}

static struct cnode *node_new(enum cnode_type type, const yaml_event_t *ev)
{
	struct cnode *n = xcalloc(1, sizeof(*n));
	n->type = type;
	n->line = (int)ev->start_mark.line + 1;
	n->col = (int)ev->start_mark.column + 1;
	return n;
}

/* Attaches n under parent; in a map, every other child is a key and names the next one. */
static int node_attach(struct walk *w, struct cnode *parent, struct cnode *n)
{
	n->parent = parent;
	if (parent->type == CNODE_MAP) {
		if (parent->n % 2 == 0) {
			if (n->type != CNODE_SCALAR)
				return conf__fail_at(w, n, parent, NULL,
						     "a key must be a plain string, not a %s",
						     n->type == CNODE_MAP ? "mapping" : "list");
			n->key = n->str;
		} else {
			n->key = parent->items[parent->n - 1]->str;
		}
	} else {
		n->index = parent->n;
	}
	if (parent->n == parent->cap) {
		parent->cap = parent->cap ? 2 * parent->cap : 8;
		parent->items = xrealloc(parent->items, parent->cap * sizeof(*parent->items));
	}
	parent->items[parent->n++] = n;
	return 0;
}

static void yaml_fail(struct walk *w, const yaml_parser_t *p, const char *yaml, size_t len)
{
	yaml_mark_t m = p->problem_mark;
	const char *problem = p->problem ? p->problem : "cannot parse";

	if (p->error == YAML_READER_ERROR) {
		/* reader errors (bad UTF-8, control characters) only know a byte offset: count the
		 * lines, and the characters (UTF-8 lead bytes) since the last one, as marks do */
		m.line = m.column = 0;
		for (size_t i = 0; i < p->problem_offset && i < len; i++) {
			if (yaml[i] == '\n')
				m.line++, m.column = 0;
			else if (((unsigned char)yaml[i] & 0xc0) != 0x80)
				m.column++;
		}
		snprintf(w->err, w->errlen, "%s:%zu:%zu: invalid YAML: %s", w->name, m.line + 1,
			 m.column + 1, problem);
		return;
	}
	if (p->context)
		snprintf(w->err, w->errlen,
			 "%s:%zu:%zu: invalid YAML: %s (%s at line %zu, column %zu)", w->name,
			 m.line + 1, m.column + 1, problem, p->context, p->context_mark.line + 1,
			 p->context_mark.column + 1);
	else
		snprintf(w->err, w->errlen, "%s:%zu:%zu: invalid YAML: %s", w->name, m.line + 1,
			 m.column + 1, problem);
}

struct cnode *conf__yaml_parse(struct walk *w, const char *yaml, size_t len)
{
	yaml_parser_t p;
	yaml_event_t ev;
	struct cnode *root = NULL, *stack[MAX_DEPTH];
	size_t depth = 0;
	int docs = 0;
	bool done = false, ok = false;

	if (!yaml_parser_initialize(&p)) {
		snprintf(w->err, w->errlen, "%s: cannot initialise the YAML parser", w->name);
		return NULL;
	}
	yaml_parser_set_input_string(&p, (const unsigned char *)yaml, len);
	yaml_parser_set_encoding(&p, YAML_UTF8_ENCODING);
	while (!done) {
		struct cnode *n = NULL;
		if (!yaml_parser_parse(&p, &ev)) {
			yaml_fail(w, &p, yaml, len);
			goto out;
		}
		switch (ev.type) {
		case YAML_DOCUMENT_START_EVENT:
			if (++docs > 1) {
				snprintf(w->err, w->errlen,
					 "%s:%zu:%zu: a config holds one YAML document, this is a "
					 "second one",
					 w->name, ev.start_mark.line + 1, ev.start_mark.column + 1);
				goto fail_ev;
			}
			break;
		case YAML_ALIAS_EVENT:
			/* expanding aliases invites exponential "billion laughs" documents */
			n = node_new(CNODE_SCALAR, &ev);
			n->len = strlen((const char *)ev.data.alias.anchor) + 1;
			n->str = xmalloc(n->len + 1);
			snprintf(n->str, n->len + 1, "*%s", ev.data.alias.anchor);
			/* attached (a scalar always attaches) only so the message can name its key */
			if (depth)
				node_attach(w, stack[depth - 1], n);
			conf__fail(w, n, "YAML aliases (%s) are not supported", n->str);
			if (!depth)
				conf__node_free(n);
			goto fail_ev;
		case YAML_SCALAR_EVENT:
			n = node_new(CNODE_SCALAR, &ev);
			n->len = ev.data.scalar.length;
			n->str = xstrndup((const char *)ev.data.scalar.value, n->len);
			/* strndup stops at an inner NUL; keep the real length so readers can refuse it */
			n->plain =
			    ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !ev.data.scalar.tag;
			break;
		case YAML_SEQUENCE_START_EVENT:
			n = node_new(CNODE_SEQ, &ev);
			break;
		case YAML_MAPPING_START_EVENT:
			n = node_new(CNODE_MAP, &ev);
			break;
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			depth--;
			break;
		case YAML_STREAM_END_EVENT:
			done = true;
			break;
		default:
			break;
		}
		if (n) {
			if (depth == 0) {
				root = n;
			} else if (node_attach(w, stack[depth - 1], n) < 0) {
				conf__node_free(n);
				goto fail_ev;
			}
			if (n->type != CNODE_SCALAR) {
				if (depth == MAX_DEPTH) {
					conf__fail(w, n, "nested deeper than %d levels", MAX_DEPTH);
					goto fail_ev;
				}
				stack[depth++] = n;
			}
		}
		yaml_event_delete(&ev);
	}
	if (!root) {
		/* an empty file: a null document, which reads as an empty mapping */
		yaml_event_t empty = {.start_mark = {0, 0, 0}};
		root = node_new(CNODE_SCALAR, &empty);
		root->plain = true;
		root->str = xstrdup("");
	}
	ok = true;
	goto out;
fail_ev:
	yaml_event_delete(&ev);
out:
	yaml_parser_delete(&p);
	if (!ok) {
		conf__node_free(root);
		return NULL;
	}
	return root;
}

/* ---- duplicates ---------------------------------------------------------------------------------- */

struct ordered {
	const char *s;
	size_t i;
};

static int ordered_cmp(const void *a, const void *b)
{
	const struct ordered *x = a, *y = b;
	int c = strcmp(x->s, y->s);
	return c ? c : (x->i > y->i) - (x->i < y->i);
}

size_t conf__find_dup(const char *const *s, size_t n, size_t *first)
{
	struct ordered *v = xcalloc(n ? n : 1, sizeof(*v));
	size_t dup = SIZE_MAX;

	for (size_t i = 0; i < n; i++)
		v[i] = (struct ordered){s[i], i};
	qsort(v, n, sizeof(*v), ordered_cmp);
	/* equal strings are adjacent and in input order: each run's head is the first use */
	for (size_t i = 1, head = 0; i < n; i++) {
		if (strcmp(v[i].s, v[head].s)) {
			head = i;
		} else if (v[i].i < dup) {
			dup = v[i].i;
			*first = v[head].i;
		}
	}
	free(v);
	return dup;
}

/* ---- suggestions ----------------------------------------------------------------------------- */

static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[64];
	if (la >= ARRAY_SIZE(row) || lb >= ARRAY_SIZE(row))
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

const char *conf__suggest(const char *s, const char *const *candidates, size_t n)
{
	const char *best = NULL;
	size_t best_d = SIZE_MAX, len = strlen(s);
	/* a third of the word, at least one edit: catches typos, not unrelated words */
	size_t limit = len / 3 > 1 ? len / 3 : 1;

	for (size_t i = 0; i < n; i++) {
		size_t d = edit_distance(s, candidates[i]);
		if (d < best_d) {
			best_d = d;
			best = candidates[i];
		}
	}
	return best_d <= limit ? best : NULL;
}

/* ---- scalar readers ------------------------------------------------------------------------ */

static const char *type_name(const struct cnode *n)
{
	if (n->type == CNODE_MAP)
		return "a mapping";
	if (n->type == CNODE_SEQ)
		return "a list";
	return conf__node_is_null(n) ? "nothing" : NULL;
}

/* Fails with "expected WHAT, got ..." describing what n is. */
static int expected(struct walk *w, const struct cnode *n, const char *what)
{
	const char *t = type_name(n);
	if (t)
		return conf__fail(w, n, "expected %s, got %s", what, t);
	return conf__fail(w, n, "expected %s, got '%.*s%s'", what, ECHO_MAX, n->str,
			  n->len > ECHO_MAX ? "..." : "");
}

int conf__get_str(struct walk *w, const struct cnode *n, const char **out)
{
	if (n->type != CNODE_SCALAR || conf__node_is_null(n))
		return expected(w, n, "a string");
	if (strlen(n->str) != n->len)
		return conf__fail(w, n, "contains a NUL character");
	*out = n->str;
	return 0;
}

static int get_i64(struct walk *w, const struct cnode *n, int64_t min, int64_t max, int64_t *out)
{
	int64_t v = -1;
	if (n->type == CNODE_SCALAR && n->plain)
		v = str_to_i64(n->str, n->len);
	if (v < 0)
		return expected(w, n, "a non-negative integer");
	if (v < min || (max && v > max)) {
		if (max)
			return conf__fail(w, n, "must be between %lld and %lld, got %lld",
					  (long long)min, (long long)max, (long long)v);
		return conf__fail(w, n, "must be at least %lld, got %lld", (long long)min,
				  (long long)v);
	}
	*out = v;
	return 0;
}

int conf__get_double(struct walk *w, const struct cnode *n, double *out)
{
	char *end = NULL;
	double v = 0;
	if (n->type == CNODE_SCALAR && n->plain && n->len && strlen(n->str) == n->len &&
	    strchr("+-.0123456789", n->str[0])) {
		errno = 0;
		v = strtod(n->str, &end);
	}
	if (!end || *end || errno || !isfinite(v))
		return expected(w, n, "a number");
	*out = v;
	return 0;
}

static int get_bool(struct walk *w, const struct cnode *n, bool *out)
{
	static const char *const yes[] = {"true", "True", "TRUE"}, *const no[] = {"false", "False",
										  "FALSE"};
	if (n->type == CNODE_SCALAR && n->plain) {
		for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
			if (!strcmp(n->str, yes[i]))
				return *out = true, 0;
			if (!strcmp(n->str, no[i]))
				return *out = false, 0;
		}
	}
	return expected(w, n, "true or false");
}

/* An enum written as one of d->names; stored as its index. */
static int get_enum(struct walk *w, const struct dir *d, const struct cnode *n, void *field)
{
	struct buf all = BUF_INIT;
	int rc;

	for (int i = 0; n->type == CNODE_SCALAR && d->names[i]; i++) {
		if (!strcmp(n->str, d->names[i]) && strlen(n->str) == n->len) {
			memcpy(field, &i, sizeof(i));
			return 0;
		}
	}
	for (size_t i = 0; d->names[i]; i++)
		buf_appendf(&all, "%s%s", i ? (d->names[i + 1] ? ", " : " or ") : "", d->names[i]);
	rc = expected(w, n, all.data);
	buf_release(&all);
	return rc;
}

/* ---- the walker -------------------------------------------------------------------------------- */

static int walk_value(struct walk *w, const struct dir *d, const struct cnode *n, void *base);

static int walk_loc(struct walk *w, const struct dir *d, const struct cnode *n, char *base)
{
	double lat, lon;
	if (n->type != CNODE_SEQ || n->n != 2)
		return expected(w, n, "a location [latitude, longitude]");
	if (conf__get_double(w, n->items[0], &lat) < 0 ||
	    conf__get_double(w, n->items[1], &lon) < 0)
		return -1;
	if (lat < -90 || lat > 90)
		return conf__fail(w, n->items[0], "latitude must be between -90 and 90, got %g",
				  lat);
	if (lon < -180 || lon > 180)
		return conf__fail(w, n->items[1], "longitude must be between -180 and 180, got %g",
				  lon);
	memcpy(base + d->off, &lat, sizeof(lat));
	memcpy(base + d->off2, &lon, sizeof(lon));
	conf__origin_add(w, base + d->off, n);
	conf__origin_add(w, base + d->off2, n);
	return 0;
}

static int walk_strs(struct walk *w, const struct dir *d, const struct cnode *n, char *base)
{
	char ***dst = (char ***)(void *)(base + d->off);
	size_t *count = (size_t *)(void *)(base + d->off2);
	const char *s;

	if (n->type != CNODE_SEQ && !conf__node_is_null(n))
		return expected(w, n, "a list of strings");
	conf__origin_add(w, dst, n);
	*dst = xcalloc(n->n + 1, sizeof(char *));
	for (size_t i = 0; i < n->n; i++) {
		if (conf__get_str(w, n->items[i], &s) < 0)
			return -1;
		(*dst)[i] = xstrdup(s);
		*count = i + 1;
		conf__origin_add(w, &(*dst)[i], n->items[i]);
	}
	return 0;
}

/* T_LIST and T_NAMED: the array is sized once from the node so that recorded field addresses
 * stay valid; its count grows as elements fill, so a failed walk frees what it built. */
static int walk_array(struct walk *w, const struct dir *d, const struct cnode *n, char *base)
{
	void **dst = (void **)(void *)(base + d->off);
	size_t *count = (size_t *)(void *)(base + d->off2);
	bool named = d->type == T_NAMED;
	size_t nel;

	conf__origin_add(w, dst, n);
	if (conf__node_is_null(n))
		return 0;
	if (named ? n->type != CNODE_MAP : n->type != CNODE_SEQ)
		return expected(w, n, named ? "a mapping of names" : "a list");
	nel = named ? n->n / 2 : n->n;
	if (nel == 0)
		return 0;
	if (named) {
		const char **names = xcalloc(nel, sizeof(*names));
		size_t dup, first = 0;
		for (size_t i = 0; i < nel; i++)
			names[i] = n->items[2 * i]->str;
		dup = conf__find_dup(names, nel, &first);
		free(names);
		if (dup != SIZE_MAX) {
			const struct cnode *key = n->items[2 * dup], *prev = n->items[2 * first];
			return conf__fail(w, key, "duplicate key (first at line %d, column %d)",
					  prev->line, prev->col);
		}
	}
	*dst = xcalloc(nel, d->size);
	for (size_t i = 0; i < nel; i++) {
		char *el = (char *)*dst + i * d->size;
		const struct cnode *val = named ? n->items[2 * i + 1] : n->items[i];
		*count = i + 1;
		if (named) {
			const struct cnode *key = n->items[2 * i];
			if (strlen(key->str) != key->len || key->len == 0)
				return conf__fail(w, key, "a name must be a non-empty string");
			*(char **)(void *)el = xstrdup(key->str);
			conf__origin_add(w, el, key);
		}
		if (conf__walk_map(w, val, d->sub, el) < 0)
			return -1;
	}
	return 0;
}

static int walk_value(struct walk *w, const struct dir *d, const struct cnode *n, void *vbase)
{
	char *base = vbase;
	void *field = base + d->off;
	int64_t v;

	switch (d->type) {
	case T_STR: {
		const char *s;
		if (conf__get_str(w, n, &s) < 0)
			return -1;
		char **dst = field;
		free(*dst);
		*dst = xstrdup(s);
		break;
	}
	case T_BOOL:
		if (get_bool(w, n, field) < 0)
			return -1;
		break;
	case T_UINT:
		if (get_i64(w, n, d->min, d->max ? d->max : UINT_MAX, &v) < 0)
			return -1;
		*(unsigned *)field = (unsigned)v;
		break;
	case T_U64:
		if (get_i64(w, n, d->min, d->max, &v) < 0)
			return -1;
		*(uint64_t *)field = (uint64_t)v;
		break;
	case T_DOUBLE: {
		double x;
		if (conf__get_double(w, n, &x) < 0)
			return -1;
		if ((d->flags & D_NONNEG) && x < 0)
			return conf__fail(w, n, "must be 0 or more, got %g", x);
		*(double *)field = x;
		break;
	}
	case T_DURATION:
	case T_SIZE: {
		bool dur = d->type == T_DURATION;
		v = -1;
		if (n->type == CNODE_SCALAR && strlen(n->str) == n->len)
			v = dur ? conf_parse_duration_ms(n->str) : conf_parse_size(n->str);
		if (v < 0)
			return expected(w, n,
					dur ? "a duration like 30s (units ms, s, m, h, d)"
					    : "a size like 256MiB (units KiB, MiB, GiB, or bytes)");
		if (v < d->min)
			return conf__fail(w, n, "must be more than 0");
		*(uint64_t *)field = (uint64_t)v;
		break;
	}
	case T_ENUM:
		if (get_enum(w, d, n, field) < 0)
			return -1;
		break;
	case T_LOC:
		return walk_loc(w, d, n, base);
	case T_STRS:
		return walk_strs(w, d, n, base);
	case T_MAP:
		return conf__walk_map(w, n, d->sub, field);
	case T_LIST:
	case T_NAMED:
		return walk_array(w, d, n, base);
	case T_FN:
		return d->fn(w, n, base);
	}
	conf__origin_add(w, field, n);
	return 0;
}

int conf__walk_map(struct walk *w, const struct cnode *map, const struct dir *dirs, void *base)
{
	const struct cnode *seen[32] = {0};
	const char *names[ARRAY_SIZE(seen)];
	size_t ndirs = 0;

	for (; dirs[ndirs].key; ndirs++) {
		if (ndirs == ARRAY_SIZE(names))
			abort(); /* a table this long is a programming error; raise the bound */
		names[ndirs] = dirs[ndirs].key;
	}
	if (map->type != CNODE_MAP && !conf__node_is_null(map))
		return expected(w, map, "a mapping");
	for (size_t i = 0; i + 1 < map->n; i += 2) {
		const struct cnode *key = map->items[i], *val = map->items[i + 1];
		size_t d;
		for (d = 0; d < ndirs; d++)
			if (!strcmp(key->str, dirs[d].key) && strlen(key->str) == key->len)
				break;
		if (d == ndirs) {
			const char *s = conf__suggest(key->str, names, ndirs);
			if (s)
				return conf__fail(w, key, "unknown key; did you mean '%s'?", s);
			return conf__fail(w, key, "unknown key");
		}
		if (seen[d])
			return conf__fail(w, key, "duplicate key (first at line %d, column %d)",
					  seen[d]->line, seen[d]->col);
		seen[d] = key;
		if (walk_value(w, &dirs[d], val, base) < 0)
			return -1;
	}
	for (size_t d = 0; d < ndirs; d++)
		if ((dirs[d].flags & D_REQ) && !seen[d])
			return conf__fail_at(w, map, map, dirs[d].key, "required key is missing");
	return 0;
}
