/* mock.h - `meridian mock`: an OpenAI- and Anthropic-compatible test upstream */
#ifndef MERIDIAN_MOCK_MOCK_H
#define MERIDIAN_MOCK_MOCK_H

/* Runs the mock until SIGTERM/SIGINT; returns the process exit status (0 after a signal, 1 when
 * it cannot listen, 2 on a usage error). argv[0] is "mock". Flags: see mock/config.h and
 * docs/mock.md. */
int mock_main(int argc, char **argv);

#endif
