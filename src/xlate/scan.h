/* scan.h - a one-pass, validating reader of a few JSON members, for stream events without a tree */
#ifndef MERIDIAN_XLATE_SCAN_H
#define MERIDIAN_XLATE_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/*
 * The scanner accepts a strict subset of what json_loadb(..., 0, ...) accepts, so that a reader
 * built on it can fall back to the tree for everything else and translate exactly as before:
 * it refuses (returns NULL) invalid JSON and also valid JSON it is not sure of: "\u0000", an
 * integer of more than 18 digits, a number with an exponent, nesting deeper than
 * XSCAN_MAX_DEPTH, a member name holding an escape, a name asked for twice in one object.
 */
#define XSCAN_MAX_DEPTH 32

enum { XJ_ABSENT, XJ_NULL, XJ_STRING, XJ_INT, XJ_OBJECT, XJ_ARRAY, XJ_OTHER };

/* A value in the text, borrowed (valid while the text is). A string's [p, end) is its content
 * between the quotes, escapes kept (esc: it holds one); a container's or scalar's is its text. */
struct xscan_val {
	int type;          /* XJ_*; XJ_OTHER: true, false or a number that is not an integer */
	const char *p, *end;
	int64_t i;         /* XJ_INT */
	bool esc;          /* XJ_STRING */
};

/* Past the whitespace at p. */
const char *xlate__scan_ws(const char *p, const char *end);

/* Reads (and validates) the JSON value at p into v; returns the end of it, or NULL. */
const char *xlate__scan_value(const char *p, const char *end, struct xscan_val *v);

/*
 * Reads the object at p (whitespace before it allowed), validating every member, and fills
 * vals[i] for each names[i] (n at most 16) it holds, XJ_ABSENT for the others. Returns the end
 * of the object, or NULL (invalid, unsure, or a name of names present twice).
 */
const char *xlate__scan_object(const char *p, const char *end, const char *const *names,
			       size_t n, struct xscan_val *vals);

/*
 * The members names[i] of o (a value the scanner read, so already validated: only boundaries
 * are looked for) into vals[i], all XJ_ABSENT when o is not an object. False only for a name of
 * names present twice.
 */
bool xlate__scan_members(const struct xscan_val *o, const char *const *names, size_t n,
			 struct xscan_val *vals);

/* The next element of the array a (as scan_value read it) after *it (NULL: the first) into v;
 * false at the end. */
bool xlate__scan_next(const struct xscan_val *a, const char **it, struct xscan_val *v);

/* Whether the string v equals lit (no escapes in v). */
bool xlate__scan_is(const struct xscan_val *v, const char *lit);

/*
 * Appends the string v (XJ_STRING, as scanned) as a quoted JSON string, byte for byte what
 * buf_append_json_str gives for its decoded value: runs without escapes are copied, escapes are
 * decoded and written again the way buf_append_json_str writes that character.
 */
void xlate__scan_put(struct buf *out, const struct xscan_val *v);

/* Tests: true sends every event through the jansson tree (the differential check). */
extern bool xlate__scan_off;

#endif
