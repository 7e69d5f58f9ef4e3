/* mock.h - `meridian mock`: an OpenAI- and Anthropic-compatible test upstream */
#ifndef MERIDIAN_MOCK_MOCK_H
#define MERIDIAN_MOCK_MOCK_H

/* Runs the mock until SIGTERM/SIGINT; returns the process exit status. */
int mock_main(int argc, char **argv);

#endif
