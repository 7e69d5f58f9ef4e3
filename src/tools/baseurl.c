/* baseurl.c - the base URL an SDK takes, as probe and bench read it */
#include "tools/baseurl.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

#define URL_MAX 2048

int tools_base_url(const char *in, bool openai, struct buf *out)
{
	const char *scheme = "https://", *sep;
	size_t n = strlen(in), host_len;

	if (n == 0 || n > URL_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)in[i];

		if (c <= ' ' || c == 0x7f || c == '?' || c == '#')
			return -EINVAL;
	}
	sep = strstr(in, "://");
	if (sep) {
		size_t len = (size_t)(sep - in);

		if (len == 4 && !strncasecmp(in, "http", 4))
			scheme = "http://";
		else if (len != 5 || strncasecmp(in, "https", 5))
			return -EINVAL;
		in = sep + 3;
		n -= len + 3;
	}
	host_len = strcspn(in, "/");
	if (host_len == 0 || in[0] == ':' || in[0] == '@')
		return -EINVAL;
	while (n > host_len && in[n - 1] == '/')
		n--;
	buf_puts(out, scheme);
	buf_append(out, in, n);
	if (openai ? n == host_len : (n < host_len + 3 || memcmp(in + n - 3, "/v1", 3)))
		buf_puts(out, "/v1");
	return 0;
}
