/* dash.h - the dashboard's files (web/, bundled at build time) embedded in the binary */
#ifndef MERIDIAN_CTL_DASH_H
#define MERIDIAN_CTL_DASH_H

#include <stdbool.h>
#include <stddef.h>

#include "core/str.h"

/*
 * One file of the dashboard. The table is generated at build time (web/build.mjs bundles web/src
 * with esbuild, cmake/embed.cmake turns the result into <build>/generated/dash_assets.c), so
 * every pointer is static and read-only: nothing here is ever freed.
 */
struct dash_asset {
	const char *path;          /* relative to /dashboard/: "index.html", "app.js", "app.css" */
	const char *content_type;  /* the content-type value, e.g. "text/javascript; charset=utf-8" */
	const unsigned char *data; /* the file as built (minified) */
	size_t len;
	const unsigned char *gz; /* the same file gzip-compressed, or NULL: serve it with
				  * content-encoding: gzip when dash_gzip_ok() says the client takes it */
	size_t gz_len;
	const char *etag; /* a strong validator, quotes included ("\"<32 hex>\""), from data's SHA-256:
			   * the same for data and gz (send vary: accept-encoding) */
};

/* Every embedded file, sorted by path; index.html is always among them. */
extern const struct dash_asset dash_assets[];
extern const size_t dash_assets_count;

/*
 * The asset at path, the part of the request path after "/dashboard/" (query string already cut
 * off): "" means index.html. Compared byte for byte: no leading '/', no "..", no decoding, no
 * case folding. Returns a borrowed pointer into the static table, or NULL.
 */
const struct dash_asset *dash_asset_lookup(struct iov path);
/* The same for a NUL-terminated path; NULL is not found. */
const struct dash_asset *dash_asset_find(const char *path);

/*
 * Whether an Accept-Encoding value (RFC 9110 12.5.3) takes gzip: "gzip" or "x-gzip" with a q
 * other than 0, or "*" with a q other than 0 and gzip not refused by name. A missing header is
 * an empty iov: no.
 */
bool dash_gzip_ok(struct iov accept_encoding);

#endif
