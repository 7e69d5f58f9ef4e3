/* logrec.c - a request's log record copied deep into one allocation */
#include <stdalign.h>
#include <string.h>

#include "core/alloc.h"
#include "store/logrec.h"

static size_t str_size(const char *s)
{
	return s ? strlen(s) + 1 : 0;
}

/* Copies s to *p and moves *p past it; NULL stays NULL. */
static const char *put_str(char **p, const char *s)
{
	size_t n;
	char *d;

	if (!s)
		return NULL;
	n = strlen(s) + 1;
	d = *p;
	memcpy(d, s, n);
	*p += n;
	return d;
}

struct log_record *log_record_new(const struct log_record *t)
{
	/* The attempts go first after the fixed part, at their own alignment; strings follow. */
	size_t head = offsetof(struct log_record, data);
	size_t aoff = (head + alignof(struct log_attempt) - 1) & ~(alignof(struct log_attempt) - 1);
	size_t na = t->attempts ? t->nattempts : 0;
	size_t size = aoff + na * sizeof(struct log_attempt);
	struct log_record *r;
	char *p;

	size += str_size(t->account) + str_size(t->gateway) + str_size(t->provider) +
		str_size(t->model) + str_size(t->model_served) + str_size(t->endpoint) +
		str_size(t->region_requested) + str_size(t->region) + str_size(t->method) +
		str_size(t->path) + str_size(t->surface) + str_size(t->error_code) +
		str_size(t->termination) + str_size(t->cache) + str_size(t->metadata) +
		str_size(t->request_body) + str_size(t->response_body);
	for (size_t i = 0; i < na; i++) {
		const struct log_attempt *a = &t->attempts[i];
		size += str_size(a->region) + str_size(a->deployment) + str_size(a->model) +
			str_size(a->error);
	}

	r = xmalloc(size);
	*r = *t;
	r->id[sizeof(r->id) - 1] = '\0';
	r->attempts = na ? (struct log_attempt *)((char *)r + aoff) : NULL;
	r->nattempts = na;
	p = (char *)r + aoff + na * sizeof(struct log_attempt);

	r->account = put_str(&p, t->account);
	r->gateway = put_str(&p, t->gateway);
	r->provider = put_str(&p, t->provider);
	r->model = put_str(&p, t->model);
	r->model_served = put_str(&p, t->model_served);
	r->endpoint = put_str(&p, t->endpoint);
	r->region_requested = put_str(&p, t->region_requested);
	r->region = put_str(&p, t->region);
	r->method = put_str(&p, t->method);
	r->path = put_str(&p, t->path);
	r->surface = put_str(&p, t->surface);
	r->error_code = put_str(&p, t->error_code);
	r->termination = put_str(&p, t->termination);
	r->cache = put_str(&p, t->cache);
	r->metadata = put_str(&p, t->metadata);
	r->request_body = put_str(&p, t->request_body);
	r->response_body = put_str(&p, t->response_body);
	for (size_t i = 0; i < na; i++) {
		const struct log_attempt *a = &t->attempts[i];
		struct log_attempt *d = &r->attempts[i];
		*d = *a;
		d->region = put_str(&p, a->region);
		d->deployment = put_str(&p, a->deployment);
		d->model = put_str(&p, a->model);
		d->error = put_str(&p, a->error);
	}
	return r;
}

void log_record_free(struct log_record *r)
{
	free(r);
}
