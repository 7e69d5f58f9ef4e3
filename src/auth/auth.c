/* auth.c - the credentials a request presents, read strictly */
#include <strings.h>

#include "auth/auth.h"

static bool key_ok(struct iov k)
{
	if (k.len == 0 || k.len > AUTH_MAX_KEY)
		return false;
	for (size_t i = 0; i < k.len; i++)
		if ((unsigned char)k.base[i] <= 0x20 || (unsigned char)k.base[i] >= 0x7f)
			return false;
	return true;
}

static bool same(struct iov a, struct iov b)
{
	return a.len == b.len && memcmp(a.base, b.base, a.len) == 0;
}

static bool names_credential(struct iov token)
{
	return iov_eq_ci(token, "authorization") || iov_eq_ci(token, "x-api-key") ||
	       iov_eq_ci(token, "x-meridian-key");
}

/* Whether a Connection value lists a credential header. */
static bool connection_names_credential(struct iov v)
{
	const char *s = v.base, *end = v.base + v.len;
	while (s < end) {
		while (s < end && (*s == ' ' || *s == '\t' || *s == ','))
			s++;
		const char *t = s;
		while (s < end && *s != ',' && *s != ' ' && *s != '\t')
			s++;
		if (s > t && names_credential((struct iov){t, (size_t)(s - t)}))
			return true;
	}
	return false;
}

/* Takes one more line of a credential header; differing lines are ambiguous. */
static int take(struct iov *slot, struct iov v, const char **code, const char **message)
{
	if (slot->base && !same(*slot, v)) {
		*code = "conflicting_credentials";
		*message = "the request carries different keys; send exactly one";
		return 400;
	}
	*slot = v;
	return 0;
}

int auth_read(const struct http_req *h, struct auth_creds *out, const char **code,
	      const char **message)
{
	struct iov bearer = IOV_NULL, api_key = IOV_NULL, gw = IOV_NULL;
	int rc;

	*out = (struct auth_creds){IOV_NULL, IOV_NULL};
	for (size_t i = 0; i < h->nheaders; i++) {
		const struct http_header *f = &h->headers[i];
		if (iov_eq_ci(f->name, "connection") && connection_names_credential(f->value)) {
			*code = "invalid_request";
			*message = "credentials cannot be hop-by-hop (named in Connection)";
			return 400;
		}
		if (iov_eq_ci(f->name, "authorization")) {
			struct iov v = f->value;
			if (v.len < 7 || strncasecmp(v.base, "bearer ", 7) != 0) {
				*code = "invalid_api_key";
				*message = "the Authorization header must be 'Bearer KEY'";
				return 401;
			}
			if ((rc = take(&bearer, (struct iov){v.base + 7, v.len - 7}, code, message)))
				return rc;
		} else if (iov_eq_ci(f->name, "x-api-key")) {
			if ((rc = take(&api_key, f->value, code, message)))
				return rc;
		} else if (iov_eq_ci(f->name, "x-meridian-key")) {
			if ((rc = take(&gw, f->value, code, message)))
				return rc;
		}
	}
	if (bearer.base && api_key.base && !same(bearer, api_key)) {
		*code = "conflicting_credentials";
		*message = "Authorization and x-api-key carry different keys; send exactly one";
		return 400;
	}
	out->key = bearer.base ? bearer : api_key;
	out->gateway_key = gw;
	if ((out->key.base && !key_ok(out->key)) || (gw.base && !key_ok(gw))) {
		*code = "invalid_api_key";
		*message = "the API key is malformed";
		return 401;
	}
	return 0;
}
