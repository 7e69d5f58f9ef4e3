/* cli.h - `meridian logs` and `meridian stats`: the request log read from the command line */
#ifndef MERIDIAN_STORE_CLI_H
#define MERIDIAN_STORE_CLI_H

/*
 * Both take argv as main() gives it minus the program (argv[0] is the command's name) and
 * return the process's exit status: 0 done (for `logs --follow`: stopped by SIGINT or SIGTERM),
 * 1 the store or the config could not be read, or no record has that id, 2 bad arguments
 * (usage on stderr). They read the store named by `--store SPEC` or by logs.store of the
 * config (`-c FILE`, default meridian.yaml) through log_reader_open(), and print to stdout.
 */
int logs_cli_main(int argc, char **argv);
int stats_cli_main(int argc, char **argv);

#endif
