/* bench.h - `meridian bench`: an LLM load generator (TTFT, inter-token latency, throughput) */
#ifndef MERIDIAN_TOOLS_BENCH_H
#define MERIDIAN_TOOLS_BENCH_H

/*
 * `meridian bench [options]` (docs/bench.md). argv as main() gives it minus the program
 * (argv[0] is "bench"). Sends chat completions (--api openai) or messages (--api anthropic) at a
 * fixed arrival rate (open loop) or a fixed concurrency, on one libuv loop through the gateway's
 * upstream clients, and prints what it measured as text or JSON (--json), optionally also as a
 * self-contained HTML report (--report FILE). The API key is read from the environment only.
 * Returns the exit status: 0 when the run was made (whatever the requests answered), 1 when it
 * could not be (a prompt file or report that cannot be read or written, interrupted), 2 for bad
 * arguments (usage on stderr).
 */
int bench_main(int argc, char **argv);

#endif
