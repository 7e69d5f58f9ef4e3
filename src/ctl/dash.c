/* dash.c - finding an embedded dashboard file and reading Accept-Encoding for gzip */
#include "ctl/dash.h"

#include <string.h>

const struct dash_asset *dash_asset_lookup(struct iov path)
{
	if (path.len == 0)
		path = IOV_LIT("index.html");
	// a handful of files: a scan beats anything cleverer
	for (size_t i = 0; i < dash_assets_count; i++) {
		const struct dash_asset *a = &dash_assets[i];
		if (iov_eq(path, a->path))
			return a;
	}
	return NULL;
}

const struct dash_asset *dash_asset_find(const char *path)
{
	return path ? dash_asset_lookup(iov_of(path)) : NULL;
}

static bool ows(char c)
{
	return c == ' ' || c == '\t';
}

static struct iov trim(struct iov v)
{
	while (v.len && ows(v.base[0])) {
		v.base++;
		v.len--;
	}
	while (v.len && ows(v.base[v.len - 1]))
		v.len--;
	return v;
}

/* A qvalue (RFC 9110 12.4.2) is "0" or "0." then up to three digits, or "1" and zeros: it is
 * zero when every digit is '0'. Anything malformed counts as acceptable, as most servers do. */
static bool q_zero(struct iov q)
{
	if (q.len == 0 || q.base[0] != '0')
		return false;
	for (size_t i = 1; i < q.len; i++)
		if (q.base[i] != '0' && !(i == 1 && q.base[i] == '.'))
			return false;
	return true;
}

bool dash_gzip_ok(struct iov ae)
{
	int gzip = -1, star = -1; // -1 not named, 0 refused, 1 taken
	size_t i = 0;

	while (i < ae.len) {
		size_t end = i;
		while (end < ae.len && ae.base[end] != ',')
			end++;
		struct iov item = {ae.base + i, end - i};
		i = end + 1;

		const char *semi = memchr(item.base, ';', item.len);
		struct iov coding = trim((struct iov){item.base, semi ? (size_t)(semi - item.base) : item.len});
		bool taken = true;
		// parameters: only q matters; "q=0" (any case, OWS around) refuses the coding
		while (semi) {
			struct iov rest = {semi + 1, item.len - (size_t)(semi + 1 - item.base)};
			semi = memchr(rest.base, ';', rest.len);
			struct iov param = trim((struct iov){rest.base, semi ? (size_t)(semi - rest.base) : rest.len});
			if (param.len >= 2 && (param.base[0] == 'q' || param.base[0] == 'Q') && param.base[1] == '=')
				taken = !q_zero(trim((struct iov){param.base + 2, param.len - 2}));
		}
		if (iov_eq_ci(coding, "gzip") || iov_eq_ci(coding, "x-gzip"))
			gzip = gzip == 1 ? 1 : taken;
		else if (iov_eq(coding, "*"))
			star = taken;
	}
	if (gzip >= 0)
		return gzip == 1;
	return star == 1;
}
