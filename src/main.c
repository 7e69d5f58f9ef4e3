/* main.c - the meridian command: dispatch to serve, check, mock, key, logs, stats */
#include <stdio.h>
#include <string.h>

#include "auth/key.h"
#include "conf/conf.h"
#include "core/log.h"
#include "mock/mock.h"
#include "serve/serve.h"
#include "store/cli.h"
#include "tools/bench.h"
#include "tools/probe.h"

static void usage(FILE *f)
{
	fputs("usage: meridian <command> [options]\n"
	      "\n"
	      "  serve  [-c meridian.yaml]   run the gateway\n"
	      "  check  [-c meridian.yaml]   validate a config and print what it says\n"
	      "  logs   [filters] [ID]       print the request log, or follow it (-f)\n"
	      "  stats  [filters]            requests, errors, tokens, cost, latency over time\n"
	      "  mock   [options]            an OpenAI- and Anthropic-compatible test upstream\n"
	      "  key    new | hash KEY       make a gateway key, or hash one for the config\n"
	      "  bench  --url URL --model M  load an LLM endpoint: TTFT, inter-token latency, throughput\n"
	      "  probe  URL...               latency of endpoints from here, fastest first\n"
	      "  version                     print the version\n"
	      "\n"
	      "`meridian <command> --help` describes a command's options.\n",
	      f);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[1];
	if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
		puts("meridian " MERIDIAN_VERSION);
		return 0;
	}
	log_init("meridian");
	if (!strcmp(cmd, "serve"))
		return serve_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "check"))
		return conf_check_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "mock"))
		return mock_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "logs"))
		return logs_cli_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "stats"))
		return stats_cli_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "key"))
		return key_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "bench"))
		return bench_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "probe"))
		return probe_main(argc - 1, argv + 1);
	fprintf(stderr, "meridian: unknown command '%s'\n\n", cmd);
	usage(stderr);
	return 2;
}
