/* auth.h - the credentials a request presents, read strictly */
#ifndef MERIDIAN_AUTH_AUTH_H
#define MERIDIAN_AUTH_AUTH_H

#include "core/str.h"
#include "http/server.h"

/* Keys longer than this are refused unread. */
#define AUTH_MAX_KEY 512

struct auth_creds {
	struct iov key;           /* Authorization: Bearer KEY or x-api-key: KEY; empty if none */
	struct iov gateway_key;   /* x-meridian-key: a gateway key beside a provider key */
};

/*
 * Reads a request's credentials. Ambiguity is refused, never resolved by "first one wins":
 * Authorization and x-api-key with different keys, two different x-api-key or x-meridian-key
 * lines, or a credential header named in Connection (a hop-by-hop credential): 400. A
 * credential that is present but malformed (a scheme other than Bearer, not exactly one space
 * after it, whitespace or control bytes in the key, an empty or oversized key): 401.
 * Returns 0, or the status with a code and a message (static strings) for the client.
 */
int auth_read(const struct http_req *h, struct auth_creds *out, const char **code,
	      const char **message);

#endif
