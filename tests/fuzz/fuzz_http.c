/* fuzz_http.c - the HTTP/1.1 server over a real loopback socket: no crash, well-formed answers */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/server.h"

static uv_loop_t loop;
static struct http_listener *listener;
static int port;

static void echo(struct http_req *req, void *ctx)
{
	(void)ctx;
	struct http_header h = {IOV_LIT("content-type"), IOV_LIT("text/plain")};
	if (req->body.len % 2) {
		/* a streamed answer for odd bodies: exercises chunked framing */
		http_resp_begin(req, 200, &h, 1, -1);
		http_resp_write(req, req->path.base, req->path.len);
		http_resp_write(req, req->body.data, req->body.len);
		http_resp_end(req);
	} else {
		http_resp_send(req, 200, &h, 1, req->body.data, req->body.len);
	}
}

static const char *render(const struct http_req *req, int status, const char *code,
			  const char *message, struct buf *out, void *ctx)
{
	(void)req, (void)status, (void)ctx;
	buf_appendf(out, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}", code, message);
	return "application/json";
}

static void setup(void)
{
	struct http_limits l;
	http_limits_default(&l);
	l.header_timeout_ms = 50;
	l.body_timeout_ms = 50;
	l.keepalive_timeout_ms = 50;
	l.max_body = 4096;
	uv_loop_init(&loop);
	if (http_listen(&loop, "127.0.0.1:0", &l, echo, render, NULL, &listener) != 0)
		abort();
	port = http_listener_port(listener);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	char out[65536], head[5];
	size_t got = 0, total = 0;
	int fd, one = 1;

	if (!ready) {
		setup();
		ready = 1;
		sa.sin_port = htons((uint16_t)port);
	}
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		abort();
	fcntl(fd, F_SETFL, O_NONBLOCK);
	size_t off = 0;
	for (int spins = 0; spins < 20000; spins++) {
		if (off < size) {
			ssize_t w = write(fd, data + off, size - off);
			if (w > 0)
				off += (size_t)w;
			if (off == size)
				shutdown(fd, SHUT_WR);
		} else if (size == 0 && spins == 0) {
			shutdown(fd, SHUT_WR);
		}
		uv_run(&loop, UV_RUN_NOWAIT);
		ssize_t r = read(fd, out + got, sizeof(out) - 1 - got);
		if (r == 0)
			break;
		if (r > 0) {
			for (size_t i = 0; i < (size_t)r && total + i < sizeof(head); i++)
				head[total + i] = out[got + i];
			total += (size_t)r;
			got += (size_t)r;
			if (got >= sizeof(out) - 1)
				got = 0; /* only the shape of what remains is checked */
		} else if (errno != EAGAIN && errno != EWOULDBLOCK) {
			break;
		} else {
			usleep(50);
		}
	}
	close(fd);
	/* whatever came back starts with a status line */
	if (total >= sizeof(head) && memcmp(head, "HTTP/", 5) != 0)
		abort();
	/* let the server notice the close */
	for (int i = 0; i < 50; i++)
		uv_run(&loop, UV_RUN_NOWAIT);
	return 0;
}
