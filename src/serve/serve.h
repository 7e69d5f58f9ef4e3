/* serve.h - `meridian serve`: the gateway process (workers, listeners, signals, reload) */
#ifndef MERIDIAN_SERVE_SERVE_H
#define MERIDIAN_SERVE_SERVE_H

/* Runs the gateway until SIGTERM/SIGINT; returns the process exit status. */
int serve_main(int argc, char **argv);

#endif
