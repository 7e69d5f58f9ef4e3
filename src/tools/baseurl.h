/* baseurl.h - the base URL an SDK takes, as probe and bench read it */
#ifndef MERIDIAN_TOOLS_BASEURL_H
#define MERIDIAN_TOOLS_BASEURL_H

#include <stdbool.h>

#include "core/buf.h"

/*
 * Writes to out the URL that API paths ("/models", "/chat/completions", "/messages") are
 * appended to, from a URL given as the SDK of that format takes its base URL, with trailing
 * slashes dropped:
 *   openai (the OpenAI SDK's base URL holds the /v1): used as it is, except that a bare
 *   host[:port] gets "/v1" ("http://h:8080" and "http://h:8080/v1" both give
 *   "http://h:8080/v1"; "https://h/v1/acct/gw/compat" stays itself);
 *   anthropic (the Anthropic SDK's holds none): "/v1" appended unless the path already ends with
 *   it ("https://h/v1/acct/gw/xai" gives ".../xai/v1").
 * No scheme means https://. Refuses (-EINVAL, out unchanged) a scheme other than http or https,
 * an empty host, a query or fragment, spaces or control bytes, and more than 2048 bytes.
 */
int tools_base_url(const char *in, bool openai, struct buf *out);

#endif
