/* redact.h - keys out of logged bodies */
#ifndef MERIDIAN_STORE_REDACT_H
#define MERIDIAN_STORE_REDACT_H

#include <stddef.h>

#include "core/str.h"

/*
 * Masks secrets in s[0..n) in place, keeping the length: every occurrence of a known secret
 * (the request's own key, the provider key Meridian injected: at least 8 bytes each), and
 * anything shaped like an API key: a word starting "sk-", "sk_", "xai-", "mrd_", "pk-", "rk-"
 * or "AKIA" followed by at least 16 of [A-Za-z0-9_-], and the token after "Bearer ". The first
 * 4 bytes of a match stay (so a reader sees what kind of key it was) and the rest become '*'.
 * Returns how many were masked.
 */
size_t redact_secrets(char *s, size_t n, const struct iov *known, size_t nknown);

#endif
