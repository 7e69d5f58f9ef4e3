/* serve.c - placeholder until the gateway lands */
#include <stdio.h>
#include "serve/serve.h"
int serve_main(int argc, char **argv) { (void)argc; (void)argv; fputs("not built yet\n", stderr); return 1; }
