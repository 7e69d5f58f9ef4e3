/* check.c - `meridian check`: load a config, say what it means or exactly where it is wrong */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "conf/conf.h"
#include "route/route.h"

static void usage(FILE *f)
{
	fputs("usage: meridian check [-c FILE] [--quiet]\n"
	      "\n"
	      "Loads and validates a config (default ./meridian.yaml) and prints what it\n"
	      "understood: listeners, regions, providers and deployments, accounts, routing,\n"
	      "limits and backends. Exits 0 if the config is valid, 1 if not.\n"
	      "\n"
	      "  -c, --config FILE   the config to check\n"
	      "  -q, --quiet         print only \"FILE: ok\" or the error\n"
	      "  -h, --help          this help\n",
	      f);
}

int conf_check_main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"quiet", no_argument, NULL, 'q'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *path = "meridian.yaml";
	char err[1024];
	bool quiet = false;
	struct conf *c;
	int opt;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "c:qh", opts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			path = optarg;
			break;
		case 'q':
			quiet = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "meridian check: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	c = conf_load(path, err, sizeof(err));
	if (!c) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	/* what serve would open besides the file itself: the GeoIP database */
	if (route_attach(c, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: %s\n", path, err);
		conf_unref(c);
		route_shutdown();
		return 1;
	}
	printf("%s: ok\n", path);
	if (!quiet) {
		struct buf out = BUF_INIT;
		conf_describe(c, &out);
		printf("\n%s", out.data ? out.data : "");
		buf_release(&out);
	}
	conf_unref(c);
	route_shutdown();
	return 0;
}
